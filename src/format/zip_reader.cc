#include <zlib.h>

#include <algorithm>
#include <unordered_set>

#include "format/zip.h"
#include "util/bytes.h"
#include "util/errors.h"
#include "util/text.h"

namespace ckpt::zip {
namespace {

constexpr uint32_t kLocalSig = 0x04034b50, kCentralSig = 0x02014b50, kEocdSig = 0x06054b50;
constexpr uint32_t kZip64EocdSig = 0x06064b50, kZip64LocatorSig = 0x07064b50;
constexpr uint64_t kEocdSize = 22, kLocatorSize = 20, kZip64EocdSize = 56;
constexpr uint64_t kCentralSize = 46, kLocalSize = 30;

void check_name(const std::string& name) {
  if (name.empty()) fail(ErrorKind::kCorruption, "zip entry with an empty name");
  if (name[0] == '/' || name.find('\\') != std::string::npos || name.find('\0') != std::string::npos)
    fail(ErrorKind::kUnsafe, "zip entry name '", printable(name), "' is absolute or has forbidden characters");
  size_t start = 0;
  while (start <= name.size()) {
    size_t end = name.find('/', start);
    if (end == std::string::npos) end = name.size();
    if (name.compare(start, end - start, "..") == 0)
      fail(ErrorKind::kUnsafe, "zip entry name '", printable(name), "' escapes the archive with '..'");
    start = end + 1;
  }
}

}  // namespace

std::vector<Entry> read_directory(const std::byte* data, uint64_t size, const ReadAt& read_local,
                                  const Prefetch& prefetch) {
  const auto* p = reinterpret_cast<const uint8_t*>(data);
  if (size < kEocdSize)
    fail(ErrorKind::kCorruption, "file is ", size, " bytes, too short for a zip archive (at least 22)");

  // 4.3.16: the EOCD is the last 22 bytes plus a comment of up to 65535 bytes.
  uint64_t eocd = UINT64_MAX;
  uint64_t lowest = size >= kEocdSize + 0xFFFF ? size - kEocdSize - 0xFFFF : 0;
  for (uint64_t pos = size - kEocdSize + 1; pos-- > lowest;) {
    if (load_le32(p + pos) == kEocdSig && pos + kEocdSize + load_le16(p + pos + 20) == size) {
      eocd = pos;
      break;
    }
  }
  if (eocd == UINT64_MAX)
    fail(ErrorKind::kCorruption, "no end-of-central-directory record: truncated or not a zip archive");

  uint64_t entries = load_le16(p + eocd + 10);
  uint64_t cd_size = load_le32(p + eocd + 12);
  uint64_t cd_offset = load_le32(p + eocd + 16);
  uint64_t cd_limit = eocd;  // the directory must end before this

  // 4.3.15 / 4.3.14: ZIP64 locator just before the EOCD, pointing at the ZIP64 EOCD record.
  if (eocd >= kLocatorSize && load_le32(p + eocd - kLocatorSize) == kZip64LocatorSig) {
    uint64_t z64 = load_le64(p + eocd - kLocatorSize + 8);
    if (z64 > eocd - kLocatorSize || eocd - kLocatorSize - z64 < kZip64EocdSize)
      fail(ErrorKind::kCorruption, "ZIP64 end record offset ", z64, " is outside the file");
    if (load_le32(p + z64) != kZip64EocdSig) fail(ErrorKind::kCorruption, "no ZIP64 end record at offset ", z64);
    entries = load_le64(p + z64 + 32);
    cd_size = load_le64(p + z64 + 40);
    cd_offset = load_le64(p + z64 + 48);
    cd_limit = z64;
  } else if (entries == 0xFFFF || cd_size == 0xFFFFFFFF || cd_offset == 0xFFFFFFFF) {
    fail(ErrorKind::kCorruption, "end record needs ZIP64 but the ZIP64 locator is missing");
  }
  if (cd_offset > cd_limit || cd_size > cd_limit - cd_offset)
    fail(ErrorKind::kCorruption, "central directory [", cd_offset, ", +", cd_size,
         ") lies outside the file (directory must end by ", cd_limit, "; truncated file?)");
  if (entries > cd_size / kCentralSize)
    fail(ErrorKind::kCorruption, "directory claims ", entries, " entries but has room for ", cd_size / kCentralSize);
  // A file fetched by range (an s3:// object) holds only what was asked for.
  if (prefetch) prefetch({{cd_offset, cd_size}});

  std::vector<Entry> out;
  out.reserve(static_cast<size_t>(entries));
  std::unordered_set<std::string> names;
  uint64_t pos = cd_offset;
  const uint64_t cd_end = cd_offset + cd_size;
  for (uint64_t i = 0; i < entries; ++i) {
    if (cd_end - pos < kCentralSize || load_le32(p + pos) != kCentralSig)
      fail(ErrorKind::kCorruption, "central directory entry ", i, " at offset ", pos, " is malformed");
    Entry e;
    e.flags = load_le16(p + pos + 8);
    e.method = load_le16(p + pos + 10);
    e.crc32 = load_le32(p + pos + 16);
    e.compressed_size = load_le32(p + pos + 20);
    e.size = load_le32(p + pos + 24);
    uint64_t name_len = load_le16(p + pos + 28), extra_len = load_le16(p + pos + 30),
             comment_len = load_le16(p + pos + 32);
    e.header_offset = load_le32(p + pos + 42);
    if (cd_end - pos - kCentralSize < name_len + extra_len + comment_len)
      fail(ErrorKind::kCorruption, "central directory entry ", i, " runs past the directory");
    e.name.assign(reinterpret_cast<const char*>(p + pos + kCentralSize), static_cast<size_t>(name_len));

    // 4.5.3: ZIP64 extended information, holding only the fields that overflowed, in order.
    const uint8_t* x = p + pos + kCentralSize + name_len;
    for (uint64_t off = 0; off + 4 <= extra_len;) {
      uint16_t id = load_le16(x + off), len = load_le16(x + off + 2);
      if (off + 4 + len > extra_len)
        fail(ErrorKind::kCorruption, "entry '", printable(e.name), "': extra field runs past its end");
      if (id == 0x0001) {
        const uint8_t* f = x + off + 4;
        uint64_t avail = len;
        auto take = [&](uint64_t* field) {
          if (*field != 0xFFFFFFFF) return;
          if (avail < 8)
            fail(ErrorKind::kCorruption, "entry '", printable(e.name), "': ZIP64 extra field is too short");
          *field = load_le64(f);
          f += 8;
          avail -= 8;
        };
        take(&e.size);
        take(&e.compressed_size);
        take(&e.header_offset);
      }
      off += 4 + len;
    }
    pos += kCentralSize + name_len + extra_len + comment_len;

    check_name(e.name);
    if (!names.insert(e.name).second) fail(ErrorKind::kCorruption, "duplicate zip entry '", printable(e.name), "'");
    if (e.flags & 0x0001) fail(ErrorKind::kUnsupported, "entry '", printable(e.name), "' is encrypted");
    if (e.method != 0 && e.method != 8)
      fail(ErrorKind::kUnsupported, "entry '", printable(e.name), "' uses compression method ", e.method);
    if (e.method == 0 && e.compressed_size != e.size)
      fail(ErrorKind::kCorruption, "stored entry '", printable(e.name), "' has compressed size ", e.compressed_size,
           " but size ", e.size);
    // Deflate's ratio cannot exceed 1032:1, which bounds what an entry may claim; checked here,
    // before any reader sizes a buffer by the claim (a zip bomb).
    if (e.method == 8 && e.size > e.compressed_size * 1032 + 64)
      fail(ErrorKind::kCorruption, "entry '", printable(e.name), "' claims ", e.size, " bytes from ", e.compressed_size,
           " compressed, more than deflate can expand to (zip bomb?)");

    if (e.header_offset > cd_offset || cd_offset - e.header_offset < kLocalSize + name_len)
      fail(ErrorKind::kCorruption, "entry '", printable(e.name), "': local header offset ", e.header_offset,
           " is outside the data area");
    out.push_back(std::move(e));
  }
  if (pos != cd_end)
    fail(ErrorKind::kCorruption, "central directory has ", cd_end - pos, " bytes after its last entry");

  // The local header decides where the payload starts (its extra field holds the padding).
  if (prefetch) {
    std::vector<std::pair<uint64_t, uint64_t>> ranges;
    for (const auto& e : out) ranges.emplace_back(e.header_offset, kLocalSize + e.name.size());
    prefetch(ranges);
  }
  std::string lh;
  for (auto& e : out) {
    lh.resize(kLocalSize + e.name.size());
    if (read_local)
      read_local(e.header_offset, lh.data(), lh.size());
    else
      std::memcpy(lh.data(), p + e.header_offset, lh.size());
    const auto* h = reinterpret_cast<const uint8_t*>(lh.data());
    if (load_le32(h) != kLocalSig)
      fail(ErrorKind::kCorruption, "entry '", printable(e.name), "': no local header at offset ", e.header_offset);
    uint64_t lname = load_le16(h + 26), lextra = load_le16(h + 28);
    e.data_offset = e.header_offset + kLocalSize + lname + lextra;
    if (lname != e.name.size() || std::memcmp(h + kLocalSize, e.name.data(), lname) != 0)
      fail(ErrorKind::kCorruption, "entry '", printable(e.name), "': local header names a different file");
    if (e.data_offset > cd_offset || e.compressed_size > cd_offset - e.data_offset)
      fail(ErrorKind::kCorruption, "entry '", printable(e.name), "': ", e.compressed_size, " bytes at offset ",
           e.data_offset, " run past the data area, which ends at ", cd_offset, " (truncated file?)");
  }

  // No two entries may share bytes (a zip-bomb technique).
  std::vector<const Entry*> by_offset;
  for (const auto& e : out) by_offset.push_back(&e);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const Entry* a, const Entry* b) { return a->header_offset < b->header_offset; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const Entry* prev = by_offset[i - 1];
    if (prev->data_offset + prev->compressed_size > by_offset[i]->header_offset)
      fail(ErrorKind::kCorruption, "entries '", printable(prev->name), "' and '", printable(by_offset[i]->name),
           "' overlap");
  }
  return out;
}

void read_entry(const std::byte* file, uint64_t file_size, const Entry& e, std::string* out) {
  if (e.data_offset > file_size || e.compressed_size > file_size - e.data_offset)
    fail(ErrorKind::kCorruption, "entry '", printable(e.name), "' lies outside the file");
  const auto* src = reinterpret_cast<const char*>(file) + e.data_offset;
  if (e.method == 0) {
    out->assign(src, static_cast<size_t>(e.size));
    return;
  }
  // The claimed size was checked against deflate's ratio by read_directory().
  out->resize(static_cast<size_t>(e.size));
  z_stream zs{};
  if (inflateInit2(&zs, -MAX_WBITS) != Z_OK) fail(ErrorKind::kIO, "inflateInit failed");
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(src));
  zs.avail_in = static_cast<uInt>(e.compressed_size);
  zs.next_out = reinterpret_cast<Bytef*>(out->data());
  zs.avail_out = static_cast<uInt>(out->size());
  int rc = inflate(&zs, Z_FINISH);
  uint64_t produced = zs.total_out;
  inflateEnd(&zs);
  if (rc != Z_STREAM_END || produced != e.size)
    fail(ErrorKind::kCorruption, "entry '", printable(e.name), "' does not inflate to its ", e.size, " bytes");
}

}  // namespace ckpt::zip
