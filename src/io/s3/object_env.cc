#include "io/s3/object_env.h"

#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <exception>
#include <limits>
#include <map>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "io/s3/lease.h"
#include "util/errors.h"

namespace ckpt::io::s3 {

namespace {

constexpr uint64_t kMaxPart = uint64_t{5} << 30;
constexpr int kMaxParts = 10000;

// ---------------------------------------------------------------------------------------------
// Asks for transparent huge pages on the 2 MiB-aligned interior of [p, p+n): filling a GB from
// the network then takes hundreds of page faults, not hundreds of thousands. Advice only.
void huge_pages(void* p, uint64_t n) {
  constexpr uintptr_t kHuge = uintptr_t{2} << 20;
  const uintptr_t b = (reinterpret_cast<uintptr_t>(p) + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t e = (reinterpret_cast<uintptr_t>(p) + n) & ~(kHuge - 1);
  if (e > b) ::madvise(reinterpret_cast<void*>(b), e - b, MADV_HUGEPAGE);
}

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

// ---------------------------------------------------------------------------------------------
class ObjectFile final : public MappedFile {
 public:
  ObjectFile(std::shared_ptr<Client> client, Uri uri, std::string path, ObjectInfo info)
      : client_(std::move(client)), uri_(std::move(uri)), path_(std::move(path)), info_(std::move(info)) {
    map_bytes_ = std::max<uint64_t>(info_.size, 1);
    void* p = ::mmap(nullptr, map_bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) fail(ErrorKind::kIO, path_, ": cannot reserve ", map_bytes_, " bytes of address space");
    base_ = static_cast<std::byte*>(p);
    const uint64_t head = std::min<uint64_t>(info_.size, 64 << 10), tail = std::min<uint64_t>(info_.size, 128 << 10);
    ensure({{0, head}, {info_.size - tail, tail}});
  }
  ~ObjectFile() override { ::munmap(base_, map_bytes_); }

  const std::byte* data() const override { return base_; }
  std::byte* mutable_data() const override { return base_; }
  uint64_t size() const override { return info_.size; }
  const std::string& path() const override { return path_; }

  void read_at(uint64_t offset, void* dst, size_t n) const override {
    check(offset, n);
    if (fetched(offset, n)) {
      std::memcpy(dst, base_ + offset, n);
      return;
    }
    fetch_into(static_cast<std::byte*>(dst), offset, n);
  }

  void prefetch(const std::vector<std::pair<uint64_t, uint64_t>>& ranges) const override { ensure(ranges); }
  bool prefers_whole_reads() const override { return true; }

  std::byte* mutable_range(uint64_t offset, uint64_t n) const override {
    check(offset, n);
    ensure({{offset, n}});
    return base_ + offset;
  }

 private:
  std::shared_ptr<Client> client_;
  Uri uri_;
  std::string path_;
  ObjectInfo info_;
  std::byte* base_ = nullptr;
  uint64_t map_bytes_ = 0;
  mutable std::mutex mu_;                         // fetched_
  mutable std::mutex fetch_mu_;                   // one ensure() at a time: no two GETs write the same bytes
  mutable std::map<uint64_t, uint64_t> fetched_;  // begin -> end, disjoint, not adjacent

  void check(uint64_t offset, uint64_t n) const {
    if (offset > info_.size || n > info_.size - offset)
      fail(ErrorKind::kCorruption, path_, ": read of ", n, " bytes at offset ", offset, " past the end of the ",
           info_.size, "-byte object");
  }

  bool fetched(uint64_t offset, uint64_t n) const {
    if (n == 0) return true;
    std::lock_guard<std::mutex> lock(mu_);
    auto it = fetched_.upper_bound(offset);
    if (it == fetched_.begin()) return false;
    --it;
    return it->first <= offset && offset + n <= it->second;
  }

  void mark(uint64_t b, uint64_t e) const {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = fetched_.upper_bound(b);
    if (it != fetched_.begin() && std::prev(it)->second >= b) {
      --it;
      b = it->first;
      e = std::max(e, it->second);
      it = fetched_.erase(it);
    }
    while (it != fetched_.end() && it->first <= e) {
      e = std::max(e, it->second);
      it = fetched_.erase(it);
    }
    fetched_[b] = e;
  }

  // Fills the missing parts of `ranges` into the region. Ranges closer than 64 KiB are fetched
  // as one (one request beats two on every server).
  void ensure(std::vector<std::pair<uint64_t, uint64_t>> ranges) const {
    std::lock_guard<std::mutex> serial(fetch_mu_);
    std::vector<std::pair<uint64_t, uint64_t>> spans;  // begin, end
    for (auto [off, n] : ranges) {
      if (n == 0) continue;
      check(off, n);
      spans.emplace_back(off, off + n);
    }
    std::sort(spans.begin(), spans.end());
    std::vector<std::pair<uint64_t, uint64_t>> merged;
    for (auto s : spans) {
      if (!merged.empty() && s.first <= merged.back().second + (64 << 10))
        merged.back().second = std::max(merged.back().second, s.second);
      else
        merged.push_back(s);
    }
    // Drop what is there already (whole spans only: partial overlaps are fetched again).
    std::vector<std::pair<uint64_t, uint64_t>> todo;
    for (auto [b, e] : merged)
      if (!fetched(b, e - b)) todo.emplace_back(b, e);
    if (todo.empty()) return;
    std::vector<Piece> pieces;
    for (auto [b, e] : todo) {
      if (e - b >= (uint64_t{8} << 20)) huge_pages(base_ + b, e - b);  // large spans only: a lazy load stays small
      split(base_ + b, b, e - b, &pieces);
    }
    run(pieces);
    for (auto [b, e] : todo) mark(b, e);
  }

  struct Piece {
    std::byte* dst;
    uint64_t offset;
    size_t n;
  };

  // One GET per thread for a large read (each GET costs the server a lookup, and some copy the
  // whole object per range); never pieces below range_size.
  void split(std::byte* dst, uint64_t offset, uint64_t n, std::vector<Piece>* out) const {
    const uint64_t threads = std::max<size_t>(1, client_->config().ranges_in_flight);
    const uint64_t piece = std::max<uint64_t>({client_->config().range_size, 64 << 10, (n + threads - 1) / threads});
    for (uint64_t done = 0; done < n;) {
      uint64_t k = std::min(piece, n - done);
      out->push_back(Piece{dst + done, offset + done, static_cast<size_t>(k)});
      done += k;
    }
  }

  void fetch_into(std::byte* dst, uint64_t offset, size_t n) const {
    std::vector<Piece> pieces;
    split(dst, offset, n, &pieces);
    run(pieces);
  }

  // GETs the pieces, ranges_in_flight at a time; the first error is rethrown once all stopped.
  void run(const std::vector<Piece>& pieces) const {
    std::atomic<size_t> next{0};
    std::mutex emu;
    std::exception_ptr error;
    auto work = [&] {
      for (size_t i = next++; i < pieces.size(); i = next++) {
        try {
          client_->get_range(uri_, pieces[i].offset, pieces[i].n, pieces[i].dst, info_.etag);
        } catch (...) {
          std::lock_guard<std::mutex> lock(emu);
          if (!error) error = std::current_exception();
          next = pieces.size();
        }
      }
    };
    size_t threads = std::min(pieces.size(), std::max<size_t>(1, client_->config().ranges_in_flight));
    std::vector<std::thread> pool;
    for (size_t t = 1; t < threads; ++t) pool.emplace_back(work);
    work();
    for (auto& t : pool) t.join();
    if (error) std::rethrow_exception(error);
  }
};

// ---------------------------------------------------------------------------------------------
// The keys "in" directory `u` start with this ("runs/7/"; "" for a whole bucket).
std::string dir_prefix(const Uri& u) {
  return u.key.empty() || u.key.back() == '/' ? u.key : u.key + "/";
}

class RoutingEnv final : public EnvWrapper {
 public:
  explicit RoutingEnv(Env* local) : EnvWrapper(local) {}

  std::unique_ptr<WritableFile> new_writable_file(const std::string& path, bool direct) override {
    if (!is_s3_uri(path)) return target()->new_writable_file(path, direct);
    return new_object_writer(default_client(), path);
  }
  std::unique_ptr<WritableFile> new_published_file(const std::string& path, bool replace, bool direct) override {
    if (!is_s3_uri(path)) return target()->new_published_file(path, replace, direct);
    return new_object_writer(default_client(), path, /*if_none_match=*/!replace);
  }
  std::shared_ptr<MappedFile> map_file(const std::string& path) override {
    if (!is_s3_uri(path)) return target()->map_file(path);
    return open_object(default_client(), path);
  }
  void rename_file(const std::string& from, const std::string& to) override {
    if (!is_s3_uri(from) && !is_s3_uri(to)) return target()->rename_file(from, to);
    fail(ErrorKind::kUnsupported, from, ": object storage has no rename (", to, ")");
  }
  void remove_file(const std::string& path) noexcept override {
    if (!is_s3_uri(path)) return target()->remove_file(path);
    try {
      default_client()->remove(parse_uri(path));
    } catch (...) {
    }
  }
  void sync_dir(const std::string& dir) override {
    if (!is_s3_uri(dir)) target()->sync_dir(dir);
  }
  bool file_exists(const std::string& path) override {
    if (!is_s3_uri(path)) return target()->file_exists(path);
    return default_client()->head(parse_uri(path), nullptr);
  }
  std::vector<DirEntry> list_dir(const std::string& dir) override {
    if (!is_s3_uri(dir)) return target()->list_dir(dir);
    Uri u = parse_uri(dir, false);
    const std::string prefix = dir_prefix(u);
    std::vector<std::string> prefixes;
    std::vector<DirEntry> out;
    for (const auto& o : default_client()->list(u.bucket, prefix, "/", &prefixes))
      out.push_back(DirEntry{o.key.substr(prefix.size()), true});
    for (const auto& p : prefixes) {
      std::string name = p.substr(prefix.size());
      if (!name.empty() && name.back() == '/') name.pop_back();
      out.push_back(DirEntry{name, false});
    }
    return out;
  }
  void create_dirs(const std::string& dir) override {
    if (!is_s3_uri(dir)) target()->create_dirs(dir);
  }
  std::unique_ptr<FileLock> lock_file(const std::string& path, const std::string& owner) override {
    if (!is_s3_uri(path)) return target()->lock_file(path, owner);
    return acquire_lease(default_client(), path, owner);
  }
  uint64_t free_space(const std::string& path) override {
    if (!is_s3_uri(path)) return target()->free_space(path);
    return std::numeric_limits<uint64_t>::max();
  }
  uint64_t file_size(const std::string& path) override {
    if (!is_s3_uri(path)) return target()->file_size(path);
    ObjectInfo info;
    if (!default_client()->head(parse_uri(path), &info)) fail(ErrorKind::kNotFound, path, ": no such object");
    return info.size;
  }
  std::string read_file(const std::string& path) override {
    if (!is_s3_uri(path)) return target()->read_file(path);
    return default_client()->get(parse_uri(path));
  }
  void link_file(const std::string& from, const std::string& to) override {
    if (!is_s3_uri(from) && !is_s3_uri(to)) return target()->link_file(from, to);
    fail(ErrorKind::kUnsupported, from, ": object storage has no links");
  }
  bool publishes_in_place(const std::string& path) override {
    return is_s3_uri(path) || target()->publishes_in_place(path);
  }
  void copy_file(const std::string& from, const std::string& to) override {
    if (!is_s3_uri(from) && !is_s3_uri(to)) return target()->copy_file(from, to);
    if (!is_s3_uri(from) || !is_s3_uri(to))
      fail(ErrorKind::kUnsupported, from, ": no server-side copy between a file and an object (to ", to, ")");
    ObjectInfo info;
    auto client = default_client();
    if (!client->head(parse_uri(from), &info)) fail(ErrorKind::kNotFound, from, ": no such object");
    if (info.size > (uint64_t{5} << 30))
      fail(ErrorKind::kUnsupported, from, ": ", info.size, " bytes, over CopyObject's 5 GiB");
    client->copy(parse_uri(from), parse_uri(to));
  }
  // Multipart uploads under DIR/ (ListMultipartUploads, then AbortMultipartUpload each). A
  // server without these calls (405/501) has nothing to abort that ckpt could find.
  size_t abort_unfinished_writes(const std::string& dir) override {
    if (!is_s3_uri(dir)) return target()->abort_unfinished_writes(dir);
    Uri u = parse_uri(dir, false);
    const std::string prefix = dir_prefix(u);
    auto client = default_client();
    std::vector<UploadInfo> uploads;
    try {
      uploads = client->list_multipart(u.bucket, prefix);
    } catch (const Error& e) {
      if (e.kind() == ErrorKind::kUnsupported) return 0;
      throw;
    }
    for (const auto& up : uploads) client->abort_multipart(Uri{u.bucket, up.key}, up.upload_id);
    return uploads.size();
  }
};

}  // namespace

std::unique_ptr<WritableFile> new_object_writer(std::shared_ptr<Client> client, const std::string& uri,
                                                bool if_none_match) {
  return std::make_unique<ObjectWritableFile>(std::move(client), parse_uri(uri), uri, if_none_match);
}

std::shared_ptr<MappedFile> open_object(std::shared_ptr<Client> client, const std::string& uri) {
  Uri u = parse_uri(uri);
  ObjectInfo info;
  if (!client->head(u, &info)) fail(ErrorKind::kNotFound, uri, ": no such object");
  return std::make_shared<ObjectFile>(std::move(client), std::move(u), uri, std::move(info));
}

Env* routing_env(Env* local) {
  static RoutingEnv env(local);
  return &env;
}

}  // namespace ckpt::io::s3
