// The ranks of a data-parallel ckpt-train run: under torchrun (RANK, WORLD_SIZE, MASTER_ADDR,
// MASTER_PORT set) a c10d Gloo group over them, else one process alone.
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <memory>

namespace c10d {
class ProcessGroup;
}

namespace ckpt::train {

class Ranks {
 public:
  // torchrun's environment when WORLD_SIZE is set (a group, plus a second one for the async
  // commits), else rank 0 of 1 with no group. Throws naming what is wrong with the environment.
  static Ranks from_env();
  int rank() const { return rank_; }
  int world() const { return world_; }
  bool distributed() const { return group_ != nullptr; }
  // Sums `t` (contiguous) in place over the ranks; bitwise the same on every rank and every run
  // for a fixed world size (Gloo's ring all-reduce). A no-op for one process.
  void sum(torch::Tensor& t) const;
  // Sets `t` (contiguous) on every rank to rank `root`'s.
  void broadcast(torch::Tensor& t, int root) const;
  c10d::ProcessGroup* group() const { return group_; }
  c10d::ProcessGroup* commit_group() const { return commit_group_; }
  // The restart of torchrun this process belongs to (TORCHELASTIC_RESTART_COUNT; 0 when unset).
  int64_t restart() const { return restart_; }

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
  int rank_ = 0, world_ = 1;
  int64_t restart_ = 0;
  c10d::ProcessGroup* group_ = nullptr;
  c10d::ProcessGroup* commit_group_ = nullptr;
};

// The seed of rank `rank`'s generator (dropout) from the run's seed and the step at which it is
// (re)derived: at the start of a run, and when a run resumes under another world size, whose
// per-rank RNG states cannot carry over.
uint64_t rank_seed(int64_t seed, int64_t step, int rank);

}  // namespace ckpt::train
