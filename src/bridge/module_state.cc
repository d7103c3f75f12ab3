// Modules <-> PyTorch state dicts: names and order as Python's nn.Module.state_dict(), strict
// loads with hints, prefixes.
#include <torch/nn/module.h>
#include <torch/utils.h>

#include <algorithm>
#include <cstring>
#include <set>

#include "bridge/guard.h"
#include "bridge/names.h"
#include "ckpt/tensor.h"
#include "ckpt/training.h"
#include "util/errors.h"
#include "util/text.h"

namespace ckpt {
using bridge::join;
using bridge::shape_str;
using bridge::torch_dtype_name;
namespace {

// Python's nn.Module._version for the C++ module types whose Python twin is not 1.
int64_t module_version(const torch::nn::Module& m) {
  const std::string& name = m.name();
  if (name.find("BatchNorm") != std::string::npos || name.find("InstanceNorm") != std::string::npos) return 2;
  return 1;
}

void collect(const torch::nn::Module& m, const std::string& prefix, Dict& out, Dict& meta,
             std::vector<std::pair<std::string, at::Tensor>>* live) {
  Value version = Value::new_dict();
  version.dict().set("version", module_version(m));
  meta.set(prefix.empty() ? std::string() : prefix.substr(0, prefix.size() - 1), version);
  for (const auto& p : m.named_parameters(/*recurse=*/false)) {
    if (!p.value().defined()) continue;
    if (live)
      live->emplace_back(prefix + p.key(), p.value());
    else
      out.set(prefix + p.key(), Value(p.value().detach()));
  }
  for (const auto& b : m.named_buffers(/*recurse=*/false)) {
    if (!b.value().defined()) continue;
    if (live)
      live->emplace_back(prefix + b.key(), b.value());
    else
      out.set(prefix + b.key(), Value(b.value().detach()));
  }
  for (const auto& c : m.named_children()) collect(*c.value(), prefix + c.key() + ".", out, meta, live);
}

// The hint for a strict load that failed, when one is likely.
std::string load_hint(const std::vector<std::string>& missing, const std::vector<std::string>& unexpected,
                      const Value& sd) {
  auto all_start_with = [](const std::vector<std::string>& keys, const std::string& p) {
    return !keys.empty() &&
           std::all_of(keys.begin(), keys.end(), [&](const std::string& k) { return k.rfind(p, 0) == 0; });
  };
  for (const char* p : {"module.", "_orig_mod.", "model.", "module.module."}) {
    if (all_start_with(unexpected, p)) {
      std::set<std::string> stripped;
      for (const auto& k : unexpected) stripped.insert(k.substr(std::strlen(p)));
      if (std::all_of(missing.begin(), missing.end(), [&](const std::string& k) { return stripped.count(k); }))
        return str_cat("the checkpoint's keys carry the prefix '", p, "'",
                       std::string(p) == "module."      ? " (saved from DataParallel/DDP)"
                       : std::string(p) == "_orig_mod." ? " (saved from torch.compile)"
                                                        : "",
                       "; load ckpt::strip_prefix(state_dict, \"", p, "\")");
    }
  }
  // The model expects a prefix the checkpoint lacks.
  if (!missing.empty()) {
    auto dot = missing[0].find('.');
    if (dot != std::string::npos) {
      std::string p = missing[0].substr(0, dot + 1);
      if (all_start_with(missing, p)) {
        std::set<std::string> have(unexpected.begin(), unexpected.end());
        if (std::all_of(missing.begin(), missing.end(),
                        [&](const std::string& k) { return have.count(k.substr(p.size())); }))
          return str_cat("the model's keys carry the prefix '", p,
                         "' that the checkpoint's lack; load ckpt::add_prefix(state_dict, \"", p, "\")");
      }
    }
  }
  // A whole checkpoint where its model entry was meant.
  if (unexpected.size() == sd.dict().size()) {
    std::vector<std::string> dict_entries;
    for (const auto& [k, v] : sd.dict())
      if (k.is_string() && v.is_dict()) dict_entries.push_back("'" + k.to_string() + "'");
    if (!dict_entries.empty())
      return str_cat("this looks like a whole checkpoint, not a state dict; it holds ", join(dict_entries),
                     " — pass the model's entry, e.g. ckpt[\"model_state\"]");
  }
  // Mistyped keys: the nearest unexpected key for each missing one.
  std::vector<std::string> pairs;
  for (const auto& m : missing) {
    std::string best;
    size_t best_d = SIZE_MAX;
    for (const auto& u : unexpected) {
      size_t d = edit_distance(m, u);
      if (d < best_d) best_d = d, best = u;
    }
    if (!best.empty() && best_d <= std::max<size_t>(2, m.size() / 4))
      pairs.push_back("the checkpoint's '" + best + "' for the model's '" + m + "'");
  }
  if (!pairs.empty()) return "mistyped keys? " + join(pairs, 3);
  return "";
}

}  // namespace

// --- modules -------------------------------------------------------------------------------------

Value state_dict(const torch::nn::Module& module) {
  Value sd = Value::ordered_dict();
  Value meta = Value::ordered_dict();
  collect(module, "", sd.dict(), meta.dict(), nullptr);
  Value attrs = Value::new_dict();
  attrs.dict().set("_metadata", meta);
  sd.dict().set_attributes(attrs);
  return sd;
}

LoadStateDictResult load_state_dict(torch::nn::Module& module, const Value& sd, bool strict) {
  return bridge::guard_loader("load_state_dict", [&] {
    if (!sd.is_dict())
      fail(ErrorKind::kMismatch, "load_state_dict: expected a dict of tensors but got ", sd.kind_name());
    std::vector<std::pair<std::string, at::Tensor>> live;
    Dict unused_out, unused_meta;
    collect(module, "", unused_out, unused_meta, &live);

    LoadStateDictResult r;
    std::set<std::string> expected;
    for (const auto& [name, _] : live) expected.insert(name);
    for (const auto& [k, v] : sd.dict()) {
      std::string key = k.is_string() ? k.to_string() : short_repr(k);
      if (!k.is_string() || !expected.count(key)) r.unexpected_keys.push_back(key);
    }
    std::vector<std::pair<at::Tensor, at::Tensor>> copies;
    for (const auto& [name, target] : live) {
      const Value* v = sd.dict().find(name);
      if (v == nullptr) {
        r.missing_keys.push_back(name);
        continue;
      }
      if (!v->is_tensor()) {
        r.mismatched.push_back(str_cat(name, ": checkpoint has ", v->kind_name(), ", not a tensor"));
        continue;
      }
      const TensorRef& t = v->tensor();
      if (at::IntArrayRef(t.sizes) != target.sizes() || to_scalar_type(t.dtype) != target.scalar_type()) {
        r.mismatched.push_back(str_cat(name, ": checkpoint ", dtype_name(t.dtype), " ", shape_str(t.sizes),
                                       " vs model ", torch_dtype_name(target.scalar_type()), " ",
                                       shape_str(target.sizes())));
        if (at::IntArrayRef(t.sizes) != target.sizes()) continue;  // a dtype difference is cast when not strict
      }
      copies.emplace_back(target, v->to_tensor());
    }
    if (strict && (!r.missing_keys.empty() || !r.unexpected_keys.empty() || !r.mismatched.empty())) {
      std::string msg = "load_state_dict:";
      if (!r.missing_keys.empty())
        msg += str_cat(" ", r.missing_keys.size(), " missing key(s): ", join(r.missing_keys), ";");
      if (!r.unexpected_keys.empty())
        msg += str_cat(" ", r.unexpected_keys.size(), " unexpected key(s): ", join(r.unexpected_keys), ";");
      if (!r.mismatched.empty())
        msg += str_cat(" ", r.mismatched.size(), " mismatch(es): ", join(r.mismatched, 4), ";");
      std::string hint = load_hint(r.missing_keys, r.unexpected_keys, sd);
      if (!hint.empty())
        msg += " hint: " + hint;
      else
        msg.pop_back();
      fail(ErrorKind::kMismatch, msg);
    }
    torch::NoGradGuard no_grad;
    for (auto& [target, src] : copies) target.copy_(src);
    return r;
  });
}

namespace {
Value map_keys(const Value& sd, const std::string& prefix, bool strip) {
  Dict out(sd.dict().flavor());
  for (const auto& [k, v] : sd.dict()) {
    if (!k.is_string()) {
      out.set(k, v);
      continue;
    }
    const std::string& s = k.to_string();
    if (strip)
      out.set(s.rfind(prefix, 0) == 0 ? s.substr(prefix.size()) : s, v);
    else
      out.set(prefix + s, v);
  }
  return Value(std::move(out));
}
}  // namespace

Value strip_prefix(const Value& sd, const std::string& prefix) {
  return map_keys(sd, prefix, true);
}
Value add_prefix(const Value& sd, const std::string& prefix) {
  return map_keys(sd, prefix, false);
}

}  // namespace ckpt
