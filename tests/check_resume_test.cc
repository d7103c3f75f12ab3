// ckpt::check_resume on small loops: a correct one passes through a file and the run manager;
// each usual cause of an inexact resume is caught at the step where it shows, with the entry
// that names it.
#include "ckpt/check_resume.h"

#include <torch/torch.h>

#include "ckpt/checkpoint.h"
#include "ckpt/scheduler.h"
#include "test_util.h"

namespace ckpt {
namespace {

using test::expect_error;
using test::TempDir;

constexpr int64_t kSamples = 48, kBatch = 8;  // 6 steps an epoch: the save at step 4 is mid-epoch

// A small regression with dropout (so the RNG matters), Adam (per-parameter slots), a StepLR
// stepped every step and a shuffling sampler.
struct Job {
  torch::nn::Sequential net{torch::nn::Linear(4, 8), torch::nn::ReLU(), torch::nn::Dropout(0.5),
                            torch::nn::Linear(8, 1)};
  std::unique_ptr<torch::optim::Adam> adam =
      std::make_unique<torch::optim::Adam>(net->parameters(), torch::optim::AdamOptions(0.01));
  std::unique_ptr<StepLR> sched = std::make_unique<StepLR>(*adam, /*step_size=*/2, /*gamma=*/0.5);
  ResumableSampler sampler{kSamples, /*shuffle=*/true, /*seed=*/7};
  Job() { sampler.set_epoch(0); }
};

const torch::Tensor& inputs() {
  static const torch::Tensor x = torch::arange(kSamples * 4, torch::kFloat).reshape({kSamples, 4}).mul(0.37).sin();
  return x;
}
const torch::Tensor& targets() {
  static const torch::Tensor y = inputs().sum(1, true).cos();
  return y;
}

// make_state and train_step over a Job; `job` is the one the latest make_state() built.
struct Loop {
  Job* job = nullptr;
  bool attach_sampler = true;

  MakeStateFn make_state() {
    return [this](TrainingState& s) {
      torch::manual_seed(0);
      auto j = std::make_shared<Job>();
      s.model = j->net;
      s.optimizer = j->adam.get();
      s.scheduler = j->sched.get();
      if (attach_sampler) s.data = &j->sampler;
      job = j.get();
      return std::shared_ptr<void>(j);
    };
  }
  TrainStepFn train_step() {
    return [this](TrainingState& s, int64_t) {
      std::vector<int64_t> idx = job->sampler.next(kBatch);
      if (idx.empty()) {
        job->sampler.set_epoch(job->sampler.epoch() + 1);
        idx = job->sampler.next(kBatch);
      }
      auto i = torch::tensor(idx, torch::kLong);
      job->net->train();
      job->adam->zero_grad();
      torch::Tensor loss =
          torch::mse_loss(job->net->forward(inputs().index_select(0, i)), targets().index_select(0, i));
      loss.backward();
      job->adam->step();
      job->sched->step();
      ++s.step;
    };
  }
};

// A user's own save and load, which may leave parts out.
struct Parts {
  bool rng = true, scheduler = true, data = true;
};
TrainingState without(const TrainingState& s, const Parts& p) {
  TrainingState t = s;
  t.rng = p.rng;
  if (!p.scheduler) t.scheduler = nullptr;
  if (!p.data) t.data = nullptr;
  return t;
}
void use_own_save_load(ResumeCheckOptions& o, Parts p) {
  o.save = [p](const TrainingState& s, const std::string& path) { without(s, p).save(path); };
  o.load = [p](TrainingState& s, const std::string& path) {
    TrainingState t = without(s, p);
    t.load(path);
    s.step = t.step;
    s.epoch = t.epoch;
  };
}

TEST(CheckResume, CorrectLoopResumesExactlyThroughFileAndManager) {
  Loop loop;
  ResumeReport r = check_resume(loop.make_state(), loop.train_step());
  EXPECT_TRUE(r.ok) << r.to_string();
  EXPECT_EQ(r.first_step, -1);
  EXPECT_EQ(r.save_at, 4);
  EXPECT_EQ(r.passed, (std::vector<std::string>{"file", "run manager"}));
  EXPECT_NE(r.to_string().find("Resume check passed"), std::string::npos) << r.to_string();
}

TEST(CheckResume, CorrectOwnSaveLoadPasses) {
  Loop loop;
  ResumeCheckOptions o;
  use_own_save_load(o, Parts{});
  TempDir dir;
  o.work_dir = dir.path();
  ResumeReport r = check_resume(loop.make_state(), loop.train_step(), o);
  EXPECT_TRUE(r.ok) << r.to_string();
  EXPECT_EQ(r.passed, (std::vector<std::string>{"save/load"}));
  EXPECT_TRUE(std::filesystem::exists(dir.file("check-resume.pt")));  // a real file, kept in work_dir
}

TEST(CheckResume, CatchesSaveLoadThatForgetsTheRng) {
  Loop loop;
  ResumeCheckOptions o;
  use_own_save_load(o, Parts{/*rng=*/false});
  ResumeReport r = check_resume(loop.make_state(), loop.train_step(), o);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.via, "save/load");
  EXPECT_EQ(r.first_step, 4);
  EXPECT_TRUE(r.after_load);
  EXPECT_EQ(r.entry, "rng_state");
  EXPECT_EQ(r.entries, (std::vector<std::string>{"rng_state"}));
  EXPECT_GT(r.max_abs_diff, 0);
  EXPECT_NE(r.cause.find("RNG was not saved"), std::string::npos) << r.cause;
  const std::string text = r.to_string();
  EXPECT_NE(text.find("right after the load, before step 4"), std::string::npos) << text;
  EXPECT_NE(text.find("'rng_state' differs"), std::string::npos) << text;
}

TEST(CheckResume, CatchesSaveLoadThatForgetsTheScheduler) {
  Loop loop;
  ResumeCheckOptions o;
  use_own_save_load(o, Parts{true, /*scheduler=*/false});
  ResumeReport r = check_resume(loop.make_state(), loop.train_step(), o);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.first_step, 4);
  EXPECT_TRUE(r.after_load);
  EXPECT_EQ(r.entry, "scheduler_state/last_epoch");
  EXPECT_EQ(r.expected, "int 4");
  EXPECT_EQ(r.actual, "int 0");
  EXPECT_EQ(r.max_abs_diff, 4);
  EXPECT_NE(r.cause.find("scheduler was not restored"), std::string::npos) << r.cause;
}

TEST(CheckResume, CatchesASamplerNotRestored) {
  Loop loop;
  ResumeCheckOptions o;
  use_own_save_load(o, Parts{true, true, /*data=*/false});
  ResumeReport r = check_resume(loop.make_state(), loop.train_step(), o);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.first_step, 4);
  EXPECT_TRUE(r.after_load);
  EXPECT_EQ(r.entry, "data_state/index");
  EXPECT_EQ(r.expected, "int 32");
  EXPECT_NE(r.cause.find("data position was not restored"), std::string::npos) << r.cause;
}

// The sampler is not attached to the state at all: nothing to compare after the load, but the
// first step after it trains on other samples.
TEST(CheckResume, CatchesASamplerOutsideTheState) {
  Loop loop;
  loop.attach_sampler = false;
  ResumeReport r = check_resume(loop.make_state(), loop.train_step());
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.via, "file");
  EXPECT_EQ(r.first_step, 4);
  EXPECT_FALSE(r.after_load);
  EXPECT_EQ(r.entry.rfind("model_state/", 0), 0u) << r.entry;
  EXPECT_NE(r.cause.find("yet step 4 went differently"), std::string::npos) << r.cause;
}

// The load restores the model, then builds the optimizer (and its scheduler) anew: Adam's slots
// are gone.
TEST(CheckResume, CatchesAnOptimizerBuiltAfterTheLoad) {
  Loop loop;
  ResumeCheckOptions o;
  o.save = [](const TrainingState& s, const std::string& path) { s.save(path); };
  o.load = [&loop](TrainingState& s, const std::string& path) {
    TrainingState t = s;
    t.optimizer = nullptr;
    t.scheduler = nullptr;
    t.load(path);
    s.step = t.step;
    Job& job = *loop.job;
    job.sched.reset();
    job.adam = std::make_unique<torch::optim::Adam>(job.net->parameters(), torch::optim::AdamOptions(0.01));
    job.sched = std::make_unique<StepLR>(*job.adam, 2, 0.5);
    job.sched->load_state_dict(load(path)["scheduler_state"]);
    s.optimizer = job.adam.get();
    s.scheduler = job.sched.get();
  };
  ResumeReport r = check_resume(loop.make_state(), loop.train_step(), o);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.first_step, 4);
  EXPECT_TRUE(r.after_load);
  EXPECT_EQ(r.entry, "optimizer_state/state/0");
  EXPECT_EQ(r.actual, "");  // only in the straight run
  EXPECT_NE(r.cause.find("optimizer was built after the load"), std::string::npos) << r.cause;
}

// A loss that squares the means of eight blocks of 2^17 outputs: LibTorch splits each sum across
// threads, so 2 and 1 threads add the floats in another order (SGD's steps are large enough to
// keep the last bits).
struct SumLoop {
  torch::nn::Linear* model = nullptr;
  static const torch::Tensor& big() {
    static const torch::Tensor x =
        torch::arange(8 * (1 << 17) * 2, torch::kFloat).reshape({8, 1 << 17, 2}).mul(0.618).sin();
    return x;
  }
  MakeStateFn make_state() {
    return [this](TrainingState& s) {
      torch::manual_seed(0);
      struct Owner {
        torch::nn::Linear model{2, 1};
        torch::optim::SGD sgd{model->parameters(), torch::optim::SGDOptions(0.01)};
      };
      auto o = std::make_shared<Owner>();
      s.model = o->model;
      s.optimizer = &o->sgd;
      model = &o->model;
      sgd_ = &o->sgd;
      return std::shared_ptr<void>(o);
    };
  }
  TrainStepFn train_step() {
    return [this](TrainingState&, int64_t) {
      sgd_->zero_grad();
      torch::Tensor out = (*model)->forward(big());
      torch::Tensor loss = torch::zeros({});
      for (int64_t k = 0; k < 8; ++k) {
        torch::Tensor m = out[k].mean();
        loss = loss + m * m;
      }
      loss.backward();
      sgd_->step();
    };
  }
  torch::optim::SGD* sgd_ = nullptr;
};

class CheckResumeThreads : public ::testing::Test {
 protected:
  void SetUp() override { at::set_num_threads(2); }
  void TearDown() override { at::set_num_threads(threads_); }
  int threads_ = at::get_num_threads();
};

TEST_F(CheckResumeThreads, CatchesAResumeWithAnotherThreadCount) {
  SumLoop loop;
  ResumeCheckOptions o;
  o.resume_threads = 1;
  ResumeReport r = check_resume(loop.make_state(), loop.train_step(), o);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.first_step, 4);
  EXPECT_FALSE(r.after_load);  // the state matched; the first step with 1 thread went otherwise
  EXPECT_EQ(r.entry.rfind("model_state/", 0), 0u) << r.entry;
  EXPECT_EQ(r.threads_straight, 2);
  EXPECT_EQ(r.threads_resumed, 1);
  EXPECT_GT(r.max_abs_diff, 0);
  EXPECT_LT(r.max_abs_diff, 1e-4);
  EXPECT_NE(r.cause.find("thread count changed from 2 to 1"), std::string::npos) << r.cause;
  EXPECT_EQ(at::get_num_threads(), 2);  // put back
}

TEST_F(CheckResumeThreads, SameThreadCountResumesExactly) {
  SumLoop loop;
  ResumeCheckOptions o;
  o.resume_threads = 2;
  ResumeReport r = check_resume(loop.make_state(), loop.train_step(), o);
  EXPECT_TRUE(r.ok) << r.to_string();
}

TEST(CheckResume, CatchesALoopThatDoesNotRepeatItself) {
  Loop loop;
  int64_t calls = 0;
  MakeStateFn make = [&](TrainingState& s) {
    auto owner = loop.make_state()(s);
    torch::manual_seed(++calls);  // a seed that changes per process, as a time-based one would
    return owner;
  };
  ResumeReport r = check_resume(make, loop.train_step());
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.via, "straight");
  EXPECT_EQ(r.first_step, 0);
  EXPECT_TRUE(r.after_make_state);
  EXPECT_EQ(r.entry, "rng_state");
  EXPECT_NE(r.cause.find("make_state() built different objects"), std::string::npos) << r.cause;
}

TEST_F(CheckResumeThreads, ToleranceAcceptsSmallDifferences) {
  SumLoop loop;
  ResumeCheckOptions o;
  o.resume_threads = 1;
  o.atol = 1e-4;
  ResumeReport r = check_resume(loop.make_state(), loop.train_step(), o);
  EXPECT_TRUE(r.ok) << r.to_string();
  EXPECT_NE(r.to_string().find("even with 1 thread after the load instead of 2"), std::string::npos) << r.to_string();
}

TEST(CheckResume, PutsTheRngAndThreadCountBack) {
  Loop loop;
  torch::manual_seed(123);
  const torch::Tensor before = get_rng_state().clone();
  const int threads = at::get_num_threads();
  ResumeCheckOptions o;
  o.resume_threads = 1;
  check_resume(loop.make_state(), loop.train_step(), o);
  EXPECT_TRUE(torch::equal(get_rng_state(), before));
  EXPECT_EQ(at::get_num_threads(), threads);
}

TEST(CheckResume, RejectsUnusableOptions) {
  Loop loop;
  ResumeCheckOptions o;
  o.steps = 0;
  expect_error([&] { check_resume(loop.make_state(), loop.train_step(), o); }, ErrorKind::kInvalidArgument,
               "steps is 0");
  o = {};
  o.save_at = 9;
  expect_error([&] { check_resume(loop.make_state(), loop.train_step(), o); }, ErrorKind::kInvalidArgument,
               "save_at is 9");
  o = {};
  o.save = [](const TrainingState&, const std::string&) {};
  expect_error([&] { check_resume(loop.make_state(), loop.train_step(), o); }, ErrorKind::kInvalidArgument,
               "both save and load");
}

}  // namespace
}  // namespace ckpt
