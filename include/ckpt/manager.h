// ckpt/manager.h — a run directory that decides where checkpoints go, which are kept, which is
// best, and which to resume from.
//
//   ckpt::ManagerOptions opts;
//   opts.save_every_steps = 500;  opts.keep_last = 3;
//   opts.keep_best = 1;           opts.monitor = "val_loss";  opts.mode = ckpt::Mode::kMin;
//   ckpt::CheckpointManager manager("runs/exp1", opts);
//   manager.restore(state);                 // newest checkpoint that verifies; fresh start if none
//   while (state.step < total) {
//     ...train one step...; ++state.step;
//     manager.step(state);                  // saves when a cadence says so
//   }
//   manager.save(state);                    // at the end
//   manager.wait();                         // async saves are durable, or their error is thrown
//
// The directory (see "Run directory" in the README):
//   epoch=003-step=001500.pt   one torch.save-compatible file per checkpoint (name_template)
//   index.json                 committed checkpoints, in commit order, with epoch, step,
//                              metrics, size, time and content CRC; which is latest and best
//   latest                     the latest checkpoint's file name (text), for people and scripts
//   best.pt                    the best checkpoint by `monitor` (a hard link, else a copy)
//   best_model.pt              its model entry alone: a plain state dict for load_state_dict
//   .lock                      held by the one process writing the directory
// A checkpoint is committed once index.json names it; the commit protocol is written out at the
// top of src/manager/checkpoint_manager.cc. Only names the manager's own parser recognises are
// ever deleted; anything else in the directory is left alone.
//
// Thread safety: one CheckpointManager is used from one thread. Its background commits (async)
// run on a writer thread and call on_commit there. Reading a run directory (list_run,
// verify_run) is safe while a manager writes it.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "ckpt/serialize.h"

namespace ckpt {

struct TrainingState;  // ckpt/checkpoint.h (LibTorch)

enum class Mode { kMin, kMax };  // is a smaller or a larger monitored metric better

// Which checkpoints to keep. Retention runs only after a new checkpoint is committed; the
// policies combine (a checkpoint is kept when any of them keeps it). Whatever the policy, the
// latest checkpoint, the best one and the newest one that verifies are never deleted, and a
// checkpoint still being written is not in the index yet. 0 disables a policy; all zero keeps
// everything.
struct RetentionPolicy {
  int keep_last = 0;  // the N most recently committed
  int keep_best = 0;  // the K best by `monitor` (checkpoints without that metric are not ranked)
  std::string monitor;
  Mode mode = Mode::kMin;
  // Milestones: the first checkpoint at or past each multiple of N epochs / N steps / T
  // minutes of wall-clock time since the run directory was created.
  int64_t keep_every_epochs = 0;
  int64_t keep_every_steps = 0;
  double keep_every_minutes = 0;

  bool keeps_everything() const {
    return keep_last <= 0 && keep_best <= 0 && keep_every_epochs <= 0 && keep_every_steps <= 0 &&
           keep_every_minutes <= 0;
  }
};

struct ManagerOptions {
  // --- when to save (step() and end_epoch() apply these; save() always saves)
  int64_t save_every_steps = 0;   // when state.step % N == 0
  int64_t save_every_epochs = 0;  // at end_epoch() when (epoch + 1) % N == 0
  double save_every_minutes = 0;  // at step() once T minutes passed since the last save

  // --- what to keep
  int keep_last = 0;
  int keep_best = 0;
  std::string monitor;  // a metric name, e.g. "val_loss"; empty: no best model
  Mode mode = Mode::kMin;
  int64_t keep_every_epochs = 0;
  int64_t keep_every_steps = 0;
  double keep_every_minutes = 0;

  // --- files
  // {step} is required (names must differ per checkpoint); {epoch} and any metric may appear.
  // "{name:0N}" pads an integer to N digits, "{name:.Nf}" prints N decimals; names sort when
  // the widths suffice. ".pt" is appended.
  std::string name_template = "epoch={epoch:03}-step={step:06}";
  // The checkpoint entry written to best_model.pt; empty: no best_model.pt.
  std::string model_key = "model_state";
  // Keys of a checkpoint dict the manager reads when it adopts or lists a file (TrainingState's).
  std::string step_key = "step", epoch_key = "epoch", metrics_key = "metrics";

  // --- how
  bool async = false;        // write in the background (AsyncSaver); training waits only for a copy
  size_t max_in_flight = 1;  // async saves queued or being written
  bool durable = true;       // fsync files and directory (false only for tests and scratch runs)
  bool verify_on_restore = true;
  // Turn SIGTERM and SIGINT (and SIGUSR1 if asked) into "save at the next step() or
  // end_epoch(), then preempted() is true"; a second signal ends the process at once. The
  // handlers are in place before the constructor touches the run directory.
  bool handle_preemption = false;
  bool preempt_on_sigusr1 = false;

  ProgressFn progress;  // bytes done / total of saves and loads
  // Default: "ckpt: warning: ..." on stderr. With async saves it may run on the writer thread,
  // inside a commit: it must not call back into the manager.
  std::function<void(const std::string&)> warn;
  io::Env* env = nullptr;  // nullptr: the default (POSIX) one

  RetentionPolicy retention() const;
};

// One committed checkpoint, as index.json records it.
struct CheckpointRecord {
  std::string file;  // name inside the run directory
  std::string path;  // run directory + "/" + file
  int64_t epoch = 0;
  int64_t step = 0;
  std::map<std::string, double> metrics;
  uint64_t bytes = 0;
  double unix_time = 0;  // commit time, seconds since the epoch
  uint32_t content_crc = 0;
  uint64_t seq = 0;  // commit order
  bool latest = false;
  bool best = false;
  std::string damaged;  // non-empty: why the last restore skipped it
};

// What to resume from: "latest" (default), "best", "none", "step=N", or a path to any
// checkpoint file (also one written by Python's torch.save).
struct ResumeFrom {
  enum class Kind { kLatest, kBest, kNone, kStep, kPath };
  Kind kind = Kind::kLatest;
  int64_t step = 0;
  std::string path;
  static ResumeFrom latest() { return {}; }
  static ResumeFrom best() { return {Kind::kBest, 0, {}}; }
  static ResumeFrom none() { return {Kind::kNone, 0, {}}; }
  static ResumeFrom at_step(int64_t step) { return {Kind::kStep, step, {}}; }
  static ResumeFrom file(std::string path) { return {Kind::kPath, 0, std::move(path)}; }
  static ResumeFrom parse(const std::string& text);  // the four forms above
};

struct RestoreResult {
  bool restored = false;             // false: nothing to resume from (a fresh start)
  CheckpointRecord record;           // what was restored (path only, for a file outside the run)
  std::vector<std::string> skipped;  // "FILE: problem" for each damaged checkpoint passed over
  Value checkpoint;                  // the loaded checkpoint (Value-level restore only)
  explicit operator bool() const { return restored; }
};

class CheckpointManager {
 public:
  // Opens (creating it if needed) and locks the run directory: a second process on the same
  // directory fails here with an error naming the holder's pid. Removes temp files a crash left
  // behind (only the manager's own, by name), finishes an interrupted retention pass, and adopts
  // a checkpoint whose commit was interrupted after its file was durable.
  CheckpointManager(std::string directory, ManagerOptions options = {});
  // Waits for background saves; never throws (an error nobody collected is printed).
  ~CheckpointManager();
  CheckpointManager(const CheckpointManager&) = delete;
  CheckpointManager& operator=(const CheckpointManager&) = delete;

  // --- with TrainingState (link ckpt::torch)
  // Restores the newest committed checkpoint that verifies (or `from`) into `state`. A damaged
  // or missing one is skipped with a warning naming the file and the problem, and the next older
  // one is tried. A checkpoint that loads but does not fit the state (kMismatch) is an error.
  RestoreResult restore(TrainingState& state, const ResumeFrom& from = {}, bool strict = true);
  // Saves if a cadence says so (or a preemption signal arrived). Returns whether it saved.
  bool step(const TrainingState& state);
  // Call when epoch `state.epoch` (counted from 0) has ended, after validation set the metrics.
  bool end_epoch(const TrainingState& state);
  // Saves now. A second save at the step of the latest (or in-flight) checkpoint is a no-op
  // and returns false.
  bool save(const TrainingState& state);

  // --- with plain values (no LibTorch needed)
  // Loads what restore() would restore, without applying it: result.checkpoint.
  RestoreResult load(const ResumeFrom& from = {});
  bool save(const Value& checkpoint, int64_t step, int64_t epoch = 0, std::map<std::string, double> metrics = {});
  bool should_save_step(int64_t step);
  bool should_save_epoch(int64_t epoch) const;

  // Blocks until background saves are committed; throws the first error among them.
  void wait();
  // True once a preemption signal was handled: a checkpoint was saved (and waited for); the
  // training loop should return.
  bool preempted() const { return preempted_; }
  bool preemption_requested() const;

  // Committed checkpoints in commit order (background commits included once they are done).
  std::vector<CheckpointRecord> checkpoints() const;
  std::optional<CheckpointRecord> latest() const;
  std::optional<CheckpointRecord> best() const;
  const std::string& directory() const { return dir_; }
  const ManagerOptions& options() const { return options_; }
  // Seconds the caller was blocked inside save()/step()/end_epoch() so far.
  double blocked_seconds() const { return blocked_seconds_; }

  struct Impl;

 private:
  std::string dir_;
  ManagerOptions options_;
  std::unique_ptr<Impl> impl_;
  bool preempted_ = false;
  double blocked_seconds_ = 0;
  bool save_for_preemption(const TrainingState& state);
};

// --- reading and pruning a run directory (what `ckpt ls`, `ckpt verify` and `ckpt prune` do)

// The committed checkpoints of `directory` in commit order, from its index.
std::vector<CheckpointRecord> list_run(const std::string& directory, io::Env* env = nullptr);

struct RunVerifyResult {
  CheckpointRecord record;
  std::string problem;  // empty: verified (structure, every CRC-32, the content CRC)
};
std::vector<RunVerifyResult> verify_run(const std::string& directory, const LoadOptions& options = {});

// Applies `policy` to a run directory (taking its lock). Returns the files deleted, or with
// dry_run those that would be.
std::vector<CheckpointRecord> prune_run(const std::string& directory, const RetentionPolicy& policy,
                                        bool dry_run = false, io::Env* env = nullptr);

// True when `directory` holds a run index (ckpt uses this to tell a run from a file).
bool is_run_directory(const std::string& directory);

}  // namespace ckpt
