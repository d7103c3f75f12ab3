// train_loop_bench MODE DIR --steps N --save-every K — what checkpointing costs a training loop.
//
// A compute-bound loop (matrix products on a fixed set of small tensors: the cores are busy,
// the 1.49 GB GPT-2 + Adam state is not touched between saves) runs N steps and, every K steps,
// checkpoints the state:
//   none        no checkpoints (the baseline)
//   sync        CheckpointManager, durable saves on the training thread
//   async       CheckpointManager with async = true: training waits for the snapshot copy only
//   torch_save  LibTorch's torch::save of the same tensors + fsync, on the training thread
//   calibrate   prints the seconds one step takes (for choosing N and K)
// Prints one JSON line: mode, steps, saves, seconds (wall time of the whole loop, until the
// last save is durable), blocked_s (time the loop spent inside save calls).
// bench/run_train_bench.py runs the modes interleaved and writes the training-loop section of
// bench/RESULTS.md.
#include <fcntl.h>
#include <torch/serialize.h>
#include <torch/torch.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>

#include "ckpt/manager.h"
#include "workloads.h"

namespace {

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

struct Work {
  at::Tensor a = at::randn({512, 2048}), b = at::randn({2048, 512}), acc = at::zeros({512, 512});
  void step() {
    for (int i = 0; i < 4; ++i) acc.add_(at::mm(a, b), 1e-6);  // ~4.3 GFLOP
  }
};

}  // namespace

int main(int argc, char** argv) try {
  if (argc < 3) {
    std::cerr << "usage: train_loop_bench none|sync|async|torch_save|calibrate DIR [--steps N] [--save-every K]\n";
    return 2;
  }
  const std::string mode = argv[1], dir = argv[2];
  int64_t steps = 100, every = 50;
  for (int i = 3; i + 1 < argc; i += 2) {
    std::string k = argv[i];
    if (k == "--steps") steps = std::stoll(argv[i + 1]);
    if (k == "--save-every") every = std::stoll(argv[i + 1]);
  }
  torch::set_num_threads(2);
  Work work;
  if (mode == "calibrate") {
    for (int i = 0; i < 5; ++i) work.step();
    auto t = Clock::now();
    for (int i = 0; i < 20; ++i) work.step();
    std::printf("{\"mode\": \"calibrate\", \"step_s\": %.6f}\n", since(t) / 20);
    return 0;
  }
  std::vector<std::pair<std::string, at::Tensor>> flat;
  ckpt::Value state = bench::make_workload("gpt2", &flat);
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  std::unique_ptr<ckpt::CheckpointManager> manager;
  if (mode == "sync" || mode == "async") {
    ckpt::ManagerOptions o;
    o.keep_last = 1;
    o.async = mode == "async";
    o.model_key = "";  // no best_model.pt: the loop has no metric
    manager = std::make_unique<ckpt::CheckpointManager>(dir + "/run", o);
  } else if (mode != "none" && mode != "torch_save") {
    throw std::runtime_error("unknown mode " + mode);
  }
  std::vector<at::Tensor> tensors;
  for (auto& [name, t] : flat) tensors.push_back(t);

  for (int i = 0; i < 3; ++i) work.step();  // warm up
  double blocked = 0;
  int64_t saves = 0;
  std::string per_save;  // seconds blocked by each save, in order
  const auto start = Clock::now();
  for (int64_t step = 1; step <= steps; ++step) {
    work.step();
    if (step % every != 0 || mode == "none") continue;
    auto t = Clock::now();
    if (manager) {
      state.dict().set("step", step);
      manager->save(state, step);
    } else {
      const std::string path = dir + "/torch_save.pt";
      torch::save(tensors, path);
      int fd = ::open(path.c_str(), O_RDONLY);
      ::fsync(fd);
      ::close(fd);
    }
    const double b = since(t);
    blocked += b;
    per_save += (per_save.empty() ? "" : ", ") + std::to_string(b);
    ++saves;
  }
  if (manager) manager->wait();  // the last save is durable before the clock stops
  const double seconds = since(start);
  std::printf(
      "{\"mode\": \"%s\", \"steps\": %lld, \"saves\": %lld, \"seconds\": %.4f, \"blocked_s\": %.4f, "
      "\"blocked_each_s\": [%s]}\n",
      mode.c_str(), static_cast<long long>(steps), static_cast<long long>(saves), seconds, blocked, per_save.c_str());
  std::filesystem::remove_all(dir);
  return 0;
} catch (const std::exception& e) {
  std::cerr << "train_loop_bench: " << e.what() << "\n";
  return 1;
}
