#include "io/memory_env.h"

#include <cstring>

#include "util/errors.h"

namespace ckpt::io {
namespace {

class MemoryWritableFile final : public WritableFile {
 public:
  MemoryWritableFile(std::string path, std::shared_ptr<std::string> bytes)
      : path_(std::move(path)), bytes_(std::move(bytes)) {}
  void append(const void* data, size_t n) override { write_at(size(), data, n); }
  void write_at(uint64_t offset, const void* data, size_t n) override {
    std::lock_guard<std::mutex> lock(mu_);  // StreamWriter's workers write disjoint ranges concurrently
    if (offset + n > bytes_->size()) bytes_->resize(static_cast<size_t>(offset + n));
    std::memcpy(bytes_->data() + offset, data, n);
    size_ = std::max<uint64_t>(size_, offset + n);
  }
  void sync() override {}
  void close() override {}
  uint64_t size() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return size_;
  }
  const std::string& path() const override { return path_; }
  void truncate(uint64_t size) override {
    std::lock_guard<std::mutex> lock(mu_);
    bytes_->resize(static_cast<size_t>(size));
    size_ = size;
  }

 private:
  std::string path_;
  std::shared_ptr<std::string> bytes_;
  mutable std::mutex mu_;
  uint64_t size_ = 0;
};

}  // namespace

std::unique_ptr<WritableFile> MemoryEnv::new_writable_file(const std::string& path, bool) {
  std::lock_guard<std::mutex> lock(mu_);
  auto [it, inserted] = files_.emplace(path, std::make_shared<std::string>());
  if (!inserted) fail(ErrorKind::kIO, path, ": cannot create file: File exists");
  return std::make_unique<MemoryWritableFile>(path, it->second);
}

std::shared_ptr<MappedFile> MemoryEnv::map_file(const std::string& path) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = files_.find(path);
  if (it == files_.end()) fail(ErrorKind::kNotFound, path, ": cannot open file: No such file or directory");
  return memory_file(*it->second, path);
}

void MemoryEnv::rename_file(const std::string& from, const std::string& to) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = files_.find(from);
  if (it == files_.end()) fail(ErrorKind::kNotFound, from, ": rename failed: No such file or directory");
  files_[to] = it->second;
  files_.erase(from);
}

void MemoryEnv::remove_file(const std::string& path) noexcept {
  std::lock_guard<std::mutex> lock(mu_);
  files_.erase(path);
}

bool MemoryEnv::file_exists(const std::string& path) {
  std::lock_guard<std::mutex> lock(mu_);
  return files_.count(path) != 0;
}

std::string MemoryEnv::take(const std::string& path) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = files_.find(path);
  if (it == files_.end()) fail(ErrorKind::kNotFound, path, ": no such file in memory");
  std::string out = std::move(*it->second);
  files_.erase(it);
  return out;
}

}  // namespace ckpt::io
