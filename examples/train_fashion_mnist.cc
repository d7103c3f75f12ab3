// Fashion-MNIST training that checkpoints and resumes exactly.
//
//   train_fashion_mnist --run runs/fmnist --epochs 3            # starts, or resumes runs/fmnist/last.pt
//   train_fashion_mnist --run runs/fmnist --crash-at-step 1100  # dies there without saving
//
// Every --checkpoint-every steps the whole training state (model, AdamW moments, OneCycleLR,
// RNG, the sampler's position, epoch, step, metrics) goes to RUN/last.pt, crash-safely; the
// best model by test accuracy goes to RUN/best.pt. Both load in Python with torch.load.
#include <torch/torch.h>
#include <unistd.h>
#include <zlib.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>

#include "ckpt/checkpoint.h"

namespace {

struct Options {
  std::string data = "/usr/share/datasets/fashion-mnist";
  std::string run = "runs/fashion-mnist";
  int64_t epochs = 3, batch = 64, checkpoint_every = 200, crash_at_step = -1;
  double max_lr = 3e-3;
};

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string k = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) throw std::runtime_error("missing value for " + k);
      return argv[++i];
    };
    if (k == "--data")
      o.data = next();
    else if (k == "--run")
      o.run = next();
    else if (k == "--epochs")
      o.epochs = std::stoll(next());
    else if (k == "--batch")
      o.batch = std::stoll(next());
    else if (k == "--checkpoint-every")
      o.checkpoint_every = std::stoll(next());
    else if (k == "--crash-at-step")
      o.crash_at_step = std::stoll(next());
    else if (k == "--max-lr")
      o.max_lr = std::stod(next());
    else if (k == "--help" || k == "-h") {
      std::cout << "usage: train_fashion_mnist [--run DIR] [--epochs N] [--batch N] [--checkpoint-every STEPS]\n"
                   "                           [--crash-at-step STEP] [--max-lr LR] [--data DIR]\n";
      std::exit(0);
    } else {
      throw std::runtime_error("unknown option " + k + " (see --help)");
    }
  }
  return o;
}

// IDX files (http://yann.lecun.com/exdb/mnist/): big-endian magic, dims, then uint8 data.
torch::Tensor read_idx(const std::string& path) {
  gzFile f = gzopen(path.c_str(), "rb");
  if (!f) throw std::runtime_error(path + ": cannot open (install dataset-fashion-mnist)");
  std::vector<uint8_t> bytes;
  uint8_t buf[1 << 16];
  int n;
  while ((n = gzread(f, buf, sizeof buf)) > 0) bytes.insert(bytes.end(), buf, buf + n);
  gzclose(f);
  auto be32 = [&](size_t off) {
    return (uint32_t(bytes[off]) << 24) | (bytes[off + 1] << 16) | (bytes[off + 2] << 8) | bytes[off + 3];
  };
  if (bytes.size() < 8 || bytes[0] != 0 || bytes[1] != 0 || bytes[2] != 8)
    throw std::runtime_error(path + ": not a uint8 IDX file");
  int dims = bytes[3];
  std::vector<int64_t> shape;
  size_t count = 1;
  for (int d = 0; d < dims; ++d) {
    shape.push_back(be32(4 + 4 * d));
    count *= shape.back();
  }
  size_t header = 4 + 4 * dims;
  if (bytes.size() != header + count) throw std::runtime_error(path + ": truncated");
  return torch::from_blob(bytes.data() + header, shape, torch::kUInt8).clone();
}

struct Data {
  torch::Tensor x, y;
};
Data load_split(const std::string& dir, const std::string& split) {
  torch::Tensor images = read_idx(dir + "/" + split + "-images-idx3-ubyte.gz");
  torch::Tensor labels = read_idx(dir + "/" + split + "-labels-idx1-ubyte.gz");
  torch::Tensor x = images.reshape({images.size(0), 28 * 28}).to(torch::kFloat).div_(255).sub_(0.2860).div_(0.3530);
  return {x, labels.to(torch::kLong)};
}

torch::nn::Sequential make_model() {
  return torch::nn::Sequential(torch::nn::Linear(784, 256), torch::nn::BatchNorm1d(256), torch::nn::ReLU(),
                               torch::nn::Dropout(0.2), torch::nn::Linear(256, 128), torch::nn::ReLU(),
                               torch::nn::Linear(128, 10));
}

double accuracy(torch::nn::Sequential& model, const Data& test) {
  torch::NoGradGuard no_grad;
  model->eval();
  auto pred = model->forward(test.x).argmax(1);
  model->train();
  return pred.eq(test.y).to(torch::kDouble).mean().item<double>();
}

}  // namespace

int main(int argc, char** argv) try {
  Options o = parse(argc, argv);
  torch::set_num_threads(2);
  std::filesystem::create_directories(o.run);
  const std::string last = o.run + "/last.pt", best = o.run + "/best.pt";

  Data train = load_split(o.data, "train"), test = load_split(o.data, "t10k");
  const int64_t n = train.x.size(0);
  const int64_t steps_per_epoch = (n + o.batch - 1) / o.batch;
  const int64_t total_steps = o.epochs * steps_per_epoch;

  torch::manual_seed(0);
  torch::nn::Sequential model = make_model();
  torch::optim::AdamW opt(model->parameters(), torch::optim::AdamWOptions(o.max_lr).weight_decay(1e-4));
  ckpt::OneCycleLR sched(opt, ckpt::OneCycleLROptions(o.max_lr, total_steps));
  ckpt::ResumableSampler sampler(n, /*shuffle=*/true, /*seed=*/2024);

  ckpt::TrainingState state;
  state.model = model.ptr().get();
  state.optimizer = &opt;
  state.scheduler = &sched;
  state.data = &sampler;
  state.metrics.dict().set("best_test_acc", 0.0);
  state.metrics.dict().set("loss_sum", 0.0);

  if (std::filesystem::exists(last)) {
    state.load(last);
    std::printf("resumed from %s at epoch %lld, step %lld (best test accuracy so far %.4f)\n", last.c_str(),
                (long long)state.epoch, (long long)state.step, state.metrics["best_test_acc"].to_double());
  } else {
    std::printf("starting a new run in %s: %lld epochs of %lld steps\n", o.run.c_str(), (long long)o.epochs,
                (long long)steps_per_epoch);
  }

  const bool interactive = ::isatty(STDOUT_FILENO);
  auto t0 = std::chrono::steady_clock::now();
  while (state.step < total_steps) {
    if (sampler.exhausted()) sampler.set_epoch(++state.epoch);
    auto idx = torch::tensor(sampler.next(o.batch), torch::kLong);
    torch::Tensor x = train.x.index_select(0, idx), y = train.y.index_select(0, idx);
    opt.zero_grad();
    torch::Tensor loss = torch::nn::functional::cross_entropy(model->forward(x), y);
    loss.backward();
    opt.step();
    sched.step();
    ++state.step;
    state.metrics.dict().set("loss_sum", state.metrics["loss_sum"].to_double() + loss.item<double>());

    if (state.step == o.crash_at_step) {
      std::printf("\nsimulated crash at step %lld (no checkpoint written now)\n", (long long)state.step);
      std::fflush(stdout);
      std::_Exit(3);
    }
    int64_t in_epoch = sampler.index() / o.batch + (sampler.index() % o.batch != 0);
    if (interactive && (state.step % 20 == 0 || sampler.exhausted())) {  // a progress bar on terminals
      int width = 30, filled = static_cast<int>(width * in_epoch / steps_per_epoch);
      std::printf("\repoch %lld [%s%s] %lld/%lld  loss %.4f  lr %.2e", (long long)state.epoch + 1,
                  std::string(filled, '#').c_str(), std::string(width - filled, '.').c_str(), (long long)in_epoch,
                  (long long)steps_per_epoch, loss.item<double>(), sched.get_last_lr()[0]);
      std::fflush(stdout);
    }
    if (sampler.exhausted()) {  // end of epoch: evaluate, keep the best model
      double acc = accuracy(model, test);
      double mean_loss = state.metrics["loss_sum"].to_double() / steps_per_epoch;
      state.metrics.dict().set("loss_sum", 0.0);
      state.metrics.dict().set("test_acc", acc);
      state.metrics.dict().set("train_loss", mean_loss);
      std::printf("%s  epoch %lld: train loss %.4f, test accuracy %.4f", interactive ? "\n" : "",
                  (long long)state.epoch + 1, mean_loss, acc);
      if (acc > state.metrics["best_test_acc"].to_double()) {
        state.metrics.dict().set("best_test_acc", acc);
        ckpt::Value b = ckpt::Value::new_dict();
        b.dict().set("model_state", ckpt::state_dict(*model));
        b.dict().set("epoch", state.epoch);
        b.dict().set("test_acc", acc);
        ckpt::save(b, best);
        std::printf(" (best so far: saved %s)", best.c_str());
      }
      std::printf("\n");
    }
    if (state.step % o.checkpoint_every == 0 || state.step == total_steps) state.save(last);
  }
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("done: %lld steps, best test accuracy %.4f, %.1f s; checkpoint %s\n", (long long)state.step,
              state.metrics["best_test_acc"].to_double(), secs, last.c_str());
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "train_fashion_mnist: %s\n", e.what());
  return 1;
}
