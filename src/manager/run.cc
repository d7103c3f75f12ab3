// The commit protocol of a run directory.
//
// Saving checkpoint C. The writer does steps 1-4:
//   1. A save at the step of the latest (or in-flight) checkpoint is a no-op. The name comes
//      from the name template.
//   One file (CheckpointManager; sync on the caller's thread, async on the AsyncSaver's writer
//   thread, one save after another):
//   2. Free space is compared with C's size (retention frees space only after the commit, so C
//      must fit beside every existing checkpoint); C's bytes go to a temp file
//      ".NAME.pt.tmp-PID-N" in the run directory (O_EXCL).
//   3. The temp file is fsynced and closed.
//   4. It is renamed to NAME.pt and the directory is fsynced.
//   Distributed (dist::CheckpointManager, every rank; src/dist/distributed.cc has the details):
//   2-4. Every rank writes and syncs its file in ".NAME.tmp-dist/"; rank 0 gathers the
//      manifests, writes metadata.json durably and renames the directory to NAME.
//   C is now durable but not yet committed: nothing points to it, and a crash here leaves an
//   orphan that the next start verifies and adopts (step 0c). Run::commit does the rest:
//   5. If C is the new best by the monitored metric: best_model.pt (C's model entry alone; for
//      a distributed C, its shards joined) is written crash-safely, and for a file best.pt is
//      replaced by a hard link to C (a copy where the filesystem has no hard links), each
//      through temp -> fsync -> rename -> fsync dir. (A distributed run has no best.pt: the
//      index names the best directory.)
//   6. Retention decides over the index plus C which checkpoints go; never C (the latest and
//      newest that verifies), the best, or anything not yet in the index.
//   7. COMMIT POINT: index.json is replaced atomically (temp -> fsync -> rename -> fsync dir)
//      by the old index plus C, minus the victims of step 6, which it lists as pending_delete.
//   8. The `latest` pointer is replaced the same way (for people and scripts; ckpt trusts the
//      index).
//   9. The victims are deleted. A crash before this finishes leaves them in pending_delete;
//      the next start deletes them (step 0b).
// A failure at any step before 7 leaves the index, every older checkpoint and every pointer as
// they were; the temp file or directory of steps 2-3 is removed by its owner, or at the next
// start (step 0a).
//
// Opening a run directory (Run::open; in a distributed run, rank 0 only):
//   0.  The directory lock is taken (flock on .lock; the kernel drops it when a process dies).
//   0a. Temp files of the manager's own names (a recognised checkpoint name, the index, the
//       pointers) and temp directories of distributed saves are removed: whoever wrote them is
//       dead, since we hold the lock.
//   0b. The checkpoints in pending_delete are removed.
//   0c. Orphans — recognised checkpoint names the index does not list — are verified; those
//       that verify are adopted into the index (an interrupted step 5-7), the others are left
//       alone with a warning. A damaged index is rebuilt this way from the checkpoints.
//   0d. best.pt / best_model.pt are regenerated if they do not hold the index's best.
#include "manager/run.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <iostream>
#include <set>

#include "ckpt/distributed_files.h"
#include "format/archive.h"
#include "util/crc32.h"
#include "util/errors.h"

namespace ckpt::run {

namespace {

constexpr const char* kDistMetadata = "metadata.json";

bool is_dist_temp_dir(const std::string& name) {
  const std::string suffix = ".tmp-dist";
  return name.size() > suffix.size() + 1 && name[0] == '.' &&
         name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

std::map<std::string, double> numeric_entries(const Value& v) {
  std::map<std::string, double> out;
  if (!v.is_dict()) return out;
  for (const auto& [k, x] : v.dict())
    if (k.is_string() && (x.is_int() || x.is_float() || x.is_bool()))
      out[k.to_string()] = x.is_bool() ? double(x.to_bool()) : x.to_double();
  return out;
}

std::string owner_text() {
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  return str_cat("pid ", ::getpid(), " on ", host);
}

bool is_directory(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

void remove_tree(io::Env* env, const std::string& path) noexcept {
  try {
    if (!is_directory(path)) return;
    for (const auto& e : env->list_dir(path)) {
      const std::string p = path + "/" + e.name;
      if (!e.is_file && is_directory(p))
        remove_tree(env, p);
      else
        env->remove_file(p);
    }
    ::rmdir(path.c_str());
  } catch (...) {
  }
}

void remove_checkpoint(io::Env* env, const std::string& path) noexcept {
  if (is_directory(path))
    remove_tree(env, path);
  else
    env->remove_file(path);
}

uint32_t content_crc(io::Env* env, const std::string& path) {
  if (is_directory(path)) {
    const std::string meta = env->read_file(path + "/" + kDistMetadata);
    return crc32_update(0, meta.data(), meta.size());
  }
  return format::read_content_crc(env, path);
}

void verify_checkpoint(const std::string& path, uint32_t expected, const LoadOptions& options) {
  io::Env* env = options.env ? options.env : io::Env::Default();
  if (!env->file_exists(path)) fail(ErrorKind::kNotFound, path, ": listed in the index but missing");
  if (is_directory(path))
    dist::verify_distributed(path, options);
  else
    ckpt::verify(path, options);
  uint32_t crc = content_crc(env, path);
  if (crc != expected)
    fail(ErrorKind::kCorruption, path, ": content CRC ", hex32(crc), " differs from the index's ", hex32(expected),
         " (the checkpoint was replaced or rewritten)");
}

// --- Run -----------------------------------------------------------------------------------------

Run::Run(std::string dir, const ManagerOptions& options, EntryKind kind)
    : env_(options.env ? options.env : io::Env::Default()),
      dir_(std::move(dir)),
      opt_(options),
      kind_(kind),
      names_(options.name_template, kind == EntryKind::kFile ? ".pt" : "") {
  // A run may hold both kinds (one process and several ranks took turns): both are recognised.
  old_names_.emplace_back(options.name_template, kind == EntryKind::kFile ? "" : ".pt");
}

Run::~Run() = default;

void Run::warn(const std::string& message) const {
  if (opt_.warn)
    opt_.warn(message);
  else
    std::cerr << "ckpt: warning: " << message << "\n";
}

std::string Run::file_name(int64_t epoch, int64_t step, const std::map<std::string, double>& metrics) const {
  return names_.format(epoch, step, metrics);
}

bool Run::recognised(const std::string& file) const {
  if (names_.parse(file, nullptr, nullptr)) return true;
  for (const auto& t : old_names_)
    if (t.parse(file, nullptr, nullptr)) return true;
  return false;
}

bool Run::own_final_name(const std::string& file) const {
  return file == kIndexFile || file == kLatestFile || file == kBestFile || file == kBestModelFile || recognised(file);
}

bool Run::is_entry(const io::DirEntry& e) const {
  if (!recognised(e.name)) return false;
  if (e.is_file) return e.name.size() > 3 && e.name.compare(e.name.size() - 3, 3, ".pt") == 0;
  return env_->file_exists(path_of(e.name) + "/" + kDistMetadata);
}

bool Run::is_dir_record(const std::string& file) const {
  return is_directory(path_of(file));
}

LoadOptions Run::load_options(bool verify) const {
  LoadOptions lo;
  lo.verify_checksums = verify;
  lo.env = env_;
  lo.progress = opt_.progress;
  return lo;
}

// --- opening (steps 0-0d) --------------------------------------------------------------------------

void Run::open() {
  env_->create_dirs(dir_);
  try {
    lock_ = env_->lock_file(path_of(kLockFile), owner_text());
  } catch (const Error& e) {
    fail(e.kind(), "run directory '", dir_, "' is in use: ", e.what());
  }
  if (std::string caveat = lock_->caveat(); !caveat.empty()) warn(caveat);
  // 0a'. on object storage: the multipart uploads of saves that never completed
  if (size_t aborted = env_->abort_unfinished_writes(dir_))
    warn(str_cat(dir_, ": aborted ", aborted, " unfinished upload(s) of an interrupted save"));
  bool dirty = false;
  bool index_damaged = false;
  std::optional<Index> existing;
  try {
    existing = read_index(env_, dir_);
  } catch (const Error& e) {
    if (e.kind() != ErrorKind::kCorruption) throw;
    warn(str_cat(e.what(), "; rebuilding it from the checkpoints"));
    dirty = true;
    index_damaged = true;
  }
  if (existing) {
    index_ = std::move(*existing);
    if (!index_.name_template.empty() && index_.name_template != names_.text()) {
      try {
        old_names_.emplace_back(index_.name_template, ".pt");
        old_names_.emplace_back(index_.name_template, "");
      } catch (const Error&) {
      }
      dirty = true;
    }
  } else {
    index_.created_unix = now_unix();
    dirty = true;
  }
  index_.name_template = names_.text();

  std::vector<io::DirEntry> entries = env_->list_dir(dir_);
  // 0a. temp files of our own names, and temp directories of distributed saves
  for (const auto& e : entries) {
    std::string final_name = io::final_name_of_temp(e.name);
    if (e.is_file && !final_name.empty() && own_final_name(final_name))
      env_->remove_file(path_of(e.name));
    else if (!e.is_file && is_dist_temp_dir(e.name))
      remove_tree(env_, path_of(e.name));
  }
  // 0b. an interrupted retention pass
  for (const auto& victim : index_.pending_delete)
    if (!index_.find(victim) && recognised(victim)) remove_checkpoint(env_, path_of(victim));
  if (!index_.pending_delete.empty()) dirty = true;
  index_.pending_delete.clear();
  // 0c. orphans: durable checkpoints whose commit did not finish
  std::vector<CheckpointRecord> adopted;
  std::set<std::string> listed;
  for (const auto& r : index_.records) listed.insert(r.file);
  // On object storage an object that no index names is garbage, never a candidate: a complete
  // one is indistinguishable from a committed one only by the index (and s3rver even keeps a
  // killed PUT's cut-short body under its key). It is removed — unless the index itself is
  // damaged, when the checkpoints are all there is to rebuild it from.
  const bool drop_orphans = env_->publishes_in_place(dir_) && !index_damaged;
  for (const auto& e : entries) {
    if (listed.count(e.name) || !is_entry(e)) continue;
    if (drop_orphans) {
      warn(str_cat(path_of(e.name), ": not in the run index (a save interrupted before its commit); removed"));
      env_->remove_file(path_of(e.name));
      continue;
    }
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
    r.seq = index_.next_seq++;
    auto at = std::find_if(index_.records.begin(), index_.records.end(),
                           [&](const CheckpointRecord& x) { return x.step > r.step; });
    index_.records.insert(at, std::move(r));
    dirty = true;
  }
  if (index_.monitor != opt_.monitor || index_.mode != opt_.mode) dirty = true;
  index_.refresh(opt_.monitor, opt_.mode);
  // 0d. the best files
  exported_best_ = best_exported_marker();
  if (index_.best != exported_best_) {
    if (!index_.best.empty()) export_best(*index_.find(index_.best));
    index_.best_exported = exported_best_;
    dirty = true;
  }
  if (dirty) run::write_index(env_, dir_, index_, opt_.durable);
}

// The checkpoint best.pt and best_model.pt hold, as the index recorded it — "" when either
// file is gone.
std::string Run::best_exported_marker() const {
  if (index_.best_exported.empty()) return "";
  if (!is_dir_record(index_.best_exported) && !env_->file_exists(path_of(kBestFile))) return "";
  if (!opt_.model_key.empty() && !env_->file_exists(path_of(kBestModelFile))) return "";
  return index_.best_exported;
}

CheckpointRecord Run::adopt(const std::string& file) {
  const std::string path = path_of(file);
  CheckpointRecord r;
  r.file = file;
  r.path = path;
  names_.parse(file, &r.step, &r.epoch);
  for (const auto& t : old_names_) t.parse(file, &r.step, &r.epoch);
  Value ck;
  if (is_directory(path)) {
    dist::DistVerifyReport report = dist::verify_distributed(path, load_options(true));
    dist::ConsolidateOptions which;
    which.only = {opt_.step_key, opt_.epoch_key, opt_.metrics_key};
    ck = dist::consolidate(path, load_options(true), which);
    r.bytes = report.bytes + env_->file_size(path + "/" + kDistMetadata);
  } else {
    LoadOptions lo = load_options(true);
    ckpt::verify(path, lo);
    lo.mmap = true;
    lo.verify_checksums = false;  // just verified
    ck = ckpt::load(path, lo);
    r.bytes = env_->file_size(path);
  }
  if (ck.is_dict()) {
    if (const Value* s = ck.dict().find(opt_.step_key); s && s->is_int()) r.step = s->to_int();
    if (const Value* e = ck.dict().find(opt_.epoch_key); e && e->is_int()) r.epoch = e->to_int();
    if (const Value* m = ck.dict().find(opt_.metrics_key)) r.metrics = numeric_entries(*m);
  }
  r.content_crc = content_crc(env_, path);
  r.unix_time = now_unix();
  warn(str_cat(path, ": adopted into the run index (its commit was interrupted after the checkpoint was durable)"));
  return r;
}

// --- step 5: the best model, kept apart --------------------------------------------------------------

void Run::export_best(const CheckpointRecord& best) {
  SaveOptions so;
  so.durable = opt_.durable;
  so.env = env_;
  if (is_directory(best.path)) {
    if (!opt_.model_key.empty()) {
      dist::ConsolidateOptions which;
      which.only = {opt_.model_key};
      Value ck = dist::consolidate(best.path, load_options(true), which);
      const Value* model = ck.is_dict() ? ck.dict().find(opt_.model_key) : nullptr;
      if (model)
        ckpt::save(*model, path_of(kBestModelFile), so);
      else
        warn(str_cat(best.path, ": no '", opt_.model_key, "' entry, so no ", kBestModelFile, " was written"));
    }
    // A best.pt of an earlier single-process best would now name the wrong checkpoint.
    env_->remove_file(path_of(kBestFile));
    exported_best_ = best.file;
    return;
  }
  Value ck;
  bool loaded = false;
  auto load_best = [&] {
    if (loaded) return;
    LoadOptions lo = load_options(true);
    lo.mmap = true;
    ck = ckpt::load(best.path, lo);
    loaded = true;
  };
  if (!opt_.model_key.empty()) {
    load_best();
    const Value* model = ck.is_dict() ? ck.dict().find(opt_.model_key) : nullptr;
    if (model)
      ckpt::save(*model, path_of(kBestModelFile), so);
    else
      warn(str_cat(best.path, ": no '", opt_.model_key, "' entry, so no ", kBestModelFile, " was written"));
  }
  if (env_->publishes_in_place(dir_)) {
    // Object storage: no links and no rename, but every write publishes atomically in place.
    // best.pt is a server-side copy (its bytes never leave the server), or an upload.
    try {
      env_->copy_file(best.path, path_of(kBestFile));
    } catch (const Error& e) {
      if (e.kind() != ErrorKind::kUnsupported) throw;
      load_best();
      ckpt::save(ck, path_of(kBestFile), so);
    }
    exported_best_ = best.file;
    return;
  }
  // best.pt: a second name for the file (no copy), replaced atomically.
  const std::string tmp = str_cat(dir_, "/.", kBestFile, ".tmp-", ::getpid(), "-0");
  env_->remove_file(tmp);
  try {
    env_->link_file(best.path, tmp);
    env_->rename_file(tmp, path_of(kBestFile));
    // When best.pt already is a link to this file, POSIX rename() does nothing and the temp
    // name stays: remove it (a no-op otherwise).
    env_->remove_file(tmp);
    if (opt_.durable) env_->sync_dir(dir_);
  } catch (const Error& e) {
    env_->remove_file(tmp);
    if (e.kind() != ErrorKind::kUnsupported) throw;
    load_best();
    ckpt::save(ck, path_of(kBestFile), so);
  }
  exported_best_ = best.file;
}

// --- steps 5-9 -----------------------------------------------------------------------------------------

void Run::commit(CheckpointRecord rec) {
  std::lock_guard<std::mutex> guard(mu_);
  rec.unix_time = now_unix();
  Index next = index_;
  next.pending_delete.clear();  // the previous commit's victims went in its step 9
  rec.seq = next.next_seq++;
  // A checkpoint under the same name (a step saved again after resuming from an older one)
  // was replaced by the writer's publication.
  next.records.erase(std::remove_if(next.records.begin(), next.records.end(),
                                    [&](const CheckpointRecord& r) { return r.file == rec.file; }),
                     next.records.end());
  next.records.push_back(rec);
  next.refresh(opt_.monitor, opt_.mode);
  if (!next.best.empty() && next.best != exported_best_) export_best(*next.find(next.best));  // 5
  next.best_exported = exported_best_;
  // 6. retention
  std::vector<bool> keep =
      retained(next.records, opt_.retention(), next.created_unix, {next.latest, next.best, rec.file});
  std::vector<CheckpointRecord> kept, victims;
  for (size_t i = 0; i < next.records.size(); ++i) (keep[i] ? kept : victims).push_back(next.records[i]);
  next.records = std::move(kept);
  for (const auto& v : victims) next.pending_delete.push_back(v.file);
  next.refresh(opt_.monitor, opt_.mode);
  // 7-8. the commit point, then the pointer
  publish(std::move(next));
  // 9. the victims
  for (const auto& v : victims) remove_checkpoint(env_, v.path);
}

void Run::publish(Index next) {
  // A writer that lost its lease on object storage (paused past its expiry, another writer took
  // the run) stops before the commit point.
  if (lock_) lock_->check();
  write_index_file(env_, dir_, next, opt_.durable);  // the commit point
  index_ = std::move(next);
  write_latest_file(env_, dir_, index_, opt_.durable);
}

void Run::free_name(const std::string& file) {
  if (!env_->publishes_in_place(dir_)) return;  // a file's rename replaces it atomically
  std::lock_guard<std::mutex> guard(mu_);
  // A writer that was paused past its lease's expiry stops before it writes anything.
  if (lock_) lock_->check();
  if (!index_.find(file)) {
    // Under our lease an object of this name that no index lists is garbage (written by a
    // writer that lost the run): clear it for the create-only write.
    env_->remove_file(path_of(file));
    return;
  }
  Index next = index_;
  next.records.erase(std::remove_if(next.records.begin(), next.records.end(),
                                    [&](const CheckpointRecord& r) { return r.file == file; }),
                     next.records.end());
  next.pending_delete = {file};
  next.refresh(opt_.monitor, opt_.mode);
  publish(std::move(next));
  env_->remove_file(path_of(file));
}

// --- restore -------------------------------------------------------------------------------------------

std::optional<CheckpointRecord> Run::pick(const ResumeFrom& from) const {
  std::lock_guard<std::mutex> guard(mu_);
  const CheckpointRecord* r = nullptr;
  if (from.kind == ResumeFrom::Kind::kLatest) {
    r = index_.find(index_.latest);
  } else if (from.kind == ResumeFrom::Kind::kBest) {
    if (opt_.monitor.empty())
      fail(ErrorKind::kInvalidArgument, "resume from 'best': no metric is monitored (set ManagerOptions::monitor)");
    r = index_.find(index_.best);
  } else if (from.kind == ResumeFrom::Kind::kStep) {
    for (const auto& x : index_.records)
      if (x.step == from.step) r = &x;
    if (!r) fail(ErrorKind::kNotFound, dir_, ": no checkpoint at step ", from.step);
  }
  if (!r || !r->damaged.empty()) return std::nullopt;
  return *r;
}

void Run::mark_damaged(const std::string& file, const std::string& problem) {
  std::lock_guard<std::mutex> guard(mu_);
  for (auto& r : index_.records)
    if (r.file == file) r.damaged = problem;
  index_.refresh(opt_.monitor, opt_.mode);
}

void Run::write_index() {
  std::lock_guard<std::mutex> guard(mu_);
  run::write_index(env_, dir_, index_, opt_.durable);
}

std::vector<CheckpointRecord> Run::records() const {
  std::lock_guard<std::mutex> guard(mu_);
  return index_.records;
}

std::optional<CheckpointRecord> Run::latest() const {
  std::lock_guard<std::mutex> guard(mu_);
  if (const auto* r = index_.find(index_.latest)) return *r;
  return std::nullopt;
}

std::optional<CheckpointRecord> Run::best() const {
  std::lock_guard<std::mutex> guard(mu_);
  if (const auto* r = index_.find(index_.best)) return *r;
  return std::nullopt;
}

}  // namespace ckpt::run
