// ckpt/training.h — LibTorch training state to and from PyTorch's state-dict layouts.
//
//   ckpt::Value sd = ckpt::state_dict(*model);               // model.state_dict() in Python
//   ckpt::load_state_dict(*model, sd);                       // strict: every problem at once
//   ckpt::Value osd = ckpt::optimizer_state_dict(adam);      // optimizer.state_dict() layout
//   ckpt::load_optimizer_state_dict(adam, osd);              // also from Python's files
//   at::Tensor rng = ckpt::get_rng_state();                  // torch.get_rng_state() bytes
// Thread safety: none beyond LibTorch's own: call these from the thread that trains; the RNG
// functions read and set the process-wide default CPU generator (under its lock).
//
// Light to include: LibTorch's module and optimizer types are only declared here (the caller's
// own <torch/...> includes define them); at::Tensor results need <ATen/core/Tensor.h> or
// ckpt/tensor.h at the call site.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "ckpt/value.h"

namespace torch {
namespace nn {
class Module;
}
namespace optim {
class Optimizer;
}
}  // namespace torch

namespace ckpt {

// Anything with state to checkpoint: samplers, metric trackers, user objects.
class Stateful {
 public:
  virtual ~Stateful() = default;
  virtual Value state_dict() const = 0;
  virtual void load_state_dict(const Value& state) = 0;
};

// --- modules -------------------------------------------------------------------------------------

// Parameters and buffers under Python's dotted names, in Python's order (each module's own
// parameters, then its buffers, then its children), as an OrderedDict carrying `_metadata`.
// The tensors are the module's own (no copy); save() writes them as they are.
Value state_dict(const torch::nn::Module& module);

struct LoadStateDictResult {
  std::vector<std::string> missing_keys;
  std::vector<std::string> unexpected_keys;
  std::vector<std::string> mismatched;  // "key: checkpoint float32 [3, 4] vs model float32 [4, 4]"
};

// Copies `state_dict` (a dict of tensors) into the module's parameters and buffers in place.
// strict: any missing or unexpected key, or any shape or dtype mismatch, throws one
// ckpt::Error (kMismatch) listing all of them, with a hint when one is likely (a prefix such as
// 'module.' to strip or add, the nearest key to a mistyped one, a whole checkpoint passed where
// its model entry was meant). Not strict: loads what matches and returns the rest.
LoadStateDictResult load_state_dict(torch::nn::Module& module, const Value& state_dict, bool strict = true);

// A copy of a state dict with `prefix` removed from (or added to) every key that has it.
Value strip_prefix(const Value& state_dict, const std::string& prefix);
Value add_prefix(const Value& state_dict, const std::string& prefix);

// --- optimizers ----------------------------------------------------------------------------------

// Which torch's layout a state dict that LibTorch built itself is written in. kTorch2 is what
// today's torch writes (2.14's keys and order: fused, decoupled_weight_decay, RMSprop's 'step'
// as a tensor, schedulers' _is_initial, no 'verbose'); kTorch113 is torch 1.13's. Both load in
// torch 1.13 and 2.x alike.
enum class TorchLayout { kTorch113, kTorch2 };

struct OptimizerLayoutRecord;  // what a loaded state dict looked like (bridge/optimizer_layout.h)

// How optimizer_state_dict() writes: in a TorchLayout, or exactly as a state dict read earlier
// was laid out — its group keys in their order with the values LibTorch does not hold (foreach,
// fused, differentiable, capturable, param_names, ...), its 'step' type, and 1.13's
// {'momentum_buffer': None} entries — so a 2.14 file stays a 2.14 file through load and save.
// load_optimizer_state_dict() returns the layout of what it read.
class OptimizerLayout {
 public:
  OptimizerLayout(TorchLayout layout = TorchLayout::kTorch2) : layout_(layout) {}
  TorchLayout layout() const { return layout_; }
  bool from_state_dict() const { return record_ != nullptr; }
  const OptimizerLayoutRecord* record() const { return record_.get(); }
  // The layout `state_dict` (an optimizer.state_dict()) is in, for optimizer_state_dict().
  static OptimizerLayout of(const Value& state_dict);

 private:
  TorchLayout layout_;
  std::shared_ptr<const OptimizerLayoutRecord> record_;
};

// Extra per-group keys a Python scheduler keeps in param_groups ('initial_lr', 'max_lr', ...).
using GroupExtras = std::vector<std::vector<std::pair<std::string, Value>>>;

// {'state': {param index: {...}}, 'param_groups': [{hyperparameters..., 'params': [...]}]}
// exactly as Python's optimizer.state_dict() for SGD, Adam, AdamW, RMSprop, Adagrad, LBFGS, in
// the layout asked for (see OptimizerLayout; by default torch 2.14's).
Value optimizer_state_dict(const torch::optim::Optimizer& optimizer, const GroupExtras& extras = {},
                           const OptimizerLayout& layout = {});

// Restores per-parameter state and every hyperparameter of every group from a state dict in
// the layout of torch 1.13 or any torch 2.x up to 2.14 (Python's files or ours), and returns
// that layout. Throws kMismatch, naming the group and key, when groups or parameter counts
// differ, when a key is unknown or has the wrong type, or when the state asks for math that
// LibTorch's optimizer cannot do: maximize=True, a fused, capturable or differentiable run,
// decoupled_weight_decay=True into Adam (that is AdamW: construct torch::optim::AdamW).
OptimizerLayout load_optimizer_state_dict(torch::optim::Optimizer& optimizer, const Value& state_dict);

// --- RNG -----------------------------------------------------------------------------------------

// The default CPU generator's state: the 5056 bytes torch.get_rng_state() returns.
at::Tensor get_rng_state();
void set_rng_state(const at::Tensor& state);

// --- data position ---------------------------------------------------------------------------------

// Yields a permutation of [0, size) per epoch (or the identity without shuffling), drawn from
// its own generator seeded by (seed, epoch) so the global RNG is untouched. Its state — epoch,
// position within the epoch and the epoch's order — resumes mid-epoch with exactly the
// remaining batches in the same order.
class ResumableSampler : public Stateful {
 public:
  ResumableSampler(int64_t size, bool shuffle, uint64_t seed = 0);

  // Starts `epoch` (its order is drawn now) at position 0.
  void set_epoch(int64_t epoch);
  // The next up to `batch_size` indices of the current epoch; empty once it is exhausted.
  std::vector<int64_t> next(int64_t batch_size);
  bool exhausted() const { return index_ >= size_; }
  int64_t epoch() const { return epoch_; }
  int64_t index() const { return index_; }
  int64_t size() const { return size_; }

  Value state_dict() const override;
  void load_state_dict(const Value& state) override;

 private:
  int64_t size_;
  bool shuffle_;
  uint64_t seed_;
  int64_t epoch_ = 0;
  int64_t index_ = 0;
  // The epoch's order, int64 [size]. Replaced (never changed in place) by set_epoch() and
  // load_state_dict(), so a state_dict() shares it safely.
  std::shared_ptr<StorageData> order_;
};

}  // namespace ckpt
