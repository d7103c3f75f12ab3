// The supported optimizers, one table entry each.
//
// Adding an optimizer means adding one entry to kOptimizers below (its group keys both ways,
// its per-parameter state both ways, the order torch 1.13 and torch 2.x write them in, where
// OneCycleLR cycles its momentum) plus its tests; the generic code in bridge/optimizer.cc and
// the schedulers need no change. The layouts are PyTorch's own (torch/optim/*.py, `defaults` and
// `state` as each release builds them), collected in doc/format.md, "Optimizer and scheduler
// layouts".
#include "bridge/optimizers.h"

#include <torch/optim.h>

#include <cmath>

#include "bridge/names.h"
#include "ckpt/tensor.h"
#include "util/errors.h"

namespace ckpt::bridge {
namespace {

using namespace torch::optim;

// --- reading one value, type-checked, naming its key --------------------------------------------

// A number Python may keep as a one-element tensor (torch 2.x's 'step', a tensor lr).
double number(const Value& v, const std::string& key) {
  if (v.is_tensor()) {
    if (v.tensor().numel() != 1)
      fail(ErrorKind::kMismatch, "'", key, "' is a tensor of ", v.tensor().numel(), " elements, not one number");
    return v.to_tensor().item<double>();
  }
  if (!v.is_int() && !v.is_float() && !v.is_bool())
    fail(ErrorKind::kMismatch, "'", key, "' is ", v.kind_name(), ", not a number");
  return v.is_bool() ? (v.to_bool() ? 1.0 : 0.0) : v.to_double();
}

int64_t integer(const Value& v, const std::string& key) {
  double d = number(v, key);
  if (!(std::fabs(d) < 9.2e18) || std::floor(d) != d)
    fail(ErrorKind::kMismatch, "'", key, "' is ", d, ", not an integer");
  return static_cast<int64_t>(d);
}

bool boolean(const Value& v, const std::string& key) {
  if (!v.is_bool()) fail(ErrorKind::kMismatch, "'", key, "' is ", v.kind_name(), ", not a bool");
  return v.to_bool();
}

// --- group keys ------------------------------------------------------------------------------------

// A float hyperparameter LibTorch holds. zero_int: Python's default is the int 0, so a zero is
// written as one.
template <class O, class Get, class Set>
GroupKey real(const char* name, Get get, Set set, bool zero_int = false) {
  GroupKey k;
  k.name = name;
  k.get = [get, zero_int](const OptimizerOptions& o) {
    double v = get(static_cast<const O&>(o));
    return zero_int && v == 0 ? Value(0) : Value(v);
  };
  k.set = [set, n = k.name](OptimizerOptions& o, const Value& v) { set(static_cast<O&>(o), number(v, n)); };
  return k;
}

template <class O, class Get, class Set>
GroupKey flag_held(const char* name, Get get, Set set) {
  GroupKey k;
  k.name = name;
  k.get = [get](const OptimizerOptions& o) { return Value(static_cast<bool>(get(static_cast<const O&>(o)))); };
  k.set = [set, n = k.name](OptimizerOptions& o, const Value& v) { set(static_cast<O&>(o), boolean(v, n)); };
  return k;
}

template <class O, class Get, class Set>
GroupKey whole(const char* name, Get get, Set set) {
  GroupKey k;
  k.name = name;
  k.get = [get](const OptimizerOptions& o) { return Value(static_cast<int64_t>(get(static_cast<const O&>(o)))); };
  k.set = [set, n = k.name](OptimizerOptions& o, const Value& v) { set(static_cast<O&>(o), integer(v, n)); };
  return k;
}

template <class O>
GroupKey betas() {
  GroupKey k;
  k.name = "betas";
  k.get = [](const OptimizerOptions& o) {
    auto b = static_cast<const O&>(o).betas();
    return Value::tuple({std::get<0>(b), std::get<1>(b)});
  };
  k.set = [](OptimizerOptions& o, const Value& v) {
    if (!v.is_tuple() && !v.is_list())
      fail(ErrorKind::kMismatch, "'betas' is ", v.kind_name(), ", not a pair of numbers");
    if (v.items().size() != 2) fail(ErrorKind::kMismatch, "'betas' has ", v.items().size(), " values, expected 2");
    static_cast<O&>(o).betas(std::make_tuple(number(v.items()[0], "betas[0]"), number(v.items()[1], "betas[1]")));
  };
  return k;
}

// A flag only Python's optimizer has; refuse(v) says why LibTorch cannot continue with v.
GroupKey python_flag(const char* name, Value in_113, Value in_2, std::function<std::string(const Value&)> refuse) {
  GroupKey k;
  k.name = name;
  k.in_113 = std::move(in_113);
  k.in_2 = std::move(in_2);
  k.refuse = std::move(refuse);
  return k;
}

// Fine when False or None (or absent); True asks for something LibTorch does not do.
std::function<std::string(const Value&)> only_false(std::string key, std::string why) {
  return [key, why](const Value& v) -> std::string {
    if (v.is_none()) return "";
    if (!v.is_bool()) return str_cat("'", key, "' is ", v.kind_name(), ", not a bool");
    return v.to_bool() ? str_cat(key, "=True ", why) : "";
  };
}

std::function<std::string(const Value&)> any_bool_or_none(std::string key) {
  return [key](const Value& v) -> std::string {
    return v.is_none() || v.is_bool() ? "" : str_cat("'", key, "' is ", v.kind_name(), ", not a bool or None");
  };
}

GroupKey maximize(const std::string& opt) {
  return python_flag("maximize", false, false,
                     only_false("maximize", "is not supported by LibTorch's " + opt +
                                                ", which only minimizes: save the run with maximize=False and a "
                                                "negated loss"));
}
GroupKey foreach_() {
  return python_flag("foreach", Value(), Value(), any_bool_or_none("foreach"));  // same math on CPU
}
GroupKey differentiable(const std::string& opt) {
  return python_flag("differentiable", false, false,
                     only_false("differentiable", "(autograd through the step) is not supported by LibTorch's " + opt));
}
GroupKey capturable(const std::string& opt) {
  return python_flag("capturable", false, false,
                     only_false("capturable", "is a CUDA-graph run that LibTorch's " + opt +
                                                  " cannot continue: save it with capturable=False"));
}
GroupKey fused(const std::string& opt, Value in_113) {
  return python_flag("fused", std::move(in_113), Value(),
                     only_false("fused", "is the fused CUDA kernel, which LibTorch's " + opt +
                                             " does not have: save the run with fused=False"));
}

// OneCycleLR's momentum: the group's 'momentum', or betas[0].
template <class O>
std::function<void(OptimizerOptions&, double)> momentum_key() {
  return [](OptimizerOptions& o, double m) { static_cast<O&>(o).momentum(m); };
}
template <class O>
std::function<void(OptimizerOptions&, double)> beta1() {
  return [](OptimizerOptions& o, double m) {
    auto& x = static_cast<O&>(o);
    x.betas(std::make_tuple(m, std::get<1>(x.betas())));
  };
}

// --- per-parameter state ---------------------------------------------------------------------------

Value step_tensor(int64_t step) {
  return Value(at::scalar_tensor(static_cast<double>(step), at::kFloat));
}

void put(Dict& d, const char* key, const at::Tensor& t) {
  if (t.defined()) d.set(key, Value(t));
}

int64_t step_of(const Dict& s) {
  const Value* v = s.find("step");
  if (v == nullptr || v->is_none()) return 0;
  double d = number(*v, "step");
  if (!(d >= 0 && d < 9.2e18)) fail(ErrorKind::kMismatch, "'step' is ", d);
  return static_cast<int64_t>(std::llround(d));
}

at::Tensor state_tensor(const Dict& s, const char* key, const at::Tensor& param) {
  const Value* v = s.find(key);
  if (v == nullptr || v->is_none()) return {};
  if (!v->is_tensor()) fail(ErrorKind::kMismatch, "state '", key, "' is ", v->kind_name(), ", not a tensor");
  at::Tensor t = v->to_tensor();
  if (t.is_floating_point() && param.is_floating_point()) t = t.to(param.dtype());
  // LBFGS keeps flat or scalar tensors (d, prev_flat_grad, H_diag): only per-parameter state
  // must match its parameter's shape.
  bool per_param = param.defined() && std::string(key) != "d" && std::string(key) != "prev_flat_grad";
  if (per_param && t.sizes() != param.sizes())
    fail(ErrorKind::kMismatch, "state '", key, "' has shape ", shape_str(t.sizes()), " but its parameter has ",
         shape_str(param.sizes()));
  return t.clone();  // the optimizer updates it in place; never alias the loaded file
}

std::deque<at::Tensor> tensor_deque(const Dict& s, const char* key) {
  std::deque<at::Tensor> out;
  if (const Value* v = s.find(key); v && !v->is_none()) {
    if (!v->is_list()) fail(ErrorKind::kMismatch, "state '", key, "' is ", v->kind_name(), ", not a list");
    for (const auto& x : v->items()) {
      if (!x.is_tensor()) fail(ErrorKind::kMismatch, "state '", key, "' holds ", x.kind_name(), ", not tensors");
      out.push_back(x.to_tensor().clone());
    }
  }
  return out;
}

Value tensor_list(const std::deque<at::Tensor>& xs) {
  std::vector<Value> items;
  for (const auto& t : xs) items.push_back(Value(t));
  return Value::list(items);
}

// Adam and AdamW keep the same state under the same keys.
template <class State>
Value save_adam_state(const OptimizerParamState& ps, TorchLayout) {
  const auto& s = static_cast<const State&>(ps);
  Value v = Value::new_dict();
  v.dict().set("step", step_tensor(s.step()));
  put(v.dict(), "exp_avg", s.exp_avg());
  put(v.dict(), "exp_avg_sq", s.exp_avg_sq());
  put(v.dict(), "max_exp_avg_sq", s.max_exp_avg_sq());
  return v;
}

template <class State>
std::unique_ptr<OptimizerParamState> load_adam_state(const Dict& s, const at::Tensor& p) {
  auto st = std::make_unique<State>();
  st->step(step_of(s));
  st->exp_avg(state_tensor(s, "exp_avg", p)).exp_avg_sq(state_tensor(s, "exp_avg_sq", p));
  st->max_exp_avg_sq(state_tensor(s, "max_exp_avg_sq", p));
  return st;
}

// --- the table ---------------------------------------------------------------------------------------

std::vector<OptimizerSpec> make_table() {
  std::vector<OptimizerSpec> t;

  {  // SGD (torch/optim/sgd.py)
    OptimizerSpec s;
    s.name = "SGD";
    s.matches = [](const Optimizer& o) { return dynamic_cast<const SGD*>(&o) != nullptr; };
    s.order_113 = {"lr", "momentum", "dampening", "weight_decay", "nesterov", "maximize", "foreach", "differentiable"};
    s.order_2 = s.order_113;
    s.order_2.push_back("fused");  // 2.3+
    using O = SGDOptions;
    s.keys = {
        real<O>(
            "lr", [](const O& o) { return o.lr(); }, [](O& o, double v) { o.lr(v); }),
        real<O>(
            "momentum", [](const O& o) { return o.momentum(); }, [](O& o, double v) { o.momentum(v); }, true),
        real<O>(
            "dampening", [](const O& o) { return o.dampening(); }, [](O& o, double v) { o.dampening(v); }, true),
        real<O>(
            "weight_decay", [](const O& o) { return o.weight_decay(); }, [](O& o, double v) { o.weight_decay(v); },
            true),
        flag_held<O>(
            "nesterov", [](const O& o) { return o.nesterov(); }, [](O& o, bool v) { o.nesterov(v); }),
        maximize(s.name),
        foreach_(),
        differentiable(s.name),
        fused(s.name, Value()),
    };
    s.set_momentum = momentum_key<O>();
    s.state_keys = {"momentum_buffer"};
    // 1.13 gives every stepped parameter {'momentum_buffer': None} when momentum is 0; 2.x and
    // LibTorch keep no state then.
    s.save_state = [](const OptimizerParamState& ps, TorchLayout) {
      Value v = Value::new_dict();
      put(v.dict(), "momentum_buffer", static_cast<const SGDParamState&>(ps).momentum_buffer());
      return v;
    };
    s.load_state = [](const Dict& d, const at::Tensor& p) -> std::unique_ptr<OptimizerParamState> {
      auto st = std::make_unique<SGDParamState>();
      st->momentum_buffer(state_tensor(d, "momentum_buffer", p));
      if (!st->momentum_buffer().defined()) return nullptr;
      return st;
    };
    t.push_back(std::move(s));
  }

  {  // Adam (torch/optim/adam.py). 2.7+ write decoupled_weight_decay, and AdamW is an Adam with it set.
    OptimizerSpec s;
    s.name = "Adam";
    s.matches = [](const Optimizer& o) { return dynamic_cast<const Adam*>(&o) != nullptr; };
    s.order_113 = {"lr",       "betas",   "eps",        "weight_decay",   "amsgrad",
                   "maximize", "foreach", "capturable", "differentiable", "fused"};
    s.order_2 = s.order_113;
    s.order_2.push_back("decoupled_weight_decay");
    using O = AdamOptions;
    s.keys = {
        real<O>(
            "lr", [](const O& o) { return o.lr(); }, [](O& o, double v) { o.lr(v); }),
        betas<O>(),
        real<O>(
            "eps", [](const O& o) { return o.eps(); }, [](O& o, double v) { o.eps(v); }),
        real<O>(
            "weight_decay", [](const O& o) { return o.weight_decay(); }, [](O& o, double v) { o.weight_decay(v); },
            true),
        flag_held<O>(
            "amsgrad", [](const O& o) { return o.amsgrad(); }, [](O& o, bool v) { o.amsgrad(v); }),
        maximize(s.name),
        foreach_(),
        capturable(s.name),
        differentiable(s.name),
        fused(s.name, false),
        python_flag("decoupled_weight_decay", false, false,
                    only_false("decoupled_weight_decay",
                               "is AdamW's math (torch 2.7+ writes AdamW as an Adam with it set): load this state "
                               "into torch::optim::AdamW")),
    };
    s.set_momentum = beta1<O>();
    s.momentum_is_beta1 = true;
    s.state_keys = {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"};
    s.save_state = save_adam_state<AdamParamState>;
    s.load_state = load_adam_state<AdamParamState>;
    t.push_back(std::move(s));
  }

  {  // AdamW (torch/optim/adamw.py; from 2.7 a subclass of Adam, in Adam's key order)
    OptimizerSpec s;
    s.name = "AdamW";
    s.matches = [](const Optimizer& o) { return dynamic_cast<const AdamW*>(&o) != nullptr; };
    s.order_113 = {"lr", "betas", "eps", "weight_decay", "amsgrad", "foreach", "maximize", "capturable"};
    s.order_2 = {"lr",         "betas",          "eps",   "weight_decay",          "amsgrad", "maximize", "foreach",
                 "capturable", "differentiable", "fused", "decoupled_weight_decay"};
    using O = AdamWOptions;
    s.keys = {
        real<O>(
            "lr", [](const O& o) { return o.lr(); }, [](O& o, double v) { o.lr(v); }),
        betas<O>(),
        real<O>(
            "eps", [](const O& o) { return o.eps(); }, [](O& o, double v) { o.eps(v); }),
        real<O>(
            "weight_decay", [](const O& o) { return o.weight_decay(); }, [](O& o, double v) { o.weight_decay(v); }),
        flag_held<O>(
            "amsgrad", [](const O& o) { return o.amsgrad(); }, [](O& o, bool v) { o.amsgrad(v); }),
        maximize(s.name),
        foreach_(),
        capturable(s.name),
        differentiable(s.name),
        fused(s.name, Value()),
        python_flag("decoupled_weight_decay", true, true,
                    [](const Value& v) -> std::string {
                      if (v.is_none()) return "";
                      if (!v.is_bool()) return str_cat("'decoupled_weight_decay' is ", v.kind_name(), ", not a bool");
                      return v.to_bool() ? ""
                                         : "decoupled_weight_decay=False is Adam's L2 decay, not AdamW's: load this "
                                           "state into torch::optim::Adam";
                    }),
    };
    s.set_momentum = beta1<O>();
    s.momentum_is_beta1 = true;
    s.state_keys = {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"};
    s.save_state = save_adam_state<AdamWParamState>;
    s.load_state = load_adam_state<AdamWParamState>;
    t.push_back(std::move(s));
  }

  {  // RMSprop (torch/optim/rmsprop.py). 'step': an int through 2.3, a float32 0-dim tensor from 2.5.
    OptimizerSpec s;
    s.name = "RMSprop";
    s.matches = [](const Optimizer& o) { return dynamic_cast<const RMSprop*>(&o) != nullptr; };
    s.order_113 = {"lr",           "momentum", "alpha",    "eps",           "centered",
                   "weight_decay", "foreach",  "maximize", "differentiable"};
    s.order_2 = {"lr",           "momentum",   "alpha",   "eps",      "centered",
                 "weight_decay", "capturable", "foreach", "maximize", "differentiable"};
    using O = RMSpropOptions;
    s.keys = {
        real<O>(
            "lr", [](const O& o) { return o.lr(); }, [](O& o, double v) { o.lr(v); }),
        real<O>(
            "momentum", [](const O& o) { return o.momentum(); }, [](O& o, double v) { o.momentum(v); }, true),
        real<O>(
            "alpha", [](const O& o) { return o.alpha(); }, [](O& o, double v) { o.alpha(v); }),
        real<O>(
            "eps", [](const O& o) { return o.eps(); }, [](O& o, double v) { o.eps(v); }),
        flag_held<O>(
            "centered", [](const O& o) { return o.centered(); }, [](O& o, bool v) { o.centered(v); }),
        real<O>(
            "weight_decay", [](const O& o) { return o.weight_decay(); }, [](O& o, double v) { o.weight_decay(v); },
            true),
        capturable(s.name),
        foreach_(),
        maximize(s.name),
        differentiable(s.name),
    };
    s.set_momentum = momentum_key<O>();
    s.state_keys = {"step", "square_avg", "momentum_buffer", "grad_avg"};
    s.save_state = [](const OptimizerParamState& ps, TorchLayout layout) {
      const auto& st = static_cast<const RMSpropParamState&>(ps);
      Value v = Value::new_dict();
      v.dict().set("step", layout == TorchLayout::kTorch113 ? Value(st.step()) : step_tensor(st.step()));
      put(v.dict(), "square_avg", st.square_avg());
      put(v.dict(), "momentum_buffer", st.momentum_buffer());
      put(v.dict(), "grad_avg", st.grad_avg());
      return v;
    };
    s.load_state = [](const Dict& d, const at::Tensor& p) -> std::unique_ptr<OptimizerParamState> {
      auto st = std::make_unique<RMSpropParamState>();
      st->step(step_of(d));
      st->square_avg(state_tensor(d, "square_avg", p));
      st->momentum_buffer(state_tensor(d, "momentum_buffer", p)).grad_avg(state_tensor(d, "grad_avg", p));
      return st;
    };
    t.push_back(std::move(s));
  }

  {  // Adagrad (torch/optim/adagrad.py)
    OptimizerSpec s;
    s.name = "Adagrad";
    s.matches = [](const Optimizer& o) { return dynamic_cast<const Adagrad*>(&o) != nullptr; };
    s.order_113 = {"lr", "lr_decay", "eps", "weight_decay", "initial_accumulator_value", "foreach", "maximize"};
    s.order_2 = s.order_113;
    s.order_2.insert(s.order_2.end(), {"differentiable", "fused"});  // 2.2+, 2.5+
    using O = AdagradOptions;
    s.keys = {
        real<O>(
            "lr", [](const O& o) { return o.lr(); }, [](O& o, double v) { o.lr(v); }),
        real<O>(
            "lr_decay", [](const O& o) { return o.lr_decay(); }, [](O& o, double v) { o.lr_decay(v); }, true),
        real<O>(
            "eps", [](const O& o) { return o.eps(); }, [](O& o, double v) { o.eps(v); }),
        real<O>(
            "weight_decay", [](const O& o) { return o.weight_decay(); }, [](O& o, double v) { o.weight_decay(v); },
            true),
        real<O>(
            "initial_accumulator_value", [](const O& o) { return o.initial_accumulator_value(); },
            [](O& o, double v) { o.initial_accumulator_value(v); }, true),
        foreach_(),
        maximize(s.name),
        differentiable(s.name),
        fused(s.name, Value()),
    };
    s.state_keys = {"step", "sum"};
    s.save_state = [](const OptimizerParamState& ps, TorchLayout) {
      const auto& st = static_cast<const AdagradParamState&>(ps);
      Value v = Value::new_dict();
      v.dict().set("step", step_tensor(st.step()));
      put(v.dict(), "sum", st.sum());
      return v;
    };
    s.load_state = [](const Dict& d, const at::Tensor& p) -> std::unique_ptr<OptimizerParamState> {
      auto st = std::make_unique<AdagradParamState>();
      st->step(step_of(d));
      st->sum(state_tensor(d, "sum", p));
      return st;
    };
    t.push_back(std::move(s));
  }

  {  // LBFGS (torch/optim/lbfgs.py): one state entry, for the first parameter; same in 1.13 and 2.x
    OptimizerSpec s;
    s.name = "LBFGS";
    s.matches = [](const Optimizer& o) { return dynamic_cast<const LBFGS*>(&o) != nullptr; };
    s.order_113 = {"lr",           "max_iter",      "max_eval", "tolerance_grad", "tolerance_change",
                   "history_size", "line_search_fn"};
    s.order_2 = s.order_113;
    using O = LBFGSOptions;
    GroupKey max_eval;
    max_eval.name = "max_eval";
    max_eval.get = [](const OptimizerOptions& oo) {
      const auto& o = static_cast<const O&>(oo);
      return Value(o.max_eval() ? *o.max_eval() : o.max_iter() * 5 / 4);
    };
    max_eval.set = [](OptimizerOptions& oo, const Value& v) {
      if (!v.is_none()) static_cast<O&>(oo).max_eval(integer(v, "max_eval"));
    };
    GroupKey line_search;
    line_search.name = "line_search_fn";
    line_search.get = [](const OptimizerOptions& oo) {
      const auto& o = static_cast<const O&>(oo);
      return o.line_search_fn() ? Value(*o.line_search_fn()) : Value();
    };
    line_search.set = [](OptimizerOptions& oo, const Value& v) {
      auto& o = static_cast<O&>(oo);
      if (v.is_none()) {
        o.line_search_fn(c10::nullopt);
      } else if (v.is_string() && v.to_string() == "strong_wolfe") {
        o.line_search_fn(v.to_string());
      } else {
        fail(ErrorKind::kMismatch, "'line_search_fn' is ", v.is_string() ? "'" + v.to_string() + "'" : v.kind_name(),
             ": None or 'strong_wolfe' expected");
      }
    };
    s.keys = {
        real<O>(
            "lr", [](const O& o) { return o.lr(); }, [](O& o, double v) { o.lr(v); }),
        whole<O>(
            "max_iter", [](const O& o) { return o.max_iter(); }, [](O& o, int64_t v) { o.max_iter(v); }),
        max_eval,
        real<O>(
            "tolerance_grad", [](const O& o) { return o.tolerance_grad(); },
            [](O& o, double v) { o.tolerance_grad(v); }),
        real<O>(
            "tolerance_change", [](const O& o) { return o.tolerance_change(); },
            [](O& o, double v) { o.tolerance_change(v); }),
        whole<O>(
            "history_size", [](const O& o) { return o.history_size(); }, [](O& o, int64_t v) { o.history_size(v); }),
        line_search,
    };
    s.state_keys = {"func_evals", "n_iter",         "d",         "t", "old_dirs", "old_stps", "ro",
                    "H_diag",     "prev_flat_grad", "prev_loss", "al"};
    s.save_state = [](const OptimizerParamState& ps, TorchLayout) {
      const auto& st = static_cast<const LBFGSParamState&>(ps);
      Value v = Value::new_dict();
      Dict& d = v.dict();
      // Python's order after a first step of more than one iteration (its 'al' appears then).
      d.set("func_evals", st.func_evals());
      d.set("n_iter", st.n_iter());
      if (st.al()) {
        std::vector<Value> al;
        for (const auto& x : *st.al()) al.push_back(x.defined() ? Value(x) : Value());
        d.set("al", Value::list(al));
      }
      put(d, "d", st.d());
      if (st.n_iter() > 0) d.set("t", st.t());
      d.set("old_dirs", tensor_list(st.old_dirs()));
      d.set("old_stps", tensor_list(st.old_stps()));
      d.set("ro", tensor_list(st.ro()));
      put(d, "H_diag", st.H_diag());
      put(d, "prev_flat_grad", st.prev_flat_grad());
      if (st.n_iter() > 0) d.set("prev_loss", st.prev_loss());
      return v;
    };
    s.load_state = [](const Dict& d, const at::Tensor& p) -> std::unique_ptr<OptimizerParamState> {
      auto st = std::make_unique<LBFGSParamState>();
      if (const Value* v = d.find("func_evals")) st->func_evals(integer(*v, "func_evals"));
      if (const Value* v = d.find("n_iter")) st->n_iter(integer(*v, "n_iter"));
      if (const Value* v = d.find("t"); v && !v->is_none()) st->t(number(*v, "t"));
      if (const Value* v = d.find("prev_loss"); v && !v->is_none()) st->prev_loss(number(*v, "prev_loss"));
      st->d(state_tensor(d, "d", p)).H_diag(state_tensor(d, "H_diag", at::Tensor()));
      st->prev_flat_grad(state_tensor(d, "prev_flat_grad", p));
      st->old_dirs(tensor_deque(d, "old_dirs")).old_stps(tensor_deque(d, "old_stps")).ro(tensor_deque(d, "ro"));
      if (const Value* v = d.find("al"); v && v->is_list()) {
        std::vector<at::Tensor> al;
        for (const auto& x : v->items()) al.push_back(x.is_none() ? at::Tensor() : x.to_tensor().clone());
        st->al(al);
      }
      return st;
    };
    t.push_back(std::move(s));
  }
  return t;
}

const std::vector<OptimizerSpec>& table() {
  static const std::vector<OptimizerSpec> kOptimizers = make_table();
  return kOptimizers;
}

}  // namespace

const GroupKey* OptimizerSpec::key(const std::string& name) const {
  for (const auto& k : keys)
    if (k.name == name) return &k;
  return nullptr;
}

const OptimizerSpec* find_optimizer_spec(const Optimizer& optimizer) {
  for (const auto& s : table())
    if (s.matches(optimizer)) return &s;
  return nullptr;
}

const OptimizerSpec& optimizer_spec(const Optimizer& optimizer) {
  if (const OptimizerSpec* s = find_optimizer_spec(optimizer)) return *s;
  std::vector<std::string> names;
  for (const auto& s : table()) names.push_back(s.name);
  fail(ErrorKind::kUnsupported, "optimizer type not supported (", join(names), " are)");
}

bool is_group_extra(const std::string& key) {
  // Python's schedulers (initial_lr; OneCycleLR's bounds), torch 2.6+'s named parameters.
  static const char* const kExtras[] = {"initial_lr",   "max_lr",        "min_lr",
                                        "max_momentum", "base_momentum", "param_names"};
  for (const char* e : kExtras)
    if (key == e) return true;
  return false;
}

}  // namespace ckpt::bridge
