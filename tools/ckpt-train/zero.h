// --shard-optimizer (ZeRO-1): the parameters, flattened in order, are split into one contiguous
// range per rank, each boundary rounded to a row of the parameter it falls in; each rank keeps
// Adam's state for its rows only, steps them (Adam is elementwise: the same bits as stepping the
// whole parameters), and the updated rows are broadcast from their owners. In a checkpoint the optimizer state is one Adam.state_dict() of
// all parameters, each parameter's state written by its owner alone: consolidated it is what
// Python's Adam loads, and a run resumes it under any number of ranks, with or without
// --shard-optimizer (each rank takes the state of the parameters it owns now).
#pragma once

#include <torch/optim/adam.h>

#include <memory>
#include <vector>

#include "ckpt/scheduler.h"
#include "ckpt/training.h"
#include "ranks.h"

namespace ckpt::train {

// Rows [r0, r1) of dimension 0 of parameter `param` (a 0-dim parameter: its one "row").
struct RowSlice {
  size_t param = 0;
  int64_t r0 = 0, r1 = 0;
};
// Each rank's rows, by rank: together they tile every parameter; the same answer on every rank.
std::vector<std::vector<RowSlice>> partition_rows(const std::vector<torch::Tensor>& params, int world);

class ShardedAdam : public ckpt::Stateful {
 public:
  ShardedAdam(std::vector<torch::Tensor> params, const torch::optim::AdamOptions& options, const Ranks& ranks);
  // The optimizer of this rank's partition (its param_groups carry the learning rate).
  torch::optim::Adam& local() { return *adam_; }
  // Steps this rank's rows (from the parameters' all-reduced gradients), then every rank's rows
  // are broadcast from it.
  void step();
  // The global Adam.state_dict(): this rank's rows of each parameter's state as shards (the
  // checkpoint's pieces; 'step' from the owner of row 0), the groups with every parameter's index.
  ckpt::Value state_dict() const override;
  // From a global Adam.state_dict() (tensors whole): the state of this rank's rows.
  void load_state_dict(const ckpt::Value& state) override;
  // The LR scheduler whose per-group entries (initial_lr, ...) the state dict carries, as
  // TrainingState does for a plain optimizer.
  void set_scheduler(ckpt::Scheduler* scheduler) { scheduler_ = scheduler; }

 private:
  std::vector<torch::Tensor> params_;
  std::vector<std::vector<RowSlice>> slices_;  // by rank
  std::vector<torch::Tensor> views_;           // this rank's rows, the local Adam's parameters
  const Ranks& ranks_;
  std::unique_ptr<torch::optim::Adam> adam_;
  ckpt::Scheduler* scheduler_ = nullptr;
};

}  // namespace ckpt::train
