// The file layer. Every OS effect ckpt has — files, directories, links, locks, free space, the
// anonymous memory it reads into — goes through an Env, so tests can swap in one that fails any
// call at a chosen point (tests/fault_env.h) or simulates a crash (tests/crash_env.h).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace ckpt::io {

// A file opened for writing. Positional and appending writes; errors throw ckpt::Error(kIO)
// naming the file. The destructor closes without syncing and never throws.
class WritableFile {
 public:
  virtual ~WritableFile() = default;
  virtual void append(const void* data, size_t n) = 0;
  virtual void write_at(uint64_t offset, const void* data, size_t n) = 0;
  virtual void sync() = 0;
  virtual void close() = 0;
  virtual uint64_t size() const = 0;  // bytes appended so far
  virtual const std::string& path() const = 0;
  virtual void truncate(uint64_t size) = 0;
  // Non-zero when the file was opened with O_DIRECT: every write's buffer address, offset and
  // length must then be multiples of this.
  virtual size_t direct_alignment() const { return 0; }
  // Bytes the storage has taken: for an object being uploaded, the parts whose upload the server
  // answered; for a file, whatever was written (no separate count: the maximum). Progress
  // reports never run ahead of it. Safe to call while other threads write.
  virtual uint64_t acknowledged() const { return UINT64_MAX; }
  // The file will be exactly `n` bytes: an object upload may then go as one streamed PUT
  // (Content-Length known up front) instead of parts. Writing another size then fails at close.
  virtual void expect_size(uint64_t n) {}
};

// Forwards every call to another WritableFile: the files of test Envs derive from it and
// override only what they hook (as EnvWrapper does for the Env).
class WritableFileWrapper : public WritableFile {
 public:
  explicit WritableFileWrapper(std::unique_ptr<WritableFile> target) : target_(std::move(target)) {}
  void append(const void* data, size_t n) override { target_->append(data, n); }
  void write_at(uint64_t offset, const void* data, size_t n) override { target_->write_at(offset, data, n); }
  void sync() override { target_->sync(); }
  void close() override { target_->close(); }
  uint64_t size() const override { return target_->size(); }
  const std::string& path() const override { return target_->path(); }
  void truncate(uint64_t size) override { target_->truncate(size); }
  size_t direct_alignment() const override { return target_->direct_alignment(); }
  uint64_t acknowledged() const override { return target_->acknowledged(); }
  void expect_size(uint64_t n) override { target_->expect_size(n); }

 private:
  std::unique_ptr<WritableFile> target_;
};

// A read-only view of a whole file, memory-mapped copy-on-write: the caller may write to the
// pages (its changes stay private to the process); the file itself is never modified.
class MappedFile {
 public:
  virtual ~MappedFile() = default;
  virtual const std::byte* data() const = 0;
  virtual std::byte* mutable_data() const = 0;
  virtual uint64_t size() const = 0;
  virtual const std::string& path() const = 0;
  // Positional read into `dst` (thread-safe); throws on a short read.
  virtual void read_at(uint64_t offset, void* dst, size_t n) const = 0;
  // Starts reading these ranges into the page cache, all at once, without waiting. A file whose
  // data() holds only what was fetched (an s3:// object, src/io/s3/object_env.h) fills these
  // ranges before returning: code that reads through data() prefetches the ranges it reads.
  virtual void prefetch(const std::vector<std::pair<uint64_t, uint64_t>>& ranges) const {}
  // data() + offset, with [offset, offset + n) filled first where data() is fetched on demand.
  virtual std::byte* mutable_range(uint64_t offset, uint64_t n) const { return mutable_data() + offset; }
  // Whether a reader that needs every record should fetch the whole file first, in a few large
  // requests (an s3:// object: each request costs a round trip, some servers copy the object per
  // request), and view those bytes rather than copy them again.
  virtual bool prefers_whole_reads() const { return false; }
  // The fraction of [offset, offset+n) in the page cache (1 when unknown).
  virtual double resident_fraction(uint64_t offset, uint64_t n) const { return 1.0; }
  // Reads around the page cache (O_DIRECT) when possible, else like read_at. `offset`, `n` and
  // `dst` must be multiples of direct_read_alignment().
  virtual void read_direct_at(uint64_t offset, void* dst, size_t n) const { read_at(offset, dst, n); }
  static constexpr size_t direct_read_alignment() { return 4096; }
};

// An exclusive, advisory lock on a file (flock). Released by the destructor, and by the kernel
// when the process dies, so a lock left by a dead process never blocks the next one.
// On object storage the lock is a lease (src/io/s3/lease.h) that a crashed holder cannot drop:
// it expires unless renewed, and can be lost to another writer while held.
class FileLock {
 public:
  virtual ~FileLock() = default;
  // Throws kIO naming the new holder when the lock is no longer ours (a lease that expired or
  // was taken over). A writer calls it just before its commit point. A flock is never lost.
  virtual void check() const {}
  // What this lock cannot guarantee on its storage, as one line for a warning; empty when it
  // holds fully (a lease on a server that ignores conditional writes says so here).
  virtual std::string caveat() const { return {}; }
};

// Anonymous memory ckpt fills itself: the arenas eager loads read records into, the snapshot
// buffers of async saves. Zero-filled, page-aligned, reserved lazily; released by the destructor.
class MemoryRegion {
 public:
  virtual ~MemoryRegion() = default;
  virtual std::byte* data() const = 0;
  virtual size_t size() const = 0;
};

struct DirEntry {
  std::string name;
  bool is_file = false;  // a regular file (not a directory, link or device)
};

class Env {
 public:
  virtual ~Env() = default;
  static Env* Default();

  // Creates `path`, which must not exist (O_EXCL). `direct` asks for O_DIRECT (bypassing the
  // page cache), granted where the filesystem supports it: check direct_alignment().
  virtual std::unique_ptr<WritableFile> new_writable_file(const std::string& path, bool direct = false) = 0;
  virtual std::shared_ptr<MappedFile> map_file(const std::string& path) = 0;
  virtual void rename_file(const std::string& from, const std::string& to) = 0;
  virtual void remove_file(const std::string& path) noexcept = 0;
  virtual void sync_dir(const std::string& dir) = 0;
  virtual bool file_exists(const std::string& path) = 0;

  // --- what the run manager needs. Defaults are the POSIX calls, so a test Env that wraps
  // another only overrides what it injects faults into.
  // The names in `dir` (without "." and ".."), in no particular order.
  virtual std::vector<DirEntry> list_dir(const std::string& dir);
  // Creates `dir` and its missing parents; an existing directory is fine.
  virtual void create_dirs(const std::string& dir);
  // Takes an exclusive lock on `path` (created if missing) without waiting, and writes `owner`
  // into it. Held by another process: throws kIO whose message includes what that process
  // wrote ("pid 1234 on host").
  virtual std::unique_ptr<FileLock> lock_file(const std::string& path, const std::string& owner);
  // Bytes an unprivileged writer may still use on the filesystem holding `path`.
  virtual uint64_t free_space(const std::string& path);
  virtual uint64_t file_size(const std::string& path);
  // A whole small file (index, pointer). Throws kNotFound when it does not exist.
  virtual std::string read_file(const std::string& path);
  // A second name for an existing file (hard link); `to` must not exist. Throws kUnsupported
  // when the filesystem has no hard links.
  virtual void link_file(const std::string& from, const std::string& to);
  // `bytes` (at least 1) of anonymous memory (mmap). Throws kIO "out of memory ... for `what`"
  // when the system refuses.
  virtual std::unique_ptr<MemoryRegion> allocate(size_t bytes, const std::string& what);
  // True where a file written through new_writable_file(path) stays invisible until close()
  // succeeds and then appears whole (an object store's PUT or CompleteMultipartUpload): there
  // AtomicFile writes the final name directly, with no temp name, rename or directory sync.
  virtual bool publishes_in_place(const std::string& path) { return false; }
  // Where publishes_in_place: the writer of the final name itself, which replaces an existing
  // file on close() or, with `replace` = false, fails there if the name exists (atomically).
  virtual std::unique_ptr<WritableFile> new_published_file(const std::string& path, bool replace, bool direct) {
    return new_writable_file(path, direct);
  }
  // A copy of the file `from` under the new name `to`, published atomically (a server-side copy
  // on object storage). Throws kUnsupported where the Env cannot copy without the caller's help.
  virtual void copy_file(const std::string& from, const std::string& to);
  // Cancels writes into `dir` that never finished and are not visible as files (an object
  // store's multipart uploads left by a dead writer); returns how many. A no-op for files, whose
  // temp names a run finds by listing.
  virtual size_t abort_unfinished_writes(const std::string& dir) { return 0; }
};

// Wraps another Env and forwards every call: fault-injecting test Envs derive from it and
// override only what they change (leveldb's EnvWrapper).
class EnvWrapper : public Env {
 public:
  explicit EnvWrapper(Env* target) : target_(target) {}
  Env* target() const { return target_; }
  std::unique_ptr<WritableFile> new_writable_file(const std::string& path, bool direct = false) override {
    return target_->new_writable_file(path, direct);
  }
  std::shared_ptr<MappedFile> map_file(const std::string& path) override { return target_->map_file(path); }
  void rename_file(const std::string& from, const std::string& to) override { target_->rename_file(from, to); }
  void remove_file(const std::string& path) noexcept override { target_->remove_file(path); }
  void sync_dir(const std::string& dir) override { target_->sync_dir(dir); }
  bool file_exists(const std::string& path) override { return target_->file_exists(path); }
  std::vector<DirEntry> list_dir(const std::string& dir) override { return target_->list_dir(dir); }
  void create_dirs(const std::string& dir) override { target_->create_dirs(dir); }
  std::unique_ptr<FileLock> lock_file(const std::string& path, const std::string& owner) override {
    return target_->lock_file(path, owner);
  }
  uint64_t free_space(const std::string& path) override { return target_->free_space(path); }
  uint64_t file_size(const std::string& path) override { return target_->file_size(path); }
  std::string read_file(const std::string& path) override { return target_->read_file(path); }
  void link_file(const std::string& from, const std::string& to) override { target_->link_file(from, to); }
  std::unique_ptr<MemoryRegion> allocate(size_t bytes, const std::string& what) override {
    return target_->allocate(bytes, what);
  }
  bool publishes_in_place(const std::string& path) override { return target_->publishes_in_place(path); }
  std::unique_ptr<WritableFile> new_published_file(const std::string& path, bool replace, bool direct) override {
    return target_->new_published_file(path, replace, direct);
  }
  void copy_file(const std::string& from, const std::string& to) override { target_->copy_file(from, to); }
  size_t abort_unfinished_writes(const std::string& dir) override { return target_->abort_unfinished_writes(dir); }

 private:
  Env* target_;
};

// A MappedFile over bytes in memory (tests, fuzzers, in-memory checkpoints).
std::shared_ptr<MappedFile> memory_file(std::string bytes, std::string name);

// The directory part of `path` ("." when it has none).
std::string dirname_of(const std::string& path);
std::string basename_of(const std::string& path);

// True when `name` is a temp file AtomicFile made for the final name `final_name`
// (".FINAL.tmp-PID-N"): the one parser that cleanup of leftovers trusts.
bool is_temp_name_for(const std::string& name, const std::string& final_name);
// The final name a temp file of AtomicFile stands for ("" when `name` is none of ours).
std::string final_name_of_temp(const std::string& name);

// Crash-safe publication of one file. The protocol, step by step:
//   1. create a temp file `.NAME.tmp-PID-N` in the destination's directory (same filesystem,
//      so step 4 is atomic), with O_EXCL;
//   2. the caller writes the contents through file();
//   3. commit(): fsync the temp file, then close it;
//   4. rename the temp file over the final name — readers see the old file or the new one,
//      never a mix;
//   5. fsync the directory, so the rename itself survives a crash.
// If commit() is not reached (an error, an exception, the process dies), the final name is
// untouched; the destructor removes the temp file. The destructor never throws.
// Where the Env publishes in place (Env::publishes_in_place: object storage), step 1 opens the
// final name itself, step 3's close() is the atomic publication, and steps 4-5 do not apply.
class AtomicFile {
 public:
  // `create_only`: fail (kIO) when the final name exists — atomically where the Env publishes in
  // place (a conditional write), by a check before writing otherwise.
  AtomicFile(Env* env, std::string final_path, bool direct = false, bool create_only = false);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  WritableFile& file() { return *file_; }
  const std::string& temp_path() const { return temp_path_; }
  // Steps 3-5. `durable` = false skips the two fsyncs (for tests and scratch files).
  void commit(bool durable = true);
  // Steps 3-4 only: the file is complete and renamed, and the caller syncs the directory (one
  // directory sync can then cover several files).
  void commit_without_dir_sync(bool durable = true);

 private:
  Env* env_;
  std::string final_path_;
  std::string temp_path_;
  std::unique_ptr<WritableFile> file_;
  bool committed_ = false;
  bool in_place_ = false;
};

}  // namespace ckpt::io
