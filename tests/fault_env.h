// Wraps any Env and injects failures: a write that runs out of space after N bytes, a failing
// fsync or rename, or a pause mid-write (so another process can kill the writer there).
#pragma once

#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <functional>
#include <mutex>

#include "io/env.h"
#include "util/errors.h"

namespace ckpt::test {

class FaultEnv : public io::EnvWrapper {
 public:
  explicit FaultEnv(io::Env* target = io::Env::Default()) : EnvWrapper(target) {}
  int64_t fail_write_after = -1;  // bytes; -1 = never
  bool fail_sync = false;
  bool fail_rename = false;
  bool fail_sync_dir = false;
  int64_t pause_after = -1;  // call on_pause once after this many bytes
  std::function<void()> on_pause;
  int renames = 0;
  std::mutex mu_;

  std::unique_ptr<io::WritableFile> new_writable_file(const std::string& path, bool direct) override {
    return std::make_unique<File>(this, target()->new_writable_file(path, direct));
  }
  void rename_file(const std::string& from, const std::string& to) override {
    if (fail_rename) fail(ErrorKind::kIO, from, ": rename failed: ", std::strerror(EXDEV));
    ++renames;
    target()->rename_file(from, to);
  }
  void sync_dir(const std::string& dir) override {
    if (fail_sync_dir) fail(ErrorKind::kIO, dir, ": fsync of directory failed: ", std::strerror(EIO));
    target()->sync_dir(dir);
  }

 private:
  class File : public io::WritableFileWrapper {
   public:
    File(FaultEnv* env, std::unique_ptr<io::WritableFile> f) : WritableFileWrapper(std::move(f)), env_(env) {}
    void append(const void* data, size_t n) override {
      check(n);
      WritableFileWrapper::append(data, n);
      written_ += n;
    }
    void write_at(uint64_t offset, const void* data, size_t n) override {
      check(n);
      WritableFileWrapper::write_at(offset, data, n);
      written_ += n;
    }
    void sync() override {
      if (env_->fail_sync) fail(ErrorKind::kIO, path(), ": fsync failed: ", std::strerror(EIO));
      WritableFileWrapper::sync();
    }

   private:
    void check(size_t n) {
      std::lock_guard<std::mutex> lock(env_->mu_);
      if (env_->pause_after >= 0 && written_ + n > uint64_t(env_->pause_after) && env_->on_pause) {
        auto f = std::move(env_->on_pause);
        env_->on_pause = nullptr;
        f();
      }
      if (env_->fail_write_after >= 0 && written_ + n > uint64_t(env_->fail_write_after))
        fail(ErrorKind::kIO, path(), ": write failed: ", std::strerror(ENOSPC));
    }
    FaultEnv* env_;
    std::atomic<uint64_t> written_{0};
  };
};

}  // namespace ckpt::test

namespace ckpt::test {

// Wraps any Env, numbers every OS effect in order, and fails the Nth one (or the Nth of one
// kind) with a chosen errno — as leveldb's fault-injection Env does. With `trace`, records
// "kind path" for each call so a test can say which step failed.
class OpFaultEnv : public io::EnvWrapper {
 public:
  enum Op {
    kCreate,
    kWrite,
    kSync,
    kClose,
    kRename,
    kSyncDir,
    kRemove,
    kLink,
    kMap,
    kLock,
    kFreeSpace,
    kList,
    kRead,
    kAlloc,
    kOps
  };
  static const char* op_name(Op op) {
    static const char* names[] = {"create", "write", "fsync", "close",      "rename", "sync-dir", "remove",
                                  "link",   "map",   "lock",  "free-space", "list",   "read",     "allocate"};
    return names[op];
  }

  explicit OpFaultEnv(io::Env* target = io::Env::Default()) : EnvWrapper(target) {}

  int64_t fail_at = -1;     // the call number (0-based, over all kinds) that fails; -1: none
  int fail_kind = -1;       // when >= 0, fail_at counts calls of this kind only
  int error = EIO;          // errno of the failure
  uint64_t free_bytes = 0;  // when non-zero, what free_space() reports
  std::vector<std::string> trace;
  std::atomic<int64_t> calls{0};
  int64_t kind_calls[kOps] = {};

  std::unique_ptr<io::WritableFile> new_writable_file(const std::string& path, bool direct) override {
    hit(kCreate, path);
    return std::make_unique<File>(this, target()->new_writable_file(path, direct));
  }
  std::shared_ptr<io::MappedFile> map_file(const std::string& path) override {
    hit(kMap, path);
    return target()->map_file(path);
  }
  void rename_file(const std::string& from, const std::string& to) override {
    hit(kRename, to);
    target()->rename_file(from, to);
  }
  void remove_file(const std::string& path) noexcept override {
    try {
      hit(kRemove, path);
    } catch (const Error&) {
      return;  // remove never reports; a failed one leaves the file
    }
    target()->remove_file(path);
  }
  void sync_dir(const std::string& dir) override {
    hit(kSyncDir, dir);
    target()->sync_dir(dir);
  }
  std::vector<io::DirEntry> list_dir(const std::string& dir) override {
    hit(kList, dir);
    return target()->list_dir(dir);
  }
  std::unique_ptr<io::FileLock> lock_file(const std::string& path, const std::string& owner) override {
    hit(kLock, path);
    return target()->lock_file(path, owner);
  }
  uint64_t free_space(const std::string& path) override {
    hit(kFreeSpace, path);
    return free_bytes ? free_bytes : target()->free_space(path);
  }
  std::string read_file(const std::string& path) override {
    hit(kRead, path);
    return target()->read_file(path);
  }
  void link_file(const std::string& from, const std::string& to) override {
    hit(kLink, to);
    target()->link_file(from, to);
  }
  std::unique_ptr<io::MemoryRegion> allocate(size_t bytes, const std::string& what) override {
    hit(kAlloc, what);
    return target()->allocate(bytes, what);
  }

  void hit(Op op, const std::string& path) {
    std::lock_guard<std::mutex> lock(mu_);
    int64_t n = fail_kind >= 0 ? kind_calls[op] : calls.load();
    ++calls;
    ++kind_calls[op];
    trace.push_back(std::string(op_name(op)) + " " + path);
    if (fail_at >= 0 && n == fail_at && (fail_kind < 0 || fail_kind == op)) {
      fail_at = -1;  // once
      failed_step = trace.back();
      fail(ErrorKind::kIO, path, ": ", op_name(op), " failed: ", std::strerror(error));
    }
  }
  std::string failed_step;

 private:
  std::mutex mu_;

  class File : public io::WritableFileWrapper {
   public:
    File(OpFaultEnv* env, std::unique_ptr<io::WritableFile> f) : WritableFileWrapper(std::move(f)), env_(env) {}
    void append(const void* data, size_t n) override {
      env_->hit(kWrite, path());
      WritableFileWrapper::append(data, n);
    }
    void write_at(uint64_t offset, const void* data, size_t n) override {
      env_->hit(kWrite, path());
      WritableFileWrapper::write_at(offset, data, n);
    }
    void sync() override {
      env_->hit(kSync, path());
      WritableFileWrapper::sync();
    }
    void close() override {
      env_->hit(kClose, path());
      WritableFileWrapper::close();
    }

   private:
    OpFaultEnv* env_;
  };
};

}  // namespace ckpt::test
