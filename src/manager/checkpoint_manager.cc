// CheckpointManager: the commit protocol of a run directory.
//
// Saving checkpoint C (sync: on the caller's thread; async: steps 2-9 on the AsyncSaver's
// writer thread, one save after another):
//   1. save(): a save at the step of the latest (or in-flight) checkpoint is a no-op. The file
//      name comes from the name template. Free space is compared with C's size (retention frees
//      space only after the commit, so C must fit beside every existing checkpoint); too little
//      fails here, before anything is written.
//   2. C's bytes go to a temp file ".NAME.tmp-PID-N" in the run directory (O_EXCL).
//   3. The temp file is fsynced and closed.
//   4. It is renamed to NAME.pt and the directory is fsynced. C is now durable but not yet
//      committed: nothing points to it, and a crash here leaves an orphan that the next start
//      verifies and adopts (step 0c).
//   5. If C is the new best by the monitored metric: best_model.pt (C's model entry alone) is
//      written crash-safely, and best.pt is replaced by a hard link to C (a copy where the
//      filesystem has no hard links), each through temp -> fsync -> rename -> fsync dir.
//   6. Retention decides over the index plus C which checkpoints go; never C (the latest and
//      newest that verifies), the best, or anything not yet in the index.
//   7. COMMIT POINT: index.json is replaced atomically (temp -> fsync -> rename -> fsync dir)
//      by the old index plus C, minus the victims of step 6, which it lists as pending_delete.
//   8. The `latest` pointer is replaced the same way (for people and scripts; ckpt trusts the
//      index).
//   9. The victims are deleted. A crash before this finishes leaves them in pending_delete;
//      the next start deletes them (step 0b).
// A failure at any step before 7 leaves the index, every older checkpoint and every pointer as
// they were; the temp file of steps 2-3 is removed by its owner, or at the next start (step 0a).
//
// Opening a run directory (constructor):
//   0.  The directory lock is taken (flock on .lock; the kernel drops it when a process dies).
//   0a. Temp files of the manager's own names (a recognised checkpoint name, the index, the
//       pointers) are removed: whoever wrote them is dead, since we hold the lock.
//   0b. The files in pending_delete are removed.
//   0c. Orphans — recognised checkpoint names the index does not list — are verified; those
//       that verify are adopted into the index (an interrupted step 5-7), the others are left
//       alone with a warning. A damaged index is rebuilt this way from the files.
//   0d. best.pt / best_model.pt are regenerated if they do not hold the index's best.
//
// Sharded checkpoints can commit with the same protocol: each writer publishes its shard with
// steps 2-4, and one coordinator runs steps 5-9 once every shard is durable; the index entry
// then names the shard set.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <iostream>
#include <mutex>
#include <set>

#include "ckpt/async.h"
#include "ckpt/manager.h"
#include "ckpt/preemption.h"
#include "format/archive.h"
#include "manager/run_dir.h"
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

std::map<std::string, double> numeric_entries(const Value& v) {
  std::map<std::string, double> out;
  if (!v.is_dict()) return out;
  for (const auto& [k, x] : v.dict())
    if (k.is_string() && (x.is_int() || x.is_float() || x.is_bool()))
      out[k.to_string()] = x.is_bool() ? double(x.to_bool()) : x.to_double();
  return out;
}

bool falls_back_on(ErrorKind kind) {
  // A file that cannot be read is damaged; one that reads but does not fit is the caller's.
  return kind != ErrorKind::kMismatch && kind != ErrorKind::kInvalidArgument;
}

std::string owner_text() {
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  return str_cat("pid ", ::getpid(), " on ", host);
}

}  // namespace

struct CheckpointManager::Impl {
  io::Env* env;
  std::string dir;
  ManagerOptions opt;
  run::NameTemplate names;
  std::vector<run::NameTemplate> old_names;  // templates of earlier runs in this directory
  std::unique_ptr<io::FileLock> lock;
  std::unique_ptr<PreemptionGuard> preemption;

  mutable std::mutex mu;  // guards `index` (async commits run on the writer thread)
  run::Index index;
  std::unique_ptr<AsyncSaver> saver;

  std::optional<int64_t> last_step;  // the latest save issued (committed or in flight)
  Clock::time_point last_save_time = Clock::now();

  Impl(std::string d, const ManagerOptions& o)
      : env(o.env ? o.env : io::Env::Default()), dir(std::move(d)), opt(o), names(o.name_template) {}

  void warn(const std::string& message) const {
    if (opt.warn)
      opt.warn(message);
    else
      std::cerr << "ckpt: warning: " << message << "\n";
  }

  std::string path_of(const std::string& file) const { return dir + "/" + file; }

  bool recognised(const std::string& file) const {
    if (names.parse(file, nullptr, nullptr)) return true;
    for (const auto& t : old_names)
      if (t.parse(file, nullptr, nullptr)) return true;
    return false;
  }

  bool own_final_name(const std::string& file) const {
    return file == run::kIndexFile || file == run::kLatestFile || file == run::kBestFile ||
           file == run::kBestModelFile || recognised(file);
  }

  LoadOptions load_options(bool verify) const {
    LoadOptions lo;
    lo.verify_checksums = verify;
    lo.env = env;
    lo.progress = opt.progress;
    return lo;
  }

  // --- opening (steps 0-0d) ----------------------------------------------------------------------

  void open() {
    env->create_dirs(dir);
    try {
      lock = env->lock_file(path_of(run::kLockFile), owner_text());
    } catch (const Error& e) {
      fail(e.kind(), "run directory '", dir, "' is in use: ", e.what());
    }
    bool dirty = false;
    std::optional<run::Index> existing;
    try {
      existing = run::read_index(env, dir);
    } catch (const Error& e) {
      if (e.kind() != ErrorKind::kCorruption) throw;
      warn(str_cat(e.what(), "; rebuilding it from the checkpoint files"));
      dirty = true;
    }
    if (existing) {
      index = std::move(*existing);
      if (!index.name_template.empty() && index.name_template != names.text()) {
        try {
          old_names.emplace_back(index.name_template);
        } catch (const Error&) {
        }
        dirty = true;
      }
    } else {
      index.created_unix = run::now_unix();
      dirty = true;
    }
    index.name_template = names.text();

    std::vector<io::DirEntry> entries = env->list_dir(dir);
    // 0a. temp files of our own names
    for (const auto& e : entries) {
      std::string final_name = io::final_name_of_temp(e.name);
      if (e.is_file && !final_name.empty() && own_final_name(final_name)) env->remove_file(path_of(e.name));
    }
    // 0b. an interrupted retention pass
    for (const auto& victim : index.pending_delete)
      if (!index.find(victim) && recognised(victim)) env->remove_file(path_of(victim));
    if (!index.pending_delete.empty()) dirty = true;
    index.pending_delete.clear();
    // 0c. orphans: durable checkpoints whose commit did not finish
    std::vector<CheckpointRecord> adopted;
    std::set<std::string> listed;
    for (const auto& r : index.records) listed.insert(r.file);
    for (const auto& e : entries) {
      if (!e.is_file || listed.count(e.name) || !recognised(e.name)) continue;
      try {
        adopted.push_back(adopt(e.name));
      } catch (const Error& err) {
        warn(str_cat(path_of(e.name), ": not in the run index and does not verify (", err.what(),
                     "); left alone, never loaded"));
      }
    }
    std::sort(adopted.begin(), adopted.end(),
              [](const CheckpointRecord& a, const CheckpointRecord& b) { return a.step < b.step; });
    for (auto& r : adopted) {
      // In step order among the listed ones: a commit that failed before its index flip may be
      // followed by later commits of the same run, which stay the latest.
      r.seq = index.next_seq++;
      auto at = std::find_if(index.records.begin(), index.records.end(),
                             [&](const CheckpointRecord& x) { return x.step > r.step; });
      index.records.insert(at, std::move(r));
      dirty = true;
    }
    if (index.monitor != opt.monitor || index.mode != opt.mode) dirty = true;
    index.refresh(opt.monitor, opt.mode);
    // 0d. the best files
    exported_best_ = best_exported_marker();
    if (index.best != exported_best_) {
      if (!index.best.empty()) export_best(*index.find(index.best));
      index.best_exported = exported_best_;
      dirty = true;
    }
    if (dirty) run::write_index(env, dir, index, opt.durable);
    if (auto latest = index.find(index.latest)) last_step = latest->step;
  }

  // The checkpoint best.pt and best_model.pt hold, as the index recorded it — "" when either
  // file is gone.
  std::string exported_best_;
  std::string best_exported_marker() const {
    if (index.best_exported.empty() || !env->file_exists(path_of(run::kBestFile))) return "";
    if (!opt.model_key.empty() && !env->file_exists(path_of(run::kBestModelFile))) return "";
    return index.best_exported;
  }

  CheckpointRecord adopt(const std::string& file) {
    const std::string path = path_of(file);
    LoadOptions lo = load_options(true);
    ckpt::verify(path, lo);
    lo.mmap = true;
    lo.verify_checksums = false;  // just verified
    Value ck = ckpt::load(path, lo);
    CheckpointRecord r;
    r.file = file;
    r.path = path;
    names.parse(file, &r.step, &r.epoch);
    for (const auto& t : old_names) t.parse(file, &r.step, &r.epoch);
    if (ck.is_dict()) {
      if (const Value* s = ck.dict().find(opt.step_key); s && s->is_int()) r.step = s->to_int();
      if (const Value* e = ck.dict().find(opt.epoch_key); e && e->is_int()) r.epoch = e->to_int();
      if (const Value* m = ck.dict().find(opt.metrics_key)) r.metrics = numeric_entries(*m);
    }
    r.bytes = env->file_size(path);
    r.content_crc = format::read_content_crc(env, path);
    r.unix_time = run::now_unix();
    warn(str_cat(path, ": adopted into the run index (its commit was interrupted after the file was durable)"));
    return r;
  }

  // --- step 5: the best model, kept apart ------------------------------------------------------

  void export_best(const CheckpointRecord& best) {
    Value ck;
    bool loaded = false;
    auto load_best = [&] {
      if (loaded) return;
      LoadOptions lo = load_options(true);
      lo.mmap = true;
      ck = ckpt::load(best.path, lo);
      loaded = true;
    };
    SaveOptions so;
    so.durable = opt.durable;
    so.env = env;
    if (!opt.model_key.empty()) {
      load_best();
      const Value* model = ck.is_dict() ? ck.dict().find(opt.model_key) : nullptr;
      if (model)
        ckpt::save(*model, path_of(run::kBestModelFile), so);
      else
        warn(str_cat(best.path, ": no '", opt.model_key, "' entry, so no ", run::kBestModelFile, " was written"));
    }
    // best.pt: a second name for the file (no copy), replaced atomically.
    const std::string tmp = str_cat(dir, "/.", run::kBestFile, ".tmp-", ::getpid(), "-0");
    env->remove_file(tmp);
    try {
      env->link_file(best.path, tmp);
      env->rename_file(tmp, path_of(run::kBestFile));
      // When best.pt already is a link to this file, POSIX rename() does nothing and the temp
      // name stays: remove it (a no-op otherwise).
      env->remove_file(tmp);
      if (opt.durable) env->sync_dir(dir);
    } catch (const Error& e) {
      env->remove_file(tmp);
      if (e.kind() != ErrorKind::kUnsupported) throw;
      load_best();
      ckpt::save(ck, path_of(run::kBestFile), so);
    }
    exported_best_ = best.file;
  }

  // --- steps 5-9 ---------------------------------------------------------------------------------

  void commit(const SavedFile& saved, CheckpointRecord rec) {
    std::lock_guard<std::mutex> guard(mu);
    rec.bytes = saved.bytes;
    rec.content_crc = saved.content_crc;
    rec.unix_time = run::now_unix();
    run::Index next = index;
    rec.seq = next.next_seq++;
    // A checkpoint under the same name (a step saved again after resuming from an older one)
    // was replaced by the rename of step 4.
    next.records.erase(std::remove_if(next.records.begin(), next.records.end(),
                                      [&](const CheckpointRecord& r) { return r.file == rec.file; }),
                       next.records.end());
    next.records.push_back(rec);
    next.refresh(opt.monitor, opt.mode);
    if (!next.best.empty() && next.best != exported_best_) export_best(*next.find(next.best));  // 5
    next.best_exported = exported_best_;
    // 6. retention
    std::vector<bool> keep =
        run::retained(next.records, opt.retention(), next.created_unix, {next.latest, next.best, rec.file});
    std::vector<CheckpointRecord> kept, victims;
    for (size_t i = 0; i < next.records.size(); ++i) (keep[i] ? kept : victims).push_back(next.records[i]);
    next.records = std::move(kept);
    for (const auto& v : victims) next.pending_delete.push_back(v.file);
    next.refresh(opt.monitor, opt.mode);
    // 7-8. the commit point, then the pointer
    run::write_index_file(env, dir, next, opt.durable);
    index = next;
    run::write_latest_file(env, dir, index, opt.durable);
    // 9. the victims
    for (const auto& v : victims) env->remove_file(v.path);
  }

  // --- restore -----------------------------------------------------------------------------------

  Value load_record(const CheckpointRecord& r) {
    if (!env->file_exists(r.path)) fail(ErrorKind::kNotFound, r.path, ": the index lists it but the file is missing");
    Value v = ckpt::load(r.path, load_options(opt.verify_on_restore));
    if (opt.verify_on_restore) {
      uint32_t crc = format::read_content_crc(env, r.path);
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
      result.checkpoint = ckpt::load(from.path, load_options(true));
      result.restored = true;
      result.record.path = from.path;
      result.record.file = io::basename_of(from.path);
      if (result.checkpoint.is_dict()) {
        const Dict& d = result.checkpoint.dict();
        if (const Value* s = d.find(opt.step_key); s && s->is_int()) result.record.step = s->to_int();
        if (const Value* e = d.find(opt.epoch_key); e && e->is_int()) result.record.epoch = e->to_int();
        if (const Value* m = d.find(opt.metrics_key)) result.record.metrics = numeric_entries(*m);
      }
      return result;
    }
    std::lock_guard<std::mutex> guard(mu);
    bool changed = false;
    for (;;) {
      const CheckpointRecord* pick = nullptr;
      if (from.kind == ResumeFrom::Kind::kLatest) {
        pick = index.find(index.latest);
      } else if (from.kind == ResumeFrom::Kind::kBest) {
        if (opt.monitor.empty())
          fail(ErrorKind::kInvalidArgument, "resume from 'best': no metric is monitored (set ManagerOptions::monitor)");
        pick = index.find(index.best);
      } else {
        for (const auto& r : index.records)
          if (r.step == from.step) pick = &r;
        if (!pick) fail(ErrorKind::kNotFound, dir, ": no checkpoint at step ", from.step);
      }
      if (pick && !pick->damaged.empty()) pick = nullptr;
      if (!pick) break;
      try {
        result.checkpoint = load_record(*pick);
        result.record = *pick;
        result.restored = true;
        break;
      } catch (const Error& e) {
        if (!falls_back_on(e.kind()) || from.kind == ResumeFrom::Kind::kStep) throw;
        std::string problem = e.what();
        result.skipped.push_back(problem);
        for (auto& r : index.records)
          if (r.file == pick->file) r.damaged = problem;
        index.refresh(opt.monitor, opt.mode);
        changed = true;
        warn(str_cat("skipping damaged checkpoint ", problem, "; falling back to the next older one"));
      }
    }
    if (changed) {
      run::write_index(env, dir, index, opt.durable);
    }
    if (!result.restored && !result.skipped.empty())
      fail(ErrorKind::kCorruption, dir, ": no checkpoint verifies (", result.skipped.size(),
           " damaged; the newest: ", result.skipped.front(), ")");
    if (result.restored) {
      last_step = result.record.step;
      if (!result.skipped.empty())
        warn(str_cat("resumed from ", result.record.path, " (step ", result.record.step, ") instead of the newest"));
    }
    return result;
  }

  // --- save (steps 1-4, then commit) ---------------------------------------------------------------

  bool save(const Value& checkpoint, int64_t step, int64_t epoch, std::map<std::string, double> metrics) {
    if (last_step && *last_step == step) {
      if (saver) saver->wait();  // still report an earlier background failure
      return false;
    }
    CheckpointRecord rec;
    rec.file = names.format(epoch, step, metrics);
    rec.path = path_of(rec.file);
    rec.epoch = epoch;
    rec.step = step;
    rec.metrics = std::move(metrics);
    SaveOptions so;
    so.durable = opt.durable;
    so.env = env;
    so.progress = opt.progress;
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
  std::lock_guard<std::mutex> guard(impl_->mu);
  return impl_->index.records;
}

std::optional<CheckpointRecord> CheckpointManager::latest() const {
  std::lock_guard<std::mutex> guard(impl_->mu);
  if (const auto* r = impl_->index.find(impl_->index.latest)) return *r;
  return std::nullopt;
}

std::optional<CheckpointRecord> CheckpointManager::best() const {
  std::lock_guard<std::mutex> guard(impl_->mu);
  if (const auto* r = impl_->index.find(impl_->index.best)) return *r;
  return std::nullopt;
}

// --- run directories without a manager -----------------------------------------------------------

bool is_run_directory(const std::string& directory) {
  return io::Env::Default()->file_exists(directory + "/" + run::kIndexFile);
}

std::vector<CheckpointRecord> list_run(const std::string& directory, io::Env* env) {
  if (!env) env = io::Env::Default();
  std::optional<run::Index> index = run::read_index(env, directory);
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
      if (!env->file_exists(r.path)) fail(ErrorKind::kNotFound, r.path, ": listed in the index but missing");
      ckpt::verify(r.path, options);
      uint32_t crc = format::read_content_crc(env, r.path);
      if (crc != r.content_crc)
        fail(ErrorKind::kCorruption, r.path, ": content CRC ", hex32(crc), " differs from the index's ",
             hex32(r.content_crc));
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
  std::optional<run::Index> existing = run::read_index(env, directory);
  if (!existing) fail(ErrorKind::kNotFound, directory, ": not a run directory (no ", run::kIndexFile, ")");
  std::unique_ptr<io::FileLock> lock;
  if (!dry_run) {
    try {
      lock = env->lock_file(directory + "/" + run::kLockFile, owner_text());
    } catch (const Error& e) {
      fail(e.kind(), "run directory '", directory, "' is in use: ", e.what());
    }
    existing = run::read_index(env, directory);  // again, under the lock
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
  for (const auto& v : victims) env->remove_file(v.path);
  return victims;
}

}  // namespace ckpt
