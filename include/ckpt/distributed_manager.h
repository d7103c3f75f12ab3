// ckpt/distributed_manager.h — a run directory written by the ranks of a c10d::ProcessGroup:
// the run manager's cadence, retention, latest, best by metric, best_model.pt, preemption and
// verified fallback, with every checkpoint a distributed one (ckpt/distributed.h).
//
//   ckpt::dist::Group g = ckpt::dist::init_from_env();            // under torchrun
//   ckpt::ManagerOptions opts;  opts.save_every_steps = 500;  opts.keep_last = 3;
//   ckpt::dist::CheckpointManager manager("runs/exp1", *g.pg, opts);   // every rank
//   manager.restore(state);          // all ranks restore the same checkpoint, or all start fresh
//   while (state.step < total) {
//     ...train one data-parallel step...; ++state.step;
//     manager.step(state);           // every rank, every step
//     if (manager.preempted()) return 0;
//   }
//   manager.save(state);
//
// The run directory is the one CheckpointManager writes (index.json, latest, best_model.pt,
// .lock; doc/manager.md), except that each checkpoint is a directory NAME/ holding the rank files
// and metadata.json (doc/distributed.md), and there is no best.pt (the index names the best
// directory). `ckpt ls`, `ckpt verify` and `ckpt prune` read it as any run directory.
//
// Roles: rank 0 is the coordinator. It alone holds the run directory's lock, reads and writes
// the index, and commits (src/manager/run.cc, the protocol CheckpointManager uses, with the
// distributed save of src/dist/distributed.cc as its steps 2-4). Every decision the ranks must
// agree on — the checkpoint's name, whether the commit succeeded, which checkpoint to restore,
// whether a preemption signal arrived — is taken once and broadcast, so all ranks always save
// the same steps and restore the same checkpoint. Every collective waits at most `timeout`: a
// rank that died or hangs makes the others throw a ckpt::Error rather than wait forever.
//
// Async (ManagerOptions::async): save() copies the state's tensors and returns; a thread of
// each rank writes its share and commits, on ManagerInit::commit_group. One save is in flight
// at a time: the next save() (or wait()) waits for it and throws its error on every rank.
//
// With TrainingState (data parallel): the model, optimizer and scheduler states are replicated
// (written once in total, spread over the ranks), epoch, step and metrics come from rank 0, and
// the RNG state is kept per rank. Restored with the same world size, every rank gets its own RNG
// state back; with another world size everything else is restored exactly and the RNG states are
// left as they are (RestoreInfo::rng_restored is false): re-seed from the seed, the step and the
// rank.
//
// Thread safety: every member function except the accessors is collective: all ranks call it,
// in the same order, from one thread per rank.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "ckpt/distributed.h"
#include "ckpt/manager.h"

namespace ckpt {
struct TrainingState;
}

namespace ckpt::dist {

struct ManagerInit {
  // The bound on every collective of a save, a commit and a restore (see kDefaultTimeout).
  std::chrono::milliseconds timeout = kDefaultTimeout;
  // Async saves (ManagerOptions::async) run their collectives on this group — another group over
  // the same ranks (dist::new_group), so that they never interleave with the training's
  // collectives on the manager's group. Required for async; unused otherwise.
  c10d::ProcessGroup* commit_group = nullptr;
};

// What a restore did beyond RestoreResult.
struct RestoreInfo {
  int saved_world_size = 0;  // 0: nothing restored, or a single-process checkpoint
  bool rng_restored = false;
  LoadResult load;  // Value-level restores: per-rank entries under another world size
};

class CheckpointManager {
 public:
  // Collective. Rank 0 opens and locks the run directory and repairs what a crash left (the
  // steps 0-0d of src/manager/run.cc); every rank gets its outcome: a run directory in use
  // fails on every rank naming the lock's holder.
  CheckpointManager(std::string directory, c10d::ProcessGroup& pg, ManagerOptions options = {}, ManagerInit init = {});
  ~CheckpointManager();
  CheckpointManager(const CheckpointManager&) = delete;
  CheckpointManager& operator=(const CheckpointManager&) = delete;

  // --- with TrainingState (data parallel; see above)
  RestoreResult restore(TrainingState& state, const ResumeFrom& from = {}, bool strict = true);
  bool step(const TrainingState& state);       // saves when a cadence (or a preemption) says so
  bool end_epoch(const TrainingState& state);  // after validation set the metrics
  bool save(const TrainingState& state);

  // --- with values marked as for dist::save (shard(), per_rank(); plain tensors replicated)
  // Saves `state` as the checkpoint of `step`; `metrics` and `epoch` are rank 0's. A save at
  // the step of the latest checkpoint is a no-op and returns false (on every rank).
  bool save(const Value& state, int64_t step, int64_t epoch = 0, std::map<std::string, double> metrics = {});
  // Fills `template_` in place from the checkpoint `from` names (dist::load), falling back
  // past damaged ones as all ranks agree. A path in `from` may name a distributed checkpoint
  // directory or a single file (then every rank reads all of it into result.checkpoint and
  // the template is left alone).
  RestoreResult restore(Value& template_, const ResumeFrom& from = {});

  // Collective when save_every_minutes or handle_preemption is set (rank 0's clock and any
  // rank's signal decide for all); otherwise local and the same on every rank.
  bool should_save_step(int64_t step);
  bool should_save_epoch(int64_t epoch) const;
  // Blocks until the save in flight (async) is committed on every rank; throws its error.
  // Synchronous saves are committed when save() returns.
  void wait();
  // True once a preemption signal reached any rank and the checkpoint was saved on all ranks.
  bool preempted() const { return preempted_; }

  // Rank 0: the index's records; other ranks: empty.
  std::vector<CheckpointRecord> checkpoints() const;
  // Every rank: the checkpoint last committed or restored by this manager.
  std::optional<CheckpointRecord> latest() const;
  // Rank 0: the best by the monitored metric; other ranks: nullopt.
  std::optional<CheckpointRecord> best() const;
  const RestoreInfo& restore_info() const { return info_; }
  const std::string& directory() const { return dir_; }
  int rank() const { return rank_; }
  int world_size() const { return world_; }
  double blocked_seconds() const { return blocked_seconds_; }

  struct Impl;

 private:
  std::string dir_;
  int rank_ = 0, world_ = 1;
  std::unique_ptr<Impl> impl_;
  RestoreInfo info_;
  bool preempted_ = false;
  double blocked_seconds_ = 0;
  bool save_for_preemption(const TrainingState& state);
  bool preemption_due();
};

}  // namespace ckpt::dist
