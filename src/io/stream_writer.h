// StreamWriter: turns a stream of appends into large positional writes issued by worker
// threads, so copying, checksumming and the disk overlap.
//
// Bytes are copied into chunk buffers (aligned for O_DIRECT); each full chunk is written at its
// offset by one of `threads` workers while the caller fills the next. At most `depth` chunks
// are in flight, so memory stays at (depth + 1) x chunk_size whatever the file size. On an
// O_DIRECT file the final partial chunk is zero-padded to the alignment and the file is then
// truncated to its real size. The first write error is kept and rethrown by the next append()
// or by finish(); the destructor waits for the workers and never throws.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include "io/env.h"

namespace ckpt::io {

class StreamWriter {
 public:
  explicit StreamWriter(WritableFile* file, size_t chunk_size = size_t{8} << 20, size_t threads = 2, size_t depth = 4);
  ~StreamWriter();
  StreamWriter(const StreamWriter&) = delete;
  StreamWriter& operator=(const StreamWriter&) = delete;

  // Appends n bytes. `crc`, if given, is updated with the bytes as they are copied (while they
  // are hot in cache).
  void append(const void* data, size_t n, uint32_t* crc = nullptr);
  uint64_t offset() const { return offset_; }
  // Writes what is buffered, waits for every write, truncates the padding. Not idempotent.
  void finish();

 private:
  struct Chunk {
    std::byte* data = nullptr;
    size_t used = 0;
    uint64_t file_offset = 0;
  };
  WritableFile* file_;
  const size_t chunk_size_;
  const size_t alignment_;
  const size_t depth_;
  uint64_t offset_ = 0;
  Chunk current_;

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Chunk> queue_;       // full chunks waiting for a worker
  std::vector<std::byte*> free_;  // buffers ready for reuse
  std::vector<std::byte*> all_;
  size_t in_flight_ = 0;  // queued + being written
  bool stop_ = false;
  std::exception_ptr error_;
  std::vector<std::thread> workers_;

  void worker();
  void submit();  // hands current_ to the workers and takes a fresh buffer
  std::byte* take_buffer();
  void rethrow_if_failed();
  void shutdown() noexcept;
};

}  // namespace ckpt::io
