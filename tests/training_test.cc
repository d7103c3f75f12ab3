#include <limits>
#include <torch/torch.h>

#include "bridge/guard.h"
#include "ckpt/checkpoint.h"
#include "ckpt/manager.h"
#include "ckpt/scheduler.h"
#include "test_util.h"

namespace ckpt {
namespace {

using test::expect_error;
using test::TempDir;

struct NetImpl : torch::nn::Module {
  NetImpl() {
    fc1 = register_module("fc1", torch::nn::Linear(4, 3));
    bn = register_module("bn", torch::nn::BatchNorm1d(3));
    head = register_module("head", torch::nn::Sequential(torch::nn::ReLU(), torch::nn::Linear(3, 2)));
  }
  torch::nn::Linear fc1{nullptr};
  torch::nn::BatchNorm1d bn{nullptr};
  torch::nn::Sequential head{nullptr};
  torch::Tensor forward(torch::Tensor x) { return head->forward(bn->forward(fc1->forward(x))); }
};
TORCH_MODULE(Net);

std::vector<std::string> keys_of(const Value& sd) {
  std::vector<std::string> out;
  for (const auto& [k, _] : sd.dict()) out.push_back(k.to_string());
  return out;
}

TEST(Module, StateDictUsesPythonNamesAndOrder) {
  Net net;
  Value sd = state_dict(*net);
  EXPECT_EQ(keys_of(sd),
            (std::vector<std::string>{"fc1.weight", "fc1.bias", "bn.weight", "bn.bias", "bn.running_mean",
                                      "bn.running_var", "bn.num_batches_tracked", "head.1.weight", "head.1.bias"}));
  EXPECT_EQ(sd.dict().flavor(), Dict::Flavor::kOrderedDict);
  const Value& meta = sd.dict().attributes()["_metadata"];
  EXPECT_EQ(keys_of(meta), (std::vector<std::string>{"", "fc1", "bn", "head", "head.0", "head.1"}));
  EXPECT_EQ(meta["bn"]["version"].to_int(), 2);
  EXPECT_EQ(meta["fc1"]["version"].to_int(), 1);
  // No copy: the entries view the module's own parameters.
  EXPECT_EQ(sd["fc1.weight"].to_tensor().data_ptr(), net->fc1->weight.data_ptr());
}

TEST(Module, LoadRestoresInPlace) {
  TempDir dir;
  Net a, b;
  save(state_dict(*a), dir.file("sd.pt"));
  void* before = b->fc1->weight.data_ptr();
  load_state_dict(*b, load(dir.file("sd.pt")));
  EXPECT_TRUE(torch::equal(a->fc1->weight, b->fc1->weight));
  EXPECT_EQ(b->fc1->weight.data_ptr(), before);  // optimizers keep pointing at the same tensor
}

TEST(Module, StrictLoadReportsEverythingAtOnce) {
  Net net;
  Value sd = state_dict(*Net());
  sd.dict().erase("bn.bias");
  sd.dict().set("extra.weight", Value(torch::zeros({2})));
  sd.dict().set("fc1.weight", Value(torch::zeros({5, 4})));
  expect_error([&] { load_state_dict(*net, sd); }, ErrorKind::kMismatch, "1 missing key(s): bn.bias");
  expect_error([&] { load_state_dict(*net, sd); }, ErrorKind::kMismatch, "1 unexpected key(s): extra.weight");
  expect_error([&] { load_state_dict(*net, sd); }, ErrorKind::kMismatch,
               "fc1.weight: checkpoint float32 [5, 4] vs model float32 [3, 4]");  // PyTorch's dtype names
  Value as_double = state_dict(*Net());
  as_double.dict().set("fc1.bias", Value(torch::zeros({3}, torch::kFloat64)));
  expect_error([&] { load_state_dict(*net, as_double); }, ErrorKind::kMismatch,
               "fc1.bias: checkpoint float64 [3] vs model float32 [3]");
  // Not strict: loads what fits, returns the rest.
  LoadStateDictResult r = load_state_dict(*net, sd, /*strict=*/false);
  EXPECT_EQ(r.missing_keys, std::vector<std::string>{"bn.bias"});
  EXPECT_EQ(r.unexpected_keys, std::vector<std::string>{"extra.weight"});
  EXPECT_EQ(r.mismatched.size(), 1u);
}

TEST(Module, HintsThePrefixToStripOrAdd) {
  Net net;
  expect_error(
      [&] { load_state_dict(*net, add_prefix(state_dict(*Net()), "module.")); }, ErrorKind::kMismatch,
      "carry the prefix 'module.' (saved from DataParallel/DDP); load ckpt::strip_prefix(state_dict, \"module.\")");
  expect_error([&] { load_state_dict(*net, add_prefix(state_dict(*Net()), "_orig_mod.")); }, ErrorKind::kMismatch,
               "(saved from torch.compile)");
  EXPECT_NO_THROW(load_state_dict(*net, strip_prefix(add_prefix(state_dict(*Net()), "module."), "module.")));
  // The model is wrapped, the checkpoint is not.
  torch::nn::Sequential wrapped;
  wrapped->push_back("backbone", Net());
  expect_error([&] { load_state_dict(*wrapped, state_dict(*Net())); }, ErrorKind::kMismatch,
               "load ckpt::add_prefix(state_dict, \"backbone.\")");
}

TEST(Module, HintsMistypedKeysAndWholeCheckpoints) {
  Net net;
  Value sd = state_dict(*Net());
  Value renamed = Value::ordered_dict();
  for (const auto& [k, v] : sd.dict())
    renamed.dict().set(Value(k.to_string() == "fc1.bias" ? std::string("fc1.bais") : k.to_string()), v);
  expect_error([&] { load_state_dict(*net, renamed); }, ErrorKind::kMismatch,
               "mistyped keys? the checkpoint's 'fc1.bais' for the model's 'fc1.bias'");
  Value whole = Value::new_dict();
  whole.dict().set("model_state", sd);
  whole.dict().set("epoch", 3);
  expect_error([&] { load_state_dict(*net, whole); }, ErrorKind::kMismatch, "looks like a whole checkpoint");
}

TEST(Optimizer, StateDictHasPythonsLayout) {
  Net net;
  torch::optim::Adam adam(net->parameters(), torch::optim::AdamOptions(1e-3));
  net->train();
  torch::nn::functional::mse_loss(net->forward(torch::randn({5, 4})), torch::zeros({5, 2})).backward();
  adam.step();
  Value sd = optimizer_state_dict(adam);
  const Value& g = sd["param_groups"][0];
  EXPECT_EQ(g["lr"].to_double(), 1e-3);
  EXPECT_EQ(g["betas"][0].to_double(), 0.9);
  EXPECT_TRUE(g["weight_decay"].is_int());  // Python's default is the int 0
  EXPECT_EQ(g["params"].size(), 6u);
  const Value& s0 = *sd["state"].dict().find(Value(0));
  EXPECT_EQ(s0["step"].to_tensor().item<float>(), 1.f);
  EXPECT_EQ(s0["step"].tensor().dtype, DType::kFloat32);
  EXPECT_EQ(s0["exp_avg"].to_tensor().sizes(), net->fc1->weight.sizes());
}

TEST(Optimizer, MismatchedGroupsAreRefused) {
  Net net;
  torch::optim::SGD one(net->parameters(), torch::optim::SGDOptions(0.1));
  torch::optim::SGD other(net->fc1->parameters(), torch::optim::SGDOptions(0.1));
  expect_error([&] { load_optimizer_state_dict(other, optimizer_state_dict(one)); }, ErrorKind::kMismatch,
               "parameter group 0 has 6 parameters in the checkpoint but 2 in the optimizer");
  Value sd = optimizer_state_dict(one);
  sd["param_groups"][0].dict().set("maximize", true);
  expect_error([&] { load_optimizer_state_dict(one, sd); }, ErrorKind::kMismatch, "maximize=True is not supported");
}

TEST(Rng, StateMatchesPythonsBytesAndRestores) {
  torch::manual_seed(42);
  at::Tensor s = get_rng_state();
  EXPECT_EQ(s.numel(), 5056);
  std::string py = test::read_file(std::string(CKPT_TESTDATA) + "/torch-1.13/rng_state_seed42.bin");
  ASSERT_EQ(py.size(), 5056u);
  EXPECT_EQ(std::memcmp(py.data(), s.data_ptr(), 5056), 0);
  at::Tensor a = torch::rand({4});
  set_rng_state(s);
  EXPECT_TRUE(torch::equal(a, torch::rand({4})));
  expect_error([] { set_rng_state(torch::zeros({3})); }, ErrorKind::kMismatch, "5056 bytes");
}

TEST(Sampler, ResumesMidEpochWithTheRemainingBatches) {
  ResumableSampler a(100, true, 3);
  a.set_epoch(2);
  a.next(30);
  Value st = a.state_dict();
  std::vector<int64_t> rest_a;
  for (auto b = a.next(30); !b.empty(); b = a.next(30)) rest_a.insert(rest_a.end(), b.begin(), b.end());
  ResumableSampler b(100, true, 3);
  b.load_state_dict(st);
  std::vector<int64_t> rest_b;
  for (auto x = b.next(30); !x.empty(); x = b.next(30)) rest_b.insert(rest_b.end(), x.begin(), x.end());
  EXPECT_EQ(rest_a, rest_b);
  EXPECT_EQ(rest_a.size(), 70u);
  ResumableSampler c(99, true, 3);
  expect_error([&] { c.load_state_dict(st); }, ErrorKind::kMismatch, "has 100 samples but this one has 99");
}

TEST(Checkpoint, MissingEntryNamesTheNearestKey) {
  TempDir dir;
  Net net;
  torch::optim::SGD sgd(net->parameters(), torch::optim::SGDOptions(0.1));
  Value ck = Value::new_dict();
  ck.dict().set("model_state", state_dict(*net));
  ck.dict().set("optimizer", optimizer_state_dict(sgd));
  save(ck, dir.file("ck.pt"));
  TrainingState st;
  st.model = net.ptr().get();
  st.optimizer = &sgd;
  st.rng = false;
  expect_error([&] { st.load(dir.file("ck.pt")); }, ErrorKind::kNotFound,
               "ck.pt: key 'optimizer_state' not found; did you mean 'optimizer'?");
  st.keys.optimizer = "optimizer";
  EXPECT_NO_THROW(st.load(dir.file("ck.pt")));
}

TEST(Checkpoint, TrainingStateTakesTheWaysLibTorchCodeHoldsAModule) {
  Net net;  // a TORCH_MODULE holder
  TrainingState state;
  EXPECT_FALSE(state.model);
  state.model = net;
  EXPECT_EQ(state.model.get(), net.ptr().get());
  state.model = net.ptr();  // std::shared_ptr<NetImpl>
  EXPECT_EQ(state.model.get(), net.ptr().get());
  state.model = *net;  // a reference
  EXPECT_EQ(state.model.get(), net.ptr().get());
  state.model = nullptr;
  EXPECT_FALSE(state.model);
  torch::nn::Sequential seq(torch::nn::Linear(2, 2));
  state.model = seq;
  state.rng = false;
  EXPECT_TRUE(state.to_value()["model_state"].contains("0.weight"));
}

// Generic code steps any scheduler through the base class, with the metric it has.
void step_any(Scheduler& scheduler, double metric) {
  scheduler.step(metric);
}

TEST(Scheduler, GenericCodeStepsAnySchedulerWithoutACast) {
  torch::nn::Linear model(2, 2);
  torch::optim::SGD opt(model->parameters(), torch::optim::SGDOptions(1.0));
  StepLR step(opt, 1, 0.5);
  step_any(step, 123.0);  // the metric is ignored
  EXPECT_DOUBLE_EQ(step.get_last_lr()[0], 0.5);
  EXPECT_FALSE(step.needs_metric());
  torch::optim::SGD opt2(model->parameters(), torch::optim::SGDOptions(1.0));
  ReduceLROnPlateau plateau(opt2, ReduceLROnPlateauOptions().patience(0).factor(0.5));
  EXPECT_TRUE(plateau.needs_metric());
  step_any(plateau, 1.0);
  step_any(plateau, 1.0);  // no improvement, patience 0: the rate halves
  EXPECT_DOUBLE_EQ(plateau.get_last_lr()[0], 0.5);
  Scheduler& generic = plateau;
  expect_error([&] { generic.step(); }, ErrorKind::kInvalidArgument, "needs the monitored metric");
}

TEST(Scheduler, RestoredOneCycleBoundsWinOverTheConstructorsAsInPython) {
  torch::nn::Linear model(3, 2);
  torch::optim::SGD opt(model->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));
  OneCycleLR original(opt, OneCycleLROptions(0.1, 30));
  for (int i = 0; i < 7; ++i) original.step();
  TrainingState saved;
  saved.model = model;
  saved.optimizer = &opt;
  saved.scheduler = &original;
  saved.rng = false;
  Value ck = load_from_bytes(save_to_bytes(saved.to_value()));  // through the file format

  // A new process builds its scheduler with other bounds (max_lr 0.5, other momenta) ...
  torch::nn::Linear model2(3, 2);
  torch::optim::SGD opt2(model2->parameters(), torch::optim::SGDOptions(0.7).momentum(0.5));
  OneCycleLR rebuilt(opt2, OneCycleLROptions(0.5, 30).max_momentum(0.99).base_momentum(0.8));
  TrainingState resumed;
  resumed.model = model2;
  resumed.optimizer = &opt2;
  resumed.scheduler = &rebuilt;
  resumed.rng = false;
  resumed.restore(ck);
  // ... and continues the restored schedule exactly, as Python's (which reads the bounds from
  // the restored param_groups) does.
  for (int i = 0; i < 20; ++i) {
    original.step();
    rebuilt.step();
    ASSERT_EQ(original.get_last_lr(), rebuilt.get_last_lr()) << "step " << i;
    const auto& a = static_cast<const torch::optim::SGDOptions&>(opt.param_groups()[0].options());
    const auto& b = static_cast<const torch::optim::SGDOptions&>(opt2.param_groups()[0].options());
    ASSERT_EQ(a.momentum(), b.momentum()) << "step " << i;
  }
}

// OneCycleLR cycles the momentum where the optimizer table says Python keeps it: 'momentum' for
// SGD and RMSprop, betas[0] for Adam and AdamW (its state's use_beta1); an optimizer without
// momentum is refused with cycle_momentum, and runs without it.
TEST(Scheduler, OneCycleCyclesEachOptimizersMomentumWhereThatOptimizerKeepsIt) {
  using namespace torch::optim;
  torch::nn::Linear model(3, 2);
  SGD sgd(model->parameters(), SGDOptions(0.1).momentum(0.5));
  RMSprop rms(model->parameters(), RMSpropOptions(0.1).momentum(0.5));
  Adam adam(model->parameters(), AdamOptions(0.1).betas(std::make_tuple(0.5, 0.9)));
  AdamW adamw(model->parameters(), AdamWOptions(0.1).betas(std::make_tuple(0.5, 0.9)));
  auto momentum = [](Optimizer& o) {
    const auto& opts = o.param_groups()[0].options();
    if (auto* x = dynamic_cast<const SGDOptions*>(&opts)) return x->momentum();
    if (auto* x = dynamic_cast<const RMSpropOptions*>(&opts)) return x->momentum();
    if (auto* x = dynamic_cast<const AdamOptions*>(&opts)) return std::get<0>(x->betas());
    return std::get<0>(static_cast<const AdamWOptions&>(opts).betas());
  };
  const std::pair<Optimizer*, bool> cases[] = {{&sgd, false}, {&rms, false}, {&adam, true}, {&adamw, true}};
  std::vector<double> first_run;
  for (const auto& [opt, beta1] : cases) {
    OneCycleLR sched(*opt, OneCycleLROptions(0.1, 10).max_momentum(0.95).base_momentum(0.85));
    EXPECT_EQ(momentum(*opt), 0.95);  // max_momentum at the start, as in Python
    EXPECT_EQ(sched.state_dict()["use_beta1"].to_bool(), beta1);
    std::vector<double> run;
    for (int i = 0; i < 6; ++i) {
      sched.step();
      run.push_back(momentum(*opt));
    }
    EXPECT_LT(run[2], 0.95);
    EXPECT_GE(run[2], 0.85);
    if (first_run.empty()) first_run = run;
    EXPECT_EQ(run, first_run);  // the same schedule, wherever the momentum is kept
  }
  EXPECT_EQ(std::get<1>(static_cast<const AdamOptions&>(adam.param_groups()[0].options()).betas()), 0.9);
  Adagrad adagrad(model->parameters(), AdagradOptions(0.1));
  expect_error([&] { OneCycleLR(adagrad, OneCycleLROptions(0.1, 10)); }, ErrorKind::kInvalidArgument,
               "optimizer must support momentum");
  OneCycleLR plain(adagrad, OneCycleLROptions(0.1, 10).cycle_momentum(false));
  plain.step();
  EXPECT_GT(adagrad.param_groups()[0].options().get_lr(), 0.1 / 25);
}

TEST(Scheduler, OneCycleTakesOneMaxLrPerParamGroupAsPythonDoes) {
  torch::nn::Linear a(3, 2), b(3, 2);
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(a->parameters(), std::make_unique<torch::optim::SGDOptions>(0.1));
  groups.emplace_back(b->parameters(), std::make_unique<torch::optim::SGDOptions>(0.1));
  torch::optim::SGD opt(groups, torch::optim::SGDOptions(0.1).momentum(0.9));
  OneCycleLR sched(opt, OneCycleLROptions({0.4, 0.02}, 10).div_factor(4).cycle_momentum(false));
  // Python: initial_lr = max_lr / div_factor per group, the first rate of the schedule (the
  // bit-exact curves against Python's are in the interop tests).
  auto expect_rates = [&](double a, double b) {
    ASSERT_EQ(sched.get_last_lr().size(), 2u);
    EXPECT_DOUBLE_EQ(sched.get_last_lr()[0], a);
    EXPECT_DOUBLE_EQ(sched.get_last_lr()[1], b);
  };
  expect_rates(0.1, 0.005);
  for (int i = 0; i < 2; ++i) sched.step();  // the warm-up ends at pct_start * 10 - 1 = 2
  expect_rates(0.4, 0.02);
  Value extras = optimizer_state_dict(opt, sched.group_extras())["param_groups"];
  EXPECT_EQ(extras[1]["max_lr"].to_double(), 0.02);
  EXPECT_DOUBLE_EQ(extras[1]["min_lr"].to_double(), 0.005 / 1e4);
  expect_error(
      [&] {
        OneCycleLR(opt, OneCycleLROptions({0.1, 0.2, 0.3}, 10));
      },
      ErrorKind::kInvalidArgument, "expected 2 values for max_lr (one per param group), got 3");
}

TEST(ManagerTraining, RestoresTheStateAndRefusesACheckpointThatDoesNotFit) {
  TempDir dir;
  ManagerOptions o;
  o.durable = false;
  o.save_every_steps = 2;
  torch::nn::Linear model(4, 3);
  torch::optim::SGD opt(model->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));
  TrainingState state;
  state.model = model;  // a ModuleHolder, as LibTorch code holds it
  state.optimizer = &opt;
  {
    CheckpointManager m(dir.path() + "/run", o);
    EXPECT_FALSE(m.restore(state));  // a fresh start
    for (state.step = 1; state.step <= 5; ++state.step) {
      opt.zero_grad();
      model->forward(torch::ones({2, 4})).sum().backward();
      opt.step();
      m.step(state);
    }
    --state.step;
    EXPECT_EQ(m.latest()->step, 4);
    EXPECT_TRUE(m.save(state));  // at the end
    EXPECT_FALSE(m.save(state));
  }
  torch::nn::Linear fresh(4, 3);
  torch::optim::SGD fresh_opt(fresh->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));
  TrainingState again;
  again.model = fresh.ptr().get();
  again.optimizer = &fresh_opt;
  CheckpointManager m(dir.path() + "/run", o);
  RestoreResult r = m.restore(again);
  ASSERT_TRUE(r);
  EXPECT_EQ(again.step, 5);
  EXPECT_TRUE(torch::equal(fresh->weight, model->weight));
  // Another model: every checkpoint would fail the same way, so this is an error, not a fallback.
  torch::nn::Linear other(4, 5);
  TrainingState wrong;
  wrong.model = other.ptr();  // or a shared_ptr
  expect_error([&] { m.restore(wrong); }, ErrorKind::kMismatch, "epoch=000-step=000005.pt");
  EXPECT_TRUE(m.checkpoints().back().damaged.empty());
}

// These crashed with SIGSEGV (unchecked look-ups) or let std::out_of_range escape.
// Found by fuzz_state: item() on a tensor of several elements threw c10::Error out of the loader.
TEST(BadState, AStepThatIsATensorOfSeveralElementsIsAnErrorNamingIt) {
  torch::nn::Linear model(2, 2);
  torch::optim::Adam adam(model->parameters(), torch::optim::AdamOptions(0.1));
  model->forward(torch::ones({1, 2})).sum().backward();
  adam.step();
  Value sd = load_from_bytes(save_to_bytes(optimizer_state_dict(adam)));
  Dict& s0 = sd["state"].dict().find(Value(0))->dict();
  s0.set("step", Value(torch::ones({3})));
  expect_error([&] { load_optimizer_state_dict(adam, sd); }, ErrorKind::kMismatch,
               "'step' is a tensor of 3 elements, not one number");
  s0.set("step", Value(-5.0));
  expect_error([&] { load_optimizer_state_dict(adam, sd); }, ErrorKind::kMismatch, "'step' is -5");
  s0.set("step", Value(1.0));
  sd["param_groups"][0].dict().set("lr", Value(torch::ones({2, 2})));
  expect_error([&] { load_optimizer_state_dict(adam, sd); }, ErrorKind::kMismatch, "'lr' is a tensor of 4 elements");
}

// Whatever LibTorch or the standard library throws inside a loader comes out as a one-line
// ckpt::Error naming the loader; ckpt's own errors pass unchanged.
TEST(BadState, LibTorchErrorsInALoaderBecomeOneLineCkptErrors) {
  expect_error([] { bridge::guard_loader("load_x", [] { TORCH_CHECK(false, "bad size 3"); }); }, ErrorKind::kMismatch,
               "load_x: bad size 3");
  expect_error([] { bridge::guard_loader("load_x", [] { (void)std::vector<int>().at(2); }); }, ErrorKind::kMismatch,
               "load_x: ");
  expect_error([] { bridge::guard_loader("load_x", [] { fail(ErrorKind::kCorruption, "own"); }); },
               ErrorKind::kCorruption, "own");
  EXPECT_THROW(bridge::guard_loader("load_x", [] { throw std::bad_alloc(); }), std::bad_alloc);
}

TEST(BadState, SchedulerStateOfAnotherKindOrWithAKeyMissingIsAnErrorNotACrash) {
  torch::nn::Linear model(2, 2);
  torch::optim::SGD opt(model->parameters(), torch::optim::SGDOptions(0.1));
  StepLR step(opt, 3, 0.5);
  Value sd = step.state_dict();
  CosineAnnealingLR cosine(opt, 10);
  expect_error([&] { cosine.load_state_dict(sd); }, ErrorKind::kMismatch, "scheduler state has no 'T_max'");
  OneCycleLR one(opt, OneCycleLROptions(0.1, 100));
  expect_error([&] { one.load_state_dict(sd); }, ErrorKind::kMismatch, "scheduler state has no 'total_steps'");
  for (const char* key : {"step_size", "gamma", "base_lrs", "last_epoch"}) {
    Value broken = step.state_dict();
    broken.dict().erase(key);
    StepLR fresh(opt, 3, 0.5);
    try {
      fresh.load_state_dict(broken);
      ADD_FAILURE() << "loaded a state without '" << key << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(key), std::string::npos) << e.what();
    }
  }
  Value retyped = step.state_dict();
  retyped.dict().set("gamma", "half");
  StepLR fresh(opt, 3, 0.5);
  EXPECT_THROW(fresh.load_state_dict(retyped), Error);
}

// A counter at INT64_MAX overflowed at the next step (undefined behaviour; found by fuzz_state).
TEST(BadState, SchedulerCountersOutOfRangeAreRefused) {
  torch::nn::Linear model(2, 2);
  torch::optim::SGD opt(model->parameters(), torch::optim::SGDOptions(0.1));
  StepLR step(opt, 3, 0.5);
  for (const char* key : {"last_epoch", "_step_count"}) {
    for (int64_t bad : {std::numeric_limits<int64_t>::max(), int64_t{-2}}) {
      Value sd = step.state_dict();
      sd.dict().set(key, bad);
      StepLR fresh(opt, 3, 0.5);
      expect_error([&] { fresh.load_state_dict(sd); }, ErrorKind::kInvalidArgument,
                   std::string("scheduler state '") + key + "' is " + std::to_string(bad) + ": out of range");
    }
  }
  ReduceLROnPlateau plateau(opt);
  Value sd = plateau.state_dict();
  sd.dict().set("num_bad_epochs", std::numeric_limits<int64_t>::max());
  ReduceLROnPlateau fresh(opt);
  expect_error([&] { fresh.load_state_dict(sd); }, ErrorKind::kInvalidArgument, "'num_bad_epochs' is");
}

TEST(BadState, AdamBetasOfTheWrongLengthIsAnErrorNotAnException) {
  torch::nn::Linear model(2, 2);
  torch::optim::Adam adam(model->parameters(), torch::optim::AdamOptions(1e-3));
  Value sd = optimizer_state_dict(adam);
  Value group = sd["param_groups"][0];
  group.dict().set("betas", Value::tuple({0.9}));
  expect_error([&] { load_optimizer_state_dict(adam, sd); }, ErrorKind::kMismatch, "'betas' has 1 values");
}

TEST(BadState, Torch113OneCycleLRFileNamesTheClassAndTheFix) {
  expect_error([] { load(std::string(CKPT_TESTDATA) + "/torch-1.13/onecycle_sd.pt"); }, ErrorKind::kUnsafe,
               "this is torch 1.13's OneCycleLR.state_dict(), which pickles the bound method 'anneal_func'");
}

}  // namespace
}  // namespace ckpt

namespace ckpt {
namespace {

// LibTorch's own archives (torch::save writes TorchScript) read as Python's layouts.
TEST(TorchScript, LibTorchModuleAndOptimizerArchivesReadAsPythonStateDicts) {
  TempDir dir;
  torch::manual_seed(3);
  torch::nn::Sequential net(torch::nn::Linear(4, 3), torch::nn::BatchNorm1d(3), torch::nn::Linear(3, 2));
  torch::optim::Adam adam(net->parameters(), torch::optim::AdamOptions(0.01).amsgrad(true));
  for (int i = 0; i < 3; ++i) {
    adam.zero_grad();
    net->forward(torch::randn({5, 4})).pow(2).sum().backward();
    adam.step();
  }
  torch::save(net, dir.file("net.pt"));
  torch::save(adam, dir.file("adam.pt"));
  torch::save(torch::arange(5.0), dir.file("t.pt"));
  torch::save(std::vector<torch::Tensor>{torch::ones({2}), torch::zeros({3})}, dir.file("tv.pt"));

  // The module: its state dict, under Python's names and in Python's order, bit for bit.
  Value sd = load(dir.file("net.pt"));
  Value expected = state_dict(*net);
  ASSERT_EQ(sd.size(), expected.size());
  for (size_t i = 0; i < sd.size(); ++i) {
    const auto& [k, v] = sd.dict().items()[i];
    EXPECT_EQ(k.to_string(), expected.dict().items()[i].first.to_string());
    EXPECT_TRUE(v.to_tensor().equal(expected.dict().items()[i].second.to_tensor())) << k.to_string();
    EXPECT_FALSE(v.tensor().requires_grad) << k.to_string();
  }
  torch::nn::Sequential fresh(torch::nn::Linear(4, 3), torch::nn::BatchNorm1d(3), torch::nn::Linear(3, 2));
  load_state_dict(*fresh, sd);  // strict

  // The optimizer: Python's layout, which ckpt's own loader (and Python's) takes.
  Value osd = load(dir.file("adam.pt"));
  ASSERT_EQ(osd["param_groups"].size(), 1u);
  EXPECT_EQ(osd["param_groups"][0]["lr"].to_double(), 0.01);
  EXPECT_TRUE(osd["param_groups"][0]["amsgrad"].to_bool());
  EXPECT_EQ(osd["param_groups"][0]["params"].size(), net->parameters().size());
  torch::optim::Adam adam2(fresh->parameters(), torch::optim::AdamOptions(0.5));
  load_optimizer_state_dict(adam2, osd);
  Value a = optimizer_state_dict(adam), b = optimizer_state_dict(adam2);
  for (int64_t p = 0; p < int64_t(net->parameters().size()); ++p) {
    const Value& sa = *a["state"].dict().find(Value(p));
    const Value& sb = *b["state"].dict().find(Value(p));
    for (const char* key : {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"})
      EXPECT_TRUE(sa[key].to_tensor().equal(sb[key].to_tensor())) << "param " << p << " " << key;
  }
  EXPECT_EQ(b["param_groups"][0]["lr"].to_double(), 0.01);

  // A tensor and a list of tensors.
  EXPECT_TRUE(load(dir.file("t.pt")).to_tensor().equal(torch::arange(5.0)));
  Value tv = load(dir.file("tv.pt"));
  ASSERT_EQ(tv.size(), 2u);
  EXPECT_TRUE(tv[1].to_tensor().equal(torch::zeros({3})));
  EXPECT_EQ(verify(dir.file("net.pt")).format, "TorchScript zip (torch.jit.save / LibTorch torch::save)");
}

TEST(TorchScript, TheGenuineLibTorchFilesRead) {
  const std::string d = std::string(CKPT_TESTDATA) + "/libtorch-1.13/";
  Value net = load(d + "net_cpp.pt");
  EXPECT_TRUE(net.contains("bn.num_batches_tracked"));
  EXPECT_TRUE(net.contains("seq.0.weight"));
  Value adam = load(d + "adam_cpp.pt");
  EXPECT_EQ(adam["state"].size(), 6u);
  EXPECT_EQ(adam["param_groups"][0]["params"].size(), 6u);
  EXPECT_EQ(load(d + "sgd_cpp.pt")["param_groups"][0]["params"].size(), 6u);
  EXPECT_TRUE(load(d + "tensor_cpp.pt").is_tensor());
  EXPECT_EQ(load(d + "tensorvec_cpp.pt").size(), 2u);
}

}  // namespace
}  // namespace ckpt
