// dist::CheckpointManager: a run directory whose checkpoints are distributed ones. The commit
// protocol is run::Run's (src/manager/run.cc), held by rank 0; dist::save is its steps 2-4.
//
// Each collective operation, and the decisions rank 0 broadcasts:
//   constructor: rank 0 runs Run::open; broadcast: ok or the error, and the latest step.
//   save:        rank 0 names the checkpoint (its metrics) and moves an existing directory of
//                that name aside (".NAME.replaced"); broadcast: the name. dist::save (steps 2-4,
//                its own collectives). Rank 0 runs Run::commit (steps 5-9) and removes the
//                replaced directory — or, when the save failed, puts it back; broadcast: the
//                outcome. Every rank throws the same error when any step failed.
//   restore:     rank 0 picks a checkpoint (Run::pick); broadcast: its name. Every rank loads
//                it; allgather: every rank's outcome. All ok: done. A rank that found the
//                checkpoint damaged (not a mismatch with the caller's state): rank 0 marks it in
//                the index and the loop picks the next older one. A mismatch: every rank throws.
//   step:        with a time cadence or preemption handling, one allreduce (max) of
//                {preemption signal on this rank, rank 0's clock says save}.
#include "ckpt/distributed_manager.h"

#include <algorithm>
#include <future>
#include <iostream>
#include <mutex>

#include "ckpt/checkpoint.h"
#include "ckpt/distributed_files.h"
#include "ckpt/preemption.h"
#include "dist/collectives.h"
#include "manager/run.h"
#include "util/errors.h"

namespace ckpt::dist {

namespace {

using Clock = std::chrono::steady_clock;


std::string replaced_name(const std::string& file) {
  return "." + file + ".replaced";
}

std::map<std::string, double> numeric_metrics(const Value& metrics) {
  std::map<std::string, double> out;
  if (!metrics.is_dict()) return out;
  for (const auto& [k, v] : metrics.dict())
    if (k.is_string() && (v.is_int() || v.is_float())) out[k.to_string()] = v.to_double();
  return out;
}

}  // namespace

struct CheckpointManager::Impl {
  c10d::ProcessGroup& pg;
  ManagerOptions opt;
  std::chrono::milliseconds timeout;
  std::unique_ptr<run::Run> run;  // rank 0 only
  std::unique_ptr<PreemptionGuard> preemption;
  c10d::ProcessGroup* commit_pg = nullptr;  // async saves' collectives
  std::optional<int64_t> last_step;
  Value last_loaded;  // a single-file checkpoint restored by the Value overload
  Clock::time_point last_save_time = Clock::now();
  std::future<void> in_flight;  // the async save being written and committed
  std::shared_ptr<Value> last_snapshot;  // its state, whose buffers the next save reuses
  mutable std::mutex mu;        // guards `latest` (an async commit sets it on its thread)
  std::optional<CheckpointRecord> latest;

  Impl(c10d::ProcessGroup& g, ManagerOptions o, std::chrono::milliseconds t) : pg(g), opt(std::move(o)), timeout(t) {}

  void set_latest(CheckpointRecord r) {
    std::lock_guard<std::mutex> lock(mu);
    latest = std::move(r);
  }

  // Waits for the save in flight; rethrows its error.
  void wait() {
    if (in_flight.valid()) in_flight.get();
  }

  void save_now(c10d::ProcessGroup& group, const Value& state, int64_t step, int64_t epoch,
                std::map<std::string, double> metrics, const std::string& dir);

  bool coordinator() const { return pg.getRank() == 0; }
  io::Env* env() const { return opt.env ? opt.env : io::Env::Default(); }

  void warn(const std::string& message) const {
    if (opt.warn)
      opt.warn(message);
    else
      std::cerr << "ckpt: warning: " << message << "\n";
  }

  ckpt::LoadOptions load_options() const {
    ckpt::LoadOptions lo;
    lo.verify_checksums = opt.verify_on_restore;
    lo.env = opt.env;
    lo.progress = opt.progress;
    return lo;
  }

  // Rank 0 runs `f` (which fills `number`/`message` of the status it returns); every rank gets
  // the outcome, and every rank throws the same error when it failed.
  Status on_coordinator(const char* what, const std::function<Status()>& f) {
    return on_coordinator(pg, what, f);
  }
  Status on_coordinator(c10d::ProcessGroup& group, const char* what, const std::function<Status()>& f) {
    Status s;
    if (coordinator()) {
      try {
        s = f();
      } catch (const Error& e) {
        s = Status::error(e);
      } catch (const std::exception& e) {
        s = {false, ErrorKind::kIO, 0, e.what()};
      }
    }
    s = broadcast_status(group, s, timeout, what);
    if (!s.ok) fail(s.kind, s.message);
    return s;
  }
};

CheckpointManager::CheckpointManager(std::string directory, c10d::ProcessGroup& pg, ManagerOptions options,
                                     ManagerInit init)
    : dir_(std::move(directory)), rank_(pg.getRank()), world_(pg.getSize()) {
  while (dir_.size() > 1 && dir_.back() == '/') dir_.pop_back();
  if (dir_.empty()) fail(ErrorKind::kInvalidArgument, "dist::CheckpointManager: empty run directory name");
  if (dir_.rfind("s3://", 0) == 0)
    fail(ErrorKind::kUnsupported, dir_,
         ": a distributed run directory on object storage is not supported yet (a distributed checkpoint's commit "
         "renames a directory); use a shared filesystem, or train in one process with --run-dir s3://");
  impl_ = std::make_unique<Impl>(pg, std::move(options), init.timeout);
  impl_->commit_pg = init.commit_group;
  if (impl_->opt.async && (!init.commit_group || init.commit_group == &pg))
    fail(ErrorKind::kInvalidArgument,
         "dist::CheckpointManager: async saves need ManagerInit::commit_group, a second group over the same ranks "
         "(ckpt::dist::new_group), so that their collectives never interleave with the training's");
  if (init.commit_group && (init.commit_group->getRank() != rank_ || init.commit_group->getSize() != world_))
    fail(ErrorKind::kInvalidArgument, "dist::CheckpointManager: the commit group's rank/size (",
         init.commit_group->getRank(), "/", init.commit_group->getSize(), ") differ from the group's (", rank_, "/",
         world_, ")");
  if (impl_->opt.handle_preemption) impl_->preemption = std::make_unique<PreemptionGuard>(impl_->opt.preempt_on_sigusr1);
  Status s = impl_->on_coordinator("opening the run directory", [&] {
    auto run = std::make_unique<run::Run>(dir_, impl_->opt, run::EntryKind::kDistributed);
    run->open();
    // A directory moved aside by a save that did not finish: put back when its replacement never
    // appeared, else it is the old version and goes.
    for (const auto& e : impl_->env()->list_dir(dir_)) {
      const std::string suffix = ".replaced";
      if (e.is_file || e.name.size() <= suffix.size() + 1 || e.name[0] != '.' ||
          e.name.compare(e.name.size() - suffix.size(), suffix.size(), suffix) != 0)
        continue;
      const std::string original = e.name.substr(1, e.name.size() - 1 - suffix.size());
      if (!impl_->env()->file_exists(run->path_of(original)))
        impl_->env()->rename_file(run->path_of(e.name), run->path_of(original));
      else
        run::remove_tree(impl_->env(), run->path_of(e.name));
    }
    Status ok;
    if (auto latest = run->latest()) {
      ok.number = uint64_t(latest->step) + 1;
      ok.message = latest->file;
    }
    impl_->run = std::move(run);
    return ok;
  });
  if (s.number > 0) {
    impl_->last_step = int64_t(s.number - 1);
    CheckpointRecord r;
    r.file = s.message;
    r.path = dir_ + "/" + r.file;
    r.step = int64_t(s.number - 1);
    r.latest = true;
    impl_->set_latest(r);
  }
}

CheckpointManager::~CheckpointManager() {
  try {
    impl_->wait();
  } catch (const std::exception& e) {
    std::cerr << "ckpt: a background distributed save failed and nobody called wait(): " << e.what() << "\n";
  }
}

void CheckpointManager::wait() {
  impl_->wait();
}

std::optional<CheckpointRecord> CheckpointManager::latest() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->latest;
}

std::vector<CheckpointRecord> CheckpointManager::checkpoints() const {
  return impl_->run ? impl_->run->records() : std::vector<CheckpointRecord>{};
}

std::optional<CheckpointRecord> CheckpointManager::best() const {
  return impl_->run ? impl_->run->best() : std::nullopt;
}

// --- save ------------------------------------------------------------------------------------------

// A copy of `state` that training may not change under a background save: every tensor (plain,
// a shard's local slice, inside a per-rank value) copied; other leaves are values already. The
// previous snapshot's tensors are reused where shape and dtype match (the usual case: the same
// state every save), so a save after the first copies into memory already touched — on this
// kind of machine about 6x faster than into fresh pages.
at::Tensor copy_of(const at::Tensor& t, const Value* prev) {
  if (prev && prev->is_tensor()) {
    at::Tensor old = prev->to_tensor();
    if (old.sizes() == t.sizes() && old.scalar_type() == t.scalar_type() && old.is_contiguous()) {
      old.copy_(t);
      return old;
    }
  }
  return t.clone(at::MemoryFormat::Contiguous);
}

Value snapshot(const Value& v, const Value* prev) {
  if (v.is_tensor()) return Value(copy_of(v.to_tensor(), prev));
  if (is_shard(v)) {
    ShardInfo s = shard_info(v);
    const Value* old = prev && is_shard(*prev) ? &prev->object_args().items().at(0) : nullptr;
    return shard(copy_of(s.local, old), s.offsets, s.global_shape);
  }
  if (is_per_rank(v)) {
    const Value* old = prev && is_per_rank(*prev) ? &prev->object_args().items().at(0) : nullptr;
    return per_rank(snapshot(v.object_args().items().at(0), old));
  }
  if (v.is_dict()) {
    Value out = Value(Dict(v.dict().flavor()));
    const bool same = prev && prev->is_dict();
    for (const auto& [k, x] : v.dict()) out.dict().set(k, snapshot(x, same ? prev->dict().find(k) : nullptr));
    out.dict().set_attributes(v.dict().attributes());
    return out;
  }
  if (v.is_list() || v.is_tuple()) {
    std::vector<Value> items;
    const bool same = prev && (prev->is_list() || prev->is_tuple()) && prev->size() == v.size();
    for (size_t i = 0; i < v.items().size(); ++i)
      items.push_back(snapshot(v.items()[i], same ? &prev->items()[i] : nullptr));
    return v.is_list() ? Value::list(std::move(items)) : Value::tuple(std::move(items));
  }
  return v;
}

bool CheckpointManager::save(const Value& state, int64_t step, int64_t epoch, std::map<std::string, double> metrics) {
  auto t0 = Clock::now();
  Impl& m = *impl_;
  if (m.last_step && *m.last_step == step) {
    m.wait();  // still report an earlier background failure
    return false;
  }
  if (m.opt.async) {
    m.wait();  // one save in flight: the previous one is committed (or its error thrown) first
    // The previous snapshot is free again: its memory is reused.
    auto job = std::make_shared<Value>(snapshot(state, m.last_snapshot ? m.last_snapshot.get() : nullptr));
    m.last_snapshot = job;
    m.in_flight = std::async(std::launch::async, [&m, job, step, epoch, metrics = std::move(metrics), dir = dir_] {
      m.save_now(*m.commit_pg, *job, step, epoch, metrics, dir);
    });
  } else {
    m.save_now(m.pg, state, step, epoch, std::move(metrics), dir_);
  }
  m.last_step = step;
  m.last_save_time = Clock::now();
  blocked_seconds_ += std::chrono::duration<double>(Clock::now() - t0).count();
  return true;
}

void CheckpointManager::Impl::save_now(c10d::ProcessGroup& group, const Value& state, int64_t step, int64_t epoch,
                                       std::map<std::string, double> metrics, const std::string& dir) {
  Impl& m = *this;
  // 1. Rank 0 names the checkpoint and moves a directory of that name aside.
  Status named = m.on_coordinator(group, "naming the checkpoint", [&] {
    Status s;
    s.message = m.run->file_name(epoch, step, metrics);
    const std::string path = m.run->path_of(s.message);
    if (m.env()->file_exists(path)) {
      run::remove_tree(m.env(), m.run->path_of(replaced_name(s.message)));
      m.env()->rename_file(path, m.run->path_of(replaced_name(s.message)));
    }
    return s;
  });
  const std::string file = named.message, path = dir + "/" + file;
  // 2-4. Every rank writes its share; rank 0 publishes the directory.
  SaveOptions so;
  so.durable = m.opt.durable;
  so.env = m.opt.env;
  so.timeout = m.timeout;
  std::string save_error;
  ErrorKind save_kind = ErrorKind::kIO;
  try {
    dist::save(state, path, group, so);
  } catch (const Error& e) {
    save_error = e.what();
    save_kind = e.kind();
  }
  // 5-9. Rank 0 commits (or, after a failed save, puts the replaced directory back).
  Status committed;
  if (m.coordinator()) {
    try {
      const std::string aside = m.run->path_of(replaced_name(file));
      if (!save_error.empty()) {
        if (m.env()->file_exists(aside) && !m.env()->file_exists(path)) m.env()->rename_file(aside, path);
        committed = {false, save_kind, 0, save_error};
      } else {
        CheckpointRecord rec;
        rec.file = file;
        rec.path = path;
        rec.step = step;
        rec.epoch = epoch;
        rec.metrics = metrics;
        for (const auto& e : m.env()->list_dir(path))
          if (e.is_file) rec.bytes += m.env()->file_size(path + "/" + e.name);
        rec.content_crc = run::content_crc(m.env(), path);
        m.run->commit(rec);
        run::remove_tree(m.env(), aside);
      }
    } catch (const Error& e) {
      committed = Status::error(e);
    }
  }
  // Every rank took part in dist::save's collectives, so every rank reaches this broadcast
  // unless a peer died (then it throws the collective's error). Rank 0 tells the size.
  if (m.coordinator() && committed.ok)
    if (auto latest = m.run->latest(); latest && latest->file == file) committed.number = latest->bytes;
  committed = broadcast_status(group, committed, m.timeout, "committing the checkpoint");
  if (!committed.ok) {
    if (!save_error.empty()) fail(save_kind, save_error);
    fail(committed.kind, "saving ", file, " (step ", step, "): rank 0: ", committed.message);
  }
  CheckpointRecord r;
  r.file = file;
  r.path = path;
  r.step = step;
  r.epoch = epoch;
  r.metrics = std::move(metrics);
  r.bytes = committed.number;
  r.latest = true;
  m.set_latest(std::move(r));
}

// --- restore ---------------------------------------------------------------------------------------

namespace {

// One attempt at loading checkpoint `path` on this rank.
using Loader = std::function<void(const std::string& path)>;

}  // namespace

static RestoreResult restore_agreed(CheckpointManager::Impl& m, const std::string& dir, const ResumeFrom& from,
                             const Loader& load_one) {
  RestoreResult result;
  if (from.kind == ResumeFrom::Kind::kNone) return result;
  if (from.kind == ResumeFrom::Kind::kPath) {
    Status mine;
    try {
      load_one(from.path);
    } catch (const Error& e) {
      mine = Status::error(e);
    }
    auto all = all_statuses(m.pg, mine, m.timeout, "agreeing on the restore");
    for (size_t r = 0; r < all.size(); ++r)
      if (!all[r].ok) fail(all[r].kind, "rank ", r, ": ", all[r].message);
    result.restored = true;
    result.record.path = from.path;
    result.record.file = io::basename_of(from.path);
    return result;
  }
  bool changed = false;
  for (;;) {
    // Rank 0 picks; number = 1 + step, message = the name ("" = nothing to restore).
    Status pick = m.on_coordinator("choosing the checkpoint to restore", [&] {
      Status s;
      if (auto r = m.run->pick(from)) {
        s.number = uint64_t(r->step) + 1;
        s.message = r->file;
      }
      return s;
    });
    if (pick.message.empty()) break;
    const std::string path = dir + "/" + pick.message;
    Status mine;
    try {
      if (!m.env()->file_exists(path)) fail(ErrorKind::kNotFound, path, ": the index lists it but it is missing");
      load_one(path);
    } catch (const Error& e) {
      mine = Status::error(e);
    } catch (const std::exception& e) {
      mine = {false, ErrorKind::kIO, 0, e.what()};
    }
    auto all = all_statuses(m.pg, mine, m.timeout, "agreeing on the restore");
    std::string problem;
    for (size_t r = 0; r < all.size(); ++r) {
      // A rank that failed only because another did (dist::load names them) is not the news.
      if (all[r].ok || (!problem.empty() && all[r].message.find("failed on rank(s)") != std::string::npos)) continue;
      problem = all.size() > 1 ? str_cat("rank ", r, ": ", all[r].message) : all[r].message;
      if (!run::falls_back_on(all[r].kind) || from.kind == ResumeFrom::Kind::kStep) {
        if (m.coordinator() && changed) m.run->write_index();
        fail(all[r].kind, problem);
      }
    }
    if (problem.empty()) {
      result.restored = true;
      result.record.file = pick.message;
      result.record.path = path;
      result.record.step = int64_t(pick.number - 1);
      if (m.coordinator())
        if (auto r = m.run->pick(from)) result.record = *r;
      break;
    }
    result.skipped.push_back(problem);
    if (m.coordinator()) {
      m.run->mark_damaged(pick.message, problem);
      m.warn(str_cat("skipping damaged checkpoint ", problem, "; falling back to the next older one"));
    }
    changed = true;
  }
  if (changed && m.coordinator()) m.run->write_index();
  if (!result.restored && !result.skipped.empty())
    fail(ErrorKind::kCorruption, dir, ": no checkpoint verifies (", result.skipped.size(), " damaged; the newest: ",
         result.skipped.front(), ")");
  if (result.restored) {
    m.last_step = result.record.step;
    if (!result.skipped.empty() && m.coordinator())
      m.warn(str_cat("resumed from ", result.record.path, " (step ", result.record.step, ") instead of the newest"));
  }
  return result;
}

RestoreResult CheckpointManager::restore(Value& template_, const ResumeFrom& from) {
  info_ = {};
  Impl& m = *impl_;
  m.wait();
  RestoreResult r = restore_agreed(m, dir_, from, [&](const std::string& path) {
    if (dist::is_distributed_checkpoint(path)) {
      dist::LoadOptions lo;
      lo.timeout = m.timeout;
      lo.env = m.opt.env;
      info_.load = dist::load(template_, path, m.pg, lo);
      info_.saved_world_size = info_.load.saved_world_size;
    } else {
      info_.load = {};
      info_.saved_world_size = 0;
      ckpt::LoadOptions lo = m.load_options();
      lo.verify_checksums = true;
      m.last_loaded = ckpt::load(path, lo);
    }
  });
  if (r.restored) {
    r.checkpoint = std::move(m.last_loaded);
    m.set_latest(r.record);
  }
  return r;
}

// --- TrainingState ---------------------------------------------------------------------------------

bool CheckpointManager::save(const TrainingState& state) {
  Value v = state.to_value();
  if (state.rng)
    if (Value* rng = v.dict().find(state.keys.rng)) *rng = per_rank(*rng);
  return save(v, state.step, state.epoch, numeric_metrics(state.metrics));
}

RestoreResult CheckpointManager::restore(TrainingState& state, const ResumeFrom& from, bool strict) {
  info_ = {};
  Impl& m = *impl_;
  m.wait();
  RestoreResult r = restore_agreed(m, dir_, from, [&](const std::string& path) {
    Value ck;
    bool rng_here = state.rng;
    if (dist::is_distributed_checkpoint(path)) {
      ConsolidateOptions which;
      which.rank = rank_;
      which.world_size = world_;
      ck = dist::consolidate(path, m.load_options(), which);
      // The saved world size decides whether the per-rank RNG states carry over.
      if (const Value* rng = ck.is_dict() ? ck.dict().find(state.keys.rng) : nullptr; rng && rng->is_list()) {
        info_.saved_world_size = int(rng->size());
        rng_here = false;
      } else {
        info_.saved_world_size = world_;
      }
    } else {
      ckpt::LoadOptions lo = m.load_options();
      ck = ckpt::load(path, lo);
      info_.saved_world_size = 0;
      rng_here = rng_here && world_ == 1;
    }
    const bool had_rng = state.rng;
    state.rng = rng_here;
    try {
      state.restore(ck, strict);
    } catch (const Error& e) {
      state.rng = had_rng;
      rethrow_naming(e, path);
    }
    state.rng = had_rng;
    info_.rng_restored = rng_here;
  });
  if (r.restored) {
    m.set_latest(r.record);
    if (state.rng && !info_.rng_restored && rank_ == 0)
      impl_->warn(str_cat(r.record.path, ": saved by ",
                          info_.saved_world_size ? std::to_string(info_.saved_world_size) : "one process (no ranks)",
                          info_.saved_world_size ? " ranks" : "", ", restored on ", world_,
                          ": the per-rank RNG states do not carry over and were left as they are (re-seed them)"));
  }
  return r;
}

// --- cadence and preemption ------------------------------------------------------------------------

bool CheckpointManager::should_save_epoch(int64_t epoch) const {
  const auto& o = impl_->opt;
  return o.save_every_epochs > 0 && (epoch + 1) % o.save_every_epochs == 0;
}

bool CheckpointManager::should_save_step(int64_t step) {
  Impl& m = *impl_;
  bool due = m.opt.save_every_steps > 0 && step % m.opt.save_every_steps == 0;
  if (m.opt.save_every_minutes > 0) {
    // Rank 0's clock decides for every rank.
    Status s = m.on_coordinator("agreeing on the save cadence", [&] {
      Status t;
      t.number = std::chrono::duration<double>(Clock::now() - m.last_save_time).count() >= 60.0 * m.opt.save_every_minutes;
      return t;
    });
    due = due || s.number != 0;
  }
  return due;
}

// Any rank's signal stops every rank: one allreduce (max) of this rank's flag.
bool CheckpointManager::preemption_due() {
  Impl& m = *impl_;
  if (!m.preemption) return false;
  at::Tensor flag = at::tensor({int64_t(m.preemption->requested() ? 1 : 0)}, at::kLong);
  std::vector<at::Tensor> v{flag};
  c10d::AllreduceOptions ao;
  ao.reduceOp = c10d::ReduceOp::MAX;
  wait_for(m.pg.allreduce(v, ao), m.timeout, "agreeing on a preemption signal");
  return flag.item<int64_t>() != 0;
}

bool CheckpointManager::save_for_preemption(const TrainingState& state) {
  save(state);
  wait();
  preempted_ = true;
  return true;
}

bool CheckpointManager::step(const TrainingState& state) {
  if (preemption_due()) return save_for_preemption(state);
  return should_save_step(state.step) && save(state);
}

bool CheckpointManager::end_epoch(const TrainingState& state) {
  if (preemption_due()) return save_for_preemption(state);
  return should_save_epoch(state.epoch) && save(state);
}

}  // namespace ckpt::dist
