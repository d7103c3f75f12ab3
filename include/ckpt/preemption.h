// ckpt/preemption.h — turn SIGTERM / SIGINT (and optionally SIGUSR1) into "save a checkpoint at
// the next safe point, then exit cleanly".
//
//   ckpt::PreemptionGuard guard;                 // or ManagerOptions::handle_preemption = true
//   for (...) {
//     train_step();
//     if (guard.requested()) { manager.save(state); manager.wait(); return 0; }
//   }
//
// The first signal only sets a flag (the handler does nothing else, so it is async-signal-safe).
// A second signal of any of the handled kinds restores the default action and re-raises it: the
// process ends at once, as a user pressing Ctrl-C twice expects. The destructor restores the
// handlers that were installed before. Guards nest; the flag is process-wide.
//
// Thread safety: requested() may be called from any thread.
#pragma once

namespace ckpt {

class PreemptionGuard {
 public:
  explicit PreemptionGuard(bool also_sigusr1 = false);
  ~PreemptionGuard();
  PreemptionGuard(const PreemptionGuard&) = delete;
  PreemptionGuard& operator=(const PreemptionGuard&) = delete;

  // A handled signal arrived since the guard was installed (or since clear()).
  bool requested() const;
  // The signal number that arrived first (0 if none).
  int signal() const;
  void clear();
};

}  // namespace ckpt
