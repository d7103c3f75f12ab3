// The writing half of the object seam: ObjectWritableFile (multipart upload, one PUT, or one
// streamed PUT; see object_env.h).
#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <exception>
#include <map>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "io/s3/object_env.h"
#include "io/s3/pages.h"
#include "util/errors.h"

namespace ckpt::io::s3 {

namespace {

constexpr uint64_t kMaxPart = uint64_t{5} << 30;
constexpr int kMaxParts = 10000;

// A part's bytes, in memory of its own (mmap): released to the system the moment the part is
// uploaded. From malloc, the 16 MiB blocks freed by the upload threads stayed in their arenas,
// and a save's resident memory grew with the object instead of staying within the parts.
class PartBuffer {
 public:
  PartBuffer() = default;
  explicit PartBuffer(size_t n) : n_(n) {
    void* p = ::mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p != MAP_FAILED) {
      p_ = static_cast<char*>(p);
      huge_pages(p_, n);
    }
  }
  ~PartBuffer() { reset(); }
  PartBuffer(PartBuffer&& o) noexcept : p_(std::exchange(o.p_, nullptr)), n_(o.n_) {}
  PartBuffer& operator=(PartBuffer&& o) noexcept {
    if (this != &o) {
      reset();
      p_ = std::exchange(o.p_, nullptr);
      n_ = o.n_;
    }
    return *this;
  }
  char* get() const { return p_; }
  explicit operator bool() const { return p_ != nullptr; }
  void reset() {
    if (p_) ::munmap(p_, n_);
    p_ = nullptr;
  }

 private:
  char* p_ = nullptr;
  size_t n_ = 0;
};

class ObjectWritableFile final : public WritableFile {
 public:
  ObjectWritableFile(std::shared_ptr<Client> client, Uri uri, std::string path, bool if_none_match)
      : client_(std::move(client)),
        uri_(std::move(uri)),
        path_(std::move(path)),
        if_none_match_(if_none_match),
        base_part_(client_->config().part_size),
        max_in_flight_(std::max<size_t>(1, client_->config().parts_in_flight)) {}

  ~ObjectWritableFile() override {
    shutdown();
    const std::string id = upload_id();
    if (!closed_ && !id.empty()) {
      try {
        client_->abort_multipart(uri_, id);
      } catch (...) {
        // Best effort: a run's next start aborts leftovers under its prefix; a bucket lifecycle
        // rule (AbortIncompleteMultipartUpload) reaps the rest.
      }
    }
  }

  void append(const void* data, size_t n) override { write_at(end_, data, n); }

  // Known size, over one part and within put_threshold: one streamed PUT instead of parts.
  void expect_size(uint64_t n) override {
    std::lock_guard<std::mutex> lock(mu_);
    const uint64_t threshold = client_->config().put_threshold;
    if (end_ != 0 || !parts_.empty() || n <= base_part_ || n > threshold) return;
    streamed_ = true;
    expected_ = n;
  }

  void write_at(uint64_t offset, const void* data, size_t n) override {
    const char* src = static_cast<const char*>(data);
    while (n > 0) {
      char* dst;
      size_t take;
      size_t index;
      {
        std::unique_lock<std::mutex> lock(mu_);
        if (error_) std::rethrow_exception(error_);
        if (closed_) fail(ErrorKind::kInvalidArgument, path_, ": write after close");
        if (streamed_ && offset + n > expected_)
          fail(ErrorKind::kInvalidArgument, path_, ": a write ends at byte ", offset + n, ", past the ", expected_,
               " announced for its streamed upload");
        index = part_of(offset);
        Part& p = parts_[index];
        if (p.done || p.dispatched)
          fail(ErrorKind::kInvalidArgument, path_, ": offset ", offset, " written twice (part ", index + 1,
               " is already uploaded)");
        if (!p.buffer) {
          p.buffer = PartBuffer(static_cast<size_t>(starts_[index + 1] - starts_[index]));
          if (!p.buffer)
            fail(ErrorKind::kIO, path_, ": out of memory for a ", starts_[index + 1] - starts_[index],
                 "-byte upload part");
        }
        const uint64_t part_end = starts_[index + 1];
        take = static_cast<size_t>(std::min<uint64_t>(n, part_end - offset));
        dst = p.buffer.get() + (offset - starts_[index]);
        p.writers++;
      }
      std::memcpy(dst, src, take);
      {
        std::unique_lock<std::mutex> lock(mu_);
        Part& p = parts_[index];
        p.writers--;
        p.filled += take;
        end_ = std::max(end_, offset + take);
        // Part 1 waits for a byte beyond it: an object of one part goes up as one PUT.
        for (auto& [i, q] : parts_) {
          if (q.dispatched || q.done || q.writers || q.filled != starts_[i + 1] - starts_[i]) continue;
          if (end_ <= starts_[i + 1]) continue;
          dispatch(lock, i);
          break;  // the map may have changed while waiting: look again on the next write
        }
      }
      src += take;
      offset += take;
      n -= take;
    }
  }

  void sync() override {}  // the object is durable once close() has completed it

  void close() override {
    std::unique_lock<std::mutex> lock(mu_);
    if (closed_) return;
    if (streamed_) return close_streamed(lock);
    // Dispatch what is full, wait for every upload.
    for (;;) {
      bool any = false;
      for (auto& [i, q] : parts_) {
        if (q.dispatched || q.done || q.filled != starts_[i + 1] - starts_[i] || end_ <= starts_[i + 1]) continue;
        dispatch(lock, i);
        any = true;
        break;
      }
      if (!any) break;
    }
    cv_.wait(lock, [&] { return in_flight_ == 0; });
    if (error_) std::rethrow_exception(error_);
    uint64_t written = 0;
    for (auto& [i, q] : parts_) written += q.done ? starts_[i + 1] - starts_[i] : q.filled;
    if (written != end_)
      fail(ErrorKind::kIO, path_, ": ", end_ - written, " of ", end_, " bytes were never written (a gap)");
    const std::string id = upload_id();
    if (id.empty()) {
      // One PUT: everything is in the first part.
      Part& p = parts_[0];
      static const char kEmpty = 0;
      const bool created =
          client_->put(uri_, p.buffer ? p.buffer.get() : &kEmpty, static_cast<size_t>(end_), if_none_match_);
      if (!created) fail(ErrorKind::kIO, path_, ": not written: the key exists (created meanwhile by another writer)");
      closed_ = true;
      acknowledged_ = end_;
      return;
    }
    // The last, partial part, then Complete.
    const size_t last = parts_.empty() ? 0 : parts_.rbegin()->first;
    Part& lp = parts_[last];
    if (!lp.done && lp.filled > 0) {
      lock.unlock();
      CompletedPart part = client_->upload_part(uri_, id, static_cast<int>(last + 1), lp.buffer.get(), lp.filled);
      lock.lock();
      etags_[part.number] = std::move(part);
      lp.done = true;
    }
    std::vector<CompletedPart> list;
    for (const auto& [number, part] : etags_) list.push_back(part);
    lock.unlock();
    const bool created = client_->complete_multipart(uri_, id, list, if_none_match_);
    lock.lock();
    if (!created) fail(ErrorKind::kIO, path_, ": not written: the key exists (created meanwhile by another writer)");
    closed_ = true;
    acknowledged_ = end_;
  }

  uint64_t size() const override { return end_; }
  uint64_t acknowledged() const override { return acknowledged_; }
  const std::string& path() const override { return path_; }
  void truncate(uint64_t size) override {
    if (size != end_)
      fail(ErrorKind::kUnsupported, path_, ": an object being uploaded cannot be truncated (from ", end_, " to ", size,
           " bytes)");
  }

 private:
  struct Part {
    PartBuffer buffer;
    uint64_t filled = 0;
    int writers = 0;  // copies into the buffer under way
    bool dispatched = false;
    bool done = false;
  };
  std::shared_ptr<Client> client_;
  Uri uri_;
  std::string path_;
  bool if_none_match_;
  const uint64_t base_part_;
  const size_t max_in_flight_;

  std::mutex mu_;
  std::condition_variable cv_;
  std::map<size_t, Part> parts_;
  std::vector<uint64_t> starts_{0};  // starts_[i] = first byte of part i; grown on demand
  uint64_t end_ = 0;
  std::mutex create_mu_;
  std::string upload_id_;  // guarded by create_mu_
  std::map<int, CompletedPart> etags_;  // by part number
  std::deque<size_t> queue_;
  size_t in_flight_ = 0;
  std::exception_ptr error_;
  std::atomic<uint64_t> acknowledged_{0};  // bytes of parts the server answered
  bool closed_ = false;
  bool stop_ = false;
  std::vector<std::thread> workers_;
  // The streamed PUT (expect_size).
  bool streamed_ = false;
  uint64_t expected_ = 0;
  size_t next_send_ = 0;     // the part the PUT is sending
  uint64_t sent_in_part_ = 0;
  bool stream_done_ = false;
  std::thread stream_thread_;

  // Part sizes double every 1000 parts (capped at 5 GiB), so 10,000 parts reach far beyond any
  // checkpoint without knowing the size up front.
  uint64_t part_size(size_t index) const {
    return std::min(kMaxPart, base_part_ << std::min<size_t>(index / 1000, 20));
  }

  size_t part_of(uint64_t offset) {
    while (starts_.back() <= offset) {
      if (starts_.size() > kMaxParts)
        fail(ErrorKind::kInvalidArgument, path_, ": more than ", kMaxParts, " parts (object over ", starts_.back(),
             " bytes)");
      starts_.push_back(starts_.back() + part_size(starts_.size() - 1));
    }
    auto it = std::upper_bound(starts_.begin(), starts_.end(), offset);
    return static_cast<size_t>(it - starts_.begin()) - 1;
  }

  // Called with the lock held; waits for a free upload slot (the memory bound).
  void dispatch(std::unique_lock<std::mutex>& lock, size_t index) {
    parts_[index].dispatched = true;
    if (streamed_) {
      // The PUT sends parts in order: a part waits while it is parts_in_flight or more ahead of
      // the one being sent (the one being sent never waits, so the stream cannot stall).
      cv_.wait(lock, [&] { return index < next_send_ + max_in_flight_ || error_ || stop_; });
      if (error_) std::rethrow_exception(error_);
      if (!stream_thread_.joinable()) stream_thread_ = std::thread([this] { stream(); });
      cv_.notify_all();
      return;
    }
    cv_.wait(lock, [&] { return in_flight_ < max_in_flight_ || error_ || stop_; });
    if (error_) std::rethrow_exception(error_);
    ++in_flight_;
    queue_.push_back(index);
    if (workers_.size() < max_in_flight_) workers_.emplace_back([this] { worker(); });
    cv_.notify_all();
  }

  void worker() {
    for (;;) {
      size_t index;
      const char* data;
      size_t n;
      std::string id;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
        if (queue_.empty()) return;
        index = queue_.front();
        queue_.pop_front();
        data = parts_[index].buffer.get();
        n = static_cast<size_t>(starts_[index + 1] - starts_[index]);
      }
      std::exception_ptr err;
      try {
        {
          std::lock_guard<std::mutex> create(create_mu_);
          if (upload_id_.empty()) upload_id_ = client_->create_multipart(uri_);
          id = upload_id_;
        }
        CompletedPart part = client_->upload_part(uri_, id, static_cast<int>(index + 1), data, n);
        std::lock_guard<std::mutex> lock(mu_);
        etags_[part.number] = std::move(part);
        parts_[index].done = true;
        parts_[index].buffer.reset();
        acknowledged_ += n;
      } catch (...) {
        err = std::current_exception();
      }
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (err && !error_) error_ = err;
        --in_flight_;
      }
      cv_.notify_all();
    }
  }
  std::string upload_id() {
    std::lock_guard<std::mutex> lock(create_mu_);
    return upload_id_;
  }

  void shutdown() noexcept {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
      queue_.clear();
    }
    cv_.notify_all();
    for (auto& t : workers_)
      if (t.joinable()) t.join();
    if (stream_thread_.joinable()) stream_thread_.join();
  }

  // --- the streamed PUT (expect_size)
  void close_streamed(std::unique_lock<std::mutex>& lock) {
    if (error_) std::rethrow_exception(error_);
    uint64_t written = 0;
    for (auto& [i, q] : parts_) written += q.done ? std::min(starts_[i + 1], expected_) - starts_[i] : q.filled;
    if (end_ != expected_ || written != end_)
      fail(ErrorKind::kIO, path_, ": ", written, " bytes written of the ", expected_,
           " announced for its streamed upload; nothing was published");
    for (auto& [i, q] : parts_)
      if (!q.dispatched && !q.done) dispatch(lock, i);
    cv_.wait(lock, [&] { return stream_done_; });
    if (error_) std::rethrow_exception(error_);
    closed_ = true;
    acknowledged_ = end_;
  }

  void stream() {
    std::exception_ptr err;
    try {
      const bool created = client_->put_streamed(
          uri_, expected_, [this](char* dst, size_t n) { return source(dst, n); }, if_none_match_);
      if (!created) fail(ErrorKind::kIO, path_, ": not written: the key exists (created meanwhile by another writer)");
    } catch (...) {
      err = std::current_exception();
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (err && !error_) error_ = err;
      stream_done_ = true;
    }
    cv_.notify_all();
  }

  // The PUT's body: the parts in order, each released once sent. Progress counts bytes sent.
  size_t source(char* dst, size_t n) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] {
      auto it = parts_.find(next_send_);
      return stop_ || (it != parts_.end() && it->second.dispatched);
    });
    if (stop_) fail(ErrorKind::kIO, path_, ": upload abandoned");
    Part& p = parts_[next_send_];
    const uint64_t size = std::min(starts_[next_send_ + 1], expected_) - starts_[next_send_];
    const size_t k = static_cast<size_t>(std::min<uint64_t>(n, size - sent_in_part_));
    const char* src = p.buffer.get() + sent_in_part_;
    lock.unlock();
    std::memcpy(dst, src, k);
    lock.lock();
    sent_in_part_ += k;
    acknowledged_ += k;
    if (sent_in_part_ == size) {
      p.buffer.reset();
      p.done = true;
      ++next_send_;
      sent_in_part_ = 0;
      cv_.notify_all();
    }
    return k;
  }
};

}  // namespace

std::unique_ptr<WritableFile> new_object_writer(std::shared_ptr<Client> client, const std::string& uri,
                                                bool if_none_match) {
  return std::make_unique<ObjectWritableFile>(std::move(client), parse_uri(uri), uri, if_none_match);
}

}  // namespace ckpt::io::s3
