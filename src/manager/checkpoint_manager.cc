// CheckpointManager: one file per checkpoint, written by this process (sync, or async on the
// AsyncSaver's writer thread) and committed through the run directory's protocol (run::Run;
// the protocol is written out step by step at the top of src/manager/run.cc).
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <iostream>
#include <mutex>
#include <set>

#include "ckpt/async.h"
#include "ckpt/distributed_files.h"
#include "ckpt/manager.h"
#include "ckpt/preemption.h"
#include "format/archive.h"
#include "manager/run.h"
#include "util/errors.h"

namespace ckpt {

RetentionPolicy ManagerOptions::retention() const {
  RetentionPolicy p;
  p.keep_last = keep_last;
  p.keep_best = keep_best;
  p.monitor = monitor;
  p.mode = mode;
  p.keep_every_epochs = keep_every_epochs;
  p.keep_every_steps = keep_every_steps;
  p.keep_every_minutes = keep_every_minutes;
  return p;
}

ResumeFrom ResumeFrom::parse(const std::string& text) {
  if (text.empty() || text == "latest") return latest();
  if (text == "best") return best();
  if (text == "none") return none();
  if (text.rfind("step=", 0) == 0) {
    try {
      size_t used = 0;
      int64_t s = std::stoll(text.substr(5), &used);
      if (used == text.size() - 5) return at_step(s);
    } catch (const std::exception&) {
    }
    fail(ErrorKind::kInvalidArgument, "resume from '", text, "': expected step=N with a whole number N");
  }
  return file(text);
}

namespace {

using Clock = std::chrono::steady_clock;


}  // namespace

struct CheckpointManager::Impl {
  run::Run run;
  ManagerOptions opt;
  std::unique_ptr<PreemptionGuard> preemption;
  std::unique_ptr<AsyncSaver> saver;

  std::optional<int64_t> last_step;  // the latest save issued (committed or in flight)
  Clock::time_point last_save_time = Clock::now();

  Impl(const std::string& d, const ManagerOptions& o) : run(d, o, run::EntryKind::kFile), opt(o) {}

  io::Env* env() const { return run.env(); }

  LoadOptions load_options(bool verify) const {
    LoadOptions lo;
    lo.verify_checksums = verify;
    lo.env = env();
    lo.progress = opt.progress;
    return lo;
  }

  void open() {
    run.open();
    if (auto latest = run.latest()) last_step = latest->step;
  }

  // --- restore -----------------------------------------------------------------------------------

  Value load_record(const CheckpointRecord& r) {
    if (!env()->file_exists(r.path)) fail(ErrorKind::kNotFound, r.path, ": the index lists it but the file is missing");
    if (run::is_directory(r.path)) {
      // A checkpoint of a distributed run (a run written by several ranks, continued by one
      // process): its shards joined, each per-rank entry a list by saved rank.
      // Every piece read is CRC-checked; the metadata against the index.
      if (opt.verify_on_restore) {
        uint32_t crc = run::content_crc(env(), r.path);
        if (crc != r.content_crc)
          fail(ErrorKind::kCorruption, r.path, ": content CRC ", hex32(crc), " differs from the index's ",
               hex32(r.content_crc), " (the checkpoint was replaced or rewritten)");
      }
      return dist::consolidate(r.path, load_options(true), dist::ConsolidateOptions{{}, 0, 1});
    }
    Value v = ckpt::load(r.path, load_options(opt.verify_on_restore));
    if (opt.verify_on_restore) {
      uint32_t crc = format::read_content_crc(env(), r.path);
      if (crc != r.content_crc)
        fail(ErrorKind::kCorruption, r.path, ": content CRC ", hex32(crc), " differs from the index's ",
             hex32(r.content_crc), " (the file was replaced or rewritten)");
    }
    return v;
  }

  RestoreResult load(const ResumeFrom& from) {
    RestoreResult result;
    if (from.kind == ResumeFrom::Kind::kNone) return result;
    if (from.kind == ResumeFrom::Kind::kPath) {
      result.checkpoint = run::is_directory(from.path)
                              ? dist::consolidate(from.path, load_options(true), dist::ConsolidateOptions{{}, 0, 1})
                              : ckpt::load(from.path, load_options(true));
      result.restored = true;
      result.record.path = from.path;
      result.record.file = io::basename_of(from.path);
      if (result.checkpoint.is_dict()) {
        const Dict& d = result.checkpoint.dict();
        if (const Value* s = d.find(opt.step_key); s && s->is_int()) result.record.step = s->to_int();
        if (const Value* e = d.find(opt.epoch_key); e && e->is_int()) result.record.epoch = e->to_int();
        if (const Value* m = d.find(opt.metrics_key)) result.record.metrics = run::numeric_entries(*m);
      }
      return result;
    }
    bool changed = false;
    while (std::optional<CheckpointRecord> pick = run.pick(from)) {
      try {
        result.checkpoint = load_record(*pick);
        result.record = *pick;
        result.restored = true;
        break;
      } catch (const Error& e) {
        if (!run::falls_back_on(e.kind()) || from.kind == ResumeFrom::Kind::kStep) throw;
        std::string problem = e.what();
        result.skipped.push_back(problem);
        run.mark_damaged(pick->file, problem);
        changed = true;
        run.warn(str_cat("skipping damaged checkpoint ", problem, "; falling back to the next older one"));
      }
    }
    if (changed) run.write_index();
    if (!result.restored && !result.skipped.empty())
      fail(ErrorKind::kCorruption, run.dir(), ": no checkpoint verifies (", result.skipped.size(),
           " damaged; the newest: ", result.skipped.front(), ")");
    if (result.restored) {
      last_step = result.record.step;
      if (!result.skipped.empty())
        run.warn(str_cat("resumed from ", result.record.path, " (step ", result.record.step, ") instead of the newest"));
    }
    return result;
  }

  // --- save (steps 1-4, then the commit) -----------------------------------------------------------

  void commit(const SavedFile& saved, CheckpointRecord rec) {
    rec.bytes = saved.bytes;
    rec.content_crc = saved.content_crc;
    run.commit(std::move(rec));
  }

  bool save(const Value& checkpoint, int64_t step, int64_t epoch, std::map<std::string, double> metrics) {
    if (last_step && *last_step == step) {
      if (saver) saver->wait();  // still report an earlier background failure
      return false;
    }
    CheckpointRecord rec;
    rec.file = run.file_name(epoch, step, metrics);
    rec.path = run.path_of(rec.file);
    rec.epoch = epoch;
    rec.step = step;
    rec.metrics = std::move(metrics);
    run.free_name(rec.file);
    SaveOptions so;
    so.durable = opt.durable;
    so.env = env();
    so.progress = opt.progress;
    // On object storage free_name() cleared the name, so a writer that lost the run cannot publish
    // over it (on files, a re-saved step's rename replaces the old file atomically).
    so.create_only = env()->publishes_in_place(rec.path);
    // Every error names the checkpoint (and so its step), also when the file it failed on is
    // the index or a pointer.
    auto naming = [](const CheckpointRecord& r, auto&& f) {
      try {
        f();
      } catch (const Error& e) {
        if (std::string(e.what()).find(r.file) != std::string::npos) throw;
        rethrow_with_context(e, str_cat("saving ", r.file, " (step ", r.step, ")"));
      }
    };
    if (opt.async) {
      if (!saver) saver = std::make_unique<AsyncSaver>(opt.max_in_flight);
      naming(rec, [&] {
        saver->save(checkpoint, rec.path, so,
                    [this, rec, naming](const SavedFile& f) { naming(rec, [&] { commit(f, rec); }); });
      });
    } else {
      naming(rec, [&] { commit(ckpt::save(checkpoint, rec.path, so), rec); });
    }
    last_step = step;
    last_save_time = Clock::now();
    return true;
  }

  void wait() {
    if (saver) saver->wait();
  }
};

// --- CheckpointManager ---------------------------------------------------------------------------

CheckpointManager::CheckpointManager(std::string directory, ManagerOptions options)
    : dir_(std::move(directory)), options_(std::move(options)) {
  while (dir_.size() > 1 && dir_.back() == '/') dir_.pop_back();
  if (dir_.empty()) fail(ErrorKind::kInvalidArgument, "CheckpointManager: empty run directory name");
  if (!options_.monitor.empty() && options_.name_template.find('{') == std::string::npos)
    fail(ErrorKind::kInvalidArgument, "name template '", options_.name_template, "' has no fields");
  impl_ = std::make_unique<Impl>(dir_, options_);
  // The guard goes in before open() writes anything: a SIGTERM that arrives once the run directory
  // shows signs of life must be caught and answered with a checkpoint, not end the process.
  if (options_.handle_preemption) impl_->preemption = std::make_unique<PreemptionGuard>(options_.preempt_on_sigusr1);
  impl_->open();
}

CheckpointManager::~CheckpointManager() {
  try {
    impl_->wait();
  } catch (const std::exception& e) {
    std::cerr << "ckpt: a background checkpoint save failed and nobody called wait(): " << e.what() << "\n";
  }
}

RestoreResult CheckpointManager::load(const ResumeFrom& from) {
  impl_->wait();
  return impl_->load(from);
}

bool CheckpointManager::save(const Value& checkpoint, int64_t step, int64_t epoch,
                             std::map<std::string, double> metrics) {
  auto t0 = Clock::now();
  bool saved = impl_->save(checkpoint, step, epoch, std::move(metrics));
  blocked_seconds_ += std::chrono::duration<double>(Clock::now() - t0).count();
  return saved;
}

bool CheckpointManager::should_save_step(int64_t step) {
  if (options_.save_every_steps > 0 && step % options_.save_every_steps == 0) return true;
  if (options_.save_every_minutes > 0 &&
      std::chrono::duration<double>(Clock::now() - impl_->last_save_time).count() >= 60.0 * options_.save_every_minutes)
    return true;
  return false;
}

bool CheckpointManager::should_save_epoch(int64_t epoch) const {
  return options_.save_every_epochs > 0 && (epoch + 1) % options_.save_every_epochs == 0;
}

bool CheckpointManager::preemption_requested() const {
  return impl_->preemption && impl_->preemption->requested();
}

void CheckpointManager::wait() {
  impl_->wait();
}

std::vector<CheckpointRecord> CheckpointManager::checkpoints() const {
  return impl_->run.records();
}

std::optional<CheckpointRecord> CheckpointManager::latest() const {
  return impl_->run.latest();
}

std::optional<CheckpointRecord> CheckpointManager::best() const {
  return impl_->run.best();
}

// --- run directories without a manager -----------------------------------------------------------

bool is_run_directory(const std::string& directory) {
  return io::Env::Default()->file_exists(directory + "/" + run::kIndexFile);
}

namespace {

// The run's index, for a reader: one that does not parse fails saying who repairs it (only a
// writer rebuilds it, since that needs the run's own names and keys).
std::optional<run::Index> read_index_for_reader(io::Env* env, const std::string& directory) {
  try {
    return run::read_index(env, directory);
  } catch (const Error& e) {
    if (e.kind() != ErrorKind::kCorruption) throw;
    fail(ErrorKind::kCorruption, e.what(),
         "; the run's next writer (CheckpointManager, ckpt-train) rebuilds it from the checkpoints that verify");
  }
}

}  // namespace

std::vector<CheckpointRecord> list_run(const std::string& directory, io::Env* env) {
  if (!env) env = io::Env::Default();
  std::optional<run::Index> index = read_index_for_reader(env, directory);
  if (!index) {
    if (!env->file_exists(directory)) fail(ErrorKind::kNotFound, directory, ": no such run directory");
    fail(ErrorKind::kNotFound, directory, ": not a run directory (no ", run::kIndexFile, ")");
  }
  return index->records;
}

std::vector<RunVerifyResult> verify_run(const std::string& directory, const LoadOptions& options) {
  io::Env* env = options.env ? options.env : io::Env::Default();
  std::vector<RunVerifyResult> out;
  for (const auto& r : list_run(directory, env)) {
    RunVerifyResult v{r, ""};
    try {
      run::verify_checkpoint(r.path, r.content_crc, options);
    } catch (const Error& e) {
      v.problem = e.what();
    }
    out.push_back(std::move(v));
  }
  return out;
}

std::vector<CheckpointRecord> prune_run(const std::string& directory, const RetentionPolicy& policy, bool dry_run,
                                        io::Env* env) {
  if (!env) env = io::Env::Default();
  std::optional<run::Index> existing = read_index_for_reader(env, directory);
  if (!existing) fail(ErrorKind::kNotFound, directory, ": not a run directory (no ", run::kIndexFile, ")");
  std::unique_ptr<io::FileLock> lock;
  if (!dry_run) {
    try {
      lock = env->lock_file(directory + "/" + run::kLockFile, run::owner_text());
    } catch (const Error& e) {
      fail(e.kind(), "run directory '", directory, "' is in use: ", e.what());
    }
    existing = read_index_for_reader(env, directory);  // again, under the lock
  }
  run::Index index = std::move(*existing);
  // Never pruned: the latest, the newest that verifies, the best the index names (its best files
  // hold it) and the best by the policy's own metric.
  std::vector<std::string> protect = {index.latest, index.best, index.best_exported};
  for (auto it = index.records.rbegin(); it != index.records.rend(); ++it)
    if (it->damaged.empty()) {
      protect.push_back(it->file);
      break;
    }
  if (!policy.monitor.empty()) {
    run::Index by_policy = index;
    by_policy.refresh(policy.monitor, policy.mode);
    protect.push_back(by_policy.best);
  }
  std::vector<bool> keep = run::retained(index.records, policy, index.created_unix, protect);
  std::vector<CheckpointRecord> kept, victims;
  for (size_t i = 0; i < index.records.size(); ++i) (keep[i] ? kept : victims).push_back(index.records[i]);
  if (dry_run || victims.empty()) return victims;
  // The same order as a commit: the index flips first, then the files go.
  run::Index next = index;
  next.records = kept;
  for (const auto& v : victims) next.pending_delete.push_back(v.file);
  next.refresh(next.monitor, next.mode);
  run::write_index(env, directory, next, true);
  for (const auto& v : victims) run::remove_checkpoint(env, v.path);
  return victims;
}

}  // namespace ckpt
