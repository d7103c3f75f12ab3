#include "io/stream_writer.h"

#include <sys/mman.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "util/crc32.h"
#include "util/errors.h"

namespace ckpt::io {

namespace {
constexpr size_t kCrcSlice = size_t{256} << 10;  // copy, then checksum, in cache-sized slices
}

StreamWriter::StreamWriter(WritableFile* file, size_t chunk_size, size_t threads, size_t depth)
    : file_(file), chunk_size_(chunk_size), alignment_(file->direct_alignment()), depth_(std::max<size_t>(1, depth)) {
  current_.data = take_buffer();
  current_.file_offset = 0;
  for (size_t i = 0; i < std::max<size_t>(1, threads); ++i) workers_.emplace_back([this] { worker(); });
}

StreamWriter::~StreamWriter() {
  shutdown();
  for (std::byte* b : all_) std::free(b);
}

void StreamWriter::shutdown() noexcept {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  for (auto& t : workers_)
    if (t.joinable()) t.join();
}

std::byte* StreamWriter::take_buffer() {
  std::unique_lock<std::mutex> lock(mu_);
  if (free_.empty() && all_.size() < depth_ + 1) {
    void* p = nullptr;
    if (posix_memalign(&p, 4096, chunk_size_) != 0)
      fail(ErrorKind::kIO, "out of memory for a ", chunk_size_, "-byte write buffer");
    all_.push_back(static_cast<std::byte*>(p));
    return static_cast<std::byte*>(p);
  }
  cv_.wait(lock, [&] { return !free_.empty() || error_; });
  if (error_) std::rethrow_exception(error_);
  std::byte* b = free_.back();
  free_.pop_back();
  return b;
}

void StreamWriter::rethrow_if_failed() {
  std::lock_guard<std::mutex> lock(mu_);
  if (error_) std::rethrow_exception(error_);
}

void StreamWriter::submit() {
  {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return in_flight_ < depth_ || error_; });
    if (error_) std::rethrow_exception(error_);
    queue_.push_back(current_);
    ++in_flight_;
  }
  cv_.notify_all();
  uint64_t next_offset = current_.file_offset + current_.used;
  current_ = Chunk{take_buffer(), 0, next_offset};
}

void StreamWriter::worker() {
  for (;;) {
    Chunk c;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
      if (queue_.empty()) return;
      c = queue_.front();
      queue_.pop_front();
    }
    std::exception_ptr err;
    try {
      file_->write_at(c.file_offset, c.data, c.used);
    } catch (...) {
      err = std::current_exception();
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (err && !error_) error_ = err;
      free_.push_back(c.data);
      --in_flight_;
    }
    cv_.notify_all();
  }
}

void StreamWriter::append(const void* data, size_t n, uint32_t* crc) {
  const auto* src = static_cast<const std::byte*>(data);
  while (n > 0) {
    size_t room = chunk_size_ - current_.used;
    size_t take = std::min({n, room, crc ? kCrcSlice : n});
    std::byte* dst = current_.data + current_.used;
    std::memcpy(dst, src, take);
    if (crc) *crc = crc32_update(*crc, dst, take);
    current_.used += take;
    offset_ += take;
    src += take;
    n -= take;
    if (current_.used == chunk_size_) {
      rethrow_if_failed();
      submit();
    }
  }
}

void StreamWriter::finish() {
  const uint64_t end = offset_;
  if (current_.used > 0) {
    if (alignment_ > 0) {  // O_DIRECT writes whole blocks: pad, truncate afterwards
      size_t padded = (current_.used + alignment_ - 1) / alignment_ * alignment_;
      std::memset(current_.data + current_.used, 0, padded - current_.used);
      current_.used = padded;
    }
    submit();
  }
  {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return in_flight_ == 0; });
    if (error_) std::rethrow_exception(error_);
  }
  if (alignment_ > 0 && end % alignment_ != 0)
    file_->truncate(end);
  else if (alignment_ == 0 && file_->size() < end)
    file_->truncate(end);  // keeps size() truthful
}

}  // namespace ckpt::io
