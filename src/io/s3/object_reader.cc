// The reading half of the object seam: ObjectFile (HEAD, then ranged GETs pinned to the ETag
// into a lazily filled region; see object_env.h).
#include <sys/mman.h>

#include <algorithm>
#include <cstring>
#include <mutex>
#include <utility>
#include <vector>

#include "io/s3/object_env.h"
#include "io/s3/pages.h"
#include "util/errors.h"
#include "util/parallel.h"

namespace ckpt::io::s3 {

namespace {

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
    parallel_for(pieces.size(), client_->config().ranges_in_flight, [&](size_t i) {
      client_->get_range(uri_, pieces[i].offset, pieces[i].n, pieces[i].dst, info_.etag);
    });
  }
};

}  // namespace

std::shared_ptr<MappedFile> open_object(std::shared_ptr<Client> client, const std::string& uri) {
  Uri u = parse_uri(uri);
  ObjectInfo info;
  if (!client->head(u, &info)) fail(ErrorKind::kNotFound, uri, ": no such object");
  return std::make_shared<ObjectFile>(std::move(client), std::move(u), uri, std::move(info));
}

}  // namespace ckpt::io::s3
