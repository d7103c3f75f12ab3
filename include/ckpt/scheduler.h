// ckpt/scheduler.h — learning-rate schedulers that follow Python's LR curves exactly and save
// their state under Python's keys (last_epoch, _step_count, base_lrs, _last_lr, ...), so a
// scheduler's state moves between Python and C++ runs.
//
//   torch::optim::SGD sgd(model->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));
//   ckpt::StepLR sched(sgd, /*step_size=*/30, /*gamma=*/0.1);
//   for (...) { ...; sgd.step(); sched.step(); }
//
// As in Python, constructing a scheduler performs its first step (last_epoch becomes 0) and
// step() is called after optimizer.step(). Light to include: the optimizer type is only declared
// (ckpt/training.h); the caller's <torch/optim/...> includes define it.
#pragma once

#include <torch/arg.h>  // TORCH_ARG, as LibTorch's own options use (includes only <utility>)

#include <string>
#include <vector>

#include "ckpt/training.h"

namespace ckpt {

// Generic training code steps any scheduler the same way:
//   scheduler->step(val_loss);   // after optimizer.step(); epoch/step schedulers ignore the metric
// ReduceLROnPlateau needs the metric (needs_metric() is true; its step() without one throws).
// Thread safety: none; a scheduler and its optimizer are used from one thread.
class Scheduler : public Stateful {
 public:
  virtual void step() = 0;
  virtual void step(double metric) { step(); }
  virtual bool needs_metric() const { return false; }
  virtual std::vector<double> get_last_lr() const = 0;
  // Keys Python's scheduler keeps in the optimizer's param_groups ('initial_lr', ...), so a
  // checkpoint written here resumes with Python's scheduler too.
  virtual GroupExtras group_extras() const { return {}; }
  // The other half: a restored optimizer's param_groups carry those keys, and as in Python they
  // win over what the scheduler was constructed with (a OneCycleLR built with other bounds
  // continues the restored run's schedule). TrainingState::restore calls it.
  virtual void load_group_extras(const Value& param_groups) {}
  // The state in a layout: torch 2.x's (2.14's keys and order: what state_dict() writes) or
  // torch 1.13's. A state restored by load_state_dict() is written back as it was read — its
  // keys, their order and the values only Python uses (verbose, _is_initial, ...) — whatever
  // the layout asked for.
  virtual Value state_dict_as(TorchLayout layout) const { return state_dict(); }
};

// The base of the epoch/step-driven schedulers (Python's _LRScheduler).
class LRScheduler : public Scheduler {
 public:
  using Scheduler::step;
  void step() override;
  std::vector<double> get_last_lr() const override { return last_lr_; }
  int64_t last_epoch() const { return last_epoch_; }
  Value state_dict() const override { return state_dict_as(TorchLayout::kTorch2); }
  Value state_dict_as(TorchLayout layout) const override;
  // Accepts the layouts of torch 1.13 to 2.14; a key none of them has, or a missing one (the
  // state of another scheduler kind), is refused naming the key.
  void load_state_dict(const Value& state) override;
  GroupExtras group_extras() const override;

 protected:
  LRScheduler(torch::optim::Optimizer& optimizer, int64_t last_epoch);
  void initial_step();
  // Python's get_lr(): the chainable form, reading the groups' current rates.
  virtual std::vector<double> compute_lr() = 0;
  virtual void save_hyperparameters(Dict& d, TorchLayout layout) const = 0;
  virtual void load_hyperparameters(const Dict& d) = 0;
  std::vector<double> group_lrs() const;
  // Keys this scheduler's hyperparameters may have in any layout (for refusing unknown keys).
  virtual std::vector<std::string> hyperparameter_keys() const;

  torch::optim::Optimizer& optimizer_;
  std::vector<double> base_lrs_;
  std::vector<double> last_lr_;
  int64_t last_epoch_;
  int64_t step_count_ = 0;
  Value loaded_;  // the state last loaded (None: built here); its layout is written back
};

class StepLR : public LRScheduler {
 public:
  StepLR(torch::optim::Optimizer& optimizer, int64_t step_size, double gamma = 0.1, int64_t last_epoch = -1);

 private:
  std::vector<double> compute_lr() override;
  void save_hyperparameters(Dict& d, TorchLayout layout) const override;
  void load_hyperparameters(const Dict& d) override;
  int64_t step_size_;
  double gamma_;
};

class MultiStepLR : public LRScheduler {
 public:
  MultiStepLR(torch::optim::Optimizer& optimizer, std::vector<int64_t> milestones, double gamma = 0.1,
              int64_t last_epoch = -1);

 private:
  std::vector<double> compute_lr() override;
  void save_hyperparameters(Dict& d, TorchLayout layout) const override;
  void load_hyperparameters(const Dict& d) override;
  std::vector<std::pair<int64_t, int64_t>> milestones_;  // collections.Counter: milestone -> count
  double gamma_;
};

class ExponentialLR : public LRScheduler {
 public:
  ExponentialLR(torch::optim::Optimizer& optimizer, double gamma, int64_t last_epoch = -1);

 private:
  std::vector<double> compute_lr() override;
  void save_hyperparameters(Dict& d, TorchLayout layout) const override;
  void load_hyperparameters(const Dict& d) override;
  double gamma_;
};

class CosineAnnealingLR : public LRScheduler {
 public:
  CosineAnnealingLR(torch::optim::Optimizer& optimizer, int64_t T_max, double eta_min = 0, int64_t last_epoch = -1);

 private:
  std::vector<double> compute_lr() override;
  void save_hyperparameters(Dict& d, TorchLayout layout) const override;
  void load_hyperparameters(const Dict& d) override;
  int64_t T_max_;
  double eta_min_;
};

// Linear warm-up (or decay) of the rate by a factor going from start_factor to end_factor.
class LinearLR : public LRScheduler {
 public:
  LinearLR(torch::optim::Optimizer& optimizer, double start_factor = 1.0 / 3, double end_factor = 1.0,
           int64_t total_iters = 5, int64_t last_epoch = -1);

 private:
  std::vector<double> compute_lr() override;
  void save_hyperparameters(Dict& d, TorchLayout layout) const override;
  void load_hyperparameters(const Dict& d) override;
  double start_factor_, end_factor_;
  int64_t total_iters_;
};

// As Python's OneCycleLR(optimizer, max_lr, total_steps, ...): max_lr is one rate for every
// param group, or one per group (OneCycleLROptions({0.1, 0.01}, 1000)), whose count must match.
struct OneCycleLROptions {
  OneCycleLROptions(double max_lr, int64_t total_steps) : max_lr_({max_lr}), total_steps_(total_steps) {}
  OneCycleLROptions(std::vector<double> max_lr, int64_t total_steps)
      : max_lr_(std::move(max_lr)), total_steps_(total_steps) {}
  TORCH_ARG(std::vector<double>, max_lr);  // one value (every group) or one per group
  TORCH_ARG(int64_t, total_steps);
  TORCH_ARG(double, pct_start) = 0.3;
  TORCH_ARG(std::string, anneal_strategy) = "cos";  // or "linear"
  TORCH_ARG(bool, cycle_momentum) = true;
  TORCH_ARG(double, base_momentum) = 0.85;
  TORCH_ARG(double, max_momentum) = 0.95;
  TORCH_ARG(double, div_factor) = 25.0;
  TORCH_ARG(double, final_div_factor) = 1e4;
  TORCH_ARG(bool, three_phase) = false;
};

// Python's OneCycleLR. Its state is saved the torch 2.x way (`_anneal_func_type`), which torch
// 1.13 loads too; torch 1.13's own OneCycleLR state pickles a bound method and is refused by
// any safe loader (construct the scheduler with the same arguments instead).
class OneCycleLR : public LRScheduler {
 public:
  OneCycleLR(torch::optim::Optimizer& optimizer, const OneCycleLROptions& options, int64_t last_epoch = -1);
  GroupExtras group_extras() const override;
  void load_group_extras(const Value& param_groups) override;

 private:
  struct Phase {
    double end_step;
    bool end_step_is_float;
    std::string start_lr, end_lr, start_momentum, end_momentum;
  };
  std::vector<double> compute_lr() override;
  void save_hyperparameters(Dict& d, TorchLayout layout) const override;
  void load_hyperparameters(const Dict& d) override;
  std::vector<std::string> hyperparameter_keys() const override;
  double anneal(double start, double end, double pct) const;
  double group_value(size_t group, const std::string& name) const;
  void set_momentum(size_t group, double momentum);

  int64_t total_steps_;
  std::vector<Phase> phases_;
  bool cycle_momentum_;
  bool use_beta1_ = false;
  bool cos_;
  std::vector<double> initial_lr_, max_lr_, min_lr_, max_momentum_, base_momentum_;
};

struct ReduceLROnPlateauOptions {
  TORCH_ARG(std::string, mode) = "min";
  TORCH_ARG(double, factor) = 0.1;
  TORCH_ARG(int64_t, patience) = 10;
  TORCH_ARG(double, threshold) = 1e-4;
  TORCH_ARG(std::string, threshold_mode) = "rel";
  TORCH_ARG(int64_t, cooldown) = 0;
  TORCH_ARG(double, min_lr) = 0;
  TORCH_ARG(double, eps) = 1e-8;
};

// Reduces the rate when a metric stops improving. step(metric) once per evaluation.
class ReduceLROnPlateau : public Scheduler {
 public:
  using Options = ReduceLROnPlateauOptions;
  explicit ReduceLROnPlateau(torch::optim::Optimizer& optimizer, const Options& options = Options());
  void step(double metric) override;
  void step() override;  // throws kInvalidArgument: the metric is required
  bool needs_metric() const override { return true; }
  std::vector<double> get_last_lr() const override { return last_lr_; }
  Value state_dict() const override { return state_dict_as(TorchLayout::kTorch2); }
  Value state_dict_as(TorchLayout layout) const override;
  void load_state_dict(const Value& state) override;

 private:
  bool is_better(double a, double best) const;
  torch::optim::Optimizer& optimizer_;
  Options o_;
  std::vector<double> min_lrs_;
  int64_t cooldown_counter_ = 0;
  double best_;
  double mode_worse_;
  int64_t num_bad_epochs_ = 0;
  int64_t last_epoch_ = 0;
  std::vector<double> last_lr_;
  Value loaded_;
};

}  // namespace ckpt
