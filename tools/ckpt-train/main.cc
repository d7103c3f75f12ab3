// ckpt-train — trains a small CNN on Fashion-MNIST and checkpoints through ckpt's run manager:
// interrupted at any moment (Ctrl-C, SIGTERM, SIGKILL, a crash) and run again, it continues
// where it stopped and ends bit-identical to an uninterrupted run with the same seed and thread
// count. `ckpt-train --help` lists the flags.
#include <torch/nn/functional/loss.h>
#include <torch/optim/adam.h>
#include <torch/utils.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <iostream>
#include <optional>
#include <thread>

#include "ckpt/check_resume.h"
#include "ckpt/checkpoint.h"
#include "ckpt/manager.h"
#include "console.h"
#include "data.h"
#include "model.h"
#include "ranks.h"
#include "zero.h"
#include "ckpt/distributed_files.h"
#ifdef CKPT_WITH_DIST
#include "ckpt/distributed_manager.h"
#endif

namespace {

using namespace ckpt::train;
using Clock = std::chrono::steady_clock;

struct Flags {
  std::string run_dir = "runs/fashion-mnist";
  std::string data = "/usr/share/datasets/fashion-mnist";
  int64_t epochs = 4;
  int64_t batch_size = 64;
  double lr = 1e-3;
  int64_t seed = 0;
  int64_t train_samples = 0;
  int64_t val_samples = 5000;
  int64_t save_every_steps = 500;
  int keep_last = 3;
  int keep_best = 1;
  std::string monitor = "val_loss";
  bool async = false;
  bool shard_optimizer = false;
  int threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  std::string resume = "latest";
  std::string predict;
  bool check_resume = false;
  int64_t check_steps = 8;
  int check_threads = 0;
};

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

std::string fixed(double v, int decimals) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

struct Eval {
  double loss = 0, acc = 0;
};

// Each rank evaluates its contiguous share of the split; the sums are added over the ranks.
Eval evaluate(Net& net, const Split& split, const Ranks& ranks) {
  torch::NoGradGuard no_grad;
  net->eval();
  double loss = 0, correct = 0;
  const int64_t n = split.size(), lo = n * ranks.rank() / ranks.world(), hi = n * (ranks.rank() + 1) / ranks.world();
  for (int64_t i = lo; i < hi; i += 1000) {
    auto x = split.images.slice(0, i, std::min(i + 1000, hi)), y = split.labels.slice(0, i, std::min(i + 1000, hi));
    auto out = net->forward(x);
    loss += torch::nn::functional::cross_entropy(
                out, y, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum))
                .item<double>();
    correct += out.argmax(1).eq(y).sum().item<double>();
  }
  if (ranks.distributed()) {
    torch::Tensor sums = torch::tensor({loss, correct}, torch::kDouble);
    ranks.sum(sums);
    loss = sums[0].item<double>();
    correct = sums[1].item<double>();
  }
  return {loss / double(n), correct / double(n)};
}

// state.metrics holds the epoch's results at the top (train_loss, val_loss, val_acc, ...: what
// the run index records and ranks by) and the running sums of the epoch in progress under
// "running" (loss_sum, correct, seen, and closed: the last epoch whose results are in).
double metric(const ckpt::TrainingState& s, const char* key, double fallback = 0) {
  const ckpt::Value* v = s.metrics.dict().find(key);
  return v && (v->is_float() || v->is_int()) ? v->to_double() : fallback;
}
double running(const ckpt::TrainingState& s, const char* key, double fallback = 0) {
  const ckpt::Value* r = s.metrics.dict().find("running");
  const ckpt::Value* v = r && r->is_dict() ? r->dict().find(key) : nullptr;
  return v && (v->is_float() || v->is_int()) ? v->to_double() : fallback;
}
void set_running(ckpt::TrainingState& s, const char* key, double value) {
  if (!s.metrics.dict().find("running")) s.metrics.dict().set("running", ckpt::Value::new_dict());
  ckpt::Value r = s.metrics["running"];
  r.dict().set(key, value);
}

// What a run trains and checkpoints. Built the same way by a run and by --check-resume (after
// torch::manual_seed(seed): the weights draw from the global generator).
struct Job {
  Net net;
  std::unique_ptr<ShardedAdam> zero;         // --shard-optimizer on several ranks (ZeRO-1)
  std::unique_ptr<torch::optim::Adam> full;  // otherwise
  torch::optim::Adam& optimizer;             // what the scheduler adjusts: this rank's
  ckpt::StepLR scheduler;                    // stepped once an epoch
  ckpt::ResumableSampler sampler;

  Job(const Flags& f, int64_t train_size, const Ranks* shard_over = nullptr)
      : zero(shard_over ? std::make_unique<ShardedAdam>(net->parameters(), torch::optim::AdamOptions(f.lr), *shard_over)
                        : nullptr),
        full(shard_over ? nullptr
                        : std::make_unique<torch::optim::Adam>(net->parameters(), torch::optim::AdamOptions(f.lr))),
        optimizer(zero ? zero->local() : *full),
        scheduler(optimizer, /*step_size=*/2, /*gamma=*/0.5),
        sampler(train_size, /*shuffle=*/true, static_cast<uint64_t>(f.seed)) {
    if (zero) zero->set_scheduler(&scheduler);
  }

  void step() {
    if (zero)
      zero->step();
    else
      optimizer.step();
  }

  void attach(ckpt::TrainingState& state) {
    state.model = net;
    if (zero)  // the global Adam.state_dict(), each parameter's state written by its owner
      state.objects.emplace_back(state.keys.optimizer, zero.get());
    else
      state.optimizer = &optimizer;
    state.scheduler = &scheduler;
    state.data = &sampler;
    set_running(state, "closed", -1);
  }
};

// One optimizer step on the sampler's next batch; the epoch's running sums follow it. On several
// ranks every rank draws the same global batch and takes its contiguous share; the gradients of
// the shares' summed losses over the global batch size are added over the ranks (one all-reduce,
// which also carries the loss and accuracy sums), so every rank applies the same update: the
// global batch's mean gradient.
void train_batch(Job& job, ckpt::TrainingState& state, const Split& train, int64_t batch_size, const Ranks& ranks) {
  std::vector<int64_t> idx = job.sampler.next(batch_size);
  job.net->train();
  if (ranks.distributed())
    job.net->zero_grad();  // every parameter's gradient (ZeRO's optimizer holds only this rank's)
  else
    job.optimizer.zero_grad();
  const double n = double(idx.size());
  double loss_sum = 0, correct = 0;
  if (!ranks.distributed()) {
    auto index = torch::tensor(idx, torch::kLong);
    torch::Tensor x = train.images.index_select(0, index), y = train.labels.index_select(0, index);
    torch::Tensor out = job.net->forward(x);
    torch::Tensor loss = torch::nn::functional::cross_entropy(out, y);
    loss.backward();
    loss_sum = loss.item<double>() * n;
    correct = out.argmax(1).eq(y).sum().item<double>();
  } else {
    const size_t lo = idx.size() * size_t(ranks.rank()) / size_t(ranks.world()),
                 hi = idx.size() * size_t(ranks.rank() + 1) / size_t(ranks.world());
    std::vector<torch::Tensor> grads;
    if (hi > lo) {
      auto index = torch::tensor(std::vector<int64_t>(idx.begin() + long(lo), idx.begin() + long(hi)), torch::kLong);
      torch::Tensor x = train.images.index_select(0, index), y = train.labels.index_select(0, index);
      torch::Tensor out = job.net->forward(x);
      torch::Tensor loss = torch::nn::functional::cross_entropy(
                               out, y, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum)) /
                           n;
      loss.backward();
      loss_sum = loss.item<double>() * n;
      correct = out.argmax(1).eq(y).sum().item<double>();
    }
    for (auto& p : job.net->parameters())
      grads.push_back(p.grad().defined() ? p.grad().reshape(-1) : torch::zeros({p.numel()}, p.options()));
    grads.push_back(torch::tensor({float(loss_sum), float(correct)}, torch::kFloat));
    torch::Tensor flat = torch::cat(grads);
    ranks.sum(flat);
    int64_t at = 0;
    for (auto& p : job.net->parameters()) {
      torch::Tensor g = flat.slice(0, at, at + p.numel()).view(p.sizes());
      if (p.grad().defined())
        p.mutable_grad().copy_(g);
      else
        p.mutable_grad() = g.clone();
      at += p.numel();
    }
    loss_sum = flat[at].item<double>();
    correct = flat[at + 1].item<double>();
  }
  job.step();
  ++state.step;
  set_running(state, "loss_sum", running(state, "loss_sum") + loss_sum);
  set_running(state, "correct", running(state, "correct") + correct);
  set_running(state, "seen", running(state, "seen") + n);
}

struct EpochEnd {
  double lr = 0;
  Eval val;
  std::optional<Eval> test;  // after the last epoch
};

// Closes epoch state.epoch: its results into state.metrics (validation, and the test set after the
// last epoch), marked closed, then the scheduler's epoch step.
EpochEnd close_epoch(Job& job, ckpt::TrainingState& state, const FashionMnist& data, bool last, const Ranks& ranks) {
  EpochEnd end;
  end.lr = job.optimizer.param_groups()[0].options().get_lr();
  end.val = evaluate(job.net, data.val, ranks);
  auto& m = state.metrics.dict();
  m.set("train_loss", running(state, "loss_sum") / std::max(1.0, running(state, "seen")));
  m.set("train_acc", running(state, "correct") / std::max(1.0, running(state, "seen")));
  m.set("val_loss", end.val.loss);
  m.set("val_acc", end.val.acc);
  m.set("lr", end.lr);
  set_running(state, "closed", double(state.epoch));
  job.scheduler.step();
  if (last) {
    end.test = evaluate(job.net, data.test, ranks);
    m.set("test_acc", end.test->acc);
  }
  return end;
}

void start_next_epoch(Job& job, ckpt::TrainingState& state) {
  job.sampler.set_epoch(++state.epoch);
  for (const char* key : {"loss_sum", "correct", "seen"}) set_running(state, key, 0.0);
}

// The run manager of one process, or of several ranks (every rank holds one): ckpt-train's
// loop speaks to either through this.
struct Checkpoints {
  virtual ~Checkpoints() = default;
  virtual ckpt::RestoreResult restore(ckpt::TrainingState& state, const ckpt::ResumeFrom& from) = 0;
  virtual bool step(const ckpt::TrainingState& state) = 0;
  virtual bool end_epoch(const ckpt::TrainingState& state) = 0;
  virtual bool save(const ckpt::TrainingState& state) = 0;
  virtual void wait() = 0;
  virtual bool preempted() const = 0;
  virtual double blocked_seconds() const = 0;
  virtual std::optional<ckpt::CheckpointRecord> latest() const = 0;
  virtual std::optional<ckpt::CheckpointRecord> best() const = 0;  // rank 0 only
  // Whether the last restore() gave back this process's (or rank's) own RNG state.
  virtual bool rng_restored() const = 0;
};

template <class M>
struct ManagerOf : Checkpoints {
  M m;
  bool rng_restored_ = false;
  template <class... A>
  explicit ManagerOf(A&&... a) : m(std::forward<A>(a)...) {}
  bool step(const ckpt::TrainingState& s) override { return m.step(s); }
  bool end_epoch(const ckpt::TrainingState& s) override { return m.end_epoch(s); }
  bool save(const ckpt::TrainingState& s) override { return m.save(s); }
  void wait() override { m.wait(); }
  bool preempted() const override { return m.preempted(); }
  double blocked_seconds() const override { return m.blocked_seconds(); }
  std::optional<ckpt::CheckpointRecord> latest() const override { return m.latest(); }
  std::optional<ckpt::CheckpointRecord> best() const override { return m.best(); }
  bool rng_restored() const override { return rng_restored_; }
  ckpt::RestoreResult restore(ckpt::TrainingState& s, const ckpt::ResumeFrom& from) override;
};

template <>
ckpt::RestoreResult ManagerOf<ckpt::CheckpointManager>::restore(ckpt::TrainingState& s, const ckpt::ResumeFrom& from) {
  ckpt::RestoreResult r = m.restore(s, from);
  // A checkpoint of a distributed run holds one RNG state per rank, which one process cannot use.
  rng_restored_ = r && !ckpt::dist::is_distributed_checkpoint(r.record.path);
  return r;
}

#ifdef CKPT_WITH_DIST
template <>
ckpt::RestoreResult ManagerOf<ckpt::dist::CheckpointManager>::restore(ckpt::TrainingState& s,
                                                                    const ckpt::ResumeFrom& from) {
  ckpt::RestoreResult r = m.restore(s, from);
  rng_restored_ = r && m.restore_info().rng_restored;
  return r;
}
#endif

// --resume PATH: a checkpoint in the seeds' layout, e.g. written by Python
// (model_state, optimizer_state, epoch = epochs completed, step). What it lacks starts fresh.
void restore_from_file(const std::string& path, ckpt::TrainingState& state, ckpt::ResumableSampler& sampler,
                       ckpt::LRScheduler& scheduler, int64_t steps_per_epoch, Console& console) {
  ckpt::Value ck = ckpt::load(path);
  if (!ck.is_dict()) throw ckpt::Error(ckpt::ErrorKind::kMismatch, path + ": not a checkpoint dict");
  ckpt::TrainingState partial = state;  // only the entries the file has
  auto has = [&](const std::string& key) { return ck.dict().find(key) != nullptr; };
  if (!has(state.keys.scheduler)) partial.scheduler = nullptr;
  if (!has(state.keys.data)) partial.data = nullptr;
  partial.rng = has(state.keys.rng);
  partial.restore(ck, /*strict=*/true);  // model and optimizer must be there and fit
  state.epoch = partial.epoch;
  state.step = partial.step;
  if (has(state.keys.metrics)) state.metrics = partial.metrics;
  for (const char* key : {"scheduler_state", "rng_state", "data_state"})
    if (!has(key)) console.line(std::string("warning: ") + path + " has no '" + key + "': it starts fresh");
  if (!has(state.keys.data)) {
    // No data position: the file was written at an epoch boundary, `epoch` epochs done.
    sampler.set_epoch(state.epoch);
    if (!has(state.keys.step)) state.step = state.epoch * steps_per_epoch;
    set_running(state, "closed", double(state.epoch) - 1);  // the new epoch starts at its beginning
  }
  if (!has(state.keys.scheduler))
    for (int64_t e = 0; e < state.epoch; ++e) scheduler.step();  // the schedule at that epoch
}

// --predict FILE: the best model's logits on the first 256 test images, as Python's torch.load
// reads them ({"logits": float32 [256, 10], "labels": int64 [256]}), loaded from best_model.pt
// the way a user would.
void write_predictions(const Flags& f, const FashionMnist& data, Console& console) {
  Net best;
  ckpt::load_state_dict(*best, ckpt::load(f.run_dir + "/best_model.pt"));
  best->eval();
  torch::NoGradGuard no_grad;
  const int64_t n = std::min<int64_t>(256, data.test.size());
  ckpt::Value out = ckpt::Value::new_dict();
  out.dict().set("logits", ckpt::Value(best->forward(data.test.images.slice(0, 0, n)).contiguous()));
  out.dict().set("labels", ckpt::Value(data.test.labels.slice(0, 0, n).contiguous()));
  ckpt::save(out, f.predict);
  console.line("wrote the best model's predictions for " + std::to_string(n) + " test images to " + f.predict);
}

int run(const Flags& f) {
  torch::set_num_threads(f.threads);
  Ranks ranks = Ranks::from_env();
  torch::manual_seed(static_cast<uint64_t>(f.seed));
  Console console;
  console.set_quiet(ranks.rank() != 0);
  const auto start = Clock::now();

  FashionMnist data = load_fashion_mnist(f.data, f.train_samples, f.val_samples);
  const int64_t steps_per_epoch = (data.train.size() + f.batch_size - 1) / f.batch_size;

  // The same weights on every rank: drawn before the reseed below.
  Job job(f, data.train.size(), f.shard_optimizer && ranks.distributed() ? &ranks : nullptr);
  if (f.shard_optimizer && !ranks.distributed())
    console.line("notice: --shard-optimizer has no effect in one process (it applies under torchrun)");
  auto& sampler = job.sampler;
  ckpt::TrainingState state;
  job.attach(state);
  // Each rank's own dropout stream.
  if (ranks.distributed()) torch::manual_seed(rank_seed(f.seed, 0, ranks.rank()));

  ckpt::ManagerOptions options;
  options.save_every_steps = f.save_every_steps;
  options.save_every_epochs = 1;
  options.keep_last = f.keep_last;
  options.keep_best = f.keep_best;
  options.monitor = f.monitor;
  options.mode = f.monitor == "val_acc" ? ckpt::Mode::kMax : ckpt::Mode::kMin;
  options.async = f.async;
  options.handle_preemption = true;
  options.warn = [&](const std::string& w) { console.line("warning: " + w); };
  std::unique_ptr<Checkpoints> checkpoints;
#ifdef CKPT_WITH_DIST
  if (ranks.distributed()) {
    ckpt::dist::ManagerInit init;
    init.commit_group = ranks.commit_group();
    checkpoints = std::make_unique<ManagerOf<ckpt::dist::CheckpointManager>>(f.run_dir, *ranks.group(), options, init);
  }
#endif
  if (!checkpoints) checkpoints = std::make_unique<ManagerOf<ckpt::CheckpointManager>>(f.run_dir, options);
  Checkpoints& manager = *checkpoints;
  if (ranks.distributed())
    console.line("data parallel on " + std::to_string(ranks.world()) + " ranks (rank 0 reports; torchrun restart " +
                 std::to_string(ranks.restart()) + ")");
  // Only rank 0 writes metrics.jsonl (every rank computes the same, all-reduced, numbers).
  MetricsLog metrics_log(ranks.rank() == 0 ? f.run_dir + "/metrics.jsonl" : std::string());

  // --- resume --------------------------------------------------------------------------------------
  ckpt::ResumeFrom from = ckpt::ResumeFrom::parse(f.resume);
  bool resumed = false;
  if (from.kind == ckpt::ResumeFrom::Kind::kPath) {
    restore_from_file(from.path, state, sampler, job.scheduler, steps_per_epoch, console);
    console.line("resumed from " + from.path + " (epoch " + std::to_string(state.epoch + 1) + ", step " +
                 std::to_string(state.step) + ")");
    resumed = true;
  } else if (ckpt::RestoreResult r = manager.restore(state, from)) {
    console.line("resumed from " + r.record.path + " (epoch " + std::to_string(state.epoch + 1) + ", step " +
                 std::to_string(state.step) + ")");
    resumed = true;
    if (!manager.rng_restored()) {
      // Saved under another world size: the per-rank RNG streams cannot carry over.
      torch::manual_seed(rank_seed(f.seed, state.step, ranks.rank()));
      console.line("notice: the checkpoint was written by another number of ranks; each rank's RNG (dropout) was "
                   "re-derived from the seed, the step and the rank");
    }
  }
  if (resumed && ranks.distributed() && from.kind == ckpt::ResumeFrom::Kind::kPath)
    torch::manual_seed(rank_seed(f.seed, state.step, ranks.rank()));  // the file's one RNG state, made per rank
  if (!resumed) {
    sampler.set_epoch(0);
    console.line("training from scratch: " + std::to_string(data.train.size()) + " training images, " +
                 std::to_string(data.val.size()) + " for validation, " + std::to_string(f.epochs) + " epochs of " +
                 std::to_string(steps_per_epoch) + " steps, " + std::to_string(f.threads) + " threads");
  }
  if (ranks.rank() == 0) metrics_log.keep_up_to_step(state.step);
  // Fault injection for tests: CKPT_TRAIN_KILL_AT=STEP:RANK[,STEP:RANK...] — in torchrun's
  // attempt i (TORCHELASTIC_RESTART_COUNT), the i-th STEP:RANK makes that rank SIGKILL itself once
  // it reached STEP; attempts past the list run through.
  int64_t kill_step = -1;
  if (const char* k = std::getenv("CKPT_TRAIN_KILL_AT")) {
    std::string list = k;
    for (int64_t attempt = 0; !list.empty(); ++attempt) {
      const size_t comma = list.find(',');
      const std::string spec = list.substr(0, comma);
      list = comma == std::string::npos ? "" : list.substr(comma + 1);
      const size_t colon = spec.find(':');
      if (attempt == ranks.restart() && colon != std::string::npos && std::stoi(spec.substr(colon + 1)) == ranks.rank())
        kill_step = std::stoll(spec.substr(0, colon));
    }
  }

  // --- train ---------------------------------------------------------------------------------------
  auto report_save = [&](double blocked_before) {
    double ms = 1000 * (manager.blocked_seconds() - blocked_before);
    if (f.async)
      console.line("checkpoint at step " + std::to_string(state.step) + " queued; training blocked " + fixed(ms, 0) +
                   " ms (written in the background)");
    else if (auto latest = manager.latest())
      console.line("saved " + latest->path + " (" + fixed(double(latest->bytes) / 1e6, 1) + " MB); training blocked " +
                   fixed(ms, 0) + " ms");
  };
  auto preempted = [&] {
    console.end_progress();
    console.line("interrupted: checkpoint saved at step " + std::to_string(state.step) +
                 "; run the same command to continue");
    return 0;
  };
  int64_t steps_this_run = 0;
  auto epoch_start = Clock::now();
  int64_t seen_at_epoch_start = int64_t(running(state, "seen"));
  for (;;) {
    if (sampler.exhausted()) {
      if (int64_t(running(state, "closed", -1)) != state.epoch) {  // close the epoch
        console.end_progress();
        const bool last = state.epoch + 1 >= f.epochs;
        const EpochEnd end = close_epoch(job, state, data, last, ranks);
        const double lr = end.lr;
        const Eval& val = end.val;
        nlohmann::ordered_json record{{"epoch", state.epoch + 1},
                                      {"step", state.step},
                                      {"train_loss", metric(state, "train_loss")},
                                      {"train_acc", metric(state, "train_acc")},
                                      {"val_loss", val.loss},
                                      {"val_acc", val.acc},
                                      {"lr", lr}};
        std::string summary = "epoch " + std::to_string(state.epoch + 1) + "/" + std::to_string(f.epochs) +
                              ": train loss " + fixed(metric(state, "train_loss"), 4) + ", acc " +
                              fixed(100 * metric(state, "train_acc"), 2) + "%; val loss " + fixed(val.loss, 4) +
                              ", acc " + fixed(100 * val.acc, 2) + "%";
        if (end.test) {
          record["test_acc"] = end.test->acc;
          summary += "; test acc " + fixed(100 * end.test->acc, 2) + "%";
        }
        record["elapsed_s"] = seconds_since(start);
        if (ranks.rank() == 0) metrics_log.append(record);  // before the checkpoint: a crash between them replays the epoch
        console.line(summary);
        const double blocked = manager.blocked_seconds();
        if (manager.end_epoch(state)) report_save(blocked);
        if (manager.preempted()) return preempted();
      }
      if (state.epoch + 1 >= f.epochs) break;
      start_next_epoch(job, state);
      epoch_start = Clock::now();
      seen_at_epoch_start = 0;
    }

    train_batch(job, state, data.train, f.batch_size, ranks);
    ++steps_this_run;
    if (state.step == kill_step) ::kill(::getpid(), SIGKILL);

    const double seen = running(state, "seen");
    console.progress(state.epoch, f.epochs, int64_t(seen), data.train.size(), running(state, "loss_sum") / seen,
                     running(state, "correct") / seen,
                     (seen - double(seen_at_epoch_start)) / std::max(1e-9, seconds_since(epoch_start)));
    const double blocked = manager.blocked_seconds();
    if (manager.step(state)) {
      if (manager.preempted()) return preempted();
      console.end_progress();
      report_save(blocked);
    }
  }

  manager.save(state);  // a no-op when the last epoch's checkpoint is at this step
  manager.wait();
  const double total = seconds_since(start);
  if (steps_this_run == 0) {
    console.line("the run in " + f.run_dir + " has already trained " + std::to_string(f.epochs) +
                 " epochs; nothing to do (pass --epochs N to train further)");
  } else {
    console.line("done in " + format_duration(total) + ": test accuracy " + fixed(100 * metric(state, "test_acc"), 2) +
                 "%; checkpoints blocked training for " + fixed(manager.blocked_seconds(), 2) + " s (" +
                 fixed(100 * manager.blocked_seconds() / total, 1) + "% of the run)");
  }
  if (auto best = manager.best())
    console.line("best by " + f.monitor + ": " + best->path + " (" + f.monitor + " " +
                 fixed(best->metrics.at(f.monitor), 4) + "); its weights alone: " + f.run_dir + "/best_model.pt");
  if (!f.predict.empty() && ranks.rank() == 0) write_predictions(f, data, console);
  return 0;
}

// --check-resume: ckpt::check_resume on this job — a few steps on a small subset, straight and with a
// save → fresh objects → load in the middle (through a file, then through the run manager),
// compared after every step. Nothing is written to --run-dir. Exit 0 when it resumes exactly.
int check_resume(Flags f) {
  torch::set_num_threads(f.threads);
  if (f.train_samples == 0) f.train_samples = 3 * f.batch_size;  // epochs end inside the check
  FashionMnist data = load_fashion_mnist(f.data, f.train_samples, f.val_samples);
  const Ranks one_process{};
  Job* job = nullptr;  // the objects the latest make_state() built
  auto make_state = [&](ckpt::TrainingState& state) {
    torch::manual_seed(static_cast<uint64_t>(f.seed));
    auto fresh = std::make_shared<Job>(f, data.train.size());
    fresh->attach(state);
    fresh->sampler.set_epoch(0);
    job = fresh.get();
    return std::shared_ptr<void>(fresh);
  };
  auto train_step = [&](ckpt::TrainingState& state, int64_t) {  // run()'s loop, without console and log
    if (job->sampler.exhausted()) {
      if (int64_t(running(state, "closed", -1)) != state.epoch)
        close_epoch(*job, state, data, state.epoch + 1 >= f.epochs, one_process);
      start_next_epoch(*job, state);
    }
    train_batch(*job, state, data.train, f.batch_size, one_process);
  };
  ckpt::ResumeCheckOptions options;
  options.steps = f.check_steps;
  options.resume_threads = f.check_threads;
  std::cout << "checking that this job resumes exactly: " << f.check_steps << " steps of " << f.batch_size << " on "
            << data.train.size() << " training images, " << f.threads << " threads" << std::endl;
  ckpt::ResumeReport report = ckpt::check_resume(make_state, train_step, options);
  std::cout << report.to_string() << std::endl;
  return report.ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  Flags f;
  CLI::App app{
      "ckpt-train: train a small CNN on Fashion-MNIST with exact, crash-safe checkpoints.\n"
      "Run it again after any interruption and it continues where it stopped.\n"
      "Data parallel on N ranks (--batch-size stays the global batch; each rank takes 1/N of it):\n"
      "  /usr/bin/python3 -m torch.distributed.run --standalone --nproc_per_node N --redirects 2 --tee 2 \\\n"
      "      --max_restarts 3 --no_python build/ckpt-train --run-dir D [flags]\n"
      "A run directory continues under any number of ranks, or in one process."};
  app.get_formatter()->column_width(34);
  app.add_option("--run-dir", f.run_dir, "where checkpoints, index.json, best_model.pt and metrics.jsonl go")
      ->capture_default_str();
  app.add_option("--data", f.data, "directory with Fashion-MNIST's gzip IDX files")->capture_default_str();
  app.add_option("--epochs", f.epochs, "epochs to train in all (a finished run trains further when raised)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--batch-size", f.batch_size, "samples per step")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--lr", f.lr, "Adam's learning rate (halved every 2 epochs by StepLR)")->capture_default_str();
  app.add_option("--seed", f.seed, "seed of the weights, dropout and the data order")->capture_default_str();
  app.add_option("--train-samples", f.train_samples, "use only the first N training images (0: all but validation)")
      ->capture_default_str();
  app.add_option("--val-samples", f.val_samples, "the last N training images are held out for validation")
      ->capture_default_str();
  app.add_option("--save-every-steps", f.save_every_steps, "also checkpoint every N steps (0: only at epoch ends)")
      ->capture_default_str();
  app.add_option("--keep-last", f.keep_last, "keep the N newest checkpoints (0: all)")->capture_default_str();
  app.add_option("--keep-best", f.keep_best, "keep the K best by --monitor")->capture_default_str();
  app.add_option("--monitor", f.monitor, "the metric that picks the best model")
      ->capture_default_str()
      ->check(CLI::IsMember({"val_loss", "val_acc"}));
  app.add_flag("--async", f.async, "write checkpoints in the background (training waits only for a memory copy)");
  app.add_flag("--shard-optimizer", f.shard_optimizer,
               "under torchrun: partition Adam's state over the ranks (ZeRO-1); each rank steps and saves "
               "its own parameters' state");
  app.add_option("--threads", f.threads, "LibTorch threads (exact resume needs the same number)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--resume", f.resume,
                 "latest | best | none | PATH (a checkpoint in the seeds' layout, e.g. from Python)")
      ->capture_default_str();
  app.add_option("--predict", f.predict,
                 "at the end, write the best model's logits on the first 256 test images "
                 "to this .pt file");
  app.add_flag("--check-resume", f.check_resume,
               "instead of training: check that this job resumes exactly (a few steps on a small subset, "
               "straight and with a save and load in the middle); exit 1 naming the step and entry if not");
  app.add_option("--check-steps", f.check_steps, "steps --check-resume runs (it saves and loads halfway)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--check-threads", f.check_threads,
                 "--check-resume: run the resumed half with this many threads (0: the same)")
      ->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? 0 : 2;
  }
  try {
    return f.check_resume ? check_resume(f) : run(f);
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::cerr << "ckpt-train: " << e.what() << "\n";
    return 1;
  }
}
