// ckpt/checkpoint.h — everything a run needs to continue, in one file and one call.
//
//   ckpt::TrainingState state;
//   state.model = model;        state.optimizer = &adam;  state.scheduler = &sched;
//   state.data = &sampler;      state.epoch = epoch;      state.step = step;
//   state.metrics.dict().set("val_loss", 0.31);
//   state.save("run/ckpt.pt");            // torch.load(...) in Python reads it
//   ...
//   state.load("run/ckpt.pt");            // in a fresh process: restores every attached object
//
// The file is a dict with the seeds' key names — model_state, optimizer_state,
// scheduler_state, epoch, step, rng_state — plus data_state, metrics and user entries, so
// Python resumes from it with model.load_state_dict(ck['model_state']) and friends.
// Thread safety: none. A TrainingState and the objects it points to are used from the training
// thread; to_value() returns live tensors, so save them (or snapshot them, as AsyncSaver does)
// before the next optimizer step changes them.
// Light to include: LibTorch's module, holder and optimizer types are only declared here.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "ckpt/scheduler.h"
#include "ckpt/serialize.h"
#include "ckpt/training.h"

namespace torch {
namespace nn {
template <typename Contained>
class ModuleHolder;  // <torch/nn/pimpl.h>: torch::nn::Linear, TORCH_MODULE types
}
}  // namespace torch

namespace ckpt {

struct CheckpointKeys {
  std::string model = "model_state";
  std::string optimizer = "optimizer_state";
  std::string scheduler = "scheduler_state";
  std::string epoch = "epoch";
  std::string step = "step";
  std::string rng = "rng_state";
  std::string data = "data_state";
  std::string metrics = "metrics";
};

// The module a TrainingState saves and restores, named the way LibTorch code holds one: a
// ModuleHolder (torch::nn::Linear, torch::nn::Sequential, a TORCH_MODULE type), a shared_ptr, a
// reference or a pointer. Not owning: the module must outlive the state.
class ModuleRef {
 public:
  ModuleRef() = default;
  ModuleRef(std::nullptr_t) {}
  ModuleRef(torch::nn::Module* module) : module_(module) {}
  ModuleRef(torch::nn::Module& module) : module_(&module) {}
  template <class T>
  ModuleRef(const std::shared_ptr<T>& module) : module_(module.get()) {}
  template <class T>
  ModuleRef(const torch::nn::ModuleHolder<T>& holder) : module_(holder.is_empty() ? nullptr : holder.ptr().get()) {}

  torch::nn::Module* get() const { return module_; }
  torch::nn::Module& operator*() const { return *module_; }
  torch::nn::Module* operator->() const { return module_; }
  explicit operator bool() const { return module_ != nullptr; }

 private:
  torch::nn::Module* module_ = nullptr;
};

struct TrainingState {
  // Attached objects (not owned). Null ones are neither saved nor restored.
  ModuleRef model;  // state.model = net; (a holder, shared_ptr, reference or pointer)
  torch::optim::Optimizer* optimizer = nullptr;
  Scheduler* scheduler = nullptr;
  Stateful* data = nullptr;
  std::vector<std::pair<std::string, Stateful*>> objects;  // user objects, each under its key

  int64_t epoch = 0;
  int64_t step = 0;
  Value metrics = Value::new_dict();
  Value extra = Value::new_dict();  // free-form top-level entries: config, notes, ...
  bool rng = true;                  // save and restore the CPU generator
  CheckpointKeys keys;
  // The layout of optimizer and scheduler state that LibTorch built itself (torch 2.14's by
  // default, or 1.13's). State restored from a file is written back in that file's layout:
  // restore() keeps the optimizer's in optimizer_layout (the scheduler keeps its own).
  TorchLayout layout = TorchLayout::kTorch2;
  OptimizerLayout optimizer_layout;

  // The checkpoint as a value (tensors are the live ones: no copy).
  Value to_value() const;
  // Restores every attached object, then epoch, step, metrics, extra and the RNG. strict: an
  // entry for an attached object missing from the checkpoint is an error naming the nearest key.
  void restore(const Value& checkpoint, bool strict = true);

  void save(const std::string& path, const SaveOptions& options = {}) const;
  void load(const std::string& path, const LoadOptions& options = {}, bool strict = true);
};

}  // namespace ckpt
