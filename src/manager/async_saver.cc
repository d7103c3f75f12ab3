#include "ckpt/async.h"

#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <exception>
#include <iostream>
#include <mutex>
#include <thread>
#include <vector>

#include "format/archive.h"
#include "util/errors.h"

namespace ckpt {

namespace {

// One contiguous anonymous mapping (from the save's Env), kept across saves so its pages are
// already faulted in.
struct Arena {
  std::unique_ptr<io::MemoryRegion> region;
  std::byte* base = nullptr;
  uint64_t capacity = 0;
  void reserve(io::Env* env, uint64_t bytes) {
    if (bytes <= capacity) return;
    region.reset();
    base = nullptr;
    capacity = 0;
    region = env->allocate(static_cast<size_t>(std::max<uint64_t>(bytes, 4096)), "the async save's snapshot");
    base = region->data();
    capacity = region->size();
  }
};

// A storage's bytes inside a snapshot arena.
class SnapshotStorage final : public StorageData {
 public:
  SnapshotStorage(std::shared_ptr<Arena> arena, std::byte* data, size_t nbytes, DType dtype)
      : arena_(std::move(arena)), data_(data), nbytes_(nbytes), dtype_(dtype) {}
  std::byte* data() const override { return data_; }
  size_t nbytes() const override { return nbytes_; }
  DType dtype() const override { return dtype_; }

 private:
  std::shared_ptr<Arena> arena_;
  std::byte* data_;
  size_t nbytes_;
  DType dtype_;
};

struct Copy {
  const std::byte* src;
  std::byte* dst;
  size_t n;
};

// Copies with every core: the copies are cut into slices dealt round-robin to the threads.
void parallel_copy(const std::vector<Copy>& copies) {
  constexpr size_t kSlice = size_t{4} << 20;
  std::vector<Copy> slices;
  for (const Copy& c : copies)
    for (size_t off = 0; off < c.n; off += kSlice)
      slices.push_back({c.src + off, c.dst + off, std::min(kSlice, c.n - off)});
  unsigned threads = std::max(1u, std::thread::hardware_concurrency());
  if (slices.size() < 4 || threads == 1) {
    for (const Copy& s : slices) std::memcpy(s.dst, s.src, s.n);
    return;
  }
  std::vector<std::thread> pool;
  for (unsigned t = 1; t < threads; ++t)
    pool.emplace_back([&, t] {
      for (size_t i = t; i < slices.size(); i += threads) std::memcpy(slices[i].dst, slices[i].src, slices[i].n);
    });
  for (size_t i = 0; i < slices.size(); i += threads) std::memcpy(slices[i].dst, slices[i].src, slices[i].n);
  for (auto& th : pool) th.join();
}

struct Job {
  format::PreparedArchive archive;
  std::string path;
  SaveOptions options;
  std::shared_ptr<Arena> arena;
  AsyncSaver::PublishedFn on_published;
};

}  // namespace

struct AsyncSaver::Impl {
  explicit Impl(size_t max_in_flight) : max_in_flight_(std::max<size_t>(1, max_in_flight)) {
    worker_ = std::thread([this] { run(); });
  }
  ~Impl();
  void save(const Value& value, const std::string& path, const SaveOptions& options, PublishedFn on_published);
  void wait();
  size_t pending() const;

 private:
  const size_t max_in_flight_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::unique_ptr<Job>> queue_;
  size_t in_flight_ = 0;
  std::exception_ptr error_;
  std::deque<std::shared_ptr<Arena>> free_arenas_;
  bool stop_ = false;
  std::thread worker_;

  void run();
  std::shared_ptr<Arena> take_arena(io::Env* env, uint64_t bytes);
};

AsyncSaver::AsyncSaver(size_t max_in_flight) : impl_(std::make_unique<Impl>(max_in_flight)) {}
AsyncSaver::~AsyncSaver() = default;
void AsyncSaver::save(const Value& value, const std::string& path, const SaveOptions& options,
                      PublishedFn on_published) {
  impl_->save(value, path, options, std::move(on_published));
}
void AsyncSaver::wait() {
  impl_->wait();
}
size_t AsyncSaver::pending() const {
  return impl_->pending();
}

AsyncSaver::Impl::~Impl() {
  {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return in_flight_ == 0; });
    stop_ = true;
  }
  cv_.notify_all();
  worker_.join();
  if (error_) {
    try {
      std::rethrow_exception(error_);
    } catch (const std::exception& e) {
      std::cerr << "ckpt: an asynchronous save failed and nobody called wait(): " << e.what() << "\n";
    }
  }
}

std::shared_ptr<Arena> AsyncSaver::Impl::take_arena(io::Env* env, uint64_t bytes) {
  std::shared_ptr<Arena> arena;
  {
    std::lock_guard<std::mutex> lock(mu_);
    // Prefer an arena that is already big enough (its pages are touched).
    auto it =
        std::find_if(free_arenas_.begin(), free_arenas_.end(), [&](const auto& a) { return a->capacity >= bytes; });
    if (it == free_arenas_.end() && !free_arenas_.empty()) it = free_arenas_.begin();
    if (it != free_arenas_.end()) {
      arena = *it;
      free_arenas_.erase(it);
    }
  }
  if (!arena) arena = std::make_shared<Arena>();
  arena->reserve(env, bytes);  // on failure the arena (now empty) is dropped
  return arena;
}

void AsyncSaver::Impl::save(const Value& value, const std::string& path, const SaveOptions& options,
                            PublishedFn on_published) {
  {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return in_flight_ < max_in_flight_ || error_; });
    if (error_) {
      auto e = error_;
      error_ = nullptr;
      std::rethrow_exception(e);
    }
  }
  auto job = std::make_unique<Job>();
  job->path = path;
  job->options = options;
  job->on_published = std::move(on_published);
  io::Env* env = options.env ? options.env : io::Env::Default();
  try {
    job->archive = format::prepare_archive(value);
    if (options.check_free_space) format::check_free_space(env, job->archive, path);
  } catch (const Error& e) {
    rethrow_naming(e, path);
  }
  // Snapshot: one arena, each storage 64-byte aligned inside it.
  uint64_t total = 0;
  for (const auto& s : job->archive.storages) total += (s->nbytes() + 63) / 64 * 64;
  try {
    job->arena = take_arena(env, total);
  } catch (const Error& e) {
    rethrow_naming(e, path);
  }
  std::vector<Copy> copies;
  uint64_t off = 0;
  for (auto& s : job->archive.storages) {
    std::byte* dst = job->arena->base + off;
    copies.push_back({s->data(), dst, s->nbytes()});
    s = std::make_shared<SnapshotStorage>(job->arena, dst, s->nbytes(), s->dtype());
    off += (copies.back().n + 63) / 64 * 64;
  }
  parallel_copy(copies);
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(std::move(job));
    ++in_flight_;
  }
  cv_.notify_all();
}

void AsyncSaver::Impl::run() {
  // A background save must not compete with training at equal priority: with both cores busy,
  // every slice it takes from one compute thread stalls the others at their next barrier. Nice 10
  // (inherited by the I/O threads this thread starts) leaves training most of the CPU; the write
  // itself mostly waits on the disk anyway. Failing to lower the priority is harmless.
  (void)::setpriority(PRIO_PROCESS, static_cast<id_t>(::syscall(SYS_gettid)), 10);
  for (;;) {
    std::unique_ptr<Job> job;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
      if (queue_.empty()) return;
      job = std::move(queue_.front());
      queue_.pop_front();
    }
    std::exception_ptr err;
    try {
      SavedFile saved;
      try {
        SaveOptions options = job->options;
        options.check_free_space = false;  // checked by save(), before the snapshot
        saved =
            format::write_prepared(options.env ? options.env : io::Env::Default(), job->archive, job->path, options);
      } catch (const Error& e) {
        rethrow_naming(e, job->path);
      }
      // The snapshot is no longer needed: give its memory back before the callback runs.
      job->archive.storages.clear();
      if (job->on_published) job->on_published(saved);
    } catch (...) {
      err = std::current_exception();
    }
    std::shared_ptr<Arena> arena = std::move(job->arena);
    job.reset();  // drops the snapshot's references to the arena
    {
      // The error changes hands under the lock, and this thread keeps no reference to it: the
      // exception's reference counts live in the uninstrumented runtime, so only the mutex
      // orders this thread's last touch before the caller's rethrow (and ThreadSanitizer sees it).
      std::lock_guard<std::mutex> lock(mu_);
      if (err && !error_) error_ = std::move(err);
      err = nullptr;
      free_arenas_.push_back(std::move(arena));
      --in_flight_;
    }
    cv_.notify_all();
  }
}

void AsyncSaver::Impl::wait() {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return in_flight_ == 0; });
  if (error_) {
    auto e = error_;
    error_ = nullptr;
    std::rethrow_exception(e);
  }
}

size_t AsyncSaver::Impl::pending() const {
  std::lock_guard<std::mutex> lock(mu_);
  return in_flight_;
}

}  // namespace ckpt
