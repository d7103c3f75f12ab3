// ckpt/check_resume.h — does your training loop resume exactly? A self-test to run on it.
//
//   ckpt::ResumeReport r = ckpt::check_resume(
//       [](ckpt::TrainingState& s) {                  // fresh objects, attached to `s`
//         torch::manual_seed(0);
//         auto job = std::make_shared<Job>();          // model, optimizer, scheduler, sampler
//         s.model = job->net;  s.optimizer = &job->adam;  s.scheduler = &job->sched;  s.data = &job->sampler;
//         return job;                                  // keeps them alive
//       },
//       [](ckpt::TrainingState& s, int64_t step) { ...one training step... });
//   if (!r.ok) std::cerr << r.to_string() << "\n";  // the step, the entry, the likely cause
//
// What it does: runs `steps` steps straight from make_state(), snapshotting the whole training
// state (TrainingState::to_value(), deep-copied, with the CPU generator's state even when
// state.rng is false) after every step. Then it runs again, and before step `save_at` it saves,
// drops those objects, builds fresh ones with make_state(), loads, and trains on to `steps`,
// comparing with the straight run's snapshot right after make_state(), after every step and
// right after the load. The save and load go through a real file in `work_dir`: the user's own
// functions when given, otherwise ckpt's (TrainingState::save / load), and then once more
// through a CheckpointManager run directory. The first difference ends the check; the report
// names the step, the entry (a path as `ckpt diff` prints it, e.g.
// "optimizer_state/state/0/exp_avg") and the likely cause.
//
// Everything runs in this process, one pass after another: the thread count, the CPU generator
// and the files are the only things the check itself touches, and it puts the first two back as
// they were before returning (also when a callback throws; the exception propagates).
// Thread safety: none; call it from the thread that trains, with no other training running.
// Light to include: TrainingState is only declared (ckpt/checkpoint.h defines it).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace ckpt {

struct TrainingState;  // ckpt/checkpoint.h

// Builds fresh objects (same seed every time), attaches them to `state` and returns what keeps
// them alive until the check drops them (e.g. a shared_ptr to a struct holding them).
using MakeStateFn = std::function<std::shared_ptr<void>(TrainingState& state)>;
// One training step; `step` counts from 0. The objects are those attached to `state`.
using TrainStepFn = std::function<void(TrainingState& state, int64_t step)>;
// The user's own checkpoint functions, to check them rather than ckpt's.
using SaveStateFn = std::function<void(const TrainingState& state, const std::string& path)>;
using LoadStateFn = std::function<void(TrainingState& state, const std::string& path)>;

struct ResumeCheckOptions {
  int64_t steps = 8;     // steps each run trains (at least 1)
  int64_t save_at = -1;  // save → fresh objects → load before this step; -1: steps / 2
  // Both or neither. Neither: ckpt's full training state (TrainingState::save / load, RNG
  // included), checked through a file and then through the run manager.
  SaveStateFn save;
  LoadStateFn load;
  // Where the checkpoint files go (kept afterwards). Empty: a fresh directory under the system's
  // temporary directory, removed afterwards.
  std::string work_dir;
  // Elements a and b differ when |a - b| > atol + rtol * |b|; both 0 (the default): any change.
  double atol = 0;
  double rtol = 0;
  // > 0: the resumed half runs with this many threads (at::set_num_threads), as a resumed
  // process on another machine might; 0: the thread count is left alone.
  int resume_threads = 0;
};

struct ResumeReport {
  bool ok = true;
  int64_t steps = 0;
  int64_t save_at = 0;
  // Which resume differed: "file" (ckpt's save/load through a file), "run manager", or
  // "save/load" (the user's functions); empty when ok. Also "straight" when the runs differed
  // before any save (the loop is not deterministic on its own).
  std::string via;
  // The 0-based step after which the states first differ (-1: none). When after_load is true the
  // difference was there right after the load, before step `first_step` ran; first_step == 0
  // with after_make_state: the two runs differed before training started.
  int64_t first_step = -1;
  bool after_load = false;
  bool after_make_state = false;
  std::string entry;                 // the first differing entry, "rng_state", "scheduler_state/last_epoch", ...
  std::string expected;              // what the straight run holds there ("float32 [10, 4]", "int 3"), or ""
  std::string actual;                // what the resumed run holds there
  double max_abs_diff = 0;           // the largest element difference over every entry at that point
  std::vector<std::string> entries;  // every differing entry at that point, in walk order
  int threads_straight = 0;          // at::get_num_threads() in the straight run, and after the load
  int threads_resumed = 0;
  std::string cause;                // the likely cause and its fix, one or two sentences
  std::vector<std::string> passed;  // the resumes that matched, in order ("file", "run manager", ...)

  // One readable paragraph: what was run, and either "resumes exactly" or where it differs and why.
  std::string to_string() const;
};

// Throws ckpt::Error (kInvalidArgument) for unusable options; whatever a callback throws
// propagates. A difference is not an error: it is in the report.
ResumeReport check_resume(const MakeStateFn& make_state, const TrainStepFn& train_step,
                          const ResumeCheckOptions& options = {});

}  // namespace ckpt
