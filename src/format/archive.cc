#include "format/archive.h"

#include <istream>
#include <iterator>
#include <ostream>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "format/pickle.h"
#include "format/safetensors.h"
#include "format/storage_types.h"
#include "format/torchscript.h"
#include "format/value_access.h"
#include "format/weights_only.h"
#include "format/zip.h"
#include "io/memory_env.h"
#include "util/bytes.h"
#include "util/crc32.h"
#include "util/errors.h"
#include "util/parallel.h"
#include "util/text.h"

namespace ckpt::format {
namespace {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "ckpt assumes a little-endian host");

constexpr uint64_t kDirectIoThreshold = uint64_t{32} << 20;

// A storage whose bytes are a region of the mapped file.
class MappedStorage final : public StorageData {
 public:
  MappedStorage(std::shared_ptr<io::MappedFile> file, uint64_t offset, size_t nbytes, DType dtype)
      : file_(std::move(file)), offset_(offset), nbytes_(nbytes), dtype_(dtype) {}
  // mutable_range: an object fetched by range (s3://) fetches the record on first use.
  std::byte* data() const override { return file_->mutable_range(offset_, nbytes_); }
  size_t nbytes() const override { return nbytes_; }
  DType dtype() const override { return dtype_; }

 private:
  std::shared_ptr<io::MappedFile> file_;
  uint64_t offset_;
  size_t nbytes_;
  DType dtype_;
};

constexpr uint64_t kBlock = io::MappedFile::direct_read_alignment();
constexpr uint64_t kPiece = uint64_t{8} << 20;       // unit of parallel reading
constexpr uint64_t kOwnMapping = uint64_t{1} << 20;  // storages this big get their own mapping

uint64_t align_down(uint64_t x) {
  return x / kBlock * kBlock;
}
uint64_t align_up(uint64_t x) {
  return (x + kBlock - 1) / kBlock * kBlock;
}

// Owned memory for eagerly loaded storages: anonymous mappings laid out like the file, so that
// storage bytes sit at the same offset modulo the block size as in the file and O_DIRECT reads
// whole blocks straight into place. A record of at least kOwnMapping bytes gets an arena of its
// own (the slack before and after it receives the neighbouring records' bytes); runs of small
// records share one arena spanning the run, each storage a slice of it, released with the last
// slice. (No MADV_HUGEPAGE: with THP defrag on madvised regions, faults there stalled in page
// compaction, 3x slower than plain pages.)
struct RunArena {
  std::unique_ptr<io::MemoryRegion> region;
  std::byte* base = nullptr;
  RunArena(io::Env* env, size_t n) : region(env->allocate(n, "storages")), base(region->data()) {}
};

class ArenaSlice final : public StorageData {
 public:
  ArenaSlice(DType dtype, size_t nbytes) : dtype_(dtype), nbytes_(nbytes) {}
  void place(std::shared_ptr<RunArena> arena, size_t offset) {
    arena_ = std::move(arena);
    data_ = arena_->base + offset;
  }
  std::byte* data() const override { return data_; }
  size_t nbytes() const override { return nbytes_; }
  DType dtype() const override { return dtype_; }

 private:
  DType dtype_;
  size_t nbytes_;
  std::shared_ptr<RunArena> arena_;
  std::byte* data_ = nullptr;
};

// A storage record to fill from the file, and the CRC of each of its pieces, in order.
struct FillJob {
  const zip::Entry* entry;
  std::byte* dst;  // null for a small record: placed in its run's arena
  ArenaSlice* slice = nullptr;
  std::vector<uint32_t> piece_crcs;
  std::vector<uint64_t> piece_lens;
};

// One unit of parallel reading: a piece of a large record read into place, or a run of small
// records read together into a scratch buffer and copied out.
struct ReadTask {
  uint64_t span_begin, span_end;  // block-aligned file range to read
  // (job, piece index, record bytes [begin, end) covered by this task)
  struct Part {
    FillJob* job;
    size_t piece;
    uint64_t begin, end;
  };
  std::vector<Part> parts;
  std::byte* direct_dst = nullptr;  // where span_begin lands, for a piece read into place
};

void byteswap(std::byte* p, size_t nbytes, size_t elem) {
  // complex numbers swap each half
  if (elem == 16) elem = 8;
  for (size_t i = 0; i + elem <= nbytes; i += elem) std::reverse(p + i, p + i + elem);
}

// A storage named by a persistent id, its record not yet read.
struct PendingStorage {
  std::string key;
  DType dtype;
  uint64_t numel;
  std::shared_ptr<StorageData> storage;
};

struct PidInfo {
  std::string key;
  DType dtype;
  uint64_t numel;
};

PidInfo parse_pid(const Value& pid, size_t expected_len) {
  if (!pid.is_tuple() || pid.items().empty() || !pid.items()[0].is_string())
    fail(ErrorKind::kCorruption, "persistent id is not a ('storage', ...) tuple");
  const auto& t = pid.items();
  if (t[0].to_string() != "storage")
    fail(ErrorKind::kUnsafe, "persistent id of kind '", printable(t[0].to_string()), "' (only storages are allowed)");
  if (t.size() != expected_len)
    fail(ErrorKind::kCorruption, "storage persistent id has ", t.size(), " fields, expected ", expected_len);
  if (!t[1].is_object()) fail(ErrorKind::kCorruption, "storage type is ", t[1].kind_name());
  auto dtype = dtype_of_storage_class(t[1].object_type());
  if (!dtype)
    fail(ErrorKind::kUnsupported, "storage type '", printable(t[1].object_type()),
         "' is not supported (quantized tensors are not)");
  if (!t[2].is_string()) fail(ErrorKind::kCorruption, "storage key is ", t[2].kind_name());
  if (!t[3].is_string()) fail(ErrorKind::kCorruption, "storage location is ", t[3].kind_name());
  if (!t[4].is_int() || t[4].to_int() < 0) fail(ErrorKind::kCorruption, "storage size is not a non-negative int");
  return PidInfo{t[2].to_string(), *dtype, static_cast<uint64_t>(t[4].to_int())};
}

uint64_t checked_nbytes(uint64_t numel, DType dtype, uint64_t file_size, const std::string& key) {
  uint64_t elem = element_size(dtype);
  if (numel > file_size / elem)
    fail(ErrorKind::kCorruption, "storage '", printable(key), "' claims ", numel, " elements of ", elem,
         " bytes, more than the file holds (", file_size, " bytes)");
  return numel * elem;
}

class ArchiveReader {
 public:
  ArchiveReader(std::shared_ptr<io::MappedFile> file, const LoadOptions& options, VerifyReport* report)
      : file_(std::move(file)),
        options_(options),
        env_(options.env ? options.env : io::Env::Default()),
        report_(report) {
    limits_.max_depth = options.max_depth;
    limits_.max_objects = options.max_objects;
  }

  Value read() {
    const uint64_t size = file_->size();
    const auto* p = reinterpret_cast<const uint8_t*>(file_->data());
    if (report_) report_->file_size = size;
    if (size == 0) fail(ErrorKind::kCorruption, "empty file (0 bytes), not a checkpoint");
    if (size >= 4 && load_le32(p) == 0x04034b50) return read_zip();
    file_->mutable_range(0, size);  // the other formats read data() throughout: an object is fetched whole
    // safetensors before legacy: a safetensors header's length can begin with 0x80 too (0x380
    // bytes, say); a legacy file's first 8 bytes, read as that length, are far over the limit.
    if (safetensors::has_header(file_->data(), size)) return safetensors::read(file_, options_, report_);
    // Legacy files start with the pickled magic number (torch honours pickle_protocol there).
    if (size >= 2 && p[0] == 0x80 && p[1] >= 2 && p[1] <= 5) return read_legacy();
    if (safetensors::looks_like(file_->data(), size)) return safetensors::read(file_, options_, report_);
    if (size >= 8 && std::memcmp(p, "PYTORCH1", 8) == 0) fail(ErrorKind::kUnsupported, "pre-1.0 'PYTORCH1' archive");
    std::string head;
    for (uint64_t i = 0; i < std::min<uint64_t>(size, 4); ++i) head += str_cat(i ? " " : "", hex32(p[i]).substr(8));
    fail(ErrorKind::kCorruption,
         "not a PyTorch checkpoint (neither a zip archive, a legacy pickle nor safetensors; starts with ", head, ")");
  }

 private:
  std::shared_ptr<io::MappedFile> file_;
  const LoadOptions& options_;
  io::Env* env_;  // the arenas' memory
  VerifyReport* report_;
  pickle::Limits limits_;
  std::map<std::string, PendingStorage> storages_;
  std::vector<PendingStorage*> to_fill_;

  void check_crc(const std::string& name, const std::byte* data, uint64_t n, uint32_t stored, RecordReport* rr) {
    if (!options_.verify_checksums) return;
    if (stored == 0 && n > 0) return;  // written without CRCs (torch 2.6+ option): unchecked
    uint32_t crc = crc32_parallel(data, static_cast<size_t>(n));
    if (crc != stored)
      fail(ErrorKind::kCorruption, "record '", printable(name), "': CRC-32 mismatch (stored ", hex32(stored),
           ", computed ", hex32(crc), ")");
    if (rr) rr->crc_checked = true;
  }

  // --- zip (torch >= 1.6) -------------------------------------------------------------------
  Value read_zip() {
    const uint64_t size = file_->size();
    std::vector<zip::Entry> entries = zip::read_directory(
        file_->data(), size, [&](uint64_t off, void* dst, size_t n) { file_->read_at(off, dst, n); },
        [&](const std::vector<std::pair<uint64_t, uint64_t>>& ranges) { file_->prefetch(ranges); });
    if (entries.empty()) fail(ErrorKind::kCorruption, "zip archive has no records");
    std::string prefix;
    {
      const std::string& first = entries[0].name;
      auto slash = first.find('/');
      if (slash == std::string::npos || slash == 0)
        fail(ErrorKind::kCorruption, "not a PyTorch archive: record '", printable(first), "' is not in a subdirectory");
      prefix = first.substr(0, slash + 1);
    }
    // An object fetched by range (s3://) holds only what is asked for: fetch, in one go, every
    // record read through data() below (all but the tensors, read by read_at or on first use).
    std::vector<std::pair<uint64_t, uint64_t>> small;
    for (const auto& e : entries) {
      const bool tensor =
          e.method == 0 && e.name.size() > prefix.size() + 5 && e.name.compare(prefix.size(), 5, "data/") == 0;
      if (!tensor) small.emplace_back(e.data_offset, e.compressed_size);
    }
    file_->prefetch(small);
    std::unordered_map<std::string, const zip::Entry*> by_name;
    for (const auto& e : entries) {
      if (e.name.compare(0, prefix.size(), prefix) != 0)
        fail(ErrorKind::kCorruption, "record '", printable(e.name), "' is outside the archive directory '",
             printable(prefix), "'");
      by_name[e.name.substr(prefix.size())] = &e;
    }
    // TorchScript (torch.jit.save, LibTorch's torch::save): read as state dicts, see torchscript.h.
    const bool script = by_name.count("constants.pkl") > 0;
    auto record = [&](const std::string& n) -> const zip::Entry* {
      auto it = by_name.find(n);
      return it == by_name.end() ? nullptr : it->second;
    };
    if (report_) {
      report_->format = script ? "TorchScript zip (torch.jit.save / LibTorch torch::save)" : "zip (torch >= 1.6)";
      std::string buf;
      file_->mutable_range(0, size);  // every record is read: an object is fetched whole, in parallel
      for (const auto& e : entries) {
        RecordReport rr{e.name, e.data_offset, e.size, e.crc32, false};
        check_crc(e.name, entry_bytes(e, &buf), e.size, e.crc32, &rr);
        report_->records.push_back(rr);
      }
    }

    const zip::Entry* version = record("version");
    if (!version) version = record(".data/version");
    if (!version) fail(ErrorKind::kCorruption, "archive has no 'version' record");
    std::string text = read_small(*version);
    uint64_t v = 0;
    size_t digits = 0;
    while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9' && digits < 6)
      v = v * 10 + uint64_t(text[digits++] - '0');
    if (digits == 0 || v < 1 || v > 10)
      fail(ErrorKind::kUnsupported, "archive format version '", printable(text.substr(0, 16)),
           "' (supported: 1 to 10)");

    bool big_endian = false;
    if (const zip::Entry* bo = record("byteorder")) {
      std::string order = read_small(*bo);
      if (order == "big")
        big_endian = true;
      else if (order != "little")
        fail(ErrorKind::kCorruption, "byteorder record says '", printable(order.substr(0, 16)), "'");
    }

    const zip::Entry* pkl = record("data.pkl");
    if (!pkl) fail(ErrorKind::kCorruption, "archive has no 'data.pkl' record");
    std::string pickle_bytes;
    zip::read_entry(file_->data(), size, *pkl, &pickle_bytes);
    check_crc(pkl->name, reinterpret_cast<const std::byte*>(pickle_bytes.data()), pickle_bytes.size(), pkl->crc32,
              nullptr);

    auto load = [&](const Value& pid) -> Value {
      PidInfo info = parse_pid(pid, 5);
      PendingStorage& s = storage_for(info, [&](PendingStorage& ps) {
        const zip::Entry* e = record("data/" + info.key);
        if (!e)
          fail(ErrorKind::kCorruption, "storage '", printable(info.key), "' has no record 'data/", printable(info.key),
               "'");
        // The record's size is bounded by the file (stored) or the deflate ratio (compressed).
        const uint64_t elem = element_size(info.dtype);
        if (info.numel > e->size / elem || info.numel * elem != e->size)
          fail(ErrorKind::kCorruption, "record '", printable(e->name), "' has ", e->size,
               " bytes but its storage needs ", info.numel, " x ", elem, "-byte ", dtype_name(info.dtype));
        const uint64_t nbytes = e->size;
        bool mappable =
            options_.mmap && e->method == 0 && !big_endian && e->data_offset % element_size(info.dtype) == 0;
        if (mappable) {
          ps.storage = std::make_shared<MappedStorage>(file_, e->data_offset, static_cast<size_t>(nbytes), info.dtype);
          mapped_.push_back({&ps, e});
        } else if (e->method == 0 && !big_endian && nbytes >= kOwnMapping) {
          auto slice = std::make_shared<ArenaSlice>(info.dtype, static_cast<size_t>(nbytes));
          const uint64_t head = e->data_offset % kBlock;
          slice->place(std::make_shared<RunArena>(env_, static_cast<size_t>(align_up(head + nbytes + kBlock))), head);
          ps.storage = std::move(slice);
          zip_fill_.push_back({&ps, e});
        } else if (e->method == 0 && !big_endian) {
          ps.storage = std::make_shared<ArenaSlice>(info.dtype, static_cast<size_t>(nbytes));
          zip_fill_.push_back({&ps, e});
        } else {
          ps.storage = make_storage(info.dtype, static_cast<size_t>(nbytes));
          zip_fill_.push_back({&ps, e});
        }
      });
      return storage_value(s);
    };
    script::Classes classes;
    if (script) {
      limits_.script_objects = true;
      std::string source;
      for (const auto& [name, e] : by_name) {
        if (name.rfind("code/", 0) != 0 || name.size() < 8 || name.compare(name.size() - 3, 3, ".py") != 0) continue;
        zip::read_entry(file_->data(), size, *e, &source);
        check_crc(e->name, reinterpret_cast<const std::byte*>(source.data()), source.size(), e->crc32, nullptr);
        script::parse_classes(name.substr(5, name.size() - 8), source, &classes);
      }
    }
    Value root = unpickle_with_context(pkl->name, reinterpret_cast<const std::byte*>(pickle_bytes.data()),
                                       pickle_bytes.size(), load, nullptr);
    if (script) {
      try {
        root = script::to_state(root, classes);
      } catch (const Error& e) {
        rethrow_with_context(e, pkl->name);
      }
    }

    // Fill owned storages and check CRCs: stored records in parallel, straight into place.
    progress_total_ = 0;
    for (auto& [ps, e] : zip_fill_) progress_total_ += e->size;
    for (auto& [ps, e] : mapped_)
      if (options_.verify_checksums) progress_total_ += e->size;
    std::string buf;
    std::vector<FillJob> jobs;
    for (auto& [ps, e] : zip_fill_) {
      std::byte* dst = ps->storage->data();
      if (e->method == 0 && !big_endian) {
        auto* slice = dynamic_cast<ArenaSlice*>(ps->storage.get());
        bool unplaced = slice != nullptr && slice->data() == nullptr;  // a small record: placed with its run
        jobs.push_back(FillJob{e, unplaced ? nullptr : dst, unplaced ? slice : nullptr, {}, {}});
        continue;
      }
      if (e->method == 0) {
        if (e->size > 0) file_->read_at(e->data_offset, dst, static_cast<size_t>(e->size));
      } else {
        file_->mutable_range(e->data_offset, e->compressed_size);
        zip::read_entry(file_->data(), size, *e, &buf);
        std::memcpy(dst, buf.data(), buf.size());
      }
      check_crc(e->name, dst, e->size, e->crc32, nullptr);
      if (big_endian) byteswap(dst, static_cast<size_t>(e->size), element_size(ps->dtype));
      advance(e->size);
    }
    fill_parallel(jobs);
    for (auto& [ps, e] : mapped_) {
      if (!options_.verify_checksums) continue;  // data() of an s3:// object fetches the record
      check_crc(e->name, ps->storage->data(), e->size, e->crc32, nullptr);
      advance(e->size);
    }
    if (options_.progress) options_.progress(progress_total_, progress_total_);
    return root;
  }

  // Progress: bytes of tensor data read (or checked), reported from whichever thread read them.
  std::mutex progress_mu_;
  uint64_t progress_total_ = 0, progress_done_ = 0;
  void advance(uint64_t n) {
    if (!options_.progress || n == 0) return;
    std::lock_guard<std::mutex> lock(progress_mu_);
    progress_done_ = std::min(progress_total_, progress_done_ + n);
    if (progress_done_ < progress_total_) options_.progress(progress_done_, progress_total_);
  }

  std::vector<std::pair<PendingStorage*, const zip::Entry*>> zip_fill_, mapped_;

  // Reads every job's record into its destination with all cores. Large records are cut at
  // block-aligned 8 MiB boundaries and read into place; runs of small records are read as one
  // span into an arena whose slices become their storages. A span mostly in the page cache is read through
  // it; otherwise O_DIRECT skips the cache (several times faster here when cold). Each piece's
  // CRC is computed while it is hot, and the pieces' CRCs are joined per record.
  void fill_parallel(std::vector<FillJob>& jobs) {
    std::sort(jobs.begin(), jobs.end(),
              [](const FillJob& a, const FillJob& b) { return a.entry->data_offset < b.entry->data_offset; });
    std::vector<ReadTask> tasks;
    ReadTask group{0, 0, {}, nullptr};
    auto flush_group = [&] {
      if (!group.parts.empty()) {
        // One arena for the run, read straight into; every record becomes a slice of it.
        auto arena = std::make_shared<RunArena>(env_, static_cast<size_t>(group.span_end - group.span_begin));
        for (const auto& part : group.parts) {
          size_t at = static_cast<size_t>(part.job->entry->data_offset - group.span_begin);
          part.job->slice->place(arena, at);
          part.job->dst = arena->base + at;
        }
        group.direct_dst = arena->base;
        tasks.push_back(std::move(group));
      }
      group = ReadTask{0, 0, {}, nullptr};
    };
    for (FillJob& job : jobs) {
      const uint64_t begin = job.entry->data_offset, end = begin + job.entry->size;
      if (job.entry->size == 0) continue;
      if (job.slice == nullptr) {
        flush_group();
        // Pieces end at block-aligned offsets, so no two tasks write the same bytes.
        uint64_t cut = begin;
        while (cut < end) {
          uint64_t next = std::min(end, align_down(cut) + kPiece);
          // The first piece starts up to a block before the storage, in the arena's head slack:
          // a signed offset (unsigned wrap-around would be pointer overflow).
          auto lead = static_cast<std::ptrdiff_t>(align_down(cut)) - static_cast<std::ptrdiff_t>(begin);
          ReadTask t{align_down(cut), align_up(next), {}, job.dst + lead};
          t.parts.push_back({&job, job.piece_crcs.size(), cut - begin, next - begin});
          job.piece_crcs.push_back(0);
          job.piece_lens.push_back(next - cut);
          tasks.push_back(std::move(t));
          cut = next;
        }
        continue;
      }
      if (!group.parts.empty() && (align_up(end) - group.span_begin > kPiece || begin > group.span_end + kBlock))
        flush_group();
      if (group.parts.empty()) group.span_begin = align_down(begin);
      group.span_end = align_up(end);
      group.parts.push_back({&job, 0, 0, job.entry->size});
      job.piece_crcs.push_back(0);
      job.piece_lens.push_back(job.entry->size);
    }
    flush_group();

    parallel_for(tasks.size(), std::thread::hardware_concurrency(), [&](size_t i) { run_task(tasks[i]); });

    if (!options_.verify_checksums) return;
    for (const FillJob& job : jobs) {
      if (job.entry->size == 0 || job.entry->crc32 == 0) continue;  // no stored CRC: unchecked
      uint32_t crc = job.piece_crcs[0];
      for (size_t k = 1; k < job.piece_crcs.size(); ++k) crc = crc32_combine(crc, job.piece_crcs[k], job.piece_lens[k]);
      if (crc != job.entry->crc32)
        fail(ErrorKind::kCorruption, "record '", printable(job.entry->name), "': CRC-32 mismatch (stored ",
             hex32(job.entry->crc32), ", computed ", hex32(crc), ")");
    }
  }

  void run_task(ReadTask& t) {
    const uint64_t file_size = file_->size();
    const bool cached = file_->resident_fraction(t.span_begin, t.span_end - t.span_begin) > 0.5;
    std::byte* dst = t.direct_dst;
    if (cached) {  // through the page cache: exactly the bytes that exist
      uint64_t end = std::min(t.span_end, file_size);
      file_->read_at(t.span_begin, dst, static_cast<size_t>(end - t.span_begin));
    } else {
      file_->read_direct_at(t.span_begin, dst, static_cast<size_t>(t.span_end - t.span_begin));
    }
    for (const ReadTask::Part& part : t.parts) {
      const uint64_t file_begin = part.job->entry->data_offset + part.begin;
      const std::byte* src = dst + (file_begin - t.span_begin);
      const size_t n = static_cast<size_t>(part.end - part.begin);
      if (options_.verify_checksums) part.job->piece_crcs[part.piece] = crc32_update(0, src, n);
      advance(n);
    }
  }

  // The payload of `e`: a pointer into the mapping when stored, else inflated into `buf`.
  const std::byte* entry_bytes(const zip::Entry& e, std::string* buf) {
    if (e.method == 0) return file_->mutable_range(e.data_offset, e.size);
    file_->mutable_range(e.data_offset, e.compressed_size);
    zip::read_entry(file_->data(), file_->size(), e, buf);
    return reinterpret_cast<const std::byte*>(buf->data());
  }

  std::string read_small(const zip::Entry& e) {
    if (e.size > 4096)
      fail(ErrorKind::kCorruption, "record '", printable(e.name), "' is ", e.size, " bytes, expected a few");
    std::string s;
    zip::read_entry(file_->data(), file_->size(), e, &s);
    check_crc(e.name, reinterpret_cast<const std::byte*>(s.data()), s.size(), e.crc32, nullptr);
    return s;
  }

  template <class Create>
  PendingStorage& storage_for(const PidInfo& info, Create create) {
    auto it = storages_.find(info.key);
    if (it != storages_.end()) {
      if (it->second.dtype != info.dtype || it->second.numel != info.numel)
        fail(ErrorKind::kCorruption, "storage '", printable(info.key),
             "' is named twice with different types or sizes");
      return it->second;
    }
    PendingStorage& ps = storages_[info.key];
    ps.key = info.key;
    ps.dtype = info.dtype;
    ps.numel = info.numel;
    create(ps);
    if (report_) {
      report_->storages++;
      report_->tensor_bytes += ps.storage->nbytes();
    }
    return ps;
  }

  static Value storage_value(const PendingStorage& s) {
    TensorRef t;
    t.storage = s.storage;
    t.dtype = s.dtype;
    t.sizes = {static_cast<int64_t>(s.numel)};
    t.strides = {1};
    return Value(std::move(t));
  }

  Value unpickle_with_context(const std::string& what, const std::byte* data, size_t n,
                              const pickle::PersistentLoad& load, size_t* consumed) {
    try {
      return pickle::unpickle(data, n, load, limits_, consumed);
    } catch (const Error& e) {
      rethrow_with_context(e, what);
    }
  }

  // --- legacy (torch < 1.6): five pickles, then each storage as <u64 numel><bytes> -----------
  Value read_legacy() {
    const uint64_t size = file_->size();
    const std::byte* base = file_->data();
    uint64_t pos = 0;
    auto next_pickle = [&](const char* what, const pickle::PersistentLoad& load) {
      size_t used = 0;
      Value v = unpickle_with_context(what, base + pos, static_cast<size_t>(size - pos), load, &used);
      pos += used;
      return v;
    };
    if (report_) report_->format = "legacy (torch < 1.6)";
    Value magic = next_pickle("legacy magic number", nullptr);
    static const char kMagic[] = "\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19";  // 0x1950a86a20f9469cfc6c, LE
    if (magic.kind() != Value::Kind::kBigInt || magic.big_int_bytes() != std::string(kMagic, 10))
      fail(ErrorKind::kCorruption, "legacy file with a wrong magic number");
    Value proto = next_pickle("legacy protocol version", nullptr);
    if (!proto.is_int() || proto.to_int() != 1001)
      fail(ErrorKind::kUnsupported, "legacy protocol version ", short_repr(proto), " (expected 1001)");
    Value sys_info = next_pickle("legacy sys_info", nullptr);
    if (sys_info.is_dict()) {
      const Value* le = sys_info.dict().find("little_endian");
      if (le && le->is_bool() && !le->to_bool()) fail(ErrorKind::kUnsupported, "big-endian legacy file");
    }
    auto load = [&](const Value& pid) -> Value {
      PidInfo info = parse_pid(pid, 6);
      PendingStorage& s = storage_for(info, [&](PendingStorage& ps) {
        uint64_t nbytes = checked_nbytes(info.numel, info.dtype, size, info.key);
        ps.storage = make_storage(info.dtype, static_cast<size_t>(nbytes));
      });
      return storage_value(s);
    };
    Value root = next_pickle("legacy data pickle", load);
    Value keys = next_pickle("legacy storage key list", nullptr);
    if (!keys.is_list()) fail(ErrorKind::kCorruption, "legacy storage key list is ", keys.kind_name());
    for (const Value& k : keys.items()) {
      if (!k.is_string()) fail(ErrorKind::kCorruption, "legacy storage key is ", k.kind_name());
      auto it = storages_.find(k.to_string());
      if (it == storages_.end())
        fail(ErrorKind::kCorruption, "legacy storage '", printable(k.to_string()), "' is listed but never used");
      PendingStorage& ps = it->second;
      if (size - pos < 8)
        fail(ErrorKind::kCorruption, "legacy file truncated before storage '", printable(ps.key), "'");
      uint64_t numel = load_le64(base + pos);
      if (numel != ps.numel)
        fail(ErrorKind::kCorruption, "legacy storage '", printable(ps.key), "' has ", numel, " elements on disk but ",
             ps.numel, " in the pickle");
      pos += 8;
      uint64_t nbytes = ps.storage->nbytes();
      if (size - pos < nbytes)
        fail(ErrorKind::kCorruption, "legacy storage '", printable(ps.key), "' needs ", nbytes, " bytes at offset ",
             pos, " but the file ends at ", size, " (truncated?)");
      if (nbytes > 0) file_->read_at(pos, ps.storage->data(), static_cast<size_t>(nbytes));
      if (report_) report_->records.push_back(RecordReport{"storage " + ps.key, pos, nbytes, 0, false});
      pos += nbytes;
      ps.key.clear();  // mark as filled
    }
    for (const auto& [key, ps] : storages_)
      if (!ps.key.empty())
        fail(ErrorKind::kCorruption, "legacy storage '", printable(key), "' is missing from the key list");
    if (options_.progress) options_.progress(file_->size(), file_->size());
    return root;
  }
};

size_t count_tensors(const Value& v, std::unordered_map<const void*, bool>& seen) {
  if (ValueAccess::node(v) && !seen.emplace(ValueAccess::node(v), true).second) return 0;
  switch (v.kind()) {
    case Value::Kind::kTensor:
      return 1;
    case Value::Kind::kList:
    case Value::Kind::kTuple: {
      size_t n = 0;
      for (const auto& x : v.items()) n += count_tensors(x, seen);
      return n;
    }
    case Value::Kind::kDict: {
      size_t n = 0;
      for (const auto& [k, x] : v.dict()) n += count_tensors(x, seen);
      return n + count_tensors(v.dict().attributes(), seen);
    }
    case Value::Kind::kObject:
      return count_tensors(v.object_args(), seen);
    default:
      return 0;
  }
}

}  // namespace

std::shared_ptr<StorageData> mapped_storage(std::shared_ptr<io::MappedFile> file, uint64_t offset, size_t nbytes,
                                            DType dtype) {
  return std::make_shared<MappedStorage>(std::move(file), offset, nbytes, dtype);
}

Value read_archive(io::Env* env, const std::string& path, const LoadOptions& options, VerifyReport* report) {
  std::shared_ptr<io::MappedFile> file;
  try {
    file = env->map_file(path);
  } catch (const Error& e) {
    rethrow_naming(e, path);
  }
  return read_archive(std::move(file), options, report);
}

Value read_archive(std::shared_ptr<io::MappedFile> file, const LoadOptions& options, VerifyReport* report) {
  const std::string path = file->path();
  try {
    LoadOptions o = options;
    if (!o.mmap && file->prefers_whole_reads()) {
      // An object store: an eager load needs every byte, so fetch the object in a few large
      // ranged GETs (not one or two per record) into memory the tensors then view: the object
      // is held once, not fetched and then copied. Every record's CRC is still checked.
      file->prefetch({{0, file->size()}});
      o.mmap = true;
    }
    ArchiveReader reader(file, o, report);
    Value root = reader.read();
    if (report) {
      std::unordered_map<const void*, bool> seen;
      report->tensors = count_tensors(root, seen);
    }
    return root;
  } catch (const Error& e) {
    rethrow_naming(e, path);
  }
}

std::string archive_prefix(const std::string& path) {
  std::string base = io::basename_of(path);
  auto dot = base.rfind('.');
  if (dot != std::string::npos && dot > 0) base = base.substr(0, dot);
  bool plain = !base.empty();
  for (char c : base)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.')) plain = false;
  return plain ? base : "archive";
}

PreparedArchive prepare_archive(const Value& value) {
  // Storages in first-use order while pickling; one record per distinct storage.
  PreparedArchive out;
  std::unordered_map<const void*, std::string> keys;
  auto storage_key = [&](const TensorRef& t) -> std::string {
    auto [it, inserted] = keys.emplace(t.storage->identity(), std::to_string(out.storages.size()));
    if (inserted) {
      out.storages.push_back(t.storage);
    } else if (out.storages[std::stoul(it->second)]->dtype() != t.dtype) {
      fail(ErrorKind::kInvalidArgument, "two tensors share a storage but have dtypes ",
           dtype_name(out.storages[std::stoul(it->second)]->dtype()), " and ", dtype_name(t.dtype),
           " (PyTorch cannot save that either; clone one)");
    }
    return it->second;
  };
  out.pickle = pickle::pickle(value, storage_key);
  return out;
}

SavedFile write_prepared(io::Env* env, const PreparedArchive& archive, const std::string& path,
                         const SaveOptions& options, bool sync_dir) {
  if (weights_only::audit_enabled()) {
    const std::string why = weights_only::first_violation(archive.pickle.data(), archive.pickle.size());
    if (!why.empty())
      fail(ErrorKind::kInvalidArgument, path,
           ": not written: torch >= 2.6's torch.load (weights_only=True, its default) would refuse its data.pkl: ", why,
           " (checked because CKPT_AUDIT_WEIGHTS_ONLY=1)");
  }
  const std::string prefix = archive_prefix(path) + "/";
  uint64_t total = 0;
  for (const auto& s : archive.storages) total += s->nbytes();
  // Large durable saves bypass the page cache (here 5x faster than buffered write + fsync).
  const bool direct = options.durable && total >= kDirectIoThreshold;
  if (options.check_free_space) check_free_space(env, archive, path);
  io::AtomicFile out(env, path, direct, options.create_only);
  std::vector<std::pair<std::string, uint64_t>> records = {{prefix + "data.pkl", archive.pickle.size()},
                                                            {prefix + "byteorder", 6}};
  for (size_t i = 0; i < archive.storages.size(); ++i)
    records.emplace_back(prefix + "data/" + std::to_string(i), archive.storages[i]->nbytes());
  records.emplace_back(prefix + "version", 2);
  out.file().expect_size(zip::archive_size(records));
  zip::Writer zw(&out.file());
  if (options.progress) zw.set_progress(options.progress, total + archive.pickle.size());
  zw.add(records[0].first, archive.pickle.data(), archive.pickle.size());
  zw.add(records[1].first, "little", 6);
  for (size_t i = 0; i < archive.storages.size(); ++i)
    zw.add(records[2 + i].first, archive.storages[i]->data(), archive.storages[i]->nbytes());
  zw.add(records.back().first, "3\n", 2);
  zw.finish();
  SavedFile result{path, zw.bytes_written(), zw.content_crc()};
  if (sync_dir)
    out.commit(options.durable);
  else
    out.commit_without_dir_sync(options.durable);
  return result;
}

uint64_t estimated_size(const PreparedArchive& archive) {
  uint64_t n = archive.pickle.size() + 4096;
  for (const auto& s : archive.storages) n += s->nbytes() + 256;
  return n;
}

void check_free_space(io::Env* env, const PreparedArchive& archive, const std::string& path) {
  const uint64_t needed = estimated_size(archive);
  uint64_t available = 0;
  try {
    available = env->free_space(io::dirname_of(path));
  } catch (const Error&) {
    return;  // no answer (a missing directory, ...): the write itself reports the real problem
  }
  if (available < needed)
    fail(ErrorKind::kIO, path, ": not enough disk space: the checkpoint needs ", human_bytes(needed), " (", needed,
         " bytes), ", human_bytes(available), " (", available, " bytes) available");
}

uint32_t read_content_crc(io::Env* env, const std::string& path) {
  try {
    auto file = env->map_file(path);
    return zip::content_crc(zip::read_directory(
        file->data(), file->size(), [&](uint64_t off, void* dst, size_t n) { file->read_at(off, dst, n); },
        [&](const std::vector<std::pair<uint64_t, uint64_t>>& ranges) { file->prefetch(ranges); }));
  } catch (const Error& e) {
    rethrow_naming(e, path);
  }
}

SavedFile write_archive(io::Env* env, const Value& value, const std::string& path, const SaveOptions& options) {
  try {
    return write_prepared(env, prepare_archive(value), path, options);
  } catch (const Error& e) {
    rethrow_naming(e, path);
  }
}

}  // namespace ckpt::format

namespace ckpt {

Value load(const std::string& path, const LoadOptions& options) {
  return format::read_archive(options.env ? options.env : io::Env::Default(), path, options);
}

SavedFile save(const Value& value, const std::string& path, const SaveOptions& options) {
  return format::write_archive(options.env ? options.env : io::Env::Default(), value, path, options);
}

SavedFile save_safetensors(const Value& value, const std::string& path, const SaveOptions& options) {
  return safetensors::write(options.env ? options.env : io::Env::Default(), value, path, options);
}

std::string save_to_bytes(const Value& value) {
  io::MemoryEnv env;
  SaveOptions options;
  options.durable = false;
  options.check_free_space = false;
  format::write_archive(&env, value, "archive.pt", options);
  return env.take("archive.pt");
}

Value load_from_bytes(std::string bytes, const LoadOptions& options) {
  LoadOptions o = options;
  o.mmap = false;
  return format::read_archive(io::memory_file(std::move(bytes), "<bytes>"), o);
}

void save(const Value& value, std::ostream& out) {
  const std::string bytes = save_to_bytes(value);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  out.flush();
  if (!out) fail(ErrorKind::kIO, "<stream>: writing the checkpoint failed");
}

Value load(std::istream& in, const LoadOptions& options) {
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) fail(ErrorKind::kIO, "<stream>: reading the checkpoint failed");
  LoadOptions o = options;
  o.mmap = false;
  return format::read_archive(io::memory_file(std::move(bytes), "<stream>"), o);
}

VerifyReport verify(const std::string& path, const LoadOptions& load_options) {
  VerifyReport report;
  LoadOptions options = load_options;
  options.mmap = true;
  options.verify_checksums = true;
  format::read_archive(options.env ? options.env : io::Env::Default(), path, options, &report);
  return report;
}

}  // namespace ckpt
