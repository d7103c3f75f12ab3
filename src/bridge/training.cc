// Modules, optimizers, RNG and the sampler <-> PyTorch state dicts.
#include "ckpt/training.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/Generator.h>
#include <torch/nn/module.h>
#include <torch/optim.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <mutex>
#include <set>

#include "bridge/guard.h"
#include "ckpt/tensor.h"
#include "util/errors.h"
#include "util/text.h"

namespace ckpt {
namespace {

// PyTorch's name of a scalar type ("float32", not ATen's "Float"), as every message uses.
std::string torch_dtype_name(at::ScalarType type) {
  try {
    return dtype_name(to_dtype(type));
  } catch (const Error&) {
    return c10::toString(type);  // a type 1.13's storages do not have
  }
}

std::string shape_str(at::IntArrayRef sizes) {
  std::string s = "[";
  for (size_t i = 0; i < sizes.size(); ++i) s += (i ? ", " : "") + std::to_string(sizes[i]);
  return s + "]";
}

std::string join(const std::vector<std::string>& xs, size_t max = 6) {
  std::string s;
  for (size_t i = 0; i < xs.size() && i < max; ++i) s += (i ? ", " : "") + xs[i];
  if (xs.size() > max) s += str_cat(", ... (", xs.size() - max, " more)");
  return s;
}

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

// --- optimizers ----------------------------------------------------------------------------------

namespace {

using namespace torch::optim;

enum class OptKind { kSGD, kAdam, kAdamW, kRMSprop, kAdagrad, kLBFGS };

OptKind kind_of(const Optimizer& o) {
  if (dynamic_cast<const SGD*>(&o)) return OptKind::kSGD;
  if (dynamic_cast<const Adam*>(&o)) return OptKind::kAdam;
  if (dynamic_cast<const AdamW*>(&o)) return OptKind::kAdamW;
  if (dynamic_cast<const RMSprop*>(&o)) return OptKind::kRMSprop;
  if (dynamic_cast<const Adagrad*>(&o)) return OptKind::kAdagrad;
  if (dynamic_cast<const LBFGS*>(&o)) return OptKind::kLBFGS;
  fail(ErrorKind::kUnsupported, "optimizer type not supported (SGD, Adam, AdamW, RMSprop, Adagrad, LBFGS are)");
}

const char* kind_name(OptKind k) {
  switch (k) {
    case OptKind::kSGD:
      return "SGD";
    case OptKind::kAdam:
      return "Adam";
    case OptKind::kAdamW:
      return "AdamW";
    case OptKind::kRMSprop:
      return "RMSprop";
    case OptKind::kAdagrad:
      return "Adagrad";
    case OptKind::kLBFGS:
      return "LBFGS";
  }
  return "?";
}

std::string key_of(const at::Tensor& p) {
  return c10::guts::to_string(p.unsafeGetTensorImpl());
}

// Python's defaults for these are the int 0; keep that type when the value is 0.
Value zero_as_int(double v) {
  return v == 0.0 ? Value(0) : Value(v);
}

Value step_tensor(int64_t step) {
  return Value(at::scalar_tensor(static_cast<double>(step), at::kFloat));
}

void put(Dict& d, const char* key, const at::Tensor& t) {
  if (t.defined()) d.set(key, Value(t));
}

Value group_dict(OptKind kind, const OptimizerOptions& o) {
  Value g = Value::new_dict();
  Dict& d = g.dict();
  switch (kind) {
    case OptKind::kSGD: {
      const auto& s = static_cast<const SGDOptions&>(o);
      d.set("lr", s.lr());
      d.set("momentum", zero_as_int(s.momentum()));
      d.set("dampening", zero_as_int(s.dampening()));
      d.set("weight_decay", zero_as_int(s.weight_decay()));
      d.set("nesterov", s.nesterov());
      d.set("maximize", false);
      d.set("foreach", Value());
      d.set("differentiable", false);
      break;
    }
    case OptKind::kAdam:
    case OptKind::kAdamW: {
      double lr, eps, wd;
      std::tuple<double, double> betas;
      bool amsgrad;
      if (kind == OptKind::kAdam) {
        const auto& s = static_cast<const AdamOptions&>(o);
        lr = s.lr(), eps = s.eps(), wd = s.weight_decay(), betas = s.betas(), amsgrad = s.amsgrad();
      } else {
        const auto& s = static_cast<const AdamWOptions&>(o);
        lr = s.lr(), eps = s.eps(), wd = s.weight_decay(), betas = s.betas(), amsgrad = s.amsgrad();
      }
      d.set("lr", lr);
      d.set("betas", Value::tuple({std::get<0>(betas), std::get<1>(betas)}));
      d.set("eps", eps);
      d.set("weight_decay", kind == OptKind::kAdam ? zero_as_int(wd) : Value(wd));
      d.set("amsgrad", amsgrad);
      d.set("maximize", false);
      d.set("foreach", Value());
      d.set("capturable", false);
      if (kind == OptKind::kAdam) {
        d.set("differentiable", false);
        d.set("fused", false);
      }
      break;
    }
    case OptKind::kRMSprop: {
      const auto& s = static_cast<const RMSpropOptions&>(o);
      d.set("lr", s.lr());
      d.set("alpha", s.alpha());
      d.set("eps", s.eps());
      d.set("weight_decay", zero_as_int(s.weight_decay()));
      d.set("momentum", zero_as_int(s.momentum()));
      d.set("centered", s.centered());
      d.set("foreach", Value());
      d.set("maximize", false);
      d.set("differentiable", false);
      break;
    }
    case OptKind::kAdagrad: {
      const auto& s = static_cast<const AdagradOptions&>(o);
      d.set("lr", s.lr());
      d.set("lr_decay", zero_as_int(s.lr_decay()));
      d.set("weight_decay", zero_as_int(s.weight_decay()));
      d.set("initial_accumulator_value", zero_as_int(s.initial_accumulator_value()));
      d.set("eps", s.eps());
      d.set("foreach", Value());
      d.set("maximize", false);
      break;
    }
    case OptKind::kLBFGS: {
      const auto& s = static_cast<const LBFGSOptions&>(o);
      d.set("lr", s.lr());
      d.set("max_iter", s.max_iter());
      d.set("max_eval", s.max_eval() ? *s.max_eval() : s.max_iter() * 5 / 4);
      d.set("tolerance_grad", s.tolerance_grad());
      d.set("tolerance_change", s.tolerance_change());
      d.set("history_size", s.history_size());
      d.set("line_search_fn", s.line_search_fn() ? Value(*s.line_search_fn()) : Value());
      break;
    }
  }
  return g;
}

Value tensor_list(const std::deque<at::Tensor>& xs) {
  std::vector<Value> items;
  for (const auto& t : xs) items.push_back(Value(t));
  return Value::list(items);
}

Value param_state_dict(OptKind kind, const OptimizerParamState& ps) {
  Value v = Value::new_dict();
  Dict& d = v.dict();
  switch (kind) {
    case OptKind::kSGD:
      put(d, "momentum_buffer", static_cast<const SGDParamState&>(ps).momentum_buffer());
      break;
    case OptKind::kAdam: {
      const auto& s = static_cast<const AdamParamState&>(ps);
      d.set("step", step_tensor(s.step()));
      put(d, "exp_avg", s.exp_avg());
      put(d, "exp_avg_sq", s.exp_avg_sq());
      put(d, "max_exp_avg_sq", s.max_exp_avg_sq());
      break;
    }
    case OptKind::kAdamW: {
      const auto& s = static_cast<const AdamWParamState&>(ps);
      d.set("step", step_tensor(s.step()));
      put(d, "exp_avg", s.exp_avg());
      put(d, "exp_avg_sq", s.exp_avg_sq());
      put(d, "max_exp_avg_sq", s.max_exp_avg_sq());
      break;
    }
    case OptKind::kRMSprop: {
      const auto& s = static_cast<const RMSpropParamState&>(ps);
      d.set("step", s.step());  // an int in torch 1.13
      put(d, "square_avg", s.square_avg());
      put(d, "momentum_buffer", s.momentum_buffer());
      put(d, "grad_avg", s.grad_avg());
      break;
    }
    case OptKind::kAdagrad: {
      const auto& s = static_cast<const AdagradParamState&>(ps);
      d.set("step", step_tensor(s.step()));
      put(d, "sum", s.sum());
      break;
    }
    case OptKind::kLBFGS: {
      const auto& s = static_cast<const LBFGSParamState&>(ps);
      d.set("func_evals", s.func_evals());
      d.set("n_iter", s.n_iter());
      put(d, "d", s.d());
      if (s.n_iter() > 0) {
        d.set("t", s.t());
        d.set("prev_loss", s.prev_loss());
      }
      d.set("old_dirs", tensor_list(s.old_dirs()));
      d.set("old_stps", tensor_list(s.old_stps()));
      d.set("ro", tensor_list(s.ro()));
      put(d, "H_diag", s.H_diag());
      put(d, "prev_flat_grad", s.prev_flat_grad());
      if (s.al()) {
        std::vector<Value> al;
        for (const auto& t : *s.al()) al.push_back(t.defined() ? Value(t) : Value());
        d.set("al", Value::list(al));
      }
      break;
    }
  }
  return v;
}

// --- loading -------------------------------------------------------------------------------------

// A number that Python may keep as a one-element tensor (torch 2.x's 'step', a tensor lr).
double number(const Value& v, const char* key) {
  if (v.is_tensor()) {
    if (v.tensor().numel() != 1)
      fail(ErrorKind::kMismatch, "load_optimizer_state_dict: '", key, "' is a tensor of ", v.tensor().numel(),
           " elements, not one number");
    return v.to_tensor().item<double>();
  }
  if (!v.is_int() && !v.is_float())
    fail(ErrorKind::kMismatch, "load_optimizer_state_dict: '", key, "' is ", v.kind_name(), ", not a number");
  return v.to_double();
}
double num(const Dict& g, const char* key, double fallback) {
  const Value* v = g.find(key);
  if (v == nullptr || v->is_none()) return fallback;
  return number(*v, key);
}
bool flag(const Dict& g, const char* key, bool fallback) {
  const Value* v = g.find(key);
  return (v == nullptr || v->is_none()) ? fallback : v->to_bool();
}
void refuse_true(const Dict& g, const char* key, OptKind kind) {
  const Value* v = g.find(key);
  if (v && v->is_bool() && v->to_bool())
    fail(ErrorKind::kMismatch, "load_optimizer_state_dict: ", key, "=True is not supported by LibTorch's ",
         kind_name(kind));
}

int64_t step_of(const Value* v) {
  if (v == nullptr || v->is_none()) return 0;
  double d = number(*v, "step");
  if (!(d >= 0 && d < 9.2e18)) fail(ErrorKind::kMismatch, "load_optimizer_state_dict: 'step' is ", d);
  return static_cast<int64_t>(std::llround(d));
}

at::Tensor state_tensor(const Dict& s, const char* key, const at::Tensor& param) {
  const Value* v = s.find(key);
  if (v == nullptr || v->is_none()) return {};
  if (!v->is_tensor())
    fail(ErrorKind::kMismatch, "load_optimizer_state_dict: state '", key, "' is ", v->kind_name(), ", not a tensor");
  at::Tensor t = v->to_tensor();
  if (t.is_floating_point() && param.is_floating_point()) t = t.to(param.dtype());
  // LBFGS keeps flat or scalar tensors (d, prev_flat_grad, H_diag): only per-parameter state
  // must match its parameter's shape.
  bool per_param = param.defined() && std::string(key) != "d" && std::string(key) != "prev_flat_grad";
  if (per_param && t.sizes() != param.sizes())
    fail(ErrorKind::kMismatch, "load_optimizer_state_dict: state '", key, "' has shape ", shape_str(t.sizes()),
         " but its parameter has ", shape_str(param.sizes()));
  return t.clone();  // the optimizer updates it in place; never alias the loaded file
}

std::deque<at::Tensor> tensor_deque(const Dict& s, const char* key) {
  std::deque<at::Tensor> out;
  if (const Value* v = s.find(key); v && v->is_list())
    for (const auto& x : v->items()) out.push_back(x.to_tensor().clone());
  return out;
}

void load_group(OptKind kind, OptimizerOptions& o, const Dict& g) {
  refuse_true(g, "maximize", kind);
  switch (kind) {
    case OptKind::kSGD: {
      auto& s = static_cast<SGDOptions&>(o);
      s.lr(num(g, "lr", s.lr())).momentum(num(g, "momentum", 0)).dampening(num(g, "dampening", 0));
      s.weight_decay(num(g, "weight_decay", 0)).nesterov(flag(g, "nesterov", false));
      break;
    }
    case OptKind::kAdam:
    case OptKind::kAdamW: {
      const Value* betas = g.find("betas");
      if (betas && betas->items().size() != 2)
        fail(ErrorKind::kMismatch, "param_groups: 'betas' has ", betas->items().size(), " values, expected 2");
      auto b = betas ? std::make_tuple(betas->items()[0].to_double(), betas->items()[1].to_double())
                     : std::make_tuple(0.9, 0.999);
      if (kind == OptKind::kAdam) {
        auto& s = static_cast<AdamOptions&>(o);
        s.lr(num(g, "lr", s.lr()))
            .betas(b)
            .eps(num(g, "eps", s.eps()))
            .weight_decay(num(g, "weight_decay", s.weight_decay()));
        s.amsgrad(flag(g, "amsgrad", false));
      } else {
        auto& s = static_cast<AdamWOptions&>(o);
        s.lr(num(g, "lr", s.lr()))
            .betas(b)
            .eps(num(g, "eps", s.eps()))
            .weight_decay(num(g, "weight_decay", s.weight_decay()));
        s.amsgrad(flag(g, "amsgrad", false));
      }
      break;
    }
    case OptKind::kRMSprop: {
      auto& s = static_cast<RMSpropOptions&>(o);
      s.lr(num(g, "lr", s.lr())).alpha(num(g, "alpha", s.alpha())).eps(num(g, "eps", s.eps()));
      s.weight_decay(num(g, "weight_decay", 0)).momentum(num(g, "momentum", 0)).centered(flag(g, "centered", false));
      break;
    }
    case OptKind::kAdagrad: {
      auto& s = static_cast<AdagradOptions&>(o);
      s.lr(num(g, "lr", s.lr())).lr_decay(num(g, "lr_decay", 0)).weight_decay(num(g, "weight_decay", 0));
      s.initial_accumulator_value(num(g, "initial_accumulator_value", 0)).eps(num(g, "eps", s.eps()));
      break;
    }
    case OptKind::kLBFGS: {
      auto& s = static_cast<LBFGSOptions&>(o);
      s.lr(num(g, "lr", s.lr()));
      if (const Value* v = g.find("max_iter")) s.max_iter(v->to_int());
      if (const Value* v = g.find("max_eval"); v && !v->is_none()) s.max_eval(v->to_int());
      s.tolerance_grad(num(g, "tolerance_grad", s.tolerance_grad()))
          .tolerance_change(num(g, "tolerance_change", s.tolerance_change()));
      if (const Value* v = g.find("history_size")) s.history_size(v->to_int());
      if (const Value* v = g.find("line_search_fn"); v && v->is_string())
        s.line_search_fn(v->to_string());
      else
        s.line_search_fn(c10::nullopt);
      break;
    }
  }
}

std::unique_ptr<OptimizerParamState> load_param_state(OptKind kind, const Dict& s, const at::Tensor& p) {
  switch (kind) {
    case OptKind::kSGD: {
      auto st = std::make_unique<SGDParamState>();
      st->momentum_buffer(state_tensor(s, "momentum_buffer", p));
      if (!st->momentum_buffer().defined()) return nullptr;  // 1.13's {'momentum_buffer': None}
      return st;
    }
    case OptKind::kAdam: {
      auto st = std::make_unique<AdamParamState>();
      st->step(step_of(s.find("step")));
      st->exp_avg(state_tensor(s, "exp_avg", p)).exp_avg_sq(state_tensor(s, "exp_avg_sq", p));
      st->max_exp_avg_sq(state_tensor(s, "max_exp_avg_sq", p));
      return st;
    }
    case OptKind::kAdamW: {
      auto st = std::make_unique<AdamWParamState>();
      st->step(step_of(s.find("step")));
      st->exp_avg(state_tensor(s, "exp_avg", p)).exp_avg_sq(state_tensor(s, "exp_avg_sq", p));
      st->max_exp_avg_sq(state_tensor(s, "max_exp_avg_sq", p));
      return st;
    }
    case OptKind::kRMSprop: {
      auto st = std::make_unique<RMSpropParamState>();
      st->step(step_of(s.find("step")));
      st->square_avg(state_tensor(s, "square_avg", p));
      st->momentum_buffer(state_tensor(s, "momentum_buffer", p)).grad_avg(state_tensor(s, "grad_avg", p));
      return st;
    }
    case OptKind::kAdagrad: {
      auto st = std::make_unique<AdagradParamState>();
      st->step(step_of(s.find("step")));
      st->sum(state_tensor(s, "sum", p));
      return st;
    }
    case OptKind::kLBFGS: {
      auto st = std::make_unique<LBFGSParamState>();
      st->func_evals(s.find("func_evals") ? s.find("func_evals")->to_int() : 0);
      st->n_iter(s.find("n_iter") ? s.find("n_iter")->to_int() : 0);
      if (const Value* v = s.find("t")) st->t(v->to_double());
      if (const Value* v = s.find("prev_loss")) st->prev_loss(v->to_double());
      st->d(state_tensor(s, "d", p)).H_diag(state_tensor(s, "H_diag", at::Tensor()));
      st->prev_flat_grad(state_tensor(s, "prev_flat_grad", p));
      st->old_dirs(tensor_deque(s, "old_dirs")).old_stps(tensor_deque(s, "old_stps")).ro(tensor_deque(s, "ro"));
      if (const Value* v = s.find("al"); v && v->is_list()) {
        std::vector<at::Tensor> al;
        for (const auto& x : v->items()) al.push_back(x.is_none() ? at::Tensor() : x.to_tensor().clone());
        st->al(al);
      }
      return st;
    }
  }
  return nullptr;
}

}  // namespace

Value optimizer_state_dict(const Optimizer& optimizer, const GroupExtras& extras) {
  OptKind kind = kind_of(optimizer);
  Value state = Value::new_dict();
  std::vector<Value> groups;
  int64_t index = 0;
  const auto& all = optimizer.state();
  for (size_t gi = 0; gi < optimizer.param_groups().size(); ++gi) {
    const auto& group = optimizer.param_groups()[gi];
    Value g = group_dict(kind, group.options());
    if (gi < extras.size())
      for (const auto& [k, v] : extras[gi]) g.dict().set(k, v);
    std::vector<Value> params;
    for (const auto& p : group.params()) {
      auto it = all.find(key_of(p));
      if (it != all.end()) state.dict().set(index, param_state_dict(kind, *it->second));
      params.push_back(index++);
    }
    g.dict().set("params", Value::list(params));
    groups.push_back(g);
  }
  Value sd = Value::new_dict();
  sd.dict().set("state", state);
  sd.dict().set("param_groups", Value::list(groups));
  return sd;
}

void load_optimizer_state_dict(Optimizer& optimizer, const Value& sd) {
  bridge::guard_loader("load_optimizer_state_dict", [&] {
    OptKind kind = kind_of(optimizer);
    if (!sd.is_dict() || !sd.contains("param_groups") || !sd.contains("state"))
      fail(ErrorKind::kMismatch, "load_optimizer_state_dict: expected {'state': ..., 'param_groups': ...}",
           sd.is_dict() ? str_cat(" but the dict has ", sd.dict().size(), " other keys; ") : std::string(""),
           sd.is_dict() && sd.dict().size() ? "first is " + short_repr(sd.dict().items()[0].first) : "");
    const auto& saved_groups = sd["param_groups"].items();
    auto& groups = optimizer.param_groups();
    if (saved_groups.size() != groups.size())
      fail(ErrorKind::kMismatch, "load_optimizer_state_dict: the checkpoint has ", saved_groups.size(),
           " parameter groups but the ", kind_name(kind), " optimizer has ", groups.size());
    // Python's load_state_dict maps saved ids to parameters positionally, group by group.
    std::unordered_map<int64_t, at::Tensor> by_id;
    for (size_t gi = 0; gi < groups.size(); ++gi) {
      const auto& ids = saved_groups[gi]["params"].items();
      if (ids.size() != groups[gi].params().size())
        fail(ErrorKind::kMismatch, "load_optimizer_state_dict: parameter group ", gi, " has ", ids.size(),
             " parameters in the checkpoint but ", groups[gi].params().size(), " in the optimizer");
      for (size_t j = 0; j < ids.size(); ++j) by_id[ids[j].to_int()] = groups[gi].params()[j];
    }
    for (size_t gi = 0; gi < groups.size(); ++gi) load_group(kind, groups[gi].options(), saved_groups[gi].dict());
    auto& state = optimizer.state();
    state.clear();
    for (const auto& [k, v] : sd["state"].dict()) {
      auto it = by_id.find(k.to_int());
      if (it == by_id.end())
        fail(ErrorKind::kMismatch, "load_optimizer_state_dict: state for unknown parameter ", short_repr(k));
      if (!v.is_dict())
        fail(ErrorKind::kMismatch, "load_optimizer_state_dict: state of parameter ", short_repr(k), " is ",
             v.kind_name());
      if (auto ps = load_param_state(kind, v.dict(), it->second)) state[key_of(it->second)] = std::move(ps);
    }
  });
}

// --- RNG -----------------------------------------------------------------------------------------

at::Tensor get_rng_state() {
  auto gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  return gen.get_state();
}

void set_rng_state(const at::Tensor& state) {
  bridge::guard_loader("set_rng_state", [&] {
    if (!state.defined() || state.scalar_type() != at::kByte || state.numel() != 5056)
      fail(ErrorKind::kMismatch, "set_rng_state: expected a uint8 tensor of 5056 bytes (torch.get_rng_state()), got ",
           state.defined() ? str_cat(torch_dtype_name(state.scalar_type()), " of ", state.numel(), " elements")
                           : "undefined");
    auto gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_state(state.contiguous());
  });
}

// --- sampler -------------------------------------------------------------------------------------

ResumableSampler::ResumableSampler(int64_t size, bool shuffle, uint64_t seed)
    : size_(size), shuffle_(shuffle), seed_(seed) {
  if (size < 0) fail(ErrorKind::kInvalidArgument, "ResumableSampler: negative size");
  set_epoch(0);
}

void ResumableSampler::set_epoch(int64_t epoch) {
  epoch_ = epoch;
  index_ = 0;
  at::Tensor order;
  if (shuffle_) {
    at::Generator gen =
        at::make_generator<at::CPUGeneratorImpl>(seed_ ^ (static_cast<uint64_t>(epoch) * 0x9E3779B97F4A7C15ull));
    order = at::randperm(size_, gen, at::TensorOptions().dtype(at::kLong));
  } else {
    order = at::arange(size_, at::kLong);
  }
  order_ = make_storage(DType::kInt64, static_cast<size_t>(size_) * sizeof(int64_t));
  if (size_ > 0) std::memcpy(order_->data(), order.data_ptr<int64_t>(), order_->nbytes());
}

std::vector<int64_t> ResumableSampler::next(int64_t batch_size) {
  int64_t n = std::min(batch_size, size_ - index_);
  std::vector<int64_t> out;
  if (n <= 0) return out;
  const int64_t* p = reinterpret_cast<const int64_t*>(order_->data()) + index_;
  out.assign(p, p + n);
  index_ += n;
  return out;
}

Value ResumableSampler::state_dict() const {
  Value v = Value::new_dict();
  v.dict().set("epoch", epoch_);
  v.dict().set("index", index_);
  v.dict().set("size", size_);
  v.dict().set("shuffle", shuffle_);
  v.dict().set("seed", static_cast<int64_t>(seed_));
  TensorRef order;
  order.storage = order_;
  order.dtype = DType::kInt64;
  order.sizes = {size_};
  order.strides = {1};
  v.dict().set("order", Value(std::move(order)));
  return v;
}

void ResumableSampler::load_state_dict(const Value& state) {
  bridge::guard_loader("ResumableSampler.load_state_dict", [&] {
    int64_t size = state["size"].to_int();
    if (size != size_)
      fail(ErrorKind::kMismatch, "ResumableSampler: the checkpoint's dataset has ", size, " samples but this one has ",
           size_);
    bool shuffle = state["shuffle"].to_bool();
    auto seed = static_cast<uint64_t>(state["seed"].to_int());
    int64_t epoch = state["epoch"].to_int();
    int64_t index = state["index"].to_int();
    at::Tensor order = state["order"].to_tensor();
    if (order.scalar_type() != at::kLong || order.numel() != size_)
      fail(ErrorKind::kMismatch, "ResumableSampler: saved order has ", order.numel(), " entries, expected ", size_);
    if (index < 0 || index > size_)
      fail(ErrorKind::kCorruption, "ResumableSampler: position ", index, " outside [0, ", size_, "]");
    order = order.contiguous();
    auto copy = make_storage(DType::kInt64, static_cast<size_t>(size_) * sizeof(int64_t));
    if (size_ > 0) std::memcpy(copy->data(), order.data_ptr<int64_t>(), copy->nbytes());
    shuffle_ = shuffle;
    seed_ = seed;
    epoch_ = epoch;
    index_ = index;
    order_ = std::move(copy);
  });
}

}  // namespace ckpt
