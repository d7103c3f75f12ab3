// torch 2.x optimizer and scheduler layouts, both ways: the files in tests/data/torch2x (torch
// 1.13 runs rewritten into the layouts of 2.2.2 ... 2.14.0 by scripts/make_torch2x_testdata.py)
// load into LibTorch, continue training as Python 1.13 did from the same values, and are
// written back unchanged; LibTorch's own state is written in 2.14's or 1.13's layout.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdlib>
#include <filesystem>
#include <functional>
#include <map>

#include "ckpt/checkpoint.h"
#include "ckpt/manager.h"
#include "ckpt/scheduler.h"
#include "ckpt/serialize.h"
#include "ckpt/tensor.h"
#include "test_util.h"
#include "util/errors.h"

namespace fs = std::filesystem;
using ckpt::Dict;
using ckpt::Value;

namespace {

const std::string kDir = std::string(CKPT_TESTDATA) + "/../torch2x";

// The first difference between two values: kinds (an int is not a float), dict keys and their
// order, tensor dtypes, shapes and bytes, numbers. "" when none.
std::string first_difference(const Value& a, const Value& b, const std::string& where = "") {
  if (a.kind() != b.kind()) return ckpt::str_cat(where, ": ", a.kind_name(), " vs ", b.kind_name());
  switch (a.kind()) {
    case Value::Kind::kDict: {
      const auto& x = a.dict().items();
      const auto& y = b.dict().items();
      for (size_t i = 0; i < std::max(x.size(), y.size()); ++i) {
        if (i >= x.size() || i >= y.size())
          return ckpt::str_cat(where, ": ", x.size(), " keys vs ", y.size(), " keys (",
                               ckpt::short_repr(i < x.size() ? x[i].first : y[i].first), " only on one side)");
        if (ckpt::short_repr(x[i].first) != ckpt::short_repr(y[i].first))
          return ckpt::str_cat(where, ": key ", i, " is ", ckpt::short_repr(x[i].first), " vs ",
                               ckpt::short_repr(y[i].first));
        std::string d = first_difference(x[i].second, y[i].second, where + "/" + ckpt::short_repr(x[i].first));
        if (!d.empty()) return d;
      }
      return "";
    }
    case Value::Kind::kList:
    case Value::Kind::kTuple:
      if (a.items().size() != b.items().size())
        return ckpt::str_cat(where, ": ", a.items().size(), " vs ", b.items().size(), " items");
      for (size_t i = 0; i < a.items().size(); ++i) {
        std::string d = first_difference(a.items()[i], b.items()[i], ckpt::str_cat(where, "[", i, "]"));
        if (!d.empty()) return d;
      }
      return "";
    case Value::Kind::kTensor: {
      at::Tensor x = a.to_tensor(), y = b.to_tensor();
      if (x.scalar_type() != y.scalar_type() || x.sizes() != y.sizes() || !x.equal(y))
        return ckpt::str_cat(where, ": tensors differ (", x.scalar_type(), x.sizes(), " vs ", y.scalar_type(),
                             y.sizes(), ")");
      return "";
    }
    case Value::Kind::kBool:
      return a.to_bool() == b.to_bool() ? "" : where + ": bools differ";
    case Value::Kind::kInt:
      return a.to_int() == b.to_int() ? "" : ckpt::str_cat(where, ": ", a.to_int(), " vs ", b.to_int());
    case Value::Kind::kFloat:
      return a.to_double() == b.to_double() || (std::isnan(a.to_double()) && std::isnan(b.to_double()))
                 ? ""
                 : ckpt::str_cat(where, ": ", a.to_double(), " vs ", b.to_double());
    case Value::Kind::kString:
      return a.to_string() == b.to_string() ? "" : where + ": '" + a.to_string() + "' vs '" + b.to_string() + "'";
    case Value::Kind::kNone:
      return "";
    default:
      return ckpt::short_repr(a) == ckpt::short_repr(b) ? "" : where + ": objects differ";
  }
}

double num(const Value& args, const char* key, double fallback) {
  const Value* v = args.dict().find(key);
  if (v == nullptr) return fallback;
  return v->is_bool() ? v->to_bool() : v->to_double();
}

std::unique_ptr<torch::optim::Optimizer> make_optimizer(const std::string& name, const Value& args,
                                                        std::vector<at::Tensor> params) {
  for (const auto& [k, _] : args.dict()) {
    static const std::set<std::string> known = {"lr",       "momentum",     "nesterov",
                                                "amsgrad",  "weight_decay", "centered",
                                                "max_iter", "history_size", "decoupled_weight_decay"};
    if (!known.count(k.to_string())) ADD_FAILURE() << "optimizer argument the test does not know: " << k.to_string();
  }
  double lr = num(args, "lr", 0.01);
  if (name == "SGD")
    return std::make_unique<torch::optim::SGD>(
        params, torch::optim::SGDOptions(lr).momentum(num(args, "momentum", 0)).nesterov(num(args, "nesterov", 0)));
  if (name == "Adam")
    return std::make_unique<torch::optim::Adam>(
        params,
        torch::optim::AdamOptions(lr).amsgrad(num(args, "amsgrad", 0)).weight_decay(num(args, "weight_decay", 0)));
  if (name == "AdamW")
    return std::make_unique<torch::optim::AdamW>(
        params,
        torch::optim::AdamWOptions(lr).amsgrad(num(args, "amsgrad", 0)).weight_decay(num(args, "weight_decay", 0.01)));
  if (name == "RMSprop")
    return std::make_unique<torch::optim::RMSprop>(
        params, torch::optim::RMSpropOptions(lr).momentum(num(args, "momentum", 0)).centered(num(args, "centered", 0)));
  if (name == "Adagrad") return std::make_unique<torch::optim::Adagrad>(params, torch::optim::AdagradOptions(lr));
  if (name == "LBFGS")
    return std::make_unique<torch::optim::LBFGS>(params, torch::optim::LBFGSOptions(lr)
                                                             .history_size(num(args, "history_size", 100))
                                                             .max_iter(num(args, "max_iter", 20)));
  ADD_FAILURE() << "optimizer " << name;
  return nullptr;
}

std::unique_ptr<ckpt::Scheduler> make_scheduler(const Value& name, const Value& args, torch::optim::Optimizer& opt) {
  if (name.is_none()) return nullptr;
  const std::string& n = name.to_string();
  if (n == "StepLR") return std::make_unique<ckpt::StepLR>(opt, args["step_size"].to_int(), num(args, "gamma", 0.1));
  if (n == "MultiStepLR") {
    std::vector<int64_t> milestones;
    for (const auto& m : args["milestones"].items()) milestones.push_back(m.to_int());
    return std::make_unique<ckpt::MultiStepLR>(opt, milestones, num(args, "gamma", 0.1));
  }
  if (n == "ExponentialLR") return std::make_unique<ckpt::ExponentialLR>(opt, args["gamma"].to_double());
  if (n == "CosineAnnealingLR")
    return std::make_unique<ckpt::CosineAnnealingLR>(opt, args["T_max"].to_int(), num(args, "eta_min", 0));
  if (n == "LinearLR")
    return std::make_unique<ckpt::LinearLR>(opt, num(args, "start_factor", 1.0 / 3), num(args, "end_factor", 1.0),
                                            static_cast<int64_t>(num(args, "total_iters", 5)));
  if (n == "OneCycleLR")
    return std::make_unique<ckpt::OneCycleLR>(
        opt, ckpt::OneCycleLROptions(args["max_lr"].to_double(), args["total_steps"].to_int()));
  if (n == "ReduceLROnPlateau") {
    ckpt::ReduceLROnPlateauOptions o;
    o.mode(args["mode"].to_string()).factor(num(args, "factor", 0.1)).patience(num(args, "patience", 10));
    o.threshold(num(args, "threshold", 1e-4)).cooldown(num(args, "cooldown", 0));
    return std::make_unique<ckpt::ReduceLROnPlateau>(opt, o);
  }
  ADD_FAILURE() << "scheduler " << n;
  return nullptr;
}

// A run restored from one file: the model, optimizer and scheduler the file describes.
struct Resumed {
  torch::nn::Sequential model{torch::nn::Linear(4, 8), torch::nn::Tanh(), torch::nn::Linear(8, 2)};
  std::unique_ptr<torch::optim::Optimizer> opt;
  std::unique_ptr<ckpt::Scheduler> sched;
  ckpt::TrainingState state;
  Value file;

  explicit Resumed(const std::string& path, const std::string& optimizer_override = "") {
    file = ckpt::load(path);
    std::string name = optimizer_override.empty() ? file["optimizer"].to_string() : optimizer_override;
    opt = make_optimizer(name, file["optimizer_args"], model->parameters());
    sched = make_scheduler(file["scheduler"], file["scheduler_args"], *opt);
    state.model = model;
    state.optimizer = opt.get();
    state.scheduler = sched.get();
    state.rng = false;
  }
  void restore() {
    ckpt::load_state_dict(*model, file["model_state"]);
    state.optimizer_layout = ckpt::load_optimizer_state_dict(*opt, file["optimizer_state"]);
    if (sched) {
      sched->load_state_dict(file["scheduler_state"]);
      sched->load_group_extras(file["optimizer_state"]["param_groups"]);
    }
  }
  // Python's loop: zero_grad, mse_loss on the whole batch, backward, step, scheduler step.
  std::pair<std::vector<std::vector<at::Tensor>>, std::vector<double>> train(int64_t steps) {
    at::Tensor x = file["inputs"].to_tensor(), y = file["targets"].to_tensor();
    std::vector<std::vector<at::Tensor>> params;
    std::vector<double> lrs;
    for (int64_t i = 0; i < steps; ++i) {
      auto closure = [&] {
        opt->zero_grad();
        at::Tensor loss = torch::mse_loss(model->forward(x), y);
        loss.backward();
        return loss;
      };
      at::Tensor loss;
      if (dynamic_cast<torch::optim::LBFGS*>(opt.get())) {
        opt->step(closure);
      } else {
        loss = closure();
        opt->step();
      }
      if (sched) {
        if (sched->needs_metric())
          sched->step(loss.item<double>());
        else
          sched->step();
      }
      std::vector<at::Tensor> now;
      for (const auto& p : model->parameters()) now.push_back(p.detach().clone());
      params.push_back(now);
      lrs.push_back(opt->param_groups()[0].options().get_lr());
    }
    return {params, lrs};
  }
};

std::vector<std::string> data_files() {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(kDir))
    if (e.path().extension() == ".pt") out.push_back(e.path().string());
  std::sort(out.begin(), out.end());
  return out;
}

std::string config_of(const std::string& path) {
  std::string stem = fs::path(path).stem().string();
  return stem.substr(0, stem.rfind('-'));
}

// The layout of a value without its numbers: dict keys in order, kinds, tensor dtypes and shapes.
std::string layout_of(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kDict: {
      std::string out = "{";
      for (const auto& [k, x] : v.dict()) out += ckpt::short_repr(k) + ": " + layout_of(x) + ", ";
      return out + "}";
    }
    case Value::Kind::kList:
    case Value::Kind::kTuple: {
      std::string out = v.is_list() ? "[" : "(";
      for (const auto& x : v.items()) out += layout_of(x) + ", ";
      return out + (v.is_list() ? "]" : ")");
    }
    case Value::Kind::kTensor: {
      at::Tensor t = v.to_tensor();
      return ckpt::str_cat("tensor ", t.scalar_type(), t.sizes());
    }
    default:
      return v.kind_name();
  }
}

// The parameters after each step of two runs are the same, bit for bit.
std::string same_run(const std::vector<std::vector<at::Tensor>>& a, const std::vector<std::vector<at::Tensor>>& b) {
  if (a.size() != b.size()) return ckpt::str_cat(a.size(), " vs ", b.size(), " steps");
  for (size_t s = 0; s < a.size(); ++s)
    for (size_t i = 0; i < a[s].size(); ++i)
      if (!a[s][i].equal(b[s][i])) return ckpt::str_cat("parameter ", i, " differs after step ", s + 1);
  return "";
}

// The 2.14 file `name` restored after `spoil` changed its optimizer state, trained for 3 steps.
std::vector<std::vector<at::Tensor>> run_spoiled(const std::string& name, const std::function<void(Value&)>& spoil) {
  Resumed run(kDir + "/" + name);
  spoil(run.file["optimizer_state"]);
  run.restore();
  return run.train(3).first;
}

}  // namespace

// Every file of every layout continues as Python 1.13 continued from the same values, and the
// same in LibTorch as from the 1.13 file, bit for bit.
TEST(Torch2x, EveryLayoutContinuesTrainingAsPythonDid) {
  torch::set_num_threads(1);
  auto files = data_files();
  ASSERT_GE(files.size(), 120u);
  std::map<std::string, std::vector<std::vector<at::Tensor>>> from_113;
  for (const auto& path : files)
    if (path.find("-1.13.1.pt") != std::string::npos) {
      SCOPED_TRACE(path);
      Resumed run(path);
      run.restore();
      from_113[config_of(path)] = run.train(5).first;
    }
  std::set<std::string> tags, configs;
  for (const auto& path : files) {
    SCOPED_TRACE(path);
    Resumed run(path);
    tags.insert(run.file["torch_version"].to_string());
    configs.insert(config_of(path));
    ASSERT_NO_THROW(run.restore());
    auto [params, lrs] = run.train(run.file["steps_after"].to_int());
    const auto& expected = run.file["expected_params"].items();
    const auto& expected_lr = run.file["expected_lr"].items();
    ASSERT_EQ(params.size(), expected.size());
    auto names = run.model->named_parameters();
    for (size_t s = 0; s < params.size(); ++s) {
      EXPECT_EQ(lrs[s], expected_lr[s].to_double()) << "lr after step " << s + 1;
      for (size_t i = 0; i < names.size(); ++i) {
        at::Tensor want = expected[s][names[i].key()].to_tensor();
        EXPECT_TRUE(at::allclose(params[s][i], want, 1e-5, 1e-7))
            << names[i].key() << " after step " << s + 1 << ": max |diff| "
            << (params[s][i] - want).abs().max().item<double>();
      }
    }
    // The same values, whatever layout they came in, give the same run in LibTorch.
    auto it = from_113.find(config_of(path));
    if (it != from_113.end())
      for (size_t s = 0; s < params.size(); ++s)
        for (size_t i = 0; i < params[s].size(); ++i)
          EXPECT_TRUE(params[s][i].equal(it->second[s][i])) << "step " << s + 1 << " differs from the 1.13 file's run";
  }
  EXPECT_EQ(tags, (std::set<std::string>{"1.13.1", "2.2.2", "2.3.0", "2.5.1", "2.6.0", "2.7.0", "2.9.1", "2.14.0"}));
  EXPECT_EQ(configs.size(), 16u);
}

// What was read is written back with the keys, order and types it came with: a 2.14 file stays a
// 2.14 file (and a 1.13 file a 1.13 file) through load and save, also through a TrainingState
// and a real file.
TEST(Torch2x, WhatWasReadIsWrittenBackInItsLayout) {
  for (const auto& path : data_files()) {
    SCOPED_TRACE(path);
    Resumed run(path);
    run.restore();
    ckpt::GroupExtras extras = run.sched ? run.sched->group_extras() : ckpt::GroupExtras{};
    Value osd = ckpt::optimizer_state_dict(*run.opt, extras, run.state.optimizer_layout);
    EXPECT_EQ(first_difference(osd, run.file["optimizer_state"], "optimizer_state"), "");
    if (run.sched)
      EXPECT_EQ(first_difference(run.sched->state_dict(), run.file["scheduler_state"], "scheduler_state"), "");

    // Through TrainingState::restore and to_value, and a file on disk.
    Value ck = Value::new_dict();
    for (const char* key : {"model_state", "optimizer_state", "scheduler_state"})
      if (!run.file[key].is_none()) ck.dict().set(key, run.file[key]);
    if (!run.sched) run.state.scheduler = nullptr;
    Resumed fresh(path);
    if (!fresh.sched) fresh.state.scheduler = nullptr;
    fresh.state.restore(ck, /*strict=*/false);
    ckpt::test::TempDir dir;
    fresh.state.save(dir.path() + "/again.pt");
    Value again = ckpt::load(dir.path() + "/again.pt");
    EXPECT_EQ(first_difference(again["optimizer_state"], run.file["optimizer_state"], "optimizer_state"), "");
    if (run.sched)
      EXPECT_EQ(first_difference(again["scheduler_state"], run.file["scheduler_state"], "scheduler_state"), "");
  }
}

// State LibTorch built itself is written in torch 2.14's layout by default and in 1.13's when
// asked: the same keys, order and value types as the files Python wrote (rewritten for 2.14).
TEST(Torch2x, LibTorchStateIsWrittenInTheLayoutAskedFor) {
  for (const auto& path : data_files()) {
    if (path.find("-1.13.1.pt") == std::string::npos && path.find("-2.14.0.pt") == std::string::npos) continue;
    SCOPED_TRACE(path);
    ckpt::TorchLayout layout =
        path.find("-1.13.1.pt") != std::string::npos ? ckpt::TorchLayout::kTorch113 : ckpt::TorchLayout::kTorch2;
    Resumed loaded(path);
    loaded.restore();
    // The same state, rebuilt by LibTorch from what it holds (no memory of the file's layout).
    Resumed built(path);
    ckpt::load_state_dict(*built.model, built.file["model_state"]);
    ckpt::load_optimizer_state_dict(*built.opt, built.file["optimizer_state"]);
    ckpt::GroupExtras extras;
    if (built.sched) {
      built.sched = make_scheduler(built.file["scheduler"], built.file["scheduler_args"], *built.opt);
      built.sched->load_state_dict(loaded.sched->state_dict_as(layout));  // only its values matter here
      extras = built.sched->group_extras();
    }
    Value osd = ckpt::optimizer_state_dict(*built.opt, extras, ckpt::OptimizerLayout(layout));
    const Value& want = built.file["optimizer_state"];
    // Group keys: same names in the same order, same kinds.
    const Dict& g = osd["param_groups"][0].dict();
    const Dict& w = want["param_groups"][0].dict();
    std::vector<std::string> got_keys, want_keys;
    for (const auto& [k, v] : g) got_keys.push_back(k.to_string());
    for (const auto& [k, v] : w) want_keys.push_back(k.to_string());
    EXPECT_EQ(got_keys, want_keys);
    for (const auto& [k, v] : w)
      if (const Value* mine = g.find(k)) {
        // A rate the user passed as an int (LBFGS(lr=1)) is an int in Python; LibTorch keeps a double.
        if (v.is_int() && v.to_int() != 0 && mine->is_float()) continue;
        EXPECT_EQ(mine->kind_name(), std::string(v.kind_name())) << k.to_string();
      }
    // Per-parameter state: same keys and kinds ('step' an int or a tensor as that torch has it).
    // 1.13's SGD without momentum writes {'momentum_buffer': None}, which LibTorch cannot know.
    if (!(layout == ckpt::TorchLayout::kTorch113 && want["state"].size() > 0 && osd["state"].size() == 0)) {
      ASSERT_EQ(osd["state"].size(), want["state"].size());
      for (const auto& [id, entry] : want["state"].dict()) {
        const Value* mine = osd["state"].dict().find(id);
        ASSERT_NE(mine, nullptr);
        std::vector<std::string> a, b;
        // LBFGS's t is the lr the user passed, an int for LBFGS(lr=1), a float for LibTorch.
        auto kind = [](const Value& v) {
          return std::string(v.is_int() ? "number" : v.is_float() ? "number" : v.kind_name());
        };
        for (const auto& [k, v] : entry.dict())
          a.push_back(k.to_string() + ":" + (k.to_string() == "t" ? kind(v) : v.kind_name()));
        for (const auto& [k, v] : mine->dict())
          b.push_back(k.to_string() + ":" + (k.to_string() == "t" ? kind(v) : v.kind_name()));
        EXPECT_EQ(b, a);
      }
    }
    if (built.sched) {
      // A scheduler that never loaded anything, stepped as often as the file's.
      auto own = make_scheduler(built.file["scheduler"], built.file["scheduler_args"], *built.opt);
      for (int i = 0; i < 6; ++i) own->needs_metric() ? own->step(1.0) : own->step();
      Value fresh_sched = own->state_dict_as(layout);
      std::vector<std::string> a, b;
      for (const auto& [k, v] : built.file["scheduler_state"].dict()) a.push_back(k.to_string());
      for (const auto& [k, v] : fresh_sched.dict()) b.push_back(k.to_string());
      EXPECT_EQ(b, a) << "scheduler keys";
    }
  }
}

// Keys whose math LibTorch cannot do are refused naming the key and the fix; AdamW's math
// written as an Adam with decoupled_weight_decay=True goes into AdamW and trains on as Python did.
TEST(Torch2x, BadLayoutsAreRefusedNamingTheKey) {
  struct Case {
    const char* file;
    const char* must_say;
  } cases[] = {
      {"adam-2.14.0-maximize.pt", "maximize=True is not supported by LibTorch's Adam"},
      {"adam-2.14.0-fused.pt", "fused=True is the fused CUDA kernel"},
      {"adam-2.14.0-capturable.pt", "capturable=True is a CUDA-graph run"},
      {"adam-2.14.0-unknown-key.pt", "param_groups[0] has the key 'unknown_option'"},
      {"adam-2.14.0-betas3.pt", "'betas' has 3 values, expected 2"},
      {"adam-2.14.0-step-str.pt", "'step' is str, not a number"},
      {"adam-2.14.0-decoupled_weight_decay.pt", "decoupled_weight_decay=True is AdamW's math"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.file);
    Resumed run(kDir + "/bad/" + c.file);
    ckpt::load_state_dict(*run.model, run.file["model_state"]);
    Value before = ckpt::optimizer_state_dict(*run.opt);
    ckpt::test::expect_error([&] { ckpt::load_optimizer_state_dict(*run.opt, run.file["optimizer_state"]); },
                             ckpt::ErrorKind::kMismatch, c.must_say);
    // A refused load changes nothing.
    EXPECT_EQ(first_difference(ckpt::optimizer_state_dict(*run.opt), before), "");
  }
  // The same decoupled_weight_decay=True file is AdamW's state: it continues as Python did.
  Resumed adamw(kDir + "/bad/adam-2.14.0-decoupled_weight_decay.pt", "AdamW");
  adamw.restore();
  auto [params, lrs] = adamw.train(5);
  auto names = adamw.model->named_parameters();
  for (size_t i = 0; i < names.size(); ++i)
    EXPECT_TRUE(at::allclose(params[4][i], adamw.file["expected_params"][4][names[i].key()].to_tensor(), 1e-5, 1e-7));

  // A StepLR state given to a CosineAnnealingLR, a 2.9.1 state without last_epoch.
  torch::nn::Linear lin(2, 2);
  torch::optim::SGD sgd(lin->parameters(), torch::optim::SGDOptions(0.1));
  ckpt::CosineAnnealingLR cos(sgd, 10);
  ckpt::test::expect_error(
      [&] { cos.load_state_dict(ckpt::load(kDir + "/bad/steplr-2.14.0-as-cosineannealinglr.pt")); },
      ckpt::ErrorKind::kMismatch, "scheduler state has no 'T_max'");
  ckpt::StepLR step(sgd, 3);
  ckpt::test::expect_error([&] { step.load_state_dict(ckpt::load(kDir + "/bad/steplr-2.9.1-missing-last_epoch.pt")); },
                           ckpt::ErrorKind::kMismatch, "'last_epoch'");
}

// A 2.14 file keeps its keys, order and value kinds through `ckpt convert` and through the run
// manager: restored into a TrainingState by a CheckpointManager and saved by it, before and after
// training on.
TEST(Torch2x, A214FileKeepsItsLayoutThroughConvertAndTheRunManager) {
  for (const char* name :
       {"adam_onecyclelr-2.14.0.pt", "adamw-2.14.0.pt", "rmsprop-2.14.0.pt", "sgd_steplr-2.14.0.pt"}) {
    SCOPED_TRACE(name);
    const std::string path = kDir + "/" + name;
    const Value original = ckpt::load(path);
    ckpt::test::TempDir dir;
    std::string source = path;
#ifdef CKPT_CLI
    const std::string converted = dir.file("converted.pt"), log = dir.file("convert.log");
    const int rc =
        std::system((std::string(CKPT_CLI) + " convert '" + path + "' '" + converted + "' > " + log + " 2>&1").c_str());
    ASSERT_EQ(rc, 0) << ckpt::test::read_file(log);
    // Everything: keys, their order, kinds, tensors and numbers.
    EXPECT_EQ(first_difference(ckpt::load(converted), original), "");
    source = converted;
#endif
    // (Without CKPT_CLI — the sanitizer builds, which build no tools — only the run manager's
    // part runs here; the main build, which scripts/test.sh runs first, checks `ckpt convert`.)
    Resumed run(path);
    if (!run.sched) run.state.scheduler = nullptr;
    ckpt::ManagerOptions options;
    options.durable = false;
    ckpt::CheckpointManager manager(dir.file("run"), options);
    ASSERT_TRUE(manager.restore(run.state, ckpt::ResumeFrom::file(source), /*strict=*/false).restored);
    run.state.step = 100;
    ASSERT_TRUE(manager.save(run.state));
    Value saved = ckpt::load(manager.latest()->path);
    EXPECT_EQ(first_difference(saved["optimizer_state"], original["optimizer_state"], "optimizer_state"), "");
    if (run.sched)
      EXPECT_EQ(first_difference(saved["scheduler_state"], original["scheduler_state"], "scheduler_state"), "");

    // Trained on, its numbers change and its layout does not.
    run.train(2);
    run.state.step = 102;
    ASSERT_TRUE(manager.save(run.state));
    Value later = ckpt::load(manager.latest()->path);
    EXPECT_NE(first_difference(later["optimizer_state"]["state"], original["optimizer_state"]["state"]), "");
    EXPECT_EQ(layout_of(later["optimizer_state"]), layout_of(original["optimizer_state"]));
    if (run.sched) EXPECT_EQ(layout_of(later["scheduler_state"]), layout_of(original["scheduler_state"]));
  }
}

// What torch accepts in two forms trains the same in either: betas as a list
// (torch.optim.Adam(betas=[0.9, 0.999]) keeps the list) or a tuple; a 'step' as a Python int
// (torch 1.13, RMSprop through 2.3) or a 0-dim tensor.
TEST(Torch2x, EitherFormTorchAcceptsTrainsTheSame) {
  torch::set_num_threads(1);
  auto unchanged = [](Value&) {};
  for (const char* name : {"adam-2.14.0.pt", "adamw-2.14.0.pt", "adam_onecyclelr-2.14.0.pt"}) {
    SCOPED_TRACE(name);
    auto as_list = [](Value& osd) {
      Value& betas = osd["param_groups"][0]["betas"];
      ASSERT_TRUE(betas.is_tuple());
      std::vector<Value> items = betas.items();
      betas = Value::list(items);
    };
    EXPECT_EQ(same_run(run_spoiled(name, unchanged), run_spoiled(name, as_list)), "");
  }
  for (const char* name : {"adam-2.14.0.pt", "rmsprop-2.14.0.pt", "adagrad-2.14.0.pt"}) {
    SCOPED_TRACE(name);
    auto as_int = [](Value& osd) {
      for (const auto& item : osd["state"].dict().items()) {
        Value* step = osd["state"].dict().find(item.first)->dict().find("step");
        ASSERT_TRUE(step != nullptr && step->is_tensor() && step->tensor().sizes.empty());
        *step = Value(static_cast<int64_t>(step->to_tensor().item<double>()));
      }
    };
    EXPECT_EQ(same_run(run_spoiled(name, unchanged), run_spoiled(name, as_int)), "");
    // The step counts themselves (RMSprop's math does not use them): the same once loaded.
    Resumed a(kDir + "/" + name), b(kDir + "/" + name);
    as_int(b.file["optimizer_state"]);
    a.restore();
    b.restore();
    const ckpt::OptimizerLayout layout(ckpt::TorchLayout::kTorch2);
    EXPECT_EQ(first_difference(ckpt::optimizer_state_dict(*a.opt, {}, layout),
                               ckpt::optimizer_state_dict(*b.opt, {}, layout), "optimizer_state"),
              "");
  }
}

// Values of a wrong type are refused with one line naming the key, and the refused load changes
// nothing.
TEST(Torch2x, WrongTypesAreRefusedNamingTheKey) {
  auto set_group = [](const char* key, Value v) {
    return [=](Value& osd) { osd["param_groups"][0].dict().set(key, v); };
  };
  auto set_state = [](const char* key, Value v) {  // in parameter 0's state
    return [=](Value& osd) { osd["state"].dict().find(Value(0))->dict().set(key, v); };
  };
  struct Case {
    const char* file;
    std::function<void(Value&)> spoil;
    const char* must_say;
  } cases[] = {
      {"adam-2.14.0.pt", set_state("step", Value("3")), "'step' is str, not a number"},
      {"adam-2.14.0.pt", set_state("step", Value::list({Value(3)})), "'step' is list, not a number"},
      {"adam-2.14.0.pt", set_state("step", Value(at::ones({2}))), "'step' is a tensor of 2 elements"},
      {"rmsprop-2.14.0.pt", set_state("step", Value("3")), "'step' is str, not a number"},
      {"rmsprop-2.14.0.pt", set_state("step", Value::list({Value(3)})), "'step' is list, not a number"},
      {"adagrad-2.14.0.pt", set_state("step", Value::list({})), "'step' is list, not a number"},
      {"adam-2.14.0.pt", set_group("betas", Value::tuple({Value(0.9), Value("0.999")})),
       "'betas[1]' is str, not a number"},
      {"adamw-2.14.0.pt", set_group("betas", Value::list({Value("0.9"), Value(0.999)})),
       "'betas[0]' is str, not a number"},
      {"adam-2.14.0.pt", set_group("betas", Value(0.9)), "'betas' is float, not a pair of numbers"},
      {"sgd_momentum-2.14.0.pt", set_group("lr", Value("0.1")), "'lr' is str, not a number"},
      {"adam-2.14.0.pt", set_group("lr", Value::list({Value(0.1)})), "'lr' is list, not a number"},
      {"rmsprop-2.14.0.pt", set_group("momentum", Value("0")), "'momentum' is str, not a number"},
      {"sgd_momentum-2.14.0.pt", set_group("nesterov", Value(1)), "'nesterov' is int, not a bool"},
      {"adam-2.14.0.pt", set_group("foreach", Value("yes")), "'foreach' is str, not a bool or None"},
      {"adam-2.14.0.pt", set_group("maximize", Value(0)), "'maximize' is int, not a bool"},
      {"adam-2.14.0.pt", set_state("exp_avg", Value(1.0)), "'exp_avg' is float, not a tensor"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(std::string(c.file) + ": " + c.must_say);
    Resumed run(kDir + "/" + c.file);
    ckpt::load_state_dict(*run.model, run.file["model_state"]);
    Value before = ckpt::optimizer_state_dict(*run.opt);
    c.spoil(run.file["optimizer_state"]);
    ckpt::test::expect_error([&] { ckpt::load_optimizer_state_dict(*run.opt, run.file["optimizer_state"]); },
                             ckpt::ErrorKind::kMismatch, c.must_say);
    EXPECT_EQ(first_difference(ckpt::optimizer_state_dict(*run.opt), before), "");
  }
}

// Python-only flags, for every optimizer that has them: the values whose math LibTorch does not
// do are refused naming the key (a flag torch never writes for that optimizer, as an unknown
// key); the harmless ones load and train as the file itself does.
TEST(Torch2x, PythonFlagsAreRefusedOrAcceptedForEveryOptimizer) {
  torch::set_num_threads(1);
  for (const char* name :
       {"sgd_momentum-2.14.0.pt", "adam-2.14.0.pt", "adamw-2.14.0.pt", "rmsprop-2.14.0.pt", "adagrad-2.14.0.pt"}) {
    SCOPED_TRACE(name);
    const Value group = ckpt::load(kDir + "/" + name)["optimizer_state"]["param_groups"][0];
    auto set = [](const std::string& key, Value v) {
      return [=](Value& osd) { osd["param_groups"][0].dict().set(key, v); };
    };
    for (const char* flag : {"maximize", "fused", "capturable", "differentiable"}) {
      SCOPED_TRACE(std::string(flag) + "=True");
      Resumed run(kDir + "/" + name);
      ckpt::load_state_dict(*run.model, run.file["model_state"]);
      Value before = ckpt::optimizer_state_dict(*run.opt);
      set(flag, Value(true))(run.file["optimizer_state"]);
      const std::string must_say = group.dict().find(flag) ? std::string(flag) + "=True "
                                                            : "has the key '" + std::string(flag) + "'";
      ckpt::test::expect_error([&] { ckpt::load_optimizer_state_dict(*run.opt, run.file["optimizer_state"]); },
                               ckpt::ErrorKind::kMismatch, must_say);
      EXPECT_EQ(first_difference(ckpt::optimizer_state_dict(*run.opt), before), "");
    }
    if (std::string(name).rfind("adamw", 0) == 0) {
      Resumed run(kDir + "/" + name);
      set("decoupled_weight_decay", Value(false))(run.file["optimizer_state"]);
      ckpt::test::expect_error([&] { run.restore(); }, ckpt::ErrorKind::kMismatch,
                               "decoupled_weight_decay=False is Adam's L2 decay");
    }

    const auto as_written = run_spoiled(name, [](Value&) {});
    const std::pair<const char*, Value> harmless[] = {
        {"foreach", Value(true)},  {"foreach", Value(false)},        {"foreach", Value()},
        {"fused", Value()},        {"fused", Value(false)},          {"differentiable", Value(false)},
        {"capturable", Value(false)},
    };
    for (const auto& [flag, v] : harmless) {
      if (!group.dict().find(flag)) continue;  // a key this optimizer's torch never writes
      SCOPED_TRACE(std::string(flag) + "=" + ckpt::short_repr(v));
      std::vector<std::vector<at::Tensor>> params;
      ASSERT_NO_THROW(params = run_spoiled(name, set(flag, v)));
      EXPECT_EQ(same_run(params, as_written), "");
    }
  }
}
