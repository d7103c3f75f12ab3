// CheckpointManager's TrainingState overloads: the LibTorch half of the manager, compiled into
// ckpt::torch so that ckpt/manager.h and the rest of the manager stay free of LibTorch.
#include <chrono>
#include <iostream>

#include "ckpt/checkpoint.h"
#include "ckpt/manager.h"
#include "util/errors.h"

namespace ckpt {
namespace {

std::map<std::string, double> numeric_metrics(const Value& metrics) {
  std::map<std::string, double> out;
  if (!metrics.is_dict()) return out;
  for (const auto& [k, v] : metrics.dict())
    if (k.is_string() && (v.is_int() || v.is_float())) out[k.to_string()] = v.to_double();
  return out;
}

}  // namespace

RestoreResult CheckpointManager::restore(TrainingState& state, const ResumeFrom& from, bool strict) {
  RestoreResult r = load(from);
  if (!r) return r;
  // A checkpoint of a distributed run holds one RNG state per saved rank (a list): they do not
  // carry over to one process, which keeps its own (re-seed it).
  const Value* rng = r.checkpoint.is_dict() ? r.checkpoint.dict().find(state.keys.rng) : nullptr;
  const bool rng_here = state.rng && !(rng && rng->is_list());
  auto warn_ = [&](const std::string& m) {
    if (options_.warn)
      options_.warn(m);
    else
      std::cerr << "ckpt: warning: " << m << "\n";
  };
  if (state.rng && !rng_here)
    warn_(str_cat(r.record.path, ": saved by ", rng->size(),
                      " ranks, restored in one process: the per-rank RNG states do not carry over and were "
                      "left as they are (re-seed them)"));
  const bool had_rng = state.rng;
  state.rng = rng_here;
  try {
    state.restore(r.checkpoint, strict);
  } catch (const Error& e) {
    state.rng = had_rng;
    rethrow_naming(e, r.record.path);
  }
  state.rng = had_rng;
  r.checkpoint = Value();  // the state holds what it needs; drop the loaded tensors
  return r;
}

bool CheckpointManager::save(const TrainingState& state) {
  return save(state.to_value(), state.step, state.epoch, numeric_metrics(state.metrics));
}

// A preemption signal arrived: save now, make it durable, and let the loop stop.
bool CheckpointManager::save_for_preemption(const TrainingState& state) {
  save(state);
  wait();
  preempted_ = true;
  return true;
}

bool CheckpointManager::step(const TrainingState& state) {
  if (preemption_requested()) return save_for_preemption(state);
  return should_save_step(state.step) && save(state);
}

bool CheckpointManager::end_epoch(const TrainingState& state) {
  if (preemption_requested()) return save_for_preemption(state);
  return should_save_epoch(state.epoch) && save(state);
}

}  // namespace ckpt
