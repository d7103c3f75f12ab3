// train_driver — a small training run for the exact-resume and cross-language tests.
//
//   train_driver --optimizer adam --scheduler step --steps 20 --out final.pt
//   train_driver ... --stop-after 10 --checkpoint ck.pt     # save at step 10 and exit
//   train_driver ... --resume ck.pt --out final.pt          # a new process finishes the run
//   train_driver ... --restore ck.pt --out dump.pt          # load into fresh objects, save again
//   train_driver ... --layout 1.13                         # optimizer/scheduler state in 1.13 layout (default 2.x)
//   train_driver ... --stop-after 10 --checkpoint ck.pt --torch-save P  # also torch::save(model)
//                                                           # to Pmodel.pt, torch::save(optimizer) to Poptim.pt
//   train_driver ... --lr-curve N [--resume ck.pt]          # lr and momentum after each of N more
//                                                           # scheduler steps (from ck.pt's state)
//   train_driver ... --run-dir RUN --save-every 3 --out final.pt   # through a CheckpointManager:
//       resumes from RUN if it holds a checkpoint, saves every 3 steps (--async 1, --keep-last N,
//       --pad-mb N of extra state so saves take a while, --step-ms N of sleep per step), SIGTERM
//       saves and exits 0
//
// Model: Sequential(Linear(8,16), BatchNorm1d(16), ReLU, Dropout(0.2), Linear(16,3)) — the
// same names as Python's nn.Sequential — on 200 synthetic samples in batches of 32 (7 steps
// an epoch), shuffled by a ResumableSampler; dropout draws from the global RNG.
#include <torch/torch.h>

#include <cstdio>
#include <iostream>
#include <map>

#include <chrono>
#include <thread>

#include "ckpt/checkpoint.h"
#include "ckpt/manager.h"

namespace {

struct Args {
  std::string optimizer = "adam", scheduler = "none", out, checkpoint, resume, restore, run_dir, torch_save;
  std::string layout = "2.x";  // of the optimizer and scheduler state LibTorch builds: 2.x or 1.13
  int64_t steps = 20, stop_after = -1, lr_curve = -1;
  int64_t save_every = 0, async = 0, keep_last = 0, pad_mb = 0, step_ms = 0;
};

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i], v = argv[i + 1];
    if (k == "--optimizer")
      a.optimizer = v;
    else if (k == "--scheduler")
      a.scheduler = v;
    else if (k == "--steps")
      a.steps = std::stoll(v);
    else if (k == "--stop-after")
      a.stop_after = std::stoll(v);
    else if (k == "--checkpoint")
      a.checkpoint = v;
    else if (k == "--resume")
      a.resume = v;
    else if (k == "--restore")
      a.restore = v;
    else if (k == "--out")
      a.out = v;
    else if (k == "--lr-curve")
      a.lr_curve = std::stoll(v);
    else if (k == "--run-dir")
      a.run_dir = v;
    else if (k == "--save-every")
      a.save_every = std::stoll(v);
    else if (k == "--async")
      a.async = std::stoll(v);
    else if (k == "--keep-last")
      a.keep_last = std::stoll(v);
    else if (k == "--pad-mb")
      a.pad_mb = std::stoll(v);
    else if (k == "--step-ms")
      a.step_ms = std::stoll(v);
    else if (k == "--torch-save")
      a.torch_save = v;
    else if (k == "--layout")
      a.layout = v;
    else
      throw std::runtime_error("unknown argument " + k);
  }
  return a;
}

std::unique_ptr<torch::optim::Optimizer> make_optimizer(const std::string& name, std::vector<torch::Tensor> params) {
  using namespace torch::optim;
  if (name == "sgd") return std::make_unique<SGD>(params, SGDOptions(0.05).momentum(0.9).weight_decay(1e-4));
  if (name == "sgd_nesterov")
    return std::make_unique<SGD>(params, SGDOptions(0.05).momentum(0.9).nesterov(true).dampening(0));
  if (name == "sgd_plain") return std::make_unique<SGD>(params, SGDOptions(0.05));
  if (name == "adam") return std::make_unique<Adam>(params, AdamOptions(1e-2));
  if (name == "adam_amsgrad") return std::make_unique<Adam>(params, AdamOptions(1e-2).amsgrad(true).weight_decay(1e-3));
  if (name == "adamw") return std::make_unique<AdamW>(params, AdamWOptions(1e-2));
  if (name == "rmsprop") return std::make_unique<RMSprop>(params, RMSpropOptions(1e-2).momentum(0.5).centered(true));
  if (name == "adagrad") return std::make_unique<Adagrad>(params, AdagradOptions(5e-2));
  if (name == "lbfgs") return std::make_unique<LBFGS>(params, LBFGSOptions(0.5).max_iter(4).history_size(5));
  throw std::runtime_error("unknown optimizer " + name);
}

std::unique_ptr<ckpt::Scheduler> make_scheduler(const std::string& name, torch::optim::Optimizer& opt, int64_t steps) {
  if (name == "none") return nullptr;
  if (name == "step") return std::make_unique<ckpt::StepLR>(opt, 3, 0.5);
  if (name == "multistep") return std::make_unique<ckpt::MultiStepLR>(opt, std::vector<int64_t>{4, 9, 9, 15}, 0.5);
  if (name == "exponential") return std::make_unique<ckpt::ExponentialLR>(opt, 0.9);
  if (name == "cosine") return std::make_unique<ckpt::CosineAnnealingLR>(opt, 6, 1e-4);
  if (name == "linear") return std::make_unique<ckpt::LinearLR>(opt, 0.25, 1.0, 8);
  if (name == "onecycle") return std::make_unique<ckpt::OneCycleLR>(opt, ckpt::OneCycleLROptions(0.05, steps + 1));
  if (name == "onecycle_other")  // other bounds and length: a resumed run must follow the checkpoint's
    return std::make_unique<ckpt::OneCycleLR>(
        opt, ckpt::OneCycleLROptions(0.5, steps + 11).max_momentum(0.99).base_momentum(0.8).div_factor(10));
  if (name == "plateau")
    return std::make_unique<ckpt::ReduceLROnPlateau>(opt, ckpt::ReduceLROnPlateauOptions().patience(0).factor(0.5));
  throw std::runtime_error("unknown scheduler " + name);
}

}  // namespace

int main(int argc, char** argv) try {
  Args a = parse(argc, argv);
  torch::set_num_threads(1);
  torch::manual_seed(1234);

  torch::nn::Sequential model(torch::nn::Linear(8, 16), torch::nn::BatchNorm1d(16), torch::nn::ReLU(),
                              torch::nn::Dropout(0.2), torch::nn::Linear(16, 3));
  auto gen = at::make_generator<at::CPUGeneratorImpl>(99);
  torch::Tensor X = at::randn({200, 8}, gen, at::TensorOptions().dtype(at::kFloat));
  torch::Tensor Y = at::randint(0, 3, {200}, gen, at::kLong);

  auto opt = make_optimizer(a.optimizer, model->parameters());
  auto sched = make_scheduler(a.scheduler, *opt, a.steps);
  ckpt::ResumableSampler sampler(200, /*shuffle=*/true, /*seed=*/7);

  ckpt::TrainingState state;
  state.model = model;
  state.optimizer = opt.get();
  state.scheduler = sched.get();
  state.data = &sampler;
  state.layout = a.layout == "1.13" ? ckpt::TorchLayout::kTorch113 : ckpt::TorchLayout::kTorch2;
  state.metrics.dict().set("epoch_loss_sum", 0.0);
  state.extra.dict().set("config", ckpt::Value::tuple({a.optimizer, a.scheduler}));

  if (!a.resume.empty()) state.load(a.resume);
  if (a.lr_curve >= 0) {  // the learning rate (and momentum) after each of N scheduler steps
    auto* plateau_only = dynamic_cast<ckpt::ReduceLROnPlateau*>(sched.get());
    auto* lrs = dynamic_cast<ckpt::LRScheduler*>(sched.get());
    for (int64_t i = 0; i < a.lr_curve; ++i) {
      if (lrs) lrs->step();
      if (plateau_only) plateau_only->step(i < 5 ? 1.0 - 0.1 * i : 0.7);  // improves, then stalls
      const auto& o = opt->param_groups()[0].options();
      double momentum = 0;
      if (auto* sgd = dynamic_cast<const torch::optim::SGDOptions*>(&o)) momentum = sgd->momentum();
      std::printf("%.17g %.17g\n", o.get_lr(), momentum);
    }
    return 0;
  }
  if (!a.restore.empty()) {  // load into fresh objects and write what was restored
    state.load(a.restore);
    state.save(a.out);
    return 0;
  }
  if (a.pad_mb > 0) state.extra.dict().set("pad", ckpt::Value(torch::zeros({a.pad_mb << 18})));  // MiB of float32

  std::unique_ptr<ckpt::CheckpointManager> manager;
  if (!a.run_dir.empty()) {
    ckpt::ManagerOptions o;
    o.save_every_steps = a.save_every;
    o.async = a.async != 0;
    o.keep_last = static_cast<int>(a.keep_last);
    o.monitor = "epoch_loss_sum";
    o.handle_preemption = true;
    manager = std::make_unique<ckpt::CheckpointManager>(a.run_dir, o);
    ckpt::RestoreResult r = manager->restore(state);
    if (r) std::cerr << "train_driver: resumed from " << r.record.path << " at step " << state.step << "\n";
  }

  auto* plateau = dynamic_cast<ckpt::ReduceLROnPlateau*>(sched.get());
  auto* per_step = dynamic_cast<ckpt::LRScheduler*>(sched.get());
  while (state.step < a.steps) {
    if (sampler.exhausted()) {
      if (plateau) plateau->step(state.metrics["epoch_loss_sum"].to_double());
      state.metrics.dict().set("epoch_loss_sum", 0.0);
      sampler.set_epoch(++state.epoch);
    }
    auto idx = torch::tensor(sampler.next(32), torch::kLong);
    torch::Tensor x = X.index_select(0, idx), y = Y.index_select(0, idx);
    model->train();
    auto closure = [&] {
      opt->zero_grad();
      torch::Tensor loss = torch::nn::functional::cross_entropy(model->forward(x), y);
      loss.backward();
      return loss;
    };
    torch::Tensor loss = opt->step(closure);
    state.metrics.dict().set("epoch_loss_sum", state.metrics["epoch_loss_sum"].to_double() + loss.item<double>());
    if (per_step) per_step->step();
    ++state.step;
    if (state.step == a.stop_after) {
      state.save(a.checkpoint);
      if (!a.torch_save.empty()) {  // LibTorch's own archives of the same moment
        torch::save(model, a.torch_save + "model.pt");
        torch::save(*opt, a.torch_save + "optim.pt");
      }
      return 0;
    }
    if (manager) {
      manager->step(state);
      if (manager->preempted()) {
        std::cerr << "train_driver: preempted; saved step " << state.step << "\n";
        return 0;
      }
    }
    if (a.step_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(a.step_ms));
  }
  if (manager) {
    manager->save(state);
    manager->wait();
  }
  state.save(a.out);
  return 0;
} catch (const std::exception& e) {
  std::cerr << "train_driver: " << e.what() << "\n";
  return 1;
}
