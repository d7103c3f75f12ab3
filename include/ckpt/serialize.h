// ckpt/serialize.h — reading and writing PyTorch checkpoint files (.pt / .pth).
//
//   ckpt::Value ckpt = ckpt::load("run/ckpt.pt");            // what torch.load would return
//   ckpt::Value ckpt = ckpt::load("run/ckpt.pt", {.mmap = true});  // tensors view the file
//   ckpt::save(ckpt, "run/copy.pt");                          // torch.load reads it back
//
// load() reads torch.save files of torch 1.6+ (zip; 2.x records such as byteorder are
// understood) and the legacy pre-1.6 format, verifies the CRC-32 of every record it reads,
// and unpickles with an allowlist (containers, plain values, tensors, a few torch objects):
// nothing in the file is ever executed. save() writes what torch.save writes (protocol-2
// pickle, 64-byte-aligned stored records, CRC-32s, ZIP64 when needed) and publishes the file
// crash-safely: the final name shows the old file or the complete new one, never a part.
// Errors are ckpt::Error with a one-line message naming the file.
// Thread safety: load(), save() and verify() may run concurrently on different files; two writers
// of one path are safe for the file (the last rename wins) but only one should own it (the run
// manager locks its directory). A ProgressFn may be called from a worker thread.
#pragma once

#include <cstdint>
#include <functional>
#include <iosfwd>
#include <string>
#include <vector>

#include "ckpt/error.h"
#include "ckpt/value.h"

namespace ckpt {

namespace io {
class Env;  // the file layer (src/io/env.h): every OS call goes through one, for fault injection
}

// Called with the bytes done so far and the total, from the calling thread or a worker thread
// (never two calls at once), at least once at the end with done == total.
using ProgressFn = std::function<void(uint64_t done, uint64_t total)>;

struct LoadOptions {
  // true: tensors view a copy-on-write memory mapping of the file (no copy; pages are read on
  // first touch). false: tensors own memory filled from the file.
  bool mmap = false;
  // Check each record's CRC-32 against the bytes read. With mmap this reads every page once.
  bool verify_checksums = true;
  // Bounds on what the pickle may build.
  size_t max_depth = 1000;
  size_t max_objects = size_t{1} << 26;
  ProgressFn progress;
  io::Env* env = nullptr;  // nullptr: the default (POSIX) one
};

struct SaveOptions {
  // fsync the file and its directory before returning. false is for scratch files only: a
  // crash may then lose the file (never leave a partial one under the final name).
  bool durable = true;
  // Before writing, compare the filesystem's free space with the file's size and fail early
  // (kIO, naming both numbers) rather than filling the disk.
  bool check_free_space = true;
  ProgressFn progress;
  io::Env* env = nullptr;  // nullptr: the default (POSIX) one
  // Fail (kIO, "exists") rather than replace an existing file. On object storage this is a
  // conditional write (If-None-Match: *): of two writers racing for one key, one publishes and
  // the other fails, whatever the timing. On files it is a check before writing (a run's flock
  // already keeps a second writer out). The run managers use it for their checkpoints.
  bool create_only = false;
};

// What a save wrote.
struct SavedFile {
  std::string path;
  uint64_t bytes = 0;
  // CRC-32 of every record's payload joined in archive order: one number for the content,
  // recomputable from the zip directory alone (run-directory indexes record it).
  uint32_t content_crc = 0;
};

Value load(const std::string& path, const LoadOptions& options = {});
SavedFile save(const Value& value, const std::string& path, const SaveOptions& options = {});

// Other formats load() recognises by content, not by name:
//   - LibTorch's own torch::save files and torch.jit.save archives (TorchScript): a module as its
//     state dict, an optimizer in Python's optimizer.state_dict() layout, a tensor (or a list of
//     them) as itself — read without running any of their code (src/format/torchscript.h);
//   - safetensors: an OrderedDict of tensors (plus "__metadata__", a dict of strings, when the
//     header has one); with options.mmap the tensors view the file (src/format/safetensors.h).
// save_safetensors() writes `value` (a dict; nested dicts and lists flattened with "." between
// keys, other scalars carried in the metadata) as the format's reference writer lays it out,
// published crash-safely like save(). SavedFile::content_crc is 0: the format has no checksums.
SavedFile save_safetensors(const Value& value, const std::string& path, const SaveOptions& options = {});

// The same bytes in memory or through a stream (as torch::save/torch::load take streams), for
// checkpoints kept in databases, object stores or sent over a network. The archive is named
// "archive" inside, as torch.save names one written to a file object. save() to a stream writes
// the finished archive in one pass (the stream need not be seekable); load() from a stream reads
// it to the end first. options.mmap does not apply; durable and env do not either.
std::string save_to_bytes(const Value& value);
Value load_from_bytes(std::string bytes, const LoadOptions& options = {});
void save(const Value& value, std::ostream& out);
Value load(std::istream& in, const LoadOptions& options = {});

// A small text file (a log, a list of metrics) at any path ckpt takes, s3:// included: read
// whole (kNotFound when missing), or replaced whole and crash-safely (the old text or the new,
// never a part), which is how object storage, having no append, keeps a growing log.
std::string read_text_file(const std::string& path);
void write_text_file(const std::string& path, const std::string& text);

struct RecordReport {
  std::string name;
  uint64_t offset = 0;
  uint64_t size = 0;
  uint32_t crc32 = 0;
  bool crc_checked = false;  // false when the file stores no CRC (CRC 0, legacy format)
};

struct VerifyReport {
  std::string format;  // "zip (torch >= 1.6)", "legacy (torch < 1.6)", "TorchScript zip (...)", "safetensors"
  uint64_t file_size = 0;
  std::vector<RecordReport> records;
  size_t tensors = 0;
  size_t storages = 0;
  uint64_t tensor_bytes = 0;
};

// Checks the whole file: structure, every record's CRC-32 (also records load() skips), the
// pickle against the allowlist, every tensor against its storage. Throws on the first problem.
VerifyReport verify(const std::string& path, const LoadOptions& options = {});

}  // namespace ckpt
