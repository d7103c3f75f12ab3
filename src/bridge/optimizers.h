// The table of supported optimizers: for each, everything ckpt knows about its state dict in
// torch 1.13's and torch 2.x's layouts. The generic code (bridge/optimizer.cc) only walks it.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "ckpt/training.h"

namespace torch::optim {
class OptimizerOptions;
class OptimizerParamState;
}  // namespace torch::optim

namespace ckpt::bridge {

// One key of a param group.
struct GroupKey {
  std::string name;
  // A hyperparameter LibTorch holds: read from the group's options, written into them (the
  // value has been type-checked by `set` itself; it throws kMismatch naming the key).
  std::function<Value(const torch::optim::OptimizerOptions&)> get;
  std::function<void(torch::optim::OptimizerOptions&, const Value&)> set;
  // A flag only Python has (foreach, fused, ...): what each layout writes when LibTorch built
  // the state, and the refusal ("" when fine) for a value whose math LibTorch does not do.
  Value in_113, in_2;
  std::function<std::string(const Value&)> refuse;
  bool held() const { return static_cast<bool>(get); }
};

struct OptimizerSpec {
  std::string name;  // Python's class name
  std::function<bool(const torch::optim::Optimizer&)> matches;
  // Group keys in the order each layout writes them; 'params' follows. Every name here has an
  // entry in `keys`.
  std::vector<std::string> order_113, order_2;
  std::vector<GroupKey> keys;
  // Per-parameter state keys, in the order Python writes them.
  std::vector<std::string> state_keys;
  std::function<Value(const torch::optim::OptimizerParamState&, TorchLayout)> save_state;
  // Null when the entry holds nothing LibTorch keeps (1.13's {'momentum_buffer': None}).
  std::function<std::unique_ptr<torch::optim::OptimizerParamState>(const Dict&, const at::Tensor& param)> load_state;
  // Where Python's OneCycleLR(cycle_momentum=True) cycles the momentum: the group's 'momentum'
  // (momentum_is_beta1 false) or betas[0] (true; OneCycleLR's 'use_beta1'). Null: the optimizer
  // has no momentum to cycle.
  std::function<void(torch::optim::OptimizerOptions&, double)> set_momentum;
  bool momentum_is_beta1 = false;

  const GroupKey* key(const std::string& name) const;
  const std::vector<std::string>& order(TorchLayout layout) const {
    return layout == TorchLayout::kTorch113 ? order_113 : order_2;
  }
};

// The entry for `optimizer`'s class; throws kUnsupported naming the supported ones.
const OptimizerSpec& optimizer_spec(const torch::optim::Optimizer& optimizer);
// The same, or null for a class the table does not have.
const OptimizerSpec* find_optimizer_spec(const torch::optim::Optimizer& optimizer);

// Keys a Python scheduler or torch 2.6+'s named parameters add to a group, kept as they are.
bool is_group_extra(const std::string& key);

}  // namespace ckpt::bridge
