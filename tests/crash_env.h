// An Env that simulates a power cut, as leveldb's fault_injection_test does: it wraps any Env,
// numbers every OS effect, and at a chosen call the "machine stops" — that call and every later
// one throw CrashEnv::Crash (removes, which never report, do nothing), so no destructor can tidy
// up either. simulate_crash() then undoes everything a real crash may lose:
//   - file data written after the file's last fsync (the file is cut back to its synced size;
//     a file never synced is cut to nothing);
//   - directory entries created, renamed, linked or removed after the directory's last fsync,
//     undone newest first (a rename over an existing file brings the old file back).
// What it keeps is the pessimistic reading of POSIX: only what was synced survives.
#pragma once

#include <unistd.h>

#include <filesystem>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "io/env.h"

namespace ckpt::test {

class CrashEnv : public io::EnvWrapper {
 public:
  struct Crash {};  // thrown by every call from the crash on: the process is gone

  explicit CrashEnv(std::string stash_dir, io::Env* target = io::Env::Default())
      : EnvWrapper(target), stash_(std::move(stash_dir)) {
    std::filesystem::create_directories(stash_);
  }

  int64_t crash_at = -1;  // the call number (0-based) at which the machine stops; -1: never
  int64_t calls = 0;
  std::vector<std::string> trace;  // "kind path" of every call before the crash
  bool crashed() const { return crashed_; }

  std::unique_ptr<io::WritableFile> new_writable_file(const std::string& path, bool direct) override {
    hit("create", path);
    auto f = target()->new_writable_file(path, direct);
    std::lock_guard<std::mutex> lock(mu_);
    files_[path] = 0;  // nothing synced yet
    ops_.push_back({Op::kCreate, path, "", ""});
    return std::make_unique<File>(this, std::move(f));
  }
  std::shared_ptr<io::MappedFile> map_file(const std::string& path) override {
    hit("map", path);
    return target()->map_file(path);
  }
  void rename_file(const std::string& from, const std::string& to) override {
    hit("rename", to);
    std::string stash = stash_if_exists(to);
    target()->rename_file(from, to);
    std::lock_guard<std::mutex> lock(mu_);
    if (auto it = files_.find(from); it != files_.end()) {
      files_[to] = it->second;
      files_.erase(it);
    } else {
      files_.erase(to);
    }
    ops_.push_back({Op::kRename, from, to, stash});
  }
  void remove_file(const std::string& path) noexcept override {
    try {
      hit("remove", path);
    } catch (const Crash&) {
      return;
    }
    std::string stash = stash_if_exists(path);
    target()->remove_file(path);
    std::lock_guard<std::mutex> lock(mu_);
    files_.erase(path);
    ops_.push_back({Op::kRemove, path, "", stash});
  }
  void link_file(const std::string& from, const std::string& to) override {
    hit("link", to);
    target()->link_file(from, to);
    std::lock_guard<std::mutex> lock(mu_);
    ops_.push_back({Op::kLink, to, "", ""});
  }
  void sync_dir(const std::string& dir) override {
    hit("sync-dir", dir);
    target()->sync_dir(dir);
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<DirOp> kept;
    for (auto& op : ops_)
      if (!op.in(dir)) kept.push_back(op);
    ops_ = std::move(kept);
  }
  std::vector<io::DirEntry> list_dir(const std::string& dir) override {
    hit("list", dir);
    return target()->list_dir(dir);
  }
  std::unique_ptr<io::FileLock> lock_file(const std::string& path, const std::string& owner) override {
    hit("lock", path);
    return target()->lock_file(path, owner);
  }
  uint64_t free_space(const std::string& path) override {
    hit("free-space", path);
    return target()->free_space(path);
  }
  std::string read_file(const std::string& path) override {
    hit("read", path);
    return target()->read_file(path);
  }

  // The power cut: undoes, on the real filesystem, whatever was not made durable.
  void simulate_crash() {
    std::lock_guard<std::mutex> lock(mu_);
    crashed_ = true;
    namespace fs = std::filesystem;
    // Unsynced data first, under the names the files have now.
    for (const auto& [path, synced] : files_)
      if (fs::exists(path) && fs::file_size(path) > synced) fs::resize_file(path, synced);
    // Then the directory entries, newest first.
    for (auto it = ops_.rbegin(); it != ops_.rend(); ++it) {
      switch (it->op) {
        case Op::kCreate:
        case Op::kLink:
          fs::remove(it->a);
          break;
        case Op::kRename:
          if (fs::exists(it->b)) fs::rename(it->b, it->a);
          if (!it->stash.empty()) fs::rename(it->stash, it->b);
          break;
        case Op::kRemove:
          if (!it->stash.empty()) fs::rename(it->stash, it->a);
          break;
      }
    }
    ops_.clear();
    files_.clear();
  }

 private:
  enum class Op { kCreate, kRename, kRemove, kLink };
  struct DirOp {
    Op op;
    std::string a, b;   // the path (create, remove, link) or from/to (rename)
    std::string stash;  // the file a rename replaced or a remove deleted, kept aside
    bool in(const std::string& dir) const {
      return io::dirname_of(a) == dir || (!b.empty() && io::dirname_of(b) == dir);
    }
  };

  void hit(const char* kind, const std::string& path) {
    std::lock_guard<std::mutex> lock(mu_);
    if (crashed_ || (crash_at >= 0 && calls >= crash_at)) {
      crashed_ = true;
      throw Crash{};
    }
    ++calls;
    trace.push_back(std::string(kind) + " " + path);
  }
  // A hard link of `path` in the stash (the old contents, should the change be undone).
  std::string stash_if_exists(const std::string& path) {
    if (::access(path.c_str(), F_OK) != 0) return "";
    std::string s = stash_ + "/" + std::to_string(next_stash_++);
    std::filesystem::create_hard_link(path, s);
    return s;
  }
  void synced(const std::string& path) {
    std::lock_guard<std::mutex> lock(mu_);
    files_[path] = std::filesystem::file_size(path);
  }

  class File : public io::WritableFileWrapper {
   public:
    File(CrashEnv* env, std::unique_ptr<io::WritableFile> f) : WritableFileWrapper(std::move(f)), env_(env) {}
    void append(const void* data, size_t n) override {
      env_->hit("write", path());
      WritableFileWrapper::append(data, n);
    }
    void write_at(uint64_t offset, const void* data, size_t n) override {
      env_->hit("write", path());
      WritableFileWrapper::write_at(offset, data, n);
    }
    void sync() override {
      env_->hit("fsync", path());
      WritableFileWrapper::sync();
      env_->synced(path());
    }
    void close() override {
      env_->hit("close", path());
      WritableFileWrapper::close();
    }

   private:
    CrashEnv* env_;
  };

  std::string stash_;
  int next_stash_ = 0;
  std::mutex mu_;
  bool crashed_ = false;
  std::map<std::string, uint64_t> files_;  // files written through this Env -> bytes synced
  std::vector<DirOp> ops_;                 // directory changes not yet covered by a sync_dir
};

}  // namespace ckpt::test
