// An Env whose files live in memory: checkpoints saved to bytes (Python file objects, buffers
// bound for a database or an object store) go through the same writer as files on disk.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "io/env.h"

namespace ckpt::io {

class MemoryEnv final : public Env {
 public:
  std::unique_ptr<WritableFile> new_writable_file(const std::string& path, bool direct = false) override;
  std::shared_ptr<MappedFile> map_file(const std::string& path) override;
  void rename_file(const std::string& from, const std::string& to) override;
  void remove_file(const std::string& path) noexcept override;
  void sync_dir(const std::string&) override {}
  bool file_exists(const std::string& path) override;
  uint64_t free_space(const std::string&) override { return UINT64_MAX; }
  // The bytes of `path`, moved out (kNotFound when there is no such file).
  std::string take(const std::string& path);

 private:
  std::mutex mu_;
  std::map<std::string, std::shared_ptr<std::string>> files_;
};

}  // namespace ckpt::io
