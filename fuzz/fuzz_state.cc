// libFuzzer target: mutated state dicts into every loader of the LibTorch bridge and into
// TrainingState::restore (what the run manager's restore calls). Each load, and a step of what
// was loaded, must end in success or a ckpt::Error: anything else — a c10::Error, a
// std::out_of_range, a signal — escapes and is reported as a crash.
//
// The input picks a target and a source state: a valid state dict written by an object of the
// target's kind or of another kind (a StepLR state for a CosineAnnealingLR, an SGD state for
// Adam), in torch 1.13's or torch 2.14's layout, then a few mutations of that tree: keys removed, renamed, values
// retyped, tensors reshaped or given another dtype, ints set out of range, list items dropped or repeated.
// A third of the inputs start instead from a state Python wrote: the model, optimizer and
// scheduler state dicts of the files in tests/data/torch2x (torch 1.13 and 2.2 ... 2.14
// layouts, the refused ones under bad/ included), loaded into an object of that file's kind over
// a model of that file's shapes, so that the mutations start from torch 2.x dicts as they are.
#include <fuzzer/FuzzedDataProvider.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/linear.h>
#include <torch/optim.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "ckpt/checkpoint.h"
#include "ckpt/tensor.h"

namespace {

using ckpt::Value;

// Everything a checkpoint restores, built fresh for each input (a load may leave its target
// half-changed, which the next input must not inherit) and only as far as the input needs it.
constexpr size_t kOptimizers = 6, kSchedulers = 7;
constexpr size_t kTargets = 1 + kOptimizers + kSchedulers + 3;  // + sampler, RNG, TrainingState

struct World {
  // python_model: the model of the torch2x files (scripts/make_torch2x_testdata.py).
  explicit World(bool python_model)
      : model(python_model ? torch::nn::Sequential(torch::nn::Linear(4, 8), torch::nn::Tanh(), torch::nn::Linear(8, 2))
                           : torch::nn::Sequential(torch::nn::Linear(4, 3), torch::nn::BatchNorm1d(3),
                                                   torch::nn::Linear(3, 2))) {}

  torch::nn::Sequential model;
  std::unique_ptr<torch::optim::Optimizer> optimizers[kOptimizers];
  std::unique_ptr<ckpt::Scheduler> schedulers[kSchedulers];  // over optimizer 0 (SGD)
  ckpt::ResumableSampler sampler{10, true, 3};

  torch::optim::Optimizer& optimizer(size_t i) {
    using namespace torch::optim;
    auto& o = optimizers[i];
    if (o) return *o;
    auto p = model->parameters();
    switch (i) {
      case 0:
        o = std::make_unique<SGD>(p, SGDOptions(0.1).momentum(0.9));
        break;
      case 1:
        o = std::make_unique<Adam>(p, AdamOptions(1e-3).amsgrad(true));
        break;
      case 2:
        o = std::make_unique<AdamW>(p, AdamWOptions(1e-3));
        break;
      case 3:
        o = std::make_unique<RMSprop>(p, RMSpropOptions(1e-2).momentum(0.5).centered(true));
        break;
      case 4:
        o = std::make_unique<Adagrad>(p, AdagradOptions(1e-2));
        break;
      default:
        o = std::make_unique<LBFGS>(p, LBFGSOptions(0.5).history_size(3).max_iter(2));
        break;
    }
    auto x = torch::ones({5, 4});
    o->step([&] {  // one real step, so the state holds tensors
      o->zero_grad();
      auto loss = model->forward(x).sum();
      loss.backward();
      return loss;
    });
    return *o;
  }

  ckpt::Scheduler& scheduler(size_t i) {
    auto& s = schedulers[i];
    if (s) return *s;
    torch::optim::Optimizer& sgd = optimizer(0);
    switch (i) {
      case 0:
        s = std::make_unique<ckpt::StepLR>(sgd, 3, 0.5);
        break;
      case 1:
        s = std::make_unique<ckpt::MultiStepLR>(sgd, std::vector<int64_t>{2, 4, 4}, 0.5);
        break;
      case 2:
        s = std::make_unique<ckpt::ExponentialLR>(sgd, 0.9);
        break;
      case 3:
        s = std::make_unique<ckpt::CosineAnnealingLR>(sgd, 6, 1e-4);
        break;
      case 4:
        s = std::make_unique<ckpt::LinearLR>(sgd, 0.25, 1.0, 8);
        break;
      case 5:
        s = std::make_unique<ckpt::OneCycleLR>(sgd, ckpt::OneCycleLROptions(0.05, 20));
        break;
      default:
        s = std::make_unique<ckpt::ReduceLROnPlateau>(sgd);
        break;
    }
    s->step(1.0);
    return *s;
  }

  ckpt::TrainingState training_state() {
    ckpt::TrainingState st;
    st.model = model;
    st.optimizer = &optimizer(0);
    st.scheduler = &scheduler(0);
    st.data = &sampler;
    return st;
  }

  // A valid state of target `t` (in the same order as load()), in torch 1.13's or 2.14's layout.
  Value state(size_t t, ckpt::TorchLayout layout) {
    if (t == 0) return ckpt::state_dict(*model);
    t -= 1;
    if (t < kOptimizers) return ckpt::optimizer_state_dict(optimizer(t), {}, ckpt::OptimizerLayout(layout));
    t -= kOptimizers;
    if (t < kSchedulers) return scheduler(t).state_dict_as(layout);
    t -= kSchedulers;
    if (t == 0) {
      sampler.next(4);
      return sampler.state_dict();
    }
    if (t == 1) return Value(ckpt::get_rng_state());
    ckpt::TrainingState st = training_state();
    st.layout = layout;
    return st.to_value();
  }

  // Loads `v` into target `t`, then uses what was loaded once.
  void load(size_t t, const Value& v, bool strict) {
    if (t == 0) return (void)ckpt::load_state_dict(*model, v, strict);
    t -= 1;
    if (t < kOptimizers) return (void)ckpt::load_optimizer_state_dict(optimizer(t), v);
    t -= kOptimizers;
    if (t < kSchedulers) {
      scheduler(t).load_state_dict(v);
      scheduler(t).step(0.5);
      return;
    }
    t -= kSchedulers;
    if (t == 0) {
      sampler.load_state_dict(v);
      sampler.next(4);
      return;
    }
    if (t == 1) {
      if (!v.is_tensor()) return (void)v.tensor();  // the kind error, as a caller would get it
      return ckpt::set_rng_state(v.to_tensor());
    }
    training_state().restore(v, strict);
  }
};

// A state Python wrote, and the target of its kind.
struct FileState {
  size_t target;
  Value state;
};

// The model, optimizer and scheduler states of the torch2x files, read once.
const std::vector<FileState>& torch2x_states() {
  static const std::vector<FileState> states = [] {
    std::vector<FileState> out;
#ifdef CKPT_TORCH2X_DIR
    // In the order of World's optimizers and schedulers.
    static const char* const kOptimizerNames[kOptimizers] = {"SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "LBFGS"};
    static const char* const kSchedulerNames[kSchedulers] = {
        "StepLR", "MultiStepLR", "ExponentialLR", "CosineAnnealingLR", "LinearLR", "OneCycleLR", "ReduceLROnPlateau"};
    std::vector<std::string> paths;
    std::error_code ec;
    for (const auto& e : std::filesystem::recursive_directory_iterator(CKPT_TORCH2X_DIR, ec))
      if (e.path().extension() == ".pt") paths.push_back(e.path().string());
    std::sort(paths.begin(), paths.end());  // the same index picks the same file on every machine
    for (const auto& path : paths) {
      Value file;
      try {
        file = ckpt::load(path);
      } catch (const ckpt::Error&) {
        continue;
      }
      if (!file.is_dict()) continue;
      auto add = [&](size_t target, const char* key) {
        if (const Value* v = file.dict().find(key); v != nullptr && !v->is_none()) out.push_back({target, *v});
      };
      add(0, "model_state");
      auto index_of = [&](const char* key, const char* const* names, size_t n) -> size_t {
        const Value* v = file.dict().find(key);
        for (size_t i = 0; v != nullptr && v->is_string() && i < n; ++i)
          if (v->to_string() == names[i]) return i;
        return n;
      };
      if (size_t i = index_of("optimizer", kOptimizerNames, kOptimizers); i < kOptimizers)
        add(1 + i, "optimizer_state");
      if (size_t i = index_of("scheduler", kSchedulerNames, kSchedulers); i < kSchedulers)
        add(1 + kOptimizers + i, "scheduler_state");
    }
    std::fprintf(stderr, "fuzz_state: %zu state dicts from %zu files of %s\n", out.size(), paths.size(),
                 CKPT_TORCH2X_DIR);
#endif
    return out;
  }();
  return states;
}

// Every place in the tree a mutation can land: a dict entry or a list/tuple item.
struct Slot {
  Value* parent;
  size_t index;
};

void collect(Value& v, std::vector<Slot>& out, int depth) {
  if (depth > 8) return;
  if (v.is_dict()) {
    for (size_t i = 0; i < v.dict().size(); ++i) {
      out.push_back({&v, i});
      collect(const_cast<Value&>(v.dict().items()[i].second), out, depth + 1);
    }
  } else if (v.is_list() || v.is_tuple()) {
    for (size_t i = 0; i < v.items().size(); ++i) {
      out.push_back({&v, i});
      collect(v.items()[i], out, depth + 1);
    }
  }
}

Value random_tensor(FuzzedDataProvider& in) {
  static const ckpt::DType kinds[] = {ckpt::DType::kFloat32, ckpt::DType::kFloat64, ckpt::DType::kInt64,
                                      ckpt::DType::kFloat16, ckpt::DType::kBool,    ckpt::DType::kUInt8};
  ckpt::TensorRef t;
  t.dtype = kinds[in.ConsumeIntegralInRange<size_t>(0, 5)];
  size_t dims = in.ConsumeIntegralInRange<size_t>(0, 3);
  int64_t numel = 1;
  for (size_t d = 0; d < dims; ++d) {
    t.sizes.push_back(in.ConsumeIntegralInRange<int64_t>(0, 6));
    numel *= t.sizes.back();
  }
  t.strides.assign(dims, 1);
  for (size_t d = dims; d-- > 1;) t.strides[d - 1] = t.strides[d] * std::max<int64_t>(t.sizes[d], 1);
  t.storage = ckpt::make_storage(t.dtype, static_cast<size_t>(numel) * ckpt::element_size(t.dtype));
  std::string fill = in.ConsumeBytesAsString(t.storage->nbytes());
  std::copy(fill.begin(), fill.end(), reinterpret_cast<char*>(t.storage->data()));
  return Value(std::move(t));
}

Value random_value(FuzzedDataProvider& in) {
  switch (in.ConsumeIntegralInRange(0, 10)) {
    case 0:
      return Value::none();
    case 1:
      return Value(in.ConsumeBool());
    case 2:
      return Value(static_cast<long long>(in.ConsumeIntegral<int64_t>()));
    case 3: {
      static const int64_t edges[] = {-1, 0, std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max(),
                                      int64_t(1) << 40};
      return Value(static_cast<long long>(edges[in.ConsumeIntegralInRange(0, 4)]));
    }
    case 4: {
      static const double edges[] = {0.0, -1.0, 1e308, std::nan(""), std::numeric_limits<double>::infinity()};
      return in.ConsumeBool() ? Value(edges[in.ConsumeIntegralInRange(0, 4)])
                              : Value(in.ConsumeFloatingPoint<double>());
    }
    case 5:
      return Value(in.ConsumeRandomLengthString(16));
    case 6:
      return Value::list();
    case 7:
      return Value::tuple({Value(0.9), Value(0.999)});
    case 8:
      return Value::new_dict();
    default:
      return random_tensor(in);
  }
}

void mutate(Value& root, FuzzedDataProvider& in) {
  std::vector<Slot> slots;
  collect(root, slots, 0);
  if (slots.empty() || in.remaining_bytes() == 0) {
    root = random_value(in);
    return;
  }
  Slot s = slots[in.ConsumeIntegralInRange<size_t>(0, slots.size() - 1)];
  Value& p = *s.parent;
  switch (in.ConsumeIntegralInRange(0, 4)) {
    case 0:  // remove
      if (p.is_dict()) {
        Value key = p.dict().items()[s.index].first;
        Value rebuilt =
            p.dict().flavor() == ckpt::Dict::Flavor::kOrderedDict ? Value::ordered_dict() : Value::new_dict();
        for (const auto& [k, x] : p.dict())
          if (&k != &p.dict().items()[s.index].first) rebuilt.dict().set(k, x);
        p = rebuilt;
      } else {
        p.items().erase(p.items().begin() + static_cast<std::ptrdiff_t>(s.index));
      }
      break;
    case 1:  // rename (dict) or repeat (list)
      if (p.is_dict()) {
        const auto& [k, x] = p.dict().items()[s.index];
        Value copy = x;
        Value new_key = k.is_string() ? Value(k.to_string() + in.ConsumeRandomLengthString(2))
                                      : Value(static_cast<long long>(in.ConsumeIntegralInRange<int64_t>(-2, 1000)));
        p.dict().set(new_key, copy);
      } else {
        p.items().push_back(p.items()[s.index]);
      }
      break;
    default: {  // retype / reshape / out of range
      Value replacement = random_value(in);
      if (p.is_dict())
        p.dict().set(p.dict().items()[s.index].first, replacement);
      else
        p.items()[s.index] = replacement;
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  const std::vector<FileState>& files = torch2x_states();
  const bool from_file = !files.empty() && in.ConsumeIntegralInRange(0, 2) == 0;
  World w(from_file);
  size_t target;
  Value state;
  if (from_file) {
    const FileState& f = files[in.ConsumeIntegralInRange<size_t>(0, files.size() - 1)];
    // Mostly into an object of its own kind; sometimes into another.
    target = in.ConsumeIntegralInRange(0, 3) == 0 ? in.ConsumeIntegralInRange<size_t>(0, kTargets - 1) : f.target;
    state = f.state;
  } else {
    target = in.ConsumeIntegralInRange<size_t>(0, kTargets - 1);
    // Mostly the target's own state; sometimes another object's (a state of another kind).
    const size_t source =
        in.ConsumeIntegralInRange(0, 3) == 0 ? in.ConsumeIntegralInRange<size_t>(0, kTargets - 1) : target;
    state = w.state(source, in.ConsumeBool() ? ckpt::TorchLayout::kTorch2 : ckpt::TorchLayout::kTorch113);
  }
  // Mutations work on a deep-enough copy: the tree through the value and back keeps live
  // tensors out of the world's own state, and the files' states as they were read.
  state = ckpt::load_from_bytes(ckpt::save_to_bytes(state));
  const int mutations = in.ConsumeIntegralInRange(0, 4);
  for (int i = 0; i < mutations; ++i) mutate(state, in);
  try {
    w.load(target, state, in.ConsumeBool());
  } catch (const ckpt::Error&) {
  }
  return 0;
}
