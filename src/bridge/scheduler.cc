// The schedulers of torch/optim/lr_scheduler.py (1.13), formula for formula, so the rates are
// bit-identical to Python's.
#include "ckpt/scheduler.h"

#include <torch/optim.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <set>

#include "bridge/guard.h"
#include "bridge/optimizer_layout.h"
#include "bridge/optimizers.h"
#include "util/errors.h"

namespace ckpt {

namespace {

// A hyperparameter of a saved scheduler state. Missing, it is most likely the state of another
// scheduler kind (a StepLR state loaded into a CosineAnnealingLR): say so instead of crashing.
const Value& required(const Dict& d, const char* key) {
  const Value* v = d.find(key);
  if (v == nullptr)
    fail(ErrorKind::kMismatch, "scheduler state has no '", key,
         "' (is it the state of another kind of scheduler, or of another version?)");
  return *v;
}

// A step or epoch counter of a saved state: -1 (not started) up to 2^53, more than any run takes.
// A file's INT64_MAX would overflow at the next step (found by fuzz_state).
int64_t counter(const Dict& d, const char* key) {
  const int64_t v = required(d, key).to_int();
  if (v < -1 || v > (int64_t{1} << 53))
    fail(ErrorKind::kInvalidArgument, "scheduler state '", key, "' is ", v, ": out of range (-1 to 2^53)");
  return v;
}

}  // namespace
namespace {

using namespace torch::optim;

std::vector<Value> to_values(const std::vector<double>& xs) {
  std::vector<Value> out;
  for (double x : xs) out.push_back(x);
  return out;
}

// A list of rates: Python floats, or 0-dim tensors when the group's lr was a tensor (2.6+).
std::vector<double> to_doubles(const Value& v) {
  if (!v.is_list() && !v.is_tuple()) fail(ErrorKind::kMismatch, "expected a list of numbers, got ", v.kind_name());
  std::vector<double> out;
  for (const auto& x : v.items()) {
    if (x.is_tensor() && x.tensor().numel() == 1)
      out.push_back(x.to_tensor().item<double>());
    else
      out.push_back(x.to_double());
  }
  return out;
}

}  // namespace

// --- LRScheduler ---------------------------------------------------------------------------------

LRScheduler::LRScheduler(Optimizer& optimizer, int64_t last_epoch) : optimizer_(optimizer), last_epoch_(last_epoch) {
  base_lrs_ = group_lrs();
}

std::vector<double> LRScheduler::group_lrs() const {
  std::vector<double> lrs;
  for (const auto& g : optimizer_.param_groups()) lrs.push_back(g.options().get_lr());
  return lrs;
}

void LRScheduler::initial_step() {
  step_count_ = 0;
  step();
}

void LRScheduler::step() {
  ++step_count_;
  ++last_epoch_;
  std::vector<double> lrs = compute_lr();
  auto& groups = optimizer_.param_groups();
  for (size_t i = 0; i < groups.size() && i < lrs.size(); ++i) groups[i].options().set_lr(lrs[i]);
  last_lr_ = group_lrs();
}

namespace {

// The keys only Python uses: written back as they were read, never read here.
const std::set<std::string>& python_only_scheduler_keys() {
  static const std::set<std::string> keys = {"verbose", "_is_initial", "_get_lr_called_within_step", "default_min_lr"};
  return keys;
}

// Refuses a key `state` has that no torch from 1.13 to 2.14 writes for this scheduler.
void check_keys(const Dict& state, const std::vector<std::string>& known, const char* scheduler) {
  for (const auto& [k, v] : state) {
    bool ok = k.is_string() && (std::find(known.begin(), known.end(), k.to_string()) != known.end() ||
                                python_only_scheduler_keys().count(k.to_string()));
    if (!ok)
      fail(ErrorKind::kMismatch, "scheduler state has the key ", short_repr(k), ", which no torch from 1.13 to 2.14 ",
           "writes for a ", scheduler, " (is it the state of another kind of scheduler?)");
  }
}

}  // namespace

std::vector<std::string> LRScheduler::hyperparameter_keys() const {
  std::vector<std::string> keys;
  for (TorchLayout layout : {TorchLayout::kTorch113, TorchLayout::kTorch2}) {
    Dict d;
    save_hyperparameters(d, layout);
    for (const auto& [k, _] : d)
      if (std::find(keys.begin(), keys.end(), k.to_string()) == keys.end()) keys.push_back(k.to_string());
  }
  return keys;
}

Value LRScheduler::state_dict_as(TorchLayout layout) const {
  Value v = Value::new_dict();
  Dict& d = v.dict();
  save_hyperparameters(d, layout);
  d.set("base_lrs", Value::list(to_values(base_lrs_)));
  d.set("last_epoch", last_epoch_);
  if (layout == TorchLayout::kTorch113) d.set("verbose", false);  // gone in 2.7
  d.set("_step_count", step_count_);
  if (layout == TorchLayout::kTorch2) d.set("_is_initial", false);  // 2.9+
  d.set("_get_lr_called_within_step", false);
  d.set("_last_lr", Value::list(to_values(last_lr_)));
  if (loaded_.is_dict()) return bridge::conform_dict(v, loaded_, python_only_scheduler_keys(), {}, /*drop_all=*/true);
  return v;
}

void LRScheduler::load_state_dict(const Value& state) {
  bridge::guard_loader("scheduler load_state_dict", [&] {
    if (!state.is_dict()) fail(ErrorKind::kMismatch, "scheduler state is ", state.kind_name(), ", not a dict");
    std::vector<std::string> known = hyperparameter_keys();
    known.insert(known.end(), {"base_lrs", "last_epoch", "_step_count", "_last_lr"});
    load_hyperparameters(state.dict());  // a missing key first: it names what this kind needs
    check_keys(state.dict(), known, "scheduler of this kind");
    base_lrs_ = to_doubles(required(state.dict(), "base_lrs"));
    last_epoch_ = counter(state.dict(), "last_epoch");
    step_count_ = counter(state.dict(), "_step_count");
    if (const Value* v = state.dict().find("_last_lr")) last_lr_ = to_doubles(*v);
    if (base_lrs_.size() != optimizer_.param_groups().size())
      fail(ErrorKind::kMismatch, "scheduler state has ", base_lrs_.size(), " base_lrs but the optimizer has ",
           optimizer_.param_groups().size(), " parameter groups");
    loaded_ = state;
  });
}

GroupExtras LRScheduler::group_extras() const {
  GroupExtras out(base_lrs_.size());
  for (size_t i = 0; i < base_lrs_.size(); ++i) out[i].emplace_back("initial_lr", base_lrs_[i]);
  return out;
}

// --- StepLR --------------------------------------------------------------------------------------

StepLR::StepLR(Optimizer& optimizer, int64_t step_size, double gamma, int64_t last_epoch)
    : LRScheduler(optimizer, last_epoch), step_size_(step_size), gamma_(gamma) {
  if (step_size <= 0) fail(ErrorKind::kInvalidArgument, "StepLR: step_size must be positive");
  initial_step();
}

std::vector<double> StepLR::compute_lr() {
  std::vector<double> lrs = group_lrs();
  if (last_epoch_ == 0 || last_epoch_ % step_size_ != 0) return lrs;
  for (double& lr : lrs) lr = lr * gamma_;
  return lrs;
}

void StepLR::save_hyperparameters(Dict& d, TorchLayout layout) const {
  d.set("step_size", step_size_);
  d.set("gamma", gamma_);
}

void StepLR::load_hyperparameters(const Dict& d) {
  step_size_ = required(d, "step_size").to_int();
  gamma_ = required(d, "gamma").to_double();
}

// --- MultiStepLR ---------------------------------------------------------------------------------

MultiStepLR::MultiStepLR(Optimizer& optimizer, std::vector<int64_t> milestones, double gamma, int64_t last_epoch)
    : LRScheduler(optimizer, last_epoch), gamma_(gamma) {
  for (int64_t m : milestones) {
    auto it = std::find_if(milestones_.begin(), milestones_.end(), [&](const auto& p) { return p.first == m; });
    if (it == milestones_.end())
      milestones_.emplace_back(m, 1);
    else
      ++it->second;
  }
  initial_step();
}

std::vector<double> MultiStepLR::compute_lr() {
  std::vector<double> lrs = group_lrs();
  auto it = std::find_if(milestones_.begin(), milestones_.end(), [&](const auto& p) { return p.first == last_epoch_; });
  if (it == milestones_.end()) return lrs;
  for (double& lr : lrs) lr = lr * std::pow(gamma_, static_cast<double>(it->second));
  return lrs;
}

void MultiStepLR::save_hyperparameters(Dict& d, TorchLayout layout) const {
  Value counter{Dict(Dict::Flavor::kCounter)};
  for (const auto& [m, n] : milestones_) counter.dict().set(m, n);
  d.set("milestones", counter);
  d.set("gamma", gamma_);
}

void MultiStepLR::load_hyperparameters(const Dict& d) {
  milestones_.clear();
  const Value* m = &required(d, "milestones");
  if (m->is_dict()) {
    for (const auto& [k, v] : m->dict()) milestones_.emplace_back(k.to_int(), v.to_int());
  } else {
    for (const auto& x : m->items()) milestones_.emplace_back(x.to_int(), 1);
  }
  gamma_ = required(d, "gamma").to_double();
}

// --- ExponentialLR -------------------------------------------------------------------------------

ExponentialLR::ExponentialLR(Optimizer& optimizer, double gamma, int64_t last_epoch)
    : LRScheduler(optimizer, last_epoch), gamma_(gamma) {
  initial_step();
}

std::vector<double> ExponentialLR::compute_lr() {
  std::vector<double> lrs = group_lrs();
  if (last_epoch_ == 0) return lrs;
  for (double& lr : lrs) lr = lr * gamma_;
  return lrs;
}

void ExponentialLR::save_hyperparameters(Dict& d, TorchLayout layout) const {
  d.set("gamma", gamma_);
}
void ExponentialLR::load_hyperparameters(const Dict& d) {
  gamma_ = required(d, "gamma").to_double();
}

// --- CosineAnnealingLR ---------------------------------------------------------------------------

CosineAnnealingLR::CosineAnnealingLR(Optimizer& optimizer, int64_t T_max, double eta_min, int64_t last_epoch)
    : LRScheduler(optimizer, last_epoch), T_max_(T_max), eta_min_(eta_min) {
  if (T_max <= 0) fail(ErrorKind::kInvalidArgument, "CosineAnnealingLR: T_max must be positive");
  initial_step();
}

std::vector<double> CosineAnnealingLR::compute_lr() {
  std::vector<double> lrs = group_lrs();
  const double T = static_cast<double>(T_max_);
  const double e = static_cast<double>(last_epoch_);
  if (last_epoch_ == 0) return lrs;
  if (step_count_ == 1 && last_epoch_ > 0) {
    for (size_t i = 0; i < lrs.size(); ++i)
      lrs[i] = eta_min_ + (base_lrs_[i] - eta_min_) * (1 + std::cos(e * M_PI / T)) / 2;
    return lrs;
  }
  // Python's % on a negative left side rounds toward -inf; last_epoch - 1 - T_max < 0 early on.
  int64_t r = (last_epoch_ - 1 - T_max_) % (2 * T_max_);
  if (r < 0) r += 2 * T_max_;
  if (r == 0) {
    for (size_t i = 0; i < lrs.size(); ++i) lrs[i] = lrs[i] + (base_lrs_[i] - eta_min_) * (1 - std::cos(M_PI / T)) / 2;
    return lrs;
  }
  for (double& lr : lrs)
    lr = (1 + std::cos(M_PI * e / T)) / (1 + std::cos(M_PI * (e - 1) / T)) * (lr - eta_min_) + eta_min_;
  return lrs;
}

void CosineAnnealingLR::save_hyperparameters(Dict& d, TorchLayout layout) const {
  d.set("T_max", T_max_);
  // The default 0 is the int 0 up to torch 2.3, the float 0.0 from 2.5.
  d.set("eta_min", eta_min_ == 0 && layout == TorchLayout::kTorch113 ? Value(0) : Value(eta_min_));
}

void CosineAnnealingLR::load_hyperparameters(const Dict& d) {
  T_max_ = required(d, "T_max").to_int();
  eta_min_ = required(d, "eta_min").to_double();
}

// --- LinearLR ------------------------------------------------------------------------------------

LinearLR::LinearLR(Optimizer& optimizer, double start_factor, double end_factor, int64_t total_iters,
                   int64_t last_epoch)
    : LRScheduler(optimizer, last_epoch),
      start_factor_(start_factor),
      end_factor_(end_factor),
      total_iters_(total_iters) {
  if (start_factor > 1.0 || start_factor <= 0)
    fail(ErrorKind::kInvalidArgument, "LinearLR: start_factor must be in (0, 1]");
  if (end_factor > 1.0 || end_factor < 0) fail(ErrorKind::kInvalidArgument, "LinearLR: end_factor must be in [0, 1]");
  initial_step();
}

std::vector<double> LinearLR::compute_lr() {
  std::vector<double> lrs = group_lrs();
  if (last_epoch_ == 0) {
    for (double& lr : lrs) lr = lr * start_factor_;
    return lrs;
  }
  if (last_epoch_ > total_iters_) return lrs;
  for (double& lr : lrs)
    lr = lr *
         (1. + (end_factor_ - start_factor_) / (static_cast<double>(total_iters_) * start_factor_ +
                                                static_cast<double>(last_epoch_ - 1) * (end_factor_ - start_factor_)));
  return lrs;
}

void LinearLR::save_hyperparameters(Dict& d, TorchLayout layout) const {
  d.set("start_factor", start_factor_);
  d.set("end_factor", end_factor_);
  d.set("total_iters", total_iters_);
}

void LinearLR::load_hyperparameters(const Dict& d) {
  start_factor_ = required(d, "start_factor").to_double();
  end_factor_ = required(d, "end_factor").to_double();
  total_iters_ = required(d, "total_iters").to_int();
}

// --- OneCycleLR ----------------------------------------------------------------------------------

OneCycleLR::OneCycleLR(Optimizer& optimizer, const OneCycleLROptions& o, int64_t last_epoch)
    : LRScheduler(optimizer, last_epoch), total_steps_(o.total_steps()), cycle_momentum_(o.cycle_momentum()) {
  if (o.total_steps() <= 0) fail(ErrorKind::kInvalidArgument, "OneCycleLR: total_steps must be positive");
  if (o.pct_start() < 0 || o.pct_start() > 1)
    fail(ErrorKind::kInvalidArgument, "OneCycleLR: pct_start must be in [0, 1]");
  if (o.anneal_strategy() != "cos" && o.anneal_strategy() != "linear")
    fail(ErrorKind::kInvalidArgument, "OneCycleLR: anneal_strategy must be 'cos' or 'linear'");
  cos_ = o.anneal_strategy() == "cos";
  const double total = static_cast<double>(total_steps_);
  if (o.three_phase()) {
    phases_ = {{o.pct_start() * total - 1, true, "initial_lr", "max_lr", "max_momentum", "base_momentum"},
               {2 * o.pct_start() * total - 2, true, "max_lr", "initial_lr", "base_momentum", "max_momentum"},
               {total - 1, false, "initial_lr", "min_lr", "max_momentum", "max_momentum"}};
  } else {
    phases_ = {{o.pct_start() * total - 1, true, "initial_lr", "max_lr", "max_momentum", "base_momentum"},
               {total - 1, false, "max_lr", "min_lr", "base_momentum", "max_momentum"}};
  }
  size_t n = optimizer.param_groups().size();
  if (o.max_lr().size() != 1 && o.max_lr().size() != n)  // Python's _format_param
    fail(ErrorKind::kInvalidArgument, "OneCycleLR: expected ", n, " values for max_lr (one per param group), got ",
         o.max_lr().size());
  for (size_t i = 0; i < n; ++i) {
    double max_lr = o.max_lr().size() == 1 ? o.max_lr()[0] : o.max_lr()[i];
    initial_lr_.push_back(max_lr / o.div_factor());
    max_lr_.push_back(max_lr);
    min_lr_.push_back(initial_lr_.back() / o.final_div_factor());
  }
  if (cycle_momentum_) {
    // Where the momentum is (the group's 'momentum' or betas[0]) is the optimizer table's to say.
    const bridge::OptimizerSpec* spec = bridge::find_optimizer_spec(optimizer);
    if (spec == nullptr || !spec->set_momentum)
      fail(ErrorKind::kInvalidArgument, "OneCycleLR: optimizer must support momentum with cycle_momentum");
    use_beta1_ = spec->momentum_is_beta1;
    for (size_t i = 0; i < n; ++i) {
      max_momentum_.push_back(o.max_momentum());
      base_momentum_.push_back(o.base_momentum());
      if (last_epoch == -1) set_momentum(i, o.max_momentum());
    }
  }
  if (last_epoch == -1) base_lrs_ = initial_lr_;  // Python: group['initial_lr'] = max_lr / div_factor
  initial_step();
}

double OneCycleLR::anneal(double start, double end, double pct) const {
  if (cos_) {
    double cos_out = std::cos(M_PI * pct) + 1;
    return end + (start - end) / 2.0 * cos_out;
  }
  return (end - start) * pct + start;
}

double OneCycleLR::group_value(size_t g, const std::string& name) const {
  if (name == "initial_lr") return initial_lr_[g];
  if (name == "max_lr") return max_lr_[g];
  if (name == "min_lr") return min_lr_[g];
  if (name == "max_momentum") return max_momentum_[g];
  if (name == "base_momentum") return base_momentum_[g];
  fail(ErrorKind::kCorruption, "OneCycleLR: unknown phase value '", name, "'");
}

// A no-op for an optimizer without momentum (a restored state may say cycle_momentum=True).
void OneCycleLR::set_momentum(size_t g, double m) {
  const bridge::OptimizerSpec* spec = bridge::find_optimizer_spec(optimizer_);
  if (spec != nullptr && spec->set_momentum) spec->set_momentum(optimizer_.param_groups()[g].options(), m);
}

std::vector<double> OneCycleLR::compute_lr() {
  const double step_num = static_cast<double>(last_epoch_);
  if (last_epoch_ > total_steps_)
    fail(ErrorKind::kInvalidArgument, "OneCycleLR: tried to step ", last_epoch_ + 1, " times; total_steps is ",
         total_steps_);
  std::vector<double> lrs;
  for (size_t g = 0; g < optimizer_.param_groups().size(); ++g) {
    double start_step = 0, lr = 0, momentum = 0;
    for (size_t i = 0; i < phases_.size(); ++i) {
      const Phase& p = phases_[i];
      if (step_num <= p.end_step || i == phases_.size() - 1) {
        double pct = (step_num - start_step) / (p.end_step - start_step);
        lr = anneal(group_value(g, p.start_lr), group_value(g, p.end_lr), pct);
        if (cycle_momentum_) momentum = anneal(group_value(g, p.start_momentum), group_value(g, p.end_momentum), pct);
        break;
      }
      start_step = p.end_step;
    }
    lrs.push_back(lr);
    if (cycle_momentum_) set_momentum(g, momentum);
  }
  return lrs;
}

void OneCycleLR::save_hyperparameters(Dict& d, TorchLayout layout) const {
  d.set("total_steps", total_steps_);
  std::vector<Value> phases;
  for (const Phase& p : phases_) {
    Value ph = Value::new_dict();
    ph.dict().set("end_step", p.end_step_is_float ? Value(p.end_step) : Value(static_cast<int64_t>(p.end_step)));
    ph.dict().set("start_lr", p.start_lr);
    ph.dict().set("end_lr", p.end_lr);
    ph.dict().set("start_momentum", p.start_momentum);
    ph.dict().set("end_momentum", p.end_momentum);
    phases.push_back(ph);
  }
  d.set("_schedule_phases", Value::list(phases));
  d.set("_anneal_func_type", cos_ ? "cos" : "linear");
  d.set("cycle_momentum", cycle_momentum_);
  if (cycle_momentum_) d.set("use_beta1", use_beta1_);
}

std::vector<std::string> OneCycleLR::hyperparameter_keys() const {
  std::vector<std::string> keys = LRScheduler::hyperparameter_keys();
  if (std::find(keys.begin(), keys.end(), "use_beta1") == keys.end()) keys.push_back("use_beta1");
  return keys;
}

void OneCycleLR::load_hyperparameters(const Dict& d) {
  total_steps_ = required(d, "total_steps").to_int();
  phases_.clear();
  for (const auto& ph : required(d, "_schedule_phases").items()) {
    const Value& end = ph["end_step"];
    phases_.push_back({end.to_double(), end.is_float(), ph["start_lr"].to_string(), ph["end_lr"].to_string(),
                       ph["start_momentum"].to_string(), ph["end_momentum"].to_string()});
  }
  if (const Value* t = d.find("_anneal_func_type")) cos_ = t->to_string() == "cos";
  cycle_momentum_ = required(d, "cycle_momentum").to_bool();
  if (const Value* b = d.find("use_beta1")) use_beta1_ = b->to_bool();
}

GroupExtras OneCycleLR::group_extras() const {
  GroupExtras out(initial_lr_.size());
  for (size_t i = 0; i < initial_lr_.size(); ++i) {
    out[i].emplace_back("initial_lr", initial_lr_[i]);
    out[i].emplace_back("max_lr", max_lr_[i]);
    out[i].emplace_back("min_lr", min_lr_[i]);
    if (cycle_momentum_) {
      out[i].emplace_back("max_momentum", max_momentum_[i]);
      out[i].emplace_back("base_momentum", base_momentum_[i]);
    }
  }
  return out;
}

void OneCycleLR::load_group_extras(const Value& param_groups) {
  bridge::guard_loader("OneCycleLR: the restored param_groups", [&] {
    if (!param_groups.is_list() && !param_groups.is_tuple()) return;
    const auto& groups = param_groups.items();
    if (groups.size() != initial_lr_.size())
      fail(ErrorKind::kMismatch, "OneCycleLR: the optimizer state has ", groups.size(),
           " parameter groups, the scheduler ", initial_lr_.size());
    auto take = [&](std::vector<double>& into, const char* key) {
      for (size_t i = 0; i < groups.size(); ++i)
        if (groups[i].is_dict())
          if (const Value* v = groups[i].dict().find(key)) into[i] = v->to_double();
    };
    take(initial_lr_, "initial_lr");
    take(max_lr_, "max_lr");
    take(min_lr_, "min_lr");
    if (cycle_momentum_) {
      take(max_momentum_, "max_momentum");
      take(base_momentum_, "base_momentum");
    }
  });
}

// --- ReduceLROnPlateau ---------------------------------------------------------------------------

ReduceLROnPlateau::ReduceLROnPlateau(Optimizer& optimizer, const Options& o) : optimizer_(optimizer), o_(o) {
  if (o.factor() >= 1.0) fail(ErrorKind::kInvalidArgument, "ReduceLROnPlateau: factor must be < 1");
  if (o.mode() != "min" && o.mode() != "max")
    fail(ErrorKind::kInvalidArgument, "ReduceLROnPlateau: mode must be 'min' or 'max'");
  if (o.threshold_mode() != "rel" && o.threshold_mode() != "abs")
    fail(ErrorKind::kInvalidArgument, "ReduceLROnPlateau: threshold_mode must be 'rel' or 'abs'");
  min_lrs_.assign(optimizer.param_groups().size(), o.min_lr());
  mode_worse_ = o.mode() == "min" ? std::numeric_limits<double>::infinity() : -std::numeric_limits<double>::infinity();
  best_ = mode_worse_;
}

bool ReduceLROnPlateau::is_better(double a, double best) const {
  if (o_.mode() == "min" && o_.threshold_mode() == "rel") return a < best * (1. - o_.threshold());
  if (o_.mode() == "min") return a < best - o_.threshold();
  if (o_.threshold_mode() == "rel") return a > best * (o_.threshold() + 1.);
  return a > best + o_.threshold();
}

void ReduceLROnPlateau::step(double current) {
  last_epoch_ += 1;
  if (is_better(current, best_)) {
    best_ = current;
    num_bad_epochs_ = 0;
  } else {
    num_bad_epochs_ += 1;
  }
  if (cooldown_counter_ > 0) {
    cooldown_counter_ -= 1;
    num_bad_epochs_ = 0;
  }
  if (num_bad_epochs_ > o_.patience()) {
    auto& groups = optimizer_.param_groups();
    for (size_t i = 0; i < groups.size(); ++i) {
      double old_lr = groups[i].options().get_lr();
      double new_lr = std::max(old_lr * o_.factor(), min_lrs_[i]);
      if (old_lr - new_lr > o_.eps()) groups[i].options().set_lr(new_lr);
    }
    cooldown_counter_ = o_.cooldown();
    num_bad_epochs_ = 0;
  }
  last_lr_.clear();
  for (const auto& g : optimizer_.param_groups()) last_lr_.push_back(g.options().get_lr());
}

Value ReduceLROnPlateau::state_dict_as(TorchLayout layout) const {
  Value v = Value::new_dict();
  Dict& d = v.dict();
  std::vector<Value> min_lrs;
  for (double m : min_lrs_) min_lrs.push_back(m == 0 ? Value(0) : Value(m));
  std::vector<double> last_lr = last_lr_;
  if (last_lr.empty())
    for (const auto& g : optimizer_.param_groups()) last_lr.push_back(g.options().get_lr());
  if (layout == TorchLayout::kTorch113) {
    d.set("factor", o_.factor());
    d.set("min_lrs", Value::list(min_lrs));
    d.set("patience", o_.patience());
    d.set("verbose", false);
    d.set("cooldown", o_.cooldown());
    d.set("cooldown_counter", cooldown_counter_);
    d.set("mode", o_.mode());
    d.set("threshold", o_.threshold());
    d.set("threshold_mode", o_.threshold_mode());
    d.set("best", best_);
    d.set("num_bad_epochs", num_bad_epochs_);
    d.set("mode_worse", mode_worse_);
    d.set("eps", o_.eps());
    d.set("last_epoch", last_epoch_);
    if (!last_lr_.empty()) d.set("_last_lr", Value::list(to_values(last_lr_)));  // set by step() in 1.13
  } else {                                                                       // torch 2.14's __init__ order
    d.set("factor", o_.factor());
    d.set("default_min_lr", o_.min_lr() == 0 ? Value(0) : Value(o_.min_lr()));
    d.set("min_lrs", Value::list(min_lrs));
    d.set("patience", o_.patience());
    d.set("cooldown", o_.cooldown());
    d.set("eps", o_.eps());
    d.set("last_epoch", last_epoch_);
    d.set("_last_lr", Value::list(to_values(last_lr)));
    d.set("mode_worse", mode_worse_);
    d.set("mode", o_.mode());
    d.set("threshold", o_.threshold());
    d.set("threshold_mode", o_.threshold_mode());
    d.set("best", best_);
    d.set("cooldown_counter", cooldown_counter_);
    d.set("num_bad_epochs", num_bad_epochs_);
  }
  if (loaded_.is_dict()) return bridge::conform_dict(v, loaded_, python_only_scheduler_keys(), {}, /*drop_all=*/true);
  return v;
}

void ReduceLROnPlateau::step() {
  fail(ErrorKind::kInvalidArgument, "ReduceLROnPlateau::step() needs the monitored metric: call step(metric)");
}

void ReduceLROnPlateau::load_state_dict(const Value& s) {
  bridge::guard_loader("ReduceLROnPlateau.load_state_dict", [&] {
    if (!s.is_dict()) fail(ErrorKind::kMismatch, "scheduler state is ", s.kind_name(), ", not a dict");
    std::vector<std::string> known;
    for (TorchLayout layout : {TorchLayout::kTorch113, TorchLayout::kTorch2}) {
      Value keys = state_dict_as(layout);
      for (const auto& [k, _] : keys.dict()) known.push_back(k.to_string());
    }
    known.push_back("_last_lr");
    check_keys(s.dict(), known, "ReduceLROnPlateau");
    o_.factor(s["factor"].to_double()).patience(s["patience"].to_int()).cooldown(s["cooldown"].to_int());
    o_.mode(s["mode"].to_string())
        .threshold(s["threshold"].to_double())
        .threshold_mode(s["threshold_mode"].to_string());
    o_.eps(s["eps"].to_double());
    min_lrs_ = to_doubles(s["min_lrs"]);
    cooldown_counter_ = counter(s.dict(), "cooldown_counter");
    best_ = s["best"].to_double();
    num_bad_epochs_ = counter(s.dict(), "num_bad_epochs");
    mode_worse_ = s["mode_worse"].to_double();
    last_epoch_ = counter(s.dict(), "last_epoch");
    if (const Value* v = s.dict().find("_last_lr")) last_lr_ = to_doubles(*v);
    if (min_lrs_.size() != optimizer_.param_groups().size())
      fail(ErrorKind::kMismatch, "scheduler state has ", min_lrs_.size(), " min_lrs but the optimizer has ",
           optimizer_.param_groups().size(), " parameter groups");
    loaded_ = s;
  });
}

}  // namespace ckpt
