// ckpt — inspect, verify, diff and convert checkpoint files; list, verify and prune run
// directories.
// Each command parses its arguments, calls one library function, prints, and maps errors to
// exit codes: 0 success, 1 bad input or failed operation, 2 usage error.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <unordered_map>

#include "ckpt/distributed_files.h"
#include "ckpt/manager.h"
#include "ckpt/serialize.h"
#include "diff_cmd.h"
#include "format/value_access.h"
#include "plot.h"
#include "progress.h"
#include "util/errors.h"
#include "util/text.h"

namespace {

using ckpt::str_cat;
using ckpt::Value;
using ckpt::ValueAccess;
using ckpt::cli::ProgressBar;
using Json = nlohmann::ordered_json;

std::string key_text(const Value& k) {
  if (k.is_string()) return k.to_string();
  return ckpt::short_repr(k);
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
    if (ValueAccess::node(v) != nullptr && (v.is_list() || v.is_tuple() || v.is_dict() || v.is_tensor())) {
      auto [it, inserted] = seen_.emplace(ValueAccess::node(v), path);
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
      desc =
          str_cat(t.is_parameter ? "Parameter " : "Tensor ", ckpt::dtype_name(t.dtype), " ", ckpt::shape_text(t.sizes),
                  " ", tensor_bytes(t), " bytes", t.requires_grad ? " requires_grad" : "");
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
  // An s3:// object is read lazily: inspect fetches its directory and pickle, not the tensors
  // whose CRCs would need every byte (`ckpt verify` checks them).
  options.verify_checksums = !no_crc && file.rfind("s3://", 0) != 0;
  ProgressBar bar("checking");
  options.progress = bar.fn();
  // A distributed checkpoint directory: its state consolidated (every piece CRC-checked).
  Value root = ckpt::dist::is_distributed_checkpoint(file) ? ckpt::dist::consolidate(file) : ckpt::load(file, options);
  bar.done();
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

std::string metrics_text(const std::map<std::string, double>& metrics) {
  std::string out;
  for (const auto& [k, v] : metrics) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.6g", v);
    out += (out.empty() ? "" : " ") + k + "=" + buf;
  }
  return out.empty() ? "-" : out;
}

Json record_json(const ckpt::CheckpointRecord& r) {
  Json metrics = Json::object();
  for (const auto& [k, v] : r.metrics) {
    if (std::isfinite(v))
      metrics[k] = v;
    else
      metrics[k] = std::isnan(v) ? "nan" : (v > 0 ? "inf" : "-inf");
  }
  Json j{{"path", r.path},     {"file", r.file},   {"epoch", r.epoch},    {"step", r.step},
         {"metrics", metrics}, {"bytes", r.bytes}, {"time", r.unix_time}, {"content_crc", ckpt::hex32(r.content_crc)},
         {"latest", r.latest}, {"best", r.best}};
  j["damaged"] = r.damaged.empty() ? Json(nullptr) : Json(r.damaged);
  return j;
}

int cmd_ls(const std::string& dir, bool json) {
  std::vector<ckpt::CheckpointRecord> records = ckpt::list_run(dir);
  if (json) {
    Json out = Json::array();
    for (const auto& r : records) out.push_back(record_json(r));
    std::cout << out.dump(2) << "\n";
    return 0;
  }
  if (records.empty()) {
    std::cout << dir << ": no checkpoints\n";
    return 0;
  }
  size_t w = 4;
  for (const auto& r : records) w = std::max(w, r.file.size());
  std::printf("%-*s %6s %9s %10s  %-20s  %s\n", int(w), "file", "epoch", "step", "size", "time", "metrics");
  for (const auto& r : records) {
    std::string tags;
    if (r.latest) tags += " [latest]";
    if (r.best) tags += " [best]";
    if (!r.damaged.empty()) tags += " [damaged: " + r.damaged + "]";
    std::time_t t = static_cast<std::time_t>(r.unix_time);
    char when[32];
    std::strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", std::localtime(&t));
    std::printf("%-*s %6lld %9lld %10s  %-20s  %s%s\n", int(w), r.file.c_str(), static_cast<long long>(r.epoch),
                static_cast<long long>(r.step), ckpt::human_bytes(r.bytes).c_str(), when,
                metrics_text(r.metrics).c_str(), tags.c_str());
  }
  return 0;
}

int cmd_verify_run(const std::string& dir, bool quiet, bool json) {
  ckpt::LoadOptions options;
  ProgressBar bar("verifying");
  options.progress = bar.fn();
  std::vector<ckpt::RunVerifyResult> results = ckpt::verify_run(dir, options);
  bar.done();
  size_t damaged = 0;
  Json out = Json::array();
  for (const auto& v : results) {
    damaged += !v.problem.empty();
    if (json) {
      Json j = record_json(v.record);
      j["ok"] = v.problem.empty();
      j["problem"] = v.problem.empty() ? Json(nullptr) : Json(v.problem);
      out.push_back(j);
    } else if (!v.problem.empty()) {
      std::cout << "DAMAGED " << v.problem << "\n";
    } else if (!quiet) {
      std::cout << "OK      " << v.record.path << "\n";
    }
  }
  if (json)
    std::cout << out.dump(2) << "\n";
  else if (!quiet || damaged)
    std::cout << dir << ": " << results.size() - damaged << " of " << results.size() << " checkpoints verify"
              << (damaged ? str_cat(", ", damaged, " damaged") : "") << "\n";
  return damaged ? 1 : 0;
}

int cmd_prune(const std::string& dir, const ckpt::RetentionPolicy& policy, bool dry_run) {
  if (policy.keeps_everything()) {
    std::cerr << "ckpt prune: no retention policy given (--keep-last, --keep-best, --keep-every-*): nothing to do\n";
    return 2;
  }
  std::vector<ckpt::CheckpointRecord> victims = ckpt::prune_run(dir, policy, dry_run);
  for (const auto& r : victims) std::cout << (dry_run ? "would delete " : "deleted ") << r.path << "\n";
  std::cout << dir << ": " << victims.size()
            << (dry_run ? " checkpoints would be deleted\n" : " checkpoints deleted\n");
  return 0;
}

int cmd_plot(const std::string& dir, std::string out) {
  if (out.empty()) out = dir + "/curves.svg";
  std::vector<ckpt::cli::EpochPoint> points = ckpt::cli::read_metrics(dir);
  std::vector<ckpt::CheckpointRecord> checkpoints;
  if (ckpt::is_run_directory(dir)) checkpoints = ckpt::list_run(dir);
  std::string svg = ckpt::cli::plot_svg("Training run " + dir, points, checkpoints);
  ckpt::write_text_file(out, svg);  // a file, or an object beside an s3:// run
  std::cout << out << ": " << points.size() << " epochs, " << checkpoints.size() << " checkpoints on disk\n";
  return 0;
}

int cmd_verify(const std::string& file, bool quiet, bool json) {
  ckpt::LoadOptions options;
  ProgressBar bar("verifying");
  options.progress = bar.fn();
  ckpt::VerifyReport r = ckpt::verify(file, options);
  bar.done();
  size_t checked = 0;
  for (const auto& rec : r.records) checked += rec.crc_checked;
  if (json) {
    Json records = Json::array();
    for (const auto& rec : r.records)
      records.push_back(Json{{"name", rec.name},
                             {"offset", rec.offset},
                             {"size", rec.size},
                             {"crc32", rec.crc_checked ? Json(ckpt::hex32(rec.crc32)) : Json(nullptr)},
                             {"crc_checked", rec.crc_checked}});
    Json out{{"file", file},
             {"ok", true},
             {"format", r.format},
             {"file_size", r.file_size},
             {"tensors", r.tensors},
             {"storages", r.storages},
             {"tensor_bytes", r.tensor_bytes},
             {"records", records}};
    std::cout << out.dump(2) << "\n";
    return 0;
  }
  if (!quiet) {
    std::cout << file << ": OK — " << r.format << ", " << r.file_size << " bytes, " << r.records.size() << " records ("
              << checked << " CRC-32 verified";
    if (checked < r.records.size()) std::cout << ", " << r.records.size() - checked << " without a stored CRC";
    std::cout << "), " << r.tensors << " tensors in " << r.storages << " storages\n";
  }
  return 0;
}

// A distributed checkpoint directory: every rank file as `verify` checks a file, then every
// piece against metadata.json.
int cmd_verify_distributed(const std::string& dir, bool quiet, bool json) {
  ckpt::dist::DistVerifyReport r = ckpt::dist::verify_distributed(dir);
  if (json) {
    Json out{{"file", dir},          {"ok", true},         {"format", "ckpt-dist/1"}, {"world_size", r.world_size},
             {"entries", r.entries}, {"pieces", r.pieces}, {"records", r.records},    {"bytes", r.bytes}};
    std::cout << out.dump(2) << "\n";
  } else if (!quiet) {
    std::cout << dir << ": OK — distributed checkpoint of " << r.world_size << " ranks, " << r.entries << " entries, "
              << r.pieces << " tensor pieces, " << r.records << " records CRC-32 verified, " << r.bytes << " bytes\n";
  }
  return 0;
}

// A distributed checkpoint directory into one file: shards joined, per-rank entries as lists.
int cmd_consolidate(const std::string& in, const std::string& out, std::string to);

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

// IN in any format ckpt reads; OUT as torch.save writes it, or safetensors (by --to, else by
// OUT's extension).
int cmd_convert(const std::string& in, const std::string& out, std::string to) {
  if (to.empty()) to = ends_with(out, ".safetensors") ? "safetensors" : "pt";
  ckpt::LoadOptions options;
  options.mmap = true;
  Value root = ckpt::load(in, options);
  ckpt::SaveOptions save_options;
  ProgressBar bar("writing");
  save_options.progress = bar.fn();
  if (to == "safetensors")
    ckpt::save_safetensors(root, out, save_options);
  else
    ckpt::save(root, out, save_options);
  return 0;
}

int cmd_consolidate(const std::string& in, const std::string& out, std::string to) {
  if (to.empty()) to = ends_with(out, ".safetensors") ? "safetensors" : "pt";
  Value root = ckpt::dist::consolidate(in);
  ckpt::SaveOptions save_options;
  ProgressBar bar("writing");
  save_options.progress = bar.fn();
  if (to == "safetensors")
    ckpt::save_safetensors(root, out, save_options);
  else
    ckpt::save(root, out, save_options);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "ckpt: inspect, verify, diff and convert checkpoints (.pt/.pth, LibTorch archives, safetensors); list, verify "
      "and prune run directories"};
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

  auto* verify = app.add_subcommand("verify",
                                    "Check structure, every CRC-32, the pickle's safety and every tensor's bounds; "
                                    "given a run directory, every checkpoint in it (exit 1 if any is damaged)");
  verify->add_option("FILE", file, "checkpoint file or run directory")->required();
  verify->add_flag("-q,--quiet", quiet, "print nothing on success");
  bool verify_json = false;
  verify->add_flag("--json", verify_json,
                   "one JSON document: for a file its records and totals, for a run directory an array with an "
                   "object per checkpoint");

  std::string dir;
  bool ls_json = false;
  auto* ls = app.add_subcommand("ls",
                                "List a run directory's committed checkpoints: epoch, step, metrics, size, "
                                "which is latest and which best");
  ls->add_option("RUNDIR", dir, "run directory")->required();
  ls->add_flag("--json", ls_json,
               "print a JSON array of objects with path, file, epoch, step, metrics, bytes, time, content_crc, "
               "latest, best, damaged");

  ckpt::RetentionPolicy policy;
  std::string mode = "min";
  bool dry_run = false;
  auto* prune = app.add_subcommand("prune",
                                   "Delete the checkpoints a retention policy does not keep (never the "
                                   "latest, the best or the newest that verifies)");
  prune->add_option("RUNDIR", dir, "run directory")->required();
  prune->add_option("--keep-last", policy.keep_last, "keep the N most recent checkpoints");
  prune->add_option("--keep-best", policy.keep_best, "keep the K best by --monitor");
  prune->add_option("--monitor", policy.monitor, "the metric --keep-best ranks by (e.g. val_loss)");
  prune->add_option("--mode", mode, "min or max: whether a smaller or a larger metric is better")
      ->check(CLI::IsMember({"min", "max"}));
  prune->add_option("--keep-every-epochs", policy.keep_every_epochs, "keep the first checkpoint of every N epochs");
  prune->add_option("--keep-every-steps", policy.keep_every_steps, "keep the first checkpoint of every N steps");
  prune->add_option("--keep-every-minutes", policy.keep_every_minutes,
                    "keep the first checkpoint of every T minutes of the run");
  prune->add_flag("-n,--dry-run", dry_run, "print what would be deleted, delete nothing");

  auto* convert = app.add_subcommand(
      "convert",
      "Load IN (torch.save zip or legacy, LibTorch's torch::save / torch.jit.save, safetensors) and write OUT as "
      "torch.save writes it, or as safetensors when OUT ends in .safetensors");
  convert->add_option("IN", in, "input file")->required();
  convert->add_option("OUT", out, "output file (written crash-safely)")->required();
  std::string convert_to;
  convert->add_option("--to", convert_to, "output format, whatever OUT is named: pt or safetensors")
      ->check(CLI::IsMember({"pt", "safetensors"}));

  std::string consolidate_to;
  auto* consolidate = app.add_subcommand(
      "consolidate",
      "Join a distributed checkpoint directory (ckpt::dist::save) into one file: shards into whole tensors, "
      "per-rank entries as lists by rank; torch.save's format, or safetensors when OUT ends in .safetensors");
  consolidate->add_option("CKPT", in, "distributed checkpoint directory")->required();
  consolidate->add_option("OUT", out, "output file (written crash-safely)")->required();
  consolidate->add_option("--to", consolidate_to, "output format, whatever OUT is named: pt or safetensors")
      ->check(CLI::IsMember({"pt", "safetensors"}));

  std::string diff_a, diff_b;
  double rtol = 0, atol = 0;
  bool diff_json = false;
  auto* diff = app.add_subcommand(
      "diff",
      "Compare two checkpoints (any formats; RUNDIR, RUNDIR@latest, RUNDIR@best or RUNDIR@STEP for a run "
      "directory's): keys only in one, kind/dtype/shape changes, and per tensor how many elements differ with the "
      "max absolute and relative difference. Exit 0 when equal, 1 when different, 2 on a usage error");
  diff->add_option("A", diff_a, "first checkpoint")->required();
  diff->add_option("B", diff_b, "second checkpoint")->required();
  diff->add_option("--rtol", rtol, "relative tolerance: elements differ when |a-b| > atol + rtol*|b| (default 0)")
      ->check(CLI::NonNegativeNumber);
  diff->add_option("--atol", atol, "absolute tolerance (default 0)")->check(CLI::NonNegativeNumber);
  diff->add_flag("--json", diff_json, "print one JSON document (schema in doc/cli.md)");

  std::string plot_out;
  auto* plot = app.add_subcommand("plot",
                                  "Draw a run's train/validation loss and accuracy per epoch (from its "
                                  "metrics.jsonl) with its checkpoints marked, as SVG");
  plot->add_option("RUNDIR", dir, "run directory (written by ckpt-train)")->required();
  plot->add_option("-o,--output", plot_out, "the SVG file to write (default: RUNDIR/curves.svg)");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? 0 : 2;
  }
  try {
    if (*inspect) return cmd_inspect(file, json, depth, no_crc);
    if (*verify) {
      if (ckpt::dist::is_distributed_checkpoint(file)) return cmd_verify_distributed(file, quiet, verify_json);
      return ckpt::is_run_directory(file) ? cmd_verify_run(file, quiet, verify_json)
                                          : cmd_verify(file, quiet, verify_json);
    }
    if (*consolidate) return cmd_consolidate(in, out, consolidate_to);
    if (*ls) return cmd_ls(dir, ls_json);
    if (*plot) return cmd_plot(dir, plot_out);
    if (*prune) {
      policy.mode = mode == "max" ? ckpt::Mode::kMax : ckpt::Mode::kMin;
      if (policy.keep_best > 0 && policy.monitor.empty()) {
        std::cerr << "ckpt prune: --keep-best needs --monitor\n";
        return 2;
      }
      return cmd_prune(dir, policy, dry_run);
    }
    if (*convert) return cmd_convert(in, out, convert_to);
    if (*diff) return ckpt::cli::diff_command(diff_a, diff_b, rtol, atol, diff_json);
  } catch (const ckpt::Error& e) {
    std::cerr << "ckpt: " << e.what() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "ckpt: " << e.what() << "\n";
    return 1;
  }
  return 2;
}
