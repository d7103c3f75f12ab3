// An Env that injects failures: a write that runs out of space after N bytes, a failing
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

class FaultEnv : public io::Env {
 public:
  int64_t fail_write_after = -1;  // bytes; -1 = never
  bool fail_sync = false;
  bool fail_rename = false;
  bool fail_sync_dir = false;
  int64_t pause_after = -1;  // call on_pause once after this many bytes
  std::function<void()> on_pause;
  int renames = 0;
  std::mutex mu_;

  std::unique_ptr<io::WritableFile> new_writable_file(const std::string& path, bool direct) override {
    return std::make_unique<File>(this, base()->new_writable_file(path, direct));
  }
  std::shared_ptr<io::MappedFile> map_file(const std::string& path) override { return base()->map_file(path); }
  void rename_file(const std::string& from, const std::string& to) override {
    if (fail_rename) fail(ErrorKind::kIO, from, ": rename failed: ", std::strerror(EXDEV));
    ++renames;
    base()->rename_file(from, to);
  }
  void remove_file(const std::string& path) noexcept override { base()->remove_file(path); }
  void sync_dir(const std::string& dir) override {
    if (fail_sync_dir) fail(ErrorKind::kIO, dir, ": fsync of directory failed: ", std::strerror(EIO));
    base()->sync_dir(dir);
  }
  bool file_exists(const std::string& path) override { return base()->file_exists(path); }

 private:
  static io::Env* base() { return io::Env::Default(); }

  class File : public io::WritableFile {
   public:
    File(FaultEnv* env, std::unique_ptr<io::WritableFile> f) : env_(env), f_(std::move(f)) {}
    void append(const void* data, size_t n) override {
      check(n);
      f_->append(data, n);
      written_ += n;
    }
    void write_at(uint64_t offset, const void* data, size_t n) override {
      check(n);
      f_->write_at(offset, data, n);
      written_ += n;
    }
    void sync() override {
      if (env_->fail_sync) fail(ErrorKind::kIO, path(), ": fsync failed: ", std::strerror(EIO));
      f_->sync();
    }
    void close() override { f_->close(); }
    uint64_t size() const override { return f_->size(); }
    const std::string& path() const override { return f_->path(); }
    void truncate(uint64_t size) override { f_->truncate(size); }
    size_t direct_alignment() const override { return f_->direct_alignment(); }

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
    std::unique_ptr<io::WritableFile> f_;
    std::atomic<uint64_t> written_{0};
  };
};

}  // namespace ckpt::test
