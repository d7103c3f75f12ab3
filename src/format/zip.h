// The zip container of PyTorch checkpoints (PKWARE APPNOTE 6.3.x; PyTorch's use of it is in
// doc/format.md §1).
//
// Byte layout written by Writer, record by record:
//   local header (APPNOTE 4.3.7) 30 B | name | extra: [ZIP64 (4.5.3)] + "FB" pad block of 'Z'
//     so the payload starts at a multiple of 64 | payload | data descriptor (4.3.9), 16 B, or
//     24 B with 64-bit sizes, absent for empty records
// then the central directory (4.3.12), the ZIP64 end of central directory record (4.3.14) and
// locator (4.3.15), and the end of central directory record (4.3.16). Every field is
// little-endian. Records are stored (method 0); the reader also inflates method 8.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "io/env.h"
#include "io/stream_writer.h"

namespace ckpt::zip {

struct Entry {
  std::string name;
  uint64_t header_offset = 0;  // local header
  uint64_t data_offset = 0;    // payload, computed from the *local* header's lengths
  uint64_t compressed_size = 0;
  uint64_t size = 0;
  uint32_t crc32 = 0;
  uint16_t method = 0;
  uint16_t flags = 0;
};

// Parses the directory of the zip in [data, data+size) and every entry's local header.
// Validates each offset, size and count against the file; refuses entry names that are
// absolute or contain "..", duplicate names, overlapping entries and deflated entries that claim
// more than deflate can expand to.
// Throws ckpt::Error (kCorruption / kUnsafe) without a file name; callers add it.
//
// Local headers are read through `read_local` when given (e.g. pread, which maps nothing into
// the process), after `prefetch` was told every header's range at once (so a cold file's
// headers are fetched concurrently rather than one page fault at a time); else from `data`.
using ReadAt = std::function<void(uint64_t offset, void* dst, size_t n)>;
using Prefetch = std::function<void(const std::vector<std::pair<uint64_t, uint64_t>>& ranges)>;
std::vector<Entry> read_directory(const std::byte* data, uint64_t size, const ReadAt& read_local = nullptr,
                                  const Prefetch& prefetch = nullptr);

// The bytes of a stored or deflated entry, inflated if needed, into `out`. Does not check
// the CRC (the caller decides).
void read_entry(const std::byte* file, uint64_t file_size, const Entry& e, std::string* out);

// Writes records one after another through a StreamWriter (large positional writes from worker
// threads; O_DIRECT when the file has it), checksumming payloads as they are copied. Memory
// stays bounded whatever the archive size. The layout is byte-compatible with PyTorch's
// writer (miniz).
// The CRC-32 of every record's payload joined in archive order (crc32_combine of the records'
// CRC-32s): one number for a whole archive, computed from its directory without reading the data.
// The run manager's index records it, so a file swapped for another is noticed.
uint32_t content_crc(const std::vector<Entry>& entries);

// The exact size of the archive Writer writes for these records (name, size), in this order,
// followed by finish(): what an upload must announce before its first byte.
uint64_t archive_size(const std::vector<std::pair<std::string, uint64_t>>& records);

class Writer {
 public:
  explicit Writer(io::WritableFile* file);
  // Reports payload bytes written against `total` as large records are copied out, never more
  // than the file has acknowledged (an object store: parts the server answered).
  void set_progress(std::function<void(uint64_t, uint64_t)> progress, uint64_t total) {
    progress_ = std::move(progress);
    progress_total_ = total;
  }
  // A whole record from memory; computes its CRC-32.
  void add(const std::string& name, const void* data, uint64_t size);
  // Ends the archive: descriptors are already written; writes the directory and end records.
  void finish();
  uint64_t bytes_written() const { return offset_; }
  uint32_t content_crc() const;

 private:
  struct Record {
    std::string name;
    uint64_t header_offset, size;
    uint32_t crc;
  };
  io::WritableFile* file_;
  io::StreamWriter stream_;
  uint64_t offset_ = 0;  // logical end of the archive
  std::vector<Record> records_;
  std::function<void(uint64_t, uint64_t)> progress_;
  uint64_t progress_total_ = 0, progress_done_ = 0;

  void emit(const void* data, size_t n, uint32_t* crc = nullptr);
  void emit_payload(const void* data, uint64_t n, uint32_t* crc);
};

}  // namespace ckpt::zip
