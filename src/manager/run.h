// run::Run — the commit protocol of a run directory (written out step by step at the top of
// run.cc), shared by the two writers of run directories:
//   - CheckpointManager: one file per checkpoint (NAME.pt), written by this process;
//   - dist::CheckpointManager: one directory per checkpoint (NAME/, a distributed checkpoint of
//     rank files and metadata.json), written by every rank and committed by rank 0, which
//     alone holds a Run.
// The writer makes a checkpoint durable under its final name (steps 2-4); Run does the rest:
// the best files, retention, the index flip (the commit point), the victims. Opening a run
// takes the lock and repairs what a crash left (steps 0-0d); restoring picks the checkpoint and
// records the damaged ones the writer could not load.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "ckpt/manager.h"
#include "io/env.h"
#include "manager/run_dir.h"

namespace ckpt::run {

// What one checkpoint of a run is on disk.
enum class EntryKind {
  kFile,         // NAME.pt, a torch.save file
  kDistributed,  // NAME/, a distributed checkpoint directory (ckpt/distributed_files.h)
};

// --- one checkpoint, whatever it is (decided by what is on disk at `path`)

// The CRC the index records for a checkpoint: a file's content CRC (its records' CRC-32s
// combined), or a distributed checkpoint's metadata.json CRC-32 (which lists every piece's).
uint32_t content_crc(io::Env* env, const std::string& path);
// Every record's CRC-32 (ckpt::verify, or dist::verify_distributed), then the content CRC
// against `expected`. Throws the first problem, naming the path.
void verify_checkpoint(const std::string& path, uint32_t expected, const LoadOptions& options);
// Removes a checkpoint file, or a checkpoint directory with everything in it. Never throws.
void remove_checkpoint(io::Env* env, const std::string& path) noexcept;
bool is_directory(const std::string& path);
// Removes a directory tree (the Env lists and removes files; directories are POSIX rmdir).
void remove_tree(io::Env* env, const std::string& path) noexcept;

class Run {
 public:
  Run(std::string dir, const ManagerOptions& options, EntryKind kind);
  ~Run();

  // Steps 0-0d: creates and locks the directory, removes the leftovers of unfinished saves,
  // finishes an interrupted retention pass, adopts durable checkpoints whose commit did not
  // finish, regenerates the best files. Throws naming the lock's holder when in use.
  void open();

  // The name of the checkpoint for these values, and its path.
  std::string file_name(int64_t epoch, int64_t step, const std::map<std::string, double>& metrics) const;
  std::string path_of(const std::string& file) const { return dir_ + "/" + file; }
  const std::string& dir() const { return dir_; }
  io::Env* env() const { return env_; }

  // Steps 5-9 for `rec`, durable at rec.path; rec.bytes and rec.content_crc are filled in.
  // Thread-safe against the readers below (async commits run on a writer thread).
  void commit(CheckpointRecord rec);
  // Before a writer publishes `file` where the index already names it (a step saved again after
  // resuming from an older checkpoint): on object storage, where publication overwrites in place,
  // the old record leaves the index (a commit of its own) and its object is deleted, so no index
  // ever names bytes it did not record. A no-op on files, whose rename replaces atomically.
  // Also fails first (kIO) when the writer's lease was lost. The writer then publishes with
  // SaveOptions::create_only.
  void free_name(const std::string& file);

  // The checkpoint `from` names (latest, best, step=N; not a path): nullopt when there is none
  // (a fresh start) or it is marked damaged. Throws for step=N that does not exist and for
  // "best" without a monitored metric.
  std::optional<CheckpointRecord> pick(const ResumeFrom& from) const;
  // Records that `file` failed to load (and why), so that pick() falls back past it; persist
  // with write_index().
  void mark_damaged(const std::string& file, const std::string& problem);
  void write_index();

  std::vector<CheckpointRecord> records() const;
  std::optional<CheckpointRecord> latest() const;
  std::optional<CheckpointRecord> best() const;

  void warn(const std::string& message) const;

 private:
  bool recognised(const std::string& file) const;
  bool own_final_name(const std::string& file) const;
  bool is_entry(const io::DirEntry& e) const;
  CheckpointRecord adopt(const std::string& file);
  std::string best_exported_marker() const;
  bool is_dir_record(const std::string& file) const;
  void export_best(const CheckpointRecord& best);
  LoadOptions load_options(bool verify) const;
  // Steps 7-8 for `next` (mu_ held): the lease checked, the index replaced, then `latest`.
  void publish(Index next);

  io::Env* env_;
  std::string dir_;
  ManagerOptions opt_;
  EntryKind kind_;
  NameTemplate names_;                   // the names of this writer's checkpoints
  std::vector<NameTemplate> old_names_;  // the other kind's names, and templates of earlier runs
  std::unique_ptr<io::FileLock> lock_;
  mutable std::mutex mu_;  // guards index_
  Index index_;
  std::string exported_best_;  // the checkpoint best.pt / best_model.pt hold ("" when either is gone)
};

// Whether a restore moves on to the next older checkpoint after an error of this kind: a
// checkpoint that cannot be read is damaged; one that reads but does not fit the caller's state
// (kMismatch, kInvalidArgument) is the caller's problem, and falling back would hide it.
inline bool falls_back_on(ErrorKind kind) {
  return kind != ErrorKind::kMismatch && kind != ErrorKind::kInvalidArgument;
}

// A checkpoint dict's numeric entries (its metrics), bools as 0/1.
std::map<std::string, double> numeric_entries(const Value& v);
// "pid 1234 on host": who holds a run directory's lock.
std::string owner_text();

}  // namespace ckpt::run
