// ckpt::check_resume (see ckpt/check_resume.h). The passes, in order:
//   1. straight: make_state(), then `steps` steps, a snapshot after make_state() and after each.
//   2. for each resume (the user's save/load, or ckpt's through a file, then through the run
//      manager): make_state(), steps [0, save_at) compared with the straight run, save, drop the
//      objects, make_state() again, load, compare, steps [save_at, steps) compared after each.
// Before every make_state() the thread count and the CPU generator are put back to what they were
// when check_resume was called, as a fresh process would find them; at the end they stay so.
#include "ckpt/check_resume.h"

#include <ATen/Parallel.h>
#include <c10/core/GradMode.h>
#include <stdlib.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>

#include "ckpt/checkpoint.h"
#include "ckpt/diff.h"
#include "ckpt/manager.h"
#include "ckpt/tensor.h"
#include "util/errors.h"

namespace ckpt {
namespace {

// The thread count and CPU generator as check_resume found them: reset() before every
// make_state(), and once more by the destructor (which never throws).
class ProcessState {
 public:
  ProcessState() : threads_(at::get_num_threads()), rng_(get_rng_state().clone()) {}
  ~ProcessState() {
    try {
      reset();
    } catch (...) {
    }
  }
  void reset() const {
    if (at::get_num_threads() != threads_) at::set_num_threads(threads_);
    set_rng_state(rng_);
  }

 private:
  int threads_;
  at::Tensor rng_;
};

// The check's files: the user's directory (kept), or a fresh one under the temporary directory
// (removed by the destructor, never throwing).
class WorkDir {
 public:
  explicit WorkDir(const std::string& dir) {
    if (!dir.empty()) {
      path_ = dir;
      std::error_code ec;
      std::filesystem::create_directories(path_, ec);
      if (ec) fail(ErrorKind::kIO, "check_resume: cannot create the work directory ", path_, ": ", ec.message());
      return;
    }
    std::string tmpl = (std::filesystem::temp_directory_path() / "ckpt-check-resume-XXXXXX").string();
    if (!mkdtemp(tmpl.data()))
      fail(ErrorKind::kIO, "check_resume: cannot create a temporary directory ", tmpl, ": ", std::strerror(errno));
    path_ = tmpl;
    owned_ = true;
  }
  ~WorkDir() {
    std::error_code ec;
    if (owned_) std::filesystem::remove_all(path_, ec);
  }
  // A path for this pass's checkpoint, cleared of what an earlier check left there.
  std::string fresh(const std::string& name) const {
    std::string p = path_ + "/" + name;
    std::error_code ec;
    std::filesystem::remove_all(p, ec);
    return p;
  }

 private:
  std::string path_;
  bool owned_ = false;
};

Value deep_copy(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kDict: {
      Dict d(v.dict().flavor());
      for (const auto& [k, x] : v.dict()) d.set(k, deep_copy(x));
      d.set_attributes(v.dict().attributes());
      return Value(std::move(d));
    }
    case Value::Kind::kList:
    case Value::Kind::kTuple: {
      std::vector<Value> items;
      for (const auto& x : v.items()) items.push_back(deep_copy(x));
      return v.is_list() ? Value::list(std::move(items)) : Value::tuple(std::move(items));
    }
    case Value::Kind::kTensor: {
      c10::NoGradGuard no_grad;
      return Value(v.to_tensor().detach().clone());
    }
    default:
      return v;  // scalars are inline; strings, bytes and objects are never changed in place
  }
}

struct Snapshot {
  Value state;
  int threads = 0;
};

// The whole training state, copied: to_value() holds the live tensors the next step changes.
Snapshot snapshot(const TrainingState& state) {
  Snapshot s;
  s.state = deep_copy(state.to_value());
  if (!s.state.dict().find(state.keys.rng)) s.state.dict().set(state.keys.rng, Value(get_rng_state().clone()));
  s.threads = at::get_num_threads();
  return s;
}

// The value at a path as ckpt::diff names it ("a/b/0"), or nullptr.
const Value* at_path(const Value& root, std::string_view path) {
  const Value* v = &root;
  while (!path.empty()) {
    const Value* next = nullptr;
    auto matches = [&](const std::string& name) {
      if (path.substr(0, name.size()) != name || (path.size() > name.size() && path[name.size()] != '/')) return false;
      path.remove_prefix(std::min(path.size(), name.size() + 1));
      return true;
    };
    if (v->is_dict()) {
      for (const auto& [k, x] : v->dict())
        if (matches(k.is_string() ? k.to_string() : short_repr(k))) {
          next = &x;
          break;
        }
    } else if (v->is_list() || v->is_tuple()) {
      for (size_t i = 0; i < v->items().size() && !next; ++i)
        if (matches(std::to_string(i))) next = &v->items()[i];
    }
    if (!next) return nullptr;
    v = next;
  }
  return v;
}

std::string first_segment(const std::string& path) {
  return path.substr(0, path.find('/'));
}

std::string fixed_g(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3g", v);
  return buf;
}

std::string likely_cause(const ResumeReport& r, const CheckpointKeys& keys) {
  if (r.via == "straight") {
    if (r.after_make_state)
      return "make_state() built different objects the second time: seed every generator it uses inside it "
             "(torch::manual_seed / torch.manual_seed) and build the same objects in the same order; a resume "
             "cannot be exact before two fresh starts agree.";
    return "the loop does not repeat itself: two runs from make_state() already differ at step " +
           std::to_string(r.first_step) +
           " without any resume. Make the step deterministic (the same data in the same order, seeded generators, "
           "deterministic kernels) before checking the resume.";
  }
  if (!r.after_load) {
    std::string s;
    if (r.threads_straight != r.threads_resumed)
      s = "the state matched right after the load, but the thread count changed from " +
          std::to_string(r.threads_straight) + " to " + std::to_string(r.threads_resumed) +
          ": a reduction (a sum, a matmul, a norm) splits its floats across threads, so another thread count adds "
          "them in another order and the last bits change, then grow. Resume with the same number of threads "
          "(at::set_num_threads / torch.set_num_threads) as the interrupted run.";
    else
      s = "the state matched right after the load, yet step " + std::to_string(r.first_step) +
          " went differently: the step uses something the checkpoint does not hold — a data loader or sampler "
          "not attached to the state, a generator of its own, Python's or numpy's RNG — or a kernel that is not "
          "deterministic.";
    if (r.max_abs_diff > 0 && r.max_abs_diff < 1e-4)
      s += " The differences are tiny (at most " + fixed_g(r.max_abs_diff) +
           "), the way rounding from another thread count or a nondeterministic kernel looks.";
    return s;
  }
  const std::string top = first_segment(r.entry);
  if (top == keys.rng)
    return "the RNG was not saved or not restored: the fresh objects reseed it, so dropout masks, noise and shuffles "
           "after the resume differ. Save the CPU generator's state with the checkpoint (TrainingState::rng, "
           "ckpt::get_rng_state, torch.get_rng_state()) and set it last, after building the objects (building a "
           "model draws from it).";
  if (top == keys.scheduler)
    return "the learning-rate scheduler was not restored: a fresh scheduler starts its schedule over (last_epoch, "
           "_step_count). Save scheduler.state_dict() with the checkpoint and load it after the optimizer's.";
  if (top == keys.data)
    return "the data position was not restored: a fresh sampler restarts its epoch, so the resumed run sees batches "
           "again or in another order. Save the sampler's state (a ckpt::ResumableSampler in TrainingState::data) "
           "and load it.";
  if (top == keys.optimizer) {
    const bool slots = r.entry.rfind(keys.optimizer + "/state", 0) == 0;
    if (slots && (r.actual.empty() || r.actual.find(" of 0") != std::string::npos))
      return "the optimizer's per-parameter state (Adam's exp_avg, momentum buffers, step) is missing after the "
             "load: the optimizer was built after the load, or its state_dict was never loaded, so it starts from "
             "zero. Build the optimizer with the model, then load the checkpoint into both.";
    if (r.entry.find("/param_groups") != std::string::npos)
      return "the optimizer's hyperparameters (param_groups: lr, betas, weight decay) were not restored: load the "
             "optimizer's state_dict, and the scheduler's after it.";
    return "the optimizer's state was not restored, or was restored into an optimizer that was then replaced: load "
           "its state_dict into the optimizer the training step uses.";
  }
  if (top == keys.model)
    return "the model's parameters or buffers were not restored: load the checkpoint's model_state into the fresh "
           "model (before building anything that copies them).";
  if (top == keys.step || top == keys.epoch)
    return "the step or epoch counter was not restored: a schedule, a save cadence or the data order that follows it "
           "restarts.";
  if (top == keys.metrics)
    return "the metrics (the running sums of the epoch in progress) were not restored: the resumed epoch reports "
           "other numbers.";
  return "'" + top +
         "' was not restored: save it with the checkpoint and load it back (TrainingState::objects holds user "
         "objects).";
}

class Checker {
 public:
  Checker(const MakeStateFn& make_state, const TrainStepFn& train_step, const ResumeCheckOptions& options,
          ResumeReport& report)
      : make_state_(make_state), train_step_(train_step), options_(options), report_(report) {}

  void straight() {
    process_.reset();
    TrainingState state;
    std::shared_ptr<void> owner = make_state_(state);
    straight_.push_back(snapshot(state));
    for (int64_t i = 0; i < report_.steps; ++i) {
      train_step_(state, i);
      straight_.push_back(snapshot(state));
    }
    report_.threads_straight = report_.threads_resumed = straight_.back().threads;
  }

  // One resume; false when it differs (the report says where).
  bool resume(const std::string& via, const SaveStateFn& save, const LoadStateFn& load, const std::string& path) {
    via_ = via;
    process_.reset();
    {
      TrainingState state;
      std::shared_ptr<void> owner = make_state_(state);
      if (!same(0, snapshot(state), Point::kMadeState)) return false;
      for (int64_t i = 0; i < report_.save_at; ++i) {
        train_step_(state, i);
        if (!same(i, snapshot(state), Point::kStep)) return false;
      }
      save(state, path);
      owner.reset();  // the objects are gone before the fresh ones are built, as in a new process
    }
    process_.reset();
    TrainingState state;
    std::shared_ptr<void> owner = make_state_(state);
    load(state, path);
    if (options_.resume_threads > 0) at::set_num_threads(options_.resume_threads);
    if (!same(report_.save_at, snapshot(state), Point::kLoaded)) return false;
    for (int64_t i = report_.save_at; i < report_.steps; ++i) {
      train_step_(state, i);
      if (!same(i, snapshot(state), Point::kStep)) return false;
    }
    report_.passed.push_back(via);
    report_.threads_resumed = at::get_num_threads();
    return true;
  }

 private:
  enum class Point { kMadeState, kStep, kLoaded };

  bool same(int64_t step, const Snapshot& got, Point point) {
    const Snapshot& want = straight_[point == Point::kStep ? step + 1 : step];
    DiffOptions o;
    o.atol = options_.atol;
    o.rtol = options_.rtol;
    DiffReport d = diff(want.state, got.state, o);
    if (d.equal()) return true;
    ResumeReport& r = report_;
    r.ok = false;
    const bool before_save = point == Point::kMadeState || (point == Point::kStep && step < r.save_at);
    r.via = before_save ? "straight" : via_;
    r.first_step = step;
    r.after_load = point == Point::kLoaded;
    r.after_make_state = point == Point::kMadeState;
    r.entry = d.entries[0].path;
    r.expected = d.entries[0].a;
    r.actual = d.entries[0].b;
    for (const DiffEntry& e : d.entries) {
      r.entries.push_back(e.path);
      double abs = e.max_abs;
      if (e.kind == DiffEntry::Kind::kValue) {
        const Value *a = at_path(want.state, e.path), *b = at_path(got.state, e.path);
        if (a && b && (a->is_int() || a->is_float()) && (b->is_int() || b->is_float()))
          abs = std::fabs(a->to_double() - b->to_double());
      }
      r.max_abs_diff = std::max(r.max_abs_diff, abs);
    }
    r.threads_straight = want.threads;
    r.threads_resumed = got.threads;
    r.cause = likely_cause(r, keys_);
    return false;
  }

  const MakeStateFn& make_state_;
  const TrainStepFn& train_step_;
  const ResumeCheckOptions& options_;
  ResumeReport& report_;
  ProcessState process_;
  CheckpointKeys keys_;
  std::vector<Snapshot> straight_;
  std::string via_;
};

}  // namespace

ResumeReport check_resume(const MakeStateFn& make_state, const TrainStepFn& train_step,
                          const ResumeCheckOptions& options) {
  if (!make_state || !train_step)
    fail(ErrorKind::kInvalidArgument, "check_resume: make_state and train_step are required");
  if (options.steps < 1) fail(ErrorKind::kInvalidArgument, "check_resume: steps is ", options.steps, "; at least 1");
  const int64_t save_at = options.save_at < 0 ? options.steps / 2 : options.save_at;
  if (save_at > options.steps)
    fail(ErrorKind::kInvalidArgument, "check_resume: save_at is ", save_at, " but only ", options.steps,
         " steps run; 0 <= save_at <= steps");
  if (bool(options.save) != bool(options.load))
    fail(ErrorKind::kInvalidArgument, "check_resume: give both save and load, or neither (ckpt's own then)");
  if (options.resume_threads < 0)
    fail(ErrorKind::kInvalidArgument, "check_resume: resume_threads is ", options.resume_threads, "; 0 or more");

  ResumeReport report;
  report.steps = options.steps;
  report.save_at = save_at;
  WorkDir dir(options.work_dir);
  Checker checker(make_state, train_step, options, report);
  checker.straight();
  if (options.save) {
    checker.resume("save/load", options.save, options.load, dir.fresh("check-resume.pt"));
    return report;
  }
  SaveOptions scratch;
  scratch.durable = false;  // the files live as long as the check
  auto save_file = [&](const TrainingState& s, const std::string& p) { s.save(p, scratch); };
  auto load_file = [](TrainingState& s, const std::string& p) { s.load(p); };
  if (!checker.resume("file", save_file, load_file, dir.fresh("check-resume.pt"))) return report;

  ManagerOptions mo;
  mo.durable = false;
  auto save_run = [&](const TrainingState& s, const std::string& p) {
    CheckpointManager manager(p, mo);
    manager.save(s);
    manager.wait();
  };
  auto load_run = [&](TrainingState& s, const std::string& p) {
    CheckpointManager manager(p, mo);
    if (!manager.restore(s)) fail(ErrorKind::kNotFound, "check_resume: the run directory ", p, " has no checkpoint");
  };
  checker.resume("run manager", save_run, load_run, dir.fresh("check-resume-run"));
  return report;
}

std::string ResumeReport::to_string() const {
  const std::string plan = std::to_string(steps) +
                           " steps straight and with a save → fresh objects → load before step " +
                           std::to_string(save_at);
  if (ok) {
    std::string how;
    for (size_t i = 0; i < passed.size(); ++i)
      how += (i ? " and " : "") + std::string(passed[i] == "file"          ? "through a file"
                                              : passed[i] == "run manager" ? "through the run manager"
                                                                           : "through your save/load");
    std::string s = "Resume check passed: " + plan + (how.empty() ? "" : " (" + how + ")") +
                    " match after every step — parameters, optimizer slots, scheduler, data position, RNG and "
                    "every other entry of the training state";
    if (threads_straight != threads_resumed)
      s += ", even with " + std::to_string(threads_resumed) + (threads_resumed == 1 ? " thread" : " threads") +
           " after the load instead of " + std::to_string(threads_straight);
    return s + ".";
  }
  std::string where;
  if (after_make_state)
    where = "right after make_state(), before any step";
  else if (after_load)
    where = "right after the load, before step " + std::to_string(first_step) + " ran";
  else
    where = "after step " + std::to_string(first_step);
  const char* how = via == "file"          ? " through a file"
                    : via == "run manager" ? " through the run manager"
                    : via == "save/load"   ? " through your save/load"
                                           : " without any resume";
  std::string s = "Resume check FAILED (" + plan + ",";
  s += how;
  s += "): " + where + ", '" + entry + "' differs";
  if (expected != actual)
    s += " (expected " + (expected.empty() ? std::string("nothing") : expected) + ", got " +
         (actual.empty() ? std::string("nothing") : actual) + ")";
  else if (!expected.empty())
    s += " (" + expected + ")";
  if (max_abs_diff > 0) s += "; the largest difference there is " + fixed_g(max_abs_diff);
  if (entries.size() > 1) {
    s += "; " + std::to_string(entries.size()) + " entries differ (";
    for (size_t i = 0; i < entries.size() && i < 4; ++i) s += (i ? ", " : "") + entries[i];
    s += entries.size() > 4 ? ", ...)" : ")";
  }
  s += ". Likely cause: " + cause;
  return s;
}

}  // namespace ckpt
