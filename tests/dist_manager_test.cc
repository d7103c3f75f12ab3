// dist::CheckpointManager on thread ranks: a run directory written by several ranks — cadence,
// retention, best_model.pt, the verified fallback on which every rank agrees, another world
// size, the lock, a failing rank, an interrupted commit adopted, and a run moving between one
// process and several ranks.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <torch/torch.h>
#include <unistd.h>

#include <csignal>
#include <random>

#include <filesystem>
#include <fstream>
#include <set>

#include "ckpt/checkpoint.h"
#include "ckpt/distributed.h"
#include "ckpt/distributed_files.h"
#include "ckpt/distributed_manager.h"
#include "ckpt/manager.h"
#include "dist_world.h"
#include "fault_env.h"
#include "test_util.h"

namespace fs = std::filesystem;
using ckpt::ErrorKind;
using ckpt::ManagerOptions;
using ckpt::ResumeFrom;
using ckpt::Value;

namespace {

class DistManagerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() / ("ckpt_dist_manager_test." + std::to_string(::getpid()) + "." + info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string run_dir() const { return (dir_ / "run").string(); }
  fs::path dir_;
};

ManagerOptions quiet(std::vector<std::string>* warnings = nullptr) {
  ManagerOptions o;
  o.durable = false;
  static std::mutex mu;
  o.warn = [warnings](const std::string& m) {
    std::lock_guard<std::mutex> lock(mu);
    if (warnings) warnings->push_back(m);
  };
  return o;
}

ckpt::dist::ManagerInit bounded() {
  ckpt::dist::ManagerInit i;
  i.timeout = 20s;
  return i;
}

// A small replicated model whose values depend only on `seed` (no shared generator: the thread
// ranks of one process share at::Generator).
struct Net : torch::nn::Module {
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
  Net() {
    fc1 = register_module("fc1", torch::nn::Linear(4, 3));
    fc2 = register_module("fc2", torch::nn::Linear(3, 2));
  }
  void fill(double seed) {
    torch::NoGradGuard g;
    double k = seed;
    for (auto& p : parameters()) {
      auto flat = p.view(-1);
      for (int64_t i = 0; i < flat.numel(); ++i) flat[i] = std::sin(k += 0.37);
    }
  }
};

// One training step on fixed data, the same on every rank.
void train_step(Net& net, torch::optim::Optimizer& opt, int64_t step) {
  auto x = torch::arange(8, torch::kFloat).view({2, 4}) / (step + 1.0);
  opt.zero_grad();
  auto loss = net.fc2->forward(torch::tanh(net.fc1->forward(x))).pow(2).sum();
  loss.backward();
  opt.step();
}

void expect_same_params(Net& a, Net& b) {
  auto pa = a.parameters(), pb = b.parameters();
  ASSERT_EQ(pa.size(), pb.size());
  for (size_t i = 0; i < pa.size(); ++i) EXPECT_TRUE(torch::equal(pa[i], pb[i])) << "parameter " << i;
}

std::set<std::string> entries(const std::string& dir) {
  std::set<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.insert(e.path().filename().string());
  return out;
}

void expect_all_ok(const std::vector<Outcome>& out) {
  for (size_t r = 0; r < out.size(); ++r) EXPECT_TRUE(out[r].ok) << "rank " << r << ": " << out[r].what;
}

// Every rank trains `steps` steps from a fresh start (or from what restore finds), saving
// through a dist::CheckpointManager; returns each rank's final parameters via `nets`.
struct Trainer {
  std::vector<std::shared_ptr<Net>> nets;
  std::vector<std::unique_ptr<torch::optim::Adam>> opts;
  explicit Trainer(int world) {
    for (int r = 0; r < world; ++r) {
      nets.push_back(std::make_shared<Net>());
      nets.back()->fill(1.0);
      opts.push_back(std::make_unique<torch::optim::Adam>(nets.back()->parameters(), torch::optim::AdamOptions(0.01)));
    }
  }
  ckpt::TrainingState state(int r) {
    ckpt::TrainingState s;
    s.model = nets[r];
    s.optimizer = opts[r].get();
    s.rng = false;  // one generator for all thread ranks: per-rank RNG is tested across processes
    return s;
  }
};

}  // namespace

TEST_F(DistManagerTest, TwoRanksSaveOnCadenceKeepLastAndResumeExactly) {
  World world(2);
  // The uninterrupted reference: 6 steps in one process.
  Trainer ref(1);
  for (int64_t s = 0; s < 6; ++s) train_step(*ref.nets[0], *ref.opts[0], s);

  ManagerOptions o = quiet();
  o.save_every_steps = 2;
  o.keep_last = 2;
  {
    Trainer t(2);
    expect_all_ok(world.run([&](int r, c10d::ProcessGroup& pg) {
      ckpt::dist::CheckpointManager m(run_dir(), pg, o, bounded());
      auto st = t.state(r);
      EXPECT_FALSE(m.restore(st).restored);
      while (st.step < 4) {
        train_step(*t.nets[r], *t.opts[r], st.step);
        ++st.step;
        m.step(st);
      }
      // Interrupted here: steps 5 and 6 are lost.
    }));
  }
  // Two directories kept (steps 2 and 4), each a distributed checkpoint; the index lists them.
  auto names = entries(run_dir());
  EXPECT_TRUE(names.count("epoch=000-step=000002") && names.count("epoch=000-step=000004")) << names.size();
  EXPECT_FALSE(names.count("best.pt"));
  EXPECT_TRUE(ckpt::dist::is_distributed_checkpoint(run_dir() + "/epoch=000-step=000004"));
  auto listed = ckpt::list_run(run_dir());
  ASSERT_EQ(listed.size(), 2u);
  EXPECT_EQ(listed.back().step, 4);
  EXPECT_GT(listed.back().bytes, 0u);
  for (const auto& v : ckpt::verify_run(run_dir())) EXPECT_EQ(v.problem, "") << v.record.file;

  Trainer t(2);
  expect_all_ok(world.run([&](int r, c10d::ProcessGroup& pg) {
    ckpt::dist::CheckpointManager m(run_dir(), pg, o, bounded());
    auto st = t.state(r);
    auto res = m.restore(st);
    ASSERT_TRUE(res.restored);
    EXPECT_EQ(res.record.step, 4);
    EXPECT_EQ(st.step, 4);
    EXPECT_EQ(m.restore_info().saved_world_size, 2);
    while (st.step < 6) {
      train_step(*t.nets[r], *t.opts[r], st.step);
      ++st.step;
      m.step(st);
    }
  }));
  expect_same_params(*t.nets[0], *ref.nets[0]);
  expect_same_params(*t.nets[1], *ref.nets[0]);
  auto after = ckpt::list_run(run_dir());
  ASSERT_EQ(after.size(), 2u);
  EXPECT_EQ(after[0].step, 4);
  EXPECT_EQ(after[1].step, 6);
  EXPECT_FALSE(fs::exists(run_dir() + "/epoch=000-step=000002"));  // retention removed the directory
}

TEST_F(DistManagerTest, BestModelIsOnePlainStateDictAndKeepBestKeepsIt) {
  World world(2);
  ManagerOptions o = quiet();
  o.keep_last = 1;
  o.keep_best = 1;
  o.monitor = "val_loss";
  const std::vector<double> losses = {0.9, 0.3, 0.5, 0.7};
  Trainer t(2);
  std::vector<at::Tensor> best_weights;
  expect_all_ok(world.run([&](int r, c10d::ProcessGroup& pg) {
    ckpt::dist::CheckpointManager m(run_dir(), pg, o, bounded());
    auto st = t.state(r);
    for (size_t i = 0; i < losses.size(); ++i) {
      train_step(*t.nets[r], *t.opts[r], st.step);
      ++st.step;
      st.metrics = Value::new_dict();
      st.metrics.dict().set("val_loss", losses[i]);
      m.save(st);
      if (r == 0 && i == 1) best_weights.push_back(t.nets[0]->fc1->weight.clone());
    }
    if (r == 0) {
      ASSERT_TRUE(m.best());
      EXPECT_EQ(m.best()->step, 2);
    }
  }));
  // Kept: the best (step 2) and the latest (step 4).
  auto listed = ckpt::list_run(run_dir());
  ASSERT_EQ(listed.size(), 2u);
  EXPECT_EQ(listed[0].step, 2);
  EXPECT_TRUE(listed[0].best);
  EXPECT_EQ(listed[1].step, 4);
  Value best_model = ckpt::load(run_dir() + "/best_model.pt");
  ASSERT_TRUE(best_model.is_dict());
  EXPECT_TRUE(torch::equal(best_model.at("fc1.weight").to_tensor(), best_weights.at(0)));
  // best_model.pt is the model entry alone, loadable with load_state_dict.
  auto net = std::make_shared<Net>();
  ckpt::load_state_dict(*net, best_model);
  EXPECT_TRUE(torch::equal(net->fc1->weight, best_weights.at(0)));
}

TEST_F(DistManagerTest, EveryRankFallsBackPastADamagedCheckpointToTheSameOne) {
  World world(2);
  ManagerOptions o = quiet();
  Trainer t(2);
  expect_all_ok(world.run([&](int r, c10d::ProcessGroup& pg) {
    ckpt::dist::CheckpointManager m(run_dir(), pg, o, bounded());
    auto st = t.state(r);
    for (int i = 0; i < 3; ++i) {
      train_step(*t.nets[r], *t.opts[r], st.step);
      ++st.step;
      m.save(st);
    }
  }));
  // Damage rank 1's file of the newest checkpoint (step 3): its zip directory cut off.
  const std::string victim = run_dir() + "/epoch=000-step=000003/rank-00001.pt";
  fs::resize_file(victim, fs::file_size(victim) - 64);
  std::vector<std::string> warnings;
  ManagerOptions o2 = quiet(&warnings);
  Trainer back(2);
  std::vector<int64_t> steps(2, -1);
  expect_all_ok(world.run([&](int r, c10d::ProcessGroup& pg) {
    ckpt::dist::CheckpointManager m(run_dir(), pg, o2, bounded());
    auto st = back.state(r);
    auto res = m.restore(st);
    ASSERT_TRUE(res.restored);
    steps[r] = st.step;
    if (r == 0) {
      ASSERT_EQ(res.skipped.size(), 1u);
      EXPECT_NE(res.skipped[0].find("step=000003"), std::string::npos) << res.skipped[0];
    }
  }));
  EXPECT_EQ(steps[0], 2);
  EXPECT_EQ(steps[1], 2);
  bool named = false;
  for (const auto& w : warnings) named = named || w.find("skipping damaged checkpoint") != std::string::npos;
  EXPECT_TRUE(named);
  // The index remembers it: the latest is now step 2, and step 3 is marked damaged.
  auto listed = ckpt::list_run(run_dir());
  ASSERT_EQ(listed.size(), 3u);
  EXPECT_NE(listed[2].damaged, "");
  EXPECT_TRUE(listed[1].latest);
}

TEST_F(DistManagerTest, AnotherWorldSizeRestoresModelAndOptimizerExactly) {
  ManagerOptions o = quiet();
  Trainer t(2);
  {
    World world(2);
    expect_all_ok(world.run([&](int r, c10d::ProcessGroup& pg) {
      ckpt::dist::CheckpointManager m(run_dir(), pg, o, bounded());
      auto st = t.state(r);
      st.rng = true;  // saved per rank; under another world size it does not carry over
      for (int i = 0; i < 3; ++i) {
        train_step(*t.nets[r], *t.opts[r], st.step);
        ++st.step;
      }
      m.save(st);
    }));
  }
  for (int n : {1, 3}) {
    World world(n);
    Trainer back(n);
    std::vector<std::string> warnings;
    ManagerOptions o2 = quiet(&warnings);
    std::vector<int> saved_world(n), rng_restored(n, 1);
    expect_all_ok(world.run([&](int r, c10d::ProcessGroup& pg) {
      ckpt::dist::CheckpointManager m(run_dir(), pg, o2, bounded());
      auto st = back.state(r);
      st.rng = true;
      ASSERT_TRUE(m.restore(st).restored);
      EXPECT_EQ(st.step, 3);
      saved_world[r] = m.restore_info().saved_world_size;
      rng_restored[r] = m.restore_info().rng_restored;
    }));
    for (int r = 0; r < n; ++r) {
      SCOPED_TRACE("world " + std::to_string(n) + ", rank " + std::to_string(r));
      EXPECT_EQ(saved_world[r], 2);
      EXPECT_EQ(rng_restored[r], 0);
      expect_same_params(*back.nets[r], *t.nets[0]);
      // The optimizer's state too: one more step lands on the same values.
      train_step(*back.nets[r], *back.opts[r], 3);
    }
    train_step(*t.nets[0], *t.opts[0], 3);
    for (int r = 0; r < n; ++r) expect_same_params(*back.nets[r], *t.nets[0]);
    bool said = false;
    for (const auto& w : warnings) said = said || w.find("do not carry over") != std::string::npos;
    EXPECT_TRUE(said);
    // Put rank 0's reference back to where the checkpoint is, for the next world size.
    Trainer again(1);
    t.nets[0] = again.nets[0];
    t.opts[0] = std::move(again.opts[0]);
    for (int64_t s = 0; s < 3; ++s) train_step(*t.nets[0], *t.opts[0], s);
  }
}

TEST_F(DistManagerTest, ASecondWriterFailsOnEveryRankNamingTheHolder) {
  ManagerOptions o = quiet();
  ckpt::CheckpointManager holder(run_dir(), o);  // this process holds the lock
  World world(2);
  auto out = world.run([&](int r, c10d::ProcessGroup& pg) { ckpt::dist::CheckpointManager m(run_dir(), pg, o, bounded()); });
  for (int r = 0; r < 2; ++r) {
    ASSERT_FALSE(out[r].ok) << "rank " << r;
    EXPECT_NE(out[r].what.find("is in use"), std::string::npos) << out[r].what;
    EXPECT_NE(out[r].what.find("pid "), std::string::npos) << out[r].what;
  }
}

TEST_F(DistManagerTest, ARankWhoseWritesFailCommitsNothingAndTheLastCheckpointStays) {
  World world(2);
  ManagerOptions o = quiet();
  Trainer t(2);
  expect_all_ok(world.run([&](int r, c10d::ProcessGroup& pg) {
    ckpt::dist::CheckpointManager m(run_dir(), pg, o, bounded());
    auto st = t.state(r);
    ++st.step;
    m.save(st);
  }));
  const std::string index_before = ckpt::test::read_file(run_dir() + "/index.json");
  ckpt::test::FaultEnv faulty;
  faulty.fail_write_after = 0;
  auto out = world.run([&](int r, c10d::ProcessGroup& pg) {
    ManagerOptions mine = o;
    if (r == 1) mine.env = &faulty;
    ckpt::dist::CheckpointManager m(run_dir(), pg, mine, bounded());
    auto st = t.state(r);
    st.step = 2;
    m.save(st);
  });
  for (int r = 0; r < 2; ++r) {
    ASSERT_FALSE(out[r].ok) << "rank " << r;
    EXPECT_NE(out[r].what.find("rank 1"), std::string::npos) << out[r].what;
  }
  EXPECT_EQ(ckpt::test::read_file(run_dir() + "/index.json"), index_before);
  EXPECT_FALSE(fs::exists(run_dir() + "/epoch=000-step=000002"));
  auto listed = ckpt::list_run(run_dir());
  ASSERT_EQ(listed.size(), 1u);
  EXPECT_EQ(listed[0].step, 1);
}

TEST_F(DistManagerTest, ACheckpointPublishedButNotIndexedIsAdoptedAtTheNextStart) {
  World world(2);
  ManagerOptions o = quiet();
  Trainer t(2);
  expect_all_ok(world.run([&](int r, c10d::ProcessGroup& pg) {
    ckpt::dist::CheckpointManager m(run_dir(), pg, o, bounded());
    auto st = t.state(r);
    st.step = 1;
    m.save(st);
    // A commit interrupted after the directory appeared: written by dist::save, never indexed.
    st.step = 2;
    Value v = st.to_value();
    ckpt::dist::SaveOptions so;
    so.durable = false;
    so.timeout = 20s;
    ckpt::dist::save(v, run_dir() + "/epoch=000-step=000002", pg, so);
  }));
  ASSERT_EQ(ckpt::list_run(run_dir()).size(), 1u);
  std::vector<std::string> warnings;
  ManagerOptions o2 = quiet(&warnings);
  Trainer back(2);
  expect_all_ok(world.run([&](int r, c10d::ProcessGroup& pg) {
    ckpt::dist::CheckpointManager m(run_dir(), pg, o2, bounded());
    auto st = back.state(r);
    ASSERT_TRUE(m.restore(st).restored);
    EXPECT_EQ(st.step, 2);
  }));
  auto listed = ckpt::list_run(run_dir());
  ASSERT_EQ(listed.size(), 2u);
  EXPECT_EQ(listed[1].step, 2);
  bool said = false;
  for (const auto& w : warnings) said = said || w.find("adopted") != std::string::npos;
  EXPECT_TRUE(said);
}

TEST_F(DistManagerTest, ARunMovesFromOneProcessToTwoRanksAndBack) {
  ManagerOptions o = quiet();
  Trainer ref(1);
  for (int64_t s = 0; s < 6; ++s) train_step(*ref.nets[0], *ref.opts[0], s);
  {
    Trainer t(1);
    ckpt::CheckpointManager m(run_dir(), o);
    auto st = t.state(0);
    for (int i = 0; i < 2; ++i) {
      train_step(*t.nets[0], *t.opts[0], st.step);
      ++st.step;
    }
    m.save(st);  // epoch=000-step=000002.pt, one file
  }
  {
    World world(2);
    Trainer t(2);
    expect_all_ok(world.run([&](int r, c10d::ProcessGroup& pg) {
      ckpt::dist::CheckpointManager m(run_dir(), pg, o, bounded());
      auto st = t.state(r);
      ASSERT_TRUE(m.restore(st).restored);
      EXPECT_EQ(st.step, 2);
      EXPECT_EQ(m.restore_info().saved_world_size, 0);  // a single-process checkpoint
      for (int i = 0; i < 2; ++i) {
        train_step(*t.nets[r], *t.opts[r], st.step);
        ++st.step;
      }
      m.save(st);  // epoch=000-step=000004/, a directory
    }));
  }
  EXPECT_TRUE(fs::is_directory(run_dir() + "/epoch=000-step=000004"));
  Trainer t(1);
  ckpt::CheckpointManager m(run_dir(), o);
  auto st = t.state(0);
  ASSERT_TRUE(m.restore(st).restored);
  EXPECT_EQ(st.step, 4);
  for (int i = 0; i < 2; ++i) {
    train_step(*t.nets[0], *t.opts[0], st.step);
    ++st.step;
  }
  expect_same_params(*t.nets[0], *ref.nets[0]);
}

TEST_F(DistManagerTest, ValuesWithPerRankAndShardedEntriesRoundTripThroughTheRun) {
  World world(2);
  ManagerOptions o = quiet();
  o.model_key = "";
  expect_all_ok(world.run([&](int r, c10d::ProcessGroup& pg) {
    ckpt::dist::CheckpointManager m(run_dir(), pg, o, bounded());
    Value state = Value::new_dict();
    state.dict().set("emb", ckpt::dist::shard(torch::full({2, 3}, float(r + 1)), {2 * r, 0}, {4, 3}));
    state.dict().set("seen", ckpt::dist::per_rank(Value(static_cast<long long>(100 + r))));
    state.dict().set("step", static_cast<long long>(7));
    EXPECT_TRUE(m.save(state, 7));
    EXPECT_FALSE(m.save(state, 7));  // the same step again: a no-op on every rank
  }));
  expect_all_ok(world.run([&](int r, c10d::ProcessGroup& pg) {
    ckpt::dist::CheckpointManager m(run_dir(), pg, o, bounded());
    at::Tensor local = torch::zeros({2, 3});
    Value tmpl = Value::new_dict();
    tmpl.dict().set("emb", ckpt::dist::shard(local, {2 * r, 0}, {4, 3}));
    tmpl.dict().set("seen", ckpt::dist::per_rank(Value(static_cast<long long>(0))));
    tmpl.dict().set("step", static_cast<long long>(0));
    auto res = m.restore(tmpl);
    ASSERT_TRUE(res.restored);
    EXPECT_TRUE(torch::equal(local, torch::full({2, 3}, float(r + 1))));
    EXPECT_EQ(tmpl.at("seen").to_int(), 100 + r);
    EXPECT_EQ(tmpl.at("step").to_int(), 7);
  }));
}

TEST_F(DistManagerTest, AsyncSavesCommitInTheBackgroundOnTheirOwnGroupAndResumeExactly) {
  World world(2, 60s, 2);
  Trainer ref(1);
  for (int64_t s = 0; s < 6; ++s) train_step(*ref.nets[0], *ref.opts[0], s);
  ManagerOptions o = quiet();
  o.async = true;
  o.save_every_steps = 1;
  o.keep_last = 2;
  Trainer t(2);
  expect_all_ok(world.run([&](int r, c10d::ProcessGroup& pg) {
    ckpt::dist::ManagerInit init = bounded();
    init.commit_group = &world.side(r);
    ckpt::dist::CheckpointManager m(run_dir(), pg, o, init);
    auto st = t.state(r);
    while (st.step < 4) {
      train_step(*t.nets[r], *t.opts[r], st.step);
      ++st.step;
      EXPECT_TRUE(m.step(st));
      // Training goes on at once: the collectives of this group interleave with the save's.
      std::vector<at::Tensor> probe{torch::ones({1})};
      pg.allreduce(probe)->wait();
      EXPECT_EQ(probe[0].item<float>(), 2.0f);
    }
    // The model moves on while step 4's save may still be writing: the save has its snapshot.
    train_step(*t.nets[r], *t.opts[r], st.step);
    m.wait();
    EXPECT_EQ(m.latest()->step, 4);
  }));
  auto listed = ckpt::list_run(run_dir());
  ASSERT_EQ(listed.size(), 2u);
  EXPECT_EQ(listed.back().step, 4);
  for (const auto& v : ckpt::verify_run(run_dir())) EXPECT_EQ(v.problem, "") << v.record.file;
  // The snapshot is the state at save(): what step 4 saved is what training had at step 4.
  Trainer back(2);
  expect_all_ok(world.run([&](int r, c10d::ProcessGroup& pg) {
    ckpt::dist::ManagerInit init = bounded();
    init.commit_group = &world.side(r);
    ckpt::dist::CheckpointManager m(run_dir(), pg, o, init);
    auto st = back.state(r);
    ASSERT_TRUE(m.restore(st).restored);
    EXPECT_EQ(st.step, 4);
    while (st.step < 6) {
      train_step(*back.nets[r], *back.opts[r], st.step);
      ++st.step;
    }
  }));
  expect_same_params(*back.nets[0], *ref.nets[0]);
  expect_same_params(*back.nets[1], *ref.nets[0]);
}

TEST_F(DistManagerTest, AsyncWithoutACommitGroupIsRefused) {
  World world(1);
  ManagerOptions o = quiet();
  o.async = true;
  auto out = world.run([&](int, c10d::ProcessGroup& pg) { ckpt::dist::CheckpointManager m(run_dir(), pg, o, bounded()); });
  ASSERT_FALSE(out[0].ok);
  EXPECT_EQ(out[0].kind, ErrorKind::kInvalidArgument);
  EXPECT_NE(out[0].what.find("commit_group"), std::string::npos) << out[0].what;
}

// --- real processes: a rank SIGKILLed at random moments of a run's saves and commits -------------

namespace {

// The state of step `step` on rank `rank` of `world`: every value follows from the step, so a
// restored checkpoint shows whether it is whole.
Value soak_state(int64_t step, int rank, int world) {
  Value s = Value::new_dict();
  Value model = Value::new_dict();
  for (int i = 0; i < 8; ++i)
    model.dict().set("w" + std::to_string(i), Value(torch::full({64, 1024}, float(step * 10 + i))));
  s.dict().set("model_state", model);
  const int64_t rows = 64, lo = rows * rank / world, hi = rows * (rank + 1) / world;
  s.dict().set("emb", ckpt::dist::shard(torch::full({hi - lo, 256}, float(step)), {lo, 0}, {rows, 256}));
  s.dict().set("seen", ckpt::dist::per_rank(Value(static_cast<long long>(step * 100 + rank))));
  s.dict().set("step", static_cast<long long>(step));
  return s;
}

// Starts `world` ranks of DistManagerProcess.DISABLED_Worker; their wait statuses.
std::vector<int> run_ranks(int world, const std::string& dir, int seed) {
  return run_rank_processes(world, "DistManagerProcess.DISABLED_Worker",
                            {{"CKPT_SOAK_DIR", dir}, {"CKPT_SOAK_SEED", std::to_string(seed)}});
}

}  // namespace

// One rank of the soak: resume the run, then save step after step until rank 1 is SIGKILLed (at
// a moment drawn from CKPT_SOAK_SEED) and rank 0's next collective fails.
TEST(DistManagerProcess, DISABLED_Worker) {
  const char* dir = std::getenv("CKPT_SOAK_DIR");
  const char* seed = std::getenv("CKPT_SOAK_SEED");
  ASSERT_TRUE(dir && seed);
  ckpt::dist::InitOptions io;
  io.timeout = 20s;
  ckpt::dist::Group g = ckpt::dist::init_from_env(io);
  ManagerOptions o;
  o.durable = false;  // a killed process loses nothing the page cache holds
  o.keep_last = 2;
  o.warn = [](const std::string&) {};
  ckpt::dist::ManagerInit init;
  init.timeout = 20s;
  std::string error;
  try {
    ckpt::dist::CheckpointManager m(std::string(dir) + "/run", *g.pg, o, init);
    Value tmpl = soak_state(0, g.rank, g.world_size);
    int64_t step = 0;
    if (m.restore(tmpl).restored) step = tmpl.at("step").to_int();
    if (g.rank == 1) {
      std::mt19937 rng(std::atoi(seed));
      const int delay_ms = int(rng() % 400);
      std::thread([delay_ms] {
        std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
        ::kill(::getpid(), SIGKILL);
      }).detach();
    }
    for (int i = 0; i < 200; ++i) m.save(soak_state(++step, g.rank, g.world_size), step);
  } catch (const ckpt::Error& e) {
    error = e.what();
  }
  std::ofstream(std::string(dir) + "/error-" + std::to_string(g.rank) + ".txt") << error;
}

TEST_F(DistManagerTest, ARankKilledAtTwentyRandomMomentsNeverLeavesADamagedCheckpointInUse) {
  const std::string run = run_dir();
  int64_t last_step = 0;
  for (int seed = 1; seed <= 20; ++seed) {
    SCOPED_TRACE("kill " + std::to_string(seed));
    auto st = run_ranks(2, dir_.string(), seed);
    EXPECT_TRUE(WIFSIGNALED(st[1]) && WTERMSIG(st[1]) == SIGKILL) << st[1];
    EXPECT_TRUE(WIFEXITED(st[0]) && WEXITSTATUS(st[0]) == 0) << st[0];
    const std::string err = ckpt::test::read_file(dir_.string() + "/error-0.txt");
    // Rank 0 learned of it as an error (not a hang), unless rank 1 died before the group formed.
    if (!err.empty()) EXPECT_NE(err.find("rank"), std::string::npos) << err;
    std::printf("kill %d: rank 0 got: %.160s\n", seed, err.empty() ? "(no error: killed before the group formed)" : err.c_str());
    if (!fs::exists(run + "/index.json")) continue;
    // Every checkpoint the index lists verifies, and the latest restores whole in one process.
    for (const auto& v : ckpt::verify_run(run)) EXPECT_EQ(v.problem, "") << v.record.file;
    ManagerOptions o = quiet();
    o.keep_last = 2;
    ckpt::CheckpointManager m(run, o);
    auto r = m.load();
    if (!r.restored) continue;
    const int64_t step = r.checkpoint.at("step").to_int();
    EXPECT_GE(step, last_step);  // committed work is never lost
    last_step = step;
    const Value& ck = r.checkpoint;
    EXPECT_TRUE(torch::equal(ck.at("model_state").at("w3").to_tensor(), torch::full({64, 1024}, float(step * 10 + 3))));
    EXPECT_TRUE(torch::equal(ck.at("emb").to_tensor(), torch::full({64, 256}, float(step))));
    ASSERT_EQ(ck.at("seen").size(), 2u);
    EXPECT_EQ(ck.at("seen").items()[1].to_int(), step * 100 + 1);
  }
  EXPECT_GT(last_step, 0);
  // What the kills left (temp directories, a directory moved aside) is gone after a start.
  { ckpt::CheckpointManager m(run, quiet()); }
  for (const auto& e : fs::directory_iterator(run)) {
    const std::string n = e.path().filename().string();
    EXPECT_EQ(n.find(".tmp"), std::string::npos) << n;
    EXPECT_EQ(n.find(".replaced"), std::string::npos) << n;
  }
}

#ifdef CKPT_CLI
TEST_F(DistManagerTest, TheCliListsVerifiesAndDiffsADistributedRun) {
  World world(2);
  ManagerOptions o = quiet();
  Trainer t(2);
  expect_all_ok(world.run([&](int r, c10d::ProcessGroup& pg) {
    ckpt::dist::CheckpointManager m(run_dir(), pg, o, bounded());
    auto st = t.state(r);
    for (int i = 0; i < 2; ++i) {
      train_step(*t.nets[r], *t.opts[r], st.step);
      ++st.step;
      m.save(st);
    }
  }));
  const std::string log = (dir_ / "log.txt").string();
  auto run = [&](const std::string& args) {
    const int rc = std::system((std::string(CKPT_CLI) + " " + args + " > " + log + " 2>&1").c_str());
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
  };
  EXPECT_EQ(run("ls " + run_dir()), 0) << ckpt::test::read_file(log);
  EXPECT_NE(ckpt::test::read_file(log).find("epoch=000-step=000002"), std::string::npos) << ckpt::test::read_file(log);
  EXPECT_EQ(run("verify " + run_dir()), 0) << ckpt::test::read_file(log);
  EXPECT_EQ(run("diff " + run_dir() + "@2 " + run_dir() + "@2"), 0) << ckpt::test::read_file(log);
  EXPECT_EQ(run("diff " + run_dir() + "@1 " + run_dir() + "@2"), 1) << ckpt::test::read_file(log);
  EXPECT_NE(ckpt::test::read_file(log).find("fc1.weight"), std::string::npos) << ckpt::test::read_file(log);
  // A damaged rank file: verify of the run fails naming it.
  const std::string victim = run_dir() + "/epoch=000-step=000002/rank-00000.pt";
  fs::resize_file(victim, fs::file_size(victim) - 64);
  EXPECT_EQ(run("verify " + run_dir()), 1) << ckpt::test::read_file(log);
  EXPECT_NE(ckpt::test::read_file(log).find("rank-00000.pt"), std::string::npos) << ckpt::test::read_file(log);
}
#endif
