// ckpt — inspect, verify and convert PyTorch checkpoint files.
// Each command parses its arguments, calls one library function, prints, and maps errors to
// exit codes: 0 success, 1 bad input or failed operation, 2 usage error.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>
#include <unordered_map>

#include "ckpt/serialize.h"
#include "util/errors.h"

namespace {

using ckpt::str_cat;
using ckpt::Value;
using Json = nlohmann::ordered_json;

std::string key_text(const Value& k) {
  if (k.is_string()) return k.to_string();
  return ckpt::short_repr(k);
}

std::string shape_text(const ckpt::TensorRef& t) {
  std::string s = "[";
  for (size_t i = 0; i < t.sizes.size(); ++i) s += (i ? ", " : "") + std::to_string(t.sizes[i]);
  return s + "]";
}

uint64_t tensor_bytes(const ckpt::TensorRef& t) {
  return static_cast<uint64_t>(t.numel()) * ckpt::element_size(t.dtype);
}

struct Totals {
  size_t tensors = 0;
  uint64_t elements = 0;
  uint64_t tensor_bytes = 0;
  std::unordered_map<const void*, uint64_t> storages;  // identity -> bytes
};

// Walks the tree once, calling `leaf` for each tensor with its path; shared nodes are visited
// once (later sightings are reported as references).
class Walker {
 public:
  virtual ~Walker() = default;
  void walk(const Value& v, const std::string& path, int depth) {
    if (v.node() != nullptr && (v.is_list() || v.is_tuple() || v.is_dict() || v.is_tensor())) {
      auto [it, inserted] = seen_.emplace(v.node(), path);
      if (!inserted) {
        on_shared(v, path, it->second, depth);
        return;
      }
    }
    on_value(v, path, depth);
    if (v.is_list() || v.is_tuple()) {
      size_t i = 0;
      for (const auto& x : v.items()) walk(x, join(path, std::to_string(i++)), depth + 1);
    } else if (v.is_dict()) {
      for (const auto& [k, x] : v.dict()) walk(x, join(path, key_text(k)), depth + 1);
    }
  }

 protected:
  virtual void on_value(const Value& v, const std::string& path, int depth) = 0;
  virtual void on_shared(const Value& v, const std::string& path, const std::string& first, int depth) {}
  static std::string join(const std::string& a, const std::string& b) { return a.empty() ? b : a + "/" + b; }

 private:
  std::unordered_map<const void*, std::string> seen_;
};

class TextPrinter : public Walker {
 public:
  Totals totals;
  int max_depth = 1 << 30;

 protected:
  void on_value(const Value& v, const std::string& path, int depth) override {
    if (v.is_tensor()) count(v.tensor());
    if (depth > max_depth) return;
    std::string name =
        path.empty() ? "<root>" : path.substr(path.rfind('/') == std::string::npos ? 0 : path.rfind('/') + 1);
    std::string indent(static_cast<size_t>(depth) * 2, ' ');
    std::string desc;
    if (v.is_tensor()) {
      const auto& t = v.tensor();
      desc = str_cat(t.is_parameter ? "Parameter " : "Tensor ", ckpt::dtype_name(t.dtype), " ", shape_text(t), " ",
                     tensor_bytes(t), " bytes", t.requires_grad ? " requires_grad" : "");
    } else if (v.is_dict() || v.is_list() || v.is_tuple()) {
      desc = str_cat(v.kind_name(), ", ", v.size(), v.size() == 1 ? " item" : " items");
    } else {
      desc = str_cat(v.kind_name(), " ", ckpt::short_repr(v));
    }
    std::cout << indent << name << ": " << desc << "\n";
  }
  void on_shared(const Value& v, const std::string& path, const std::string& first, int depth) override {
    if (depth > max_depth) return;
    std::string name = path.substr(path.rfind('/') == std::string::npos ? 0 : path.rfind('/') + 1);
    std::cout << std::string(static_cast<size_t>(depth) * 2, ' ') << name << ": same object as " << first << "\n";
  }
  void count(const ckpt::TensorRef& t) {
    totals.tensors++;
    totals.elements += static_cast<uint64_t>(t.numel());
    totals.tensor_bytes += tensor_bytes(t);
    totals.storages[t.storage->identity()] = t.storage->nbytes();
  }
};

class JsonCollector : public Walker {
 public:
  Json tensors = Json::array();
  Totals totals;

 protected:
  void on_value(const Value& v, const std::string& path, int) override {
    if (!v.is_tensor()) return;
    const auto& t = v.tensor();
    totals.tensors++;
    totals.elements += static_cast<uint64_t>(t.numel());
    totals.tensor_bytes += tensor_bytes(t);
    totals.storages[t.storage->identity()] = t.storage->nbytes();
    tensors.push_back(Json{{"path", path},
                           {"dtype", ckpt::dtype_name(t.dtype)},
                           {"shape", t.sizes},
                           {"strides", t.strides},
                           {"storage_offset", t.storage_offset},
                           {"bytes", tensor_bytes(t)},
                           {"requires_grad", t.requires_grad},
                           {"parameter", t.is_parameter}});
  }
};

uint64_t storage_bytes(const Totals& t) {
  uint64_t n = 0;
  for (const auto& [_, b] : t.storages) n += b;
  return n;
}

int cmd_inspect(const std::string& file, bool json, int depth, bool no_crc) {
  ckpt::LoadOptions options;
  options.mmap = true;
  options.verify_checksums = !no_crc;
  Value root = ckpt::load(file, options);
  if (json) {
    JsonCollector c;
    c.walk(root, "", 0);
    Json out{{"file", file},
             {"root", root.kind_name()},
             {"tensors", c.tensors},
             {"totals",
              {{"tensors", c.totals.tensors},
               {"elements", c.totals.elements},
               {"tensor_bytes", c.totals.tensor_bytes},
               {"storages", c.totals.storages.size()},
               {"storage_bytes", storage_bytes(c.totals)}}}};
    std::cout << out.dump(2) << "\n";
    return 0;
  }
  TextPrinter p;
  p.max_depth = depth;
  p.walk(root, "", 0);
  std::cout << "totals: " << p.totals.tensors << " tensors, " << p.totals.elements << " elements, "
            << p.totals.tensor_bytes << " bytes in " << p.totals.storages.size() << " storages ("
            << storage_bytes(p.totals) << " bytes)\n";
  return 0;
}

int cmd_verify(const std::string& file, bool quiet) {
  ckpt::VerifyReport r = ckpt::verify(file);
  size_t checked = 0;
  for (const auto& rec : r.records) checked += rec.crc_checked;
  if (!quiet) {
    std::cout << file << ": OK — " << r.format << ", " << r.file_size << " bytes, " << r.records.size() << " records ("
              << checked << " CRC-32 verified";
    if (checked < r.records.size()) std::cout << ", " << r.records.size() - checked << " without a stored CRC";
    std::cout << "), " << r.tensors << " tensors in " << r.storages << " storages\n";
  }
  return 0;
}

int cmd_convert(const std::string& in, const std::string& out) {
  ckpt::LoadOptions options;
  options.mmap = true;
  Value root = ckpt::load(in, options);
  ckpt::save(root, out);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"ckpt: inspect, verify and convert PyTorch checkpoints (.pt/.pth)"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "ckpt 0.1.0");

  std::string file, in, out;
  bool json = false, quiet = false;
  int depth = 1 << 30;

  auto* inspect =
      app.add_subcommand("inspect", "Print the object tree: keys, types, tensors (dtype, shape, bytes) and totals");
  inspect->add_option("FILE", file, "checkpoint file")->required();
  inspect->add_flag("--json", json, "print one JSON document with a top-level \"tensors\" array");
  inspect->add_option("--depth", depth, "print the tree only down to this depth");
  bool no_crc = false;
  inspect->add_flag("--no-crc", no_crc, "skip the CRC-32 check of tensor data (faster on huge files)");

  auto* verify =
      app.add_subcommand("verify", "Check structure, every CRC-32, the pickle's safety and every tensor's bounds");
  verify->add_option("FILE", file, "checkpoint file")->required();
  verify->add_flag("-q,--quiet", quiet, "print nothing on success");

  auto* convert =
      app.add_subcommand("convert", "Load IN (zip or legacy format) and write OUT in PyTorch's current format");
  convert->add_option("IN", in, "input checkpoint")->required();
  convert->add_option("OUT", out, "output file (written crash-safely)")->required();

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? 0 : 2;
  }
  try {
    if (*inspect) return cmd_inspect(file, json, depth, no_crc);
    if (*verify) return cmd_verify(file, quiet);
    if (*convert) return cmd_convert(in, out);
  } catch (const ckpt::Error& e) {
    std::cerr << "ckpt: " << e.what() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "ckpt: " << e.what() << "\n";
    return 1;
  }
  return 2;
}
