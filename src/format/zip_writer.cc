#include <algorithm>

#include "format/zip.h"
#include "util/bytes.h"
#include "util/crc32.h"
#include "util/errors.h"

namespace ckpt::zip {
namespace {
constexpr uint64_t kAlignment = 64;
constexpr uint64_t k32 = 0xFFFFFFFF;
}  // namespace

namespace {

// A local header's extra field: ZIP64 sizes and offset where needed, then PyTorch's "FB" block
// padding the record's data to kAlignment.
std::string local_extra(size_t name_size, uint64_t size, uint64_t cursor) {
  const bool zip64 = size >= k32 || cursor >= k32;
  uint64_t start = cursor + 30 + name_size + 4;
  std::string extra;
  if (zip64) {
    uint16_t len = (size >= k32 ? 16 : 0) + (cursor >= k32 ? 8 : 0);
    put_le16(extra, 0x0001);
    put_le16(extra, len);
    if (size >= k32) {
      put_le64(extra, size);
      put_le64(extra, 0);  // compressed size: PyTorch writes 0 here
    }
    if (cursor >= k32) put_le64(extra, cursor);
    start += 4 + len;
  }
  uint64_t pad = (kAlignment - start % kAlignment) % kAlignment;
  put_le16(extra, 0x4246);  // "FB": PyTorch's alignment padding block
  put_le16(extra, static_cast<uint16_t>(pad));
  extra.append(static_cast<size_t>(pad), 'Z');
  return extra;
}

uint64_t descriptor_size(uint64_t size, uint64_t cursor) {
  if (size == 0) return 0;
  return size >= k32 || cursor >= k32 ? 24 : 16;
}

uint64_t central_entry_size(size_t name_size, uint64_t size, uint64_t header_offset) {
  const bool big = size >= k32, far = header_offset >= k32;
  return 46 + name_size + (big || far ? 4 + (big ? 16 : 0) + (far ? 8 : 0) : 0);
}

constexpr uint64_t kTailSize = 56 + 20 + 22;  // ZIP64 end record, its locator, end record

}  // namespace

uint64_t archive_size(const std::vector<std::pair<std::string, uint64_t>>& records) {
  uint64_t cursor = 0, directory = 0;
  for (const auto& [name, size] : records) {
    directory += central_entry_size(name.size(), size, cursor);
    cursor += 30 + name.size() + local_extra(name.size(), size, cursor).size() + size + descriptor_size(size, cursor);
  }
  return cursor + directory + kTailSize;
}

Writer::Writer(io::WritableFile* file) : file_(file), stream_(file) {}

void Writer::emit(const void* data, size_t n, uint32_t* crc) {
  stream_.append(data, n, crc);
  offset_ += n;
}

void Writer::emit_payload(const void* data, uint64_t n, uint32_t* crc) {
  constexpr uint64_t kSlice = uint64_t{32} << 20;  // progress granularity
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    const uint64_t k = std::min(n, kSlice);
    emit(p, static_cast<size_t>(k), crc);
    p += k;
    n -= k;
    progress_done_ += k;
    if (progress_) progress_(std::min({progress_done_, progress_total_, file_->acknowledged()}), progress_total_);
  }
}

uint32_t Writer::content_crc() const {
  uint32_t crc = 0;
  for (const Record& r : records_) crc = crc32_combine(crc, r.crc, r.size);
  return crc;
}

uint32_t content_crc(const std::vector<Entry>& entries) {
  uint32_t crc = 0;
  for (const Entry& e : entries) crc = crc32_combine(crc, e.crc32, e.size);
  return crc;
}

void Writer::add(const std::string& name, const void* data, uint64_t size) {
  const uint64_t cursor = offset_;
  const bool zip64 = size >= k32 || cursor >= k32;

  // Local header, APPNOTE 4.3.7; sizes and CRC live in the data descriptor (flag bit 3).
  std::string h;
  put_le32(h, 0x04034b50);
  put_le16(h, 0);                           // version needed (as PyTorch writes it)
  put_le16(h, size > 0 ? 0x0808 : 0x0800);  // descriptor follows | UTF-8 name
  put_le16(h, 0);                           // method: stored
  put_le32(h, 0);                           // time, date
  put_le32(h, 0);                           // crc (in the descriptor)
  put_le32(h, 0);                           // compressed size
  put_le32(h, 0);                           // size
  const std::string extra = local_extra(name.size(), size, cursor);
  put_le16(h, static_cast<uint16_t>(name.size()));
  put_le16(h, static_cast<uint16_t>(extra.size()));
  h += name;
  h += extra;
  emit(h.data(), h.size());

  uint32_t crc = 0;
  emit_payload(data, size, &crc);

  if (size > 0) {  // data descriptor, APPNOTE 4.3.9
    std::string d;
    put_le32(d, 0x08074b50);
    put_le32(d, crc);
    if (zip64) {
      put_le64(d, size);
      put_le64(d, size);
    } else {
      put_le32(d, static_cast<uint32_t>(size));
      put_le32(d, static_cast<uint32_t>(size));
    }
    emit(d.data(), d.size());
  }
  records_.push_back(Record{name, cursor, size, crc});
}

void Writer::finish() {
  const uint64_t cd_offset = offset_;
  std::string cd;
  for (const Record& r : records_) {  // APPNOTE 4.3.12
    bool big = r.size >= k32, far = r.header_offset >= k32;
    std::string extra;
    if (big || far) {
      put_le16(extra, 0x0001);
      put_le16(extra, static_cast<uint16_t>((big ? 16 : 0) + (far ? 8 : 0)));
      if (big) {
        put_le64(extra, r.size);
        put_le64(extra, r.size);
      }
      if (far) put_le64(extra, r.header_offset);
    }
    put_le32(cd, 0x02014b50);
    put_le16(cd, 0);  // version made by
    put_le16(cd, 0);  // version needed
    put_le16(cd, r.size > 0 ? 0x0808 : 0x0800);
    put_le16(cd, 0);  // stored
    put_le32(cd, 0);  // time, date
    put_le32(cd, r.crc);
    put_le32(cd, big ? uint32_t(k32) : static_cast<uint32_t>(r.size));
    put_le32(cd, big ? uint32_t(k32) : static_cast<uint32_t>(r.size));
    put_le16(cd, static_cast<uint16_t>(r.name.size()));
    put_le16(cd, static_cast<uint16_t>(extra.size()));
    put_le16(cd, 0);  // comment
    put_le16(cd, 0);  // disk
    put_le16(cd, 0);  // internal attributes
    put_le32(cd, 0);  // external attributes
    put_le32(cd, far ? uint32_t(k32) : static_cast<uint32_t>(r.header_offset));
    cd += r.name;
    cd += extra;
  }
  const uint64_t cd_size = cd.size();
  const uint64_t n = records_.size();
  const uint64_t z64_offset = cd_offset + cd_size;
  // ZIP64 end of central directory record (4.3.14), always written, as PyTorch does.
  put_le32(cd, 0x06064b50);
  put_le64(cd, 44);
  put_le16(cd, 0x031E);
  put_le16(cd, 45);
  put_le32(cd, 0);
  put_le32(cd, 0);
  put_le64(cd, n);
  put_le64(cd, n);
  put_le64(cd, cd_size);
  put_le64(cd, cd_offset);
  // ZIP64 locator (4.3.15).
  put_le32(cd, 0x07064b50);
  put_le32(cd, 0);
  put_le64(cd, z64_offset);
  put_le32(cd, 1);
  // End of central directory (4.3.16).
  put_le32(cd, 0x06054b50);
  put_le16(cd, 0);
  put_le16(cd, 0);
  put_le16(cd, static_cast<uint16_t>(std::min<uint64_t>(n, 0xFFFF)));
  put_le16(cd, static_cast<uint16_t>(std::min<uint64_t>(n, 0xFFFF)));
  put_le32(cd, static_cast<uint32_t>(std::min<uint64_t>(cd_size, k32)));
  put_le32(cd, cd_offset >= k32 ? uint32_t(k32) : static_cast<uint32_t>(cd_offset));
  put_le16(cd, 0);
  emit(cd.data(), cd.size());
  stream_.finish();
}

}  // namespace ckpt::zip
