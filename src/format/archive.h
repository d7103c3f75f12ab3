// The PyTorch archive layout (zip, legacy, TorchScript; safetensors chosen by content too) over
// the io, zip and pickle layers. Internal:
// the public entry points are in ckpt/serialize.h; these take an Env for fault injection.
#pragma once

#include "ckpt/serialize.h"
#include "io/env.h"

namespace ckpt::format {

Value read_archive(io::Env* env, const std::string& path, const LoadOptions& options, VerifyReport* report = nullptr);
// The same over an already opened file.
Value read_archive(std::shared_ptr<io::MappedFile> file, const LoadOptions& options, VerifyReport* report = nullptr);
SavedFile write_archive(io::Env* env, const Value& value, const std::string& path, const SaveOptions& options);

// A value ready to write: its pickle and its distinct storages, in record order.
struct PreparedArchive {
  std::string pickle;
  std::vector<std::shared_ptr<StorageData>> storages;
};
PreparedArchive prepare_archive(const Value& value);
// Writes and publishes `path`. `sync_dir` = false leaves the final directory sync to the caller
// (the run manager syncs once for the file and what it commits with it).
SavedFile write_prepared(io::Env* env, const PreparedArchive& archive, const std::string& path,
                         const SaveOptions& options, bool sync_dir = true);
// Bytes the archive of `archive` will take on disk, give or take a few hundred per record.
uint64_t estimated_size(const PreparedArchive& archive);
// Throws kIO ("needs N bytes, M available") when the filesystem of `path` lacks the room.
void check_free_space(io::Env* env, const PreparedArchive& archive, const std::string& path);
// The content CRC of a zip archive from its directory alone (reads no tensor data).
uint32_t read_content_crc(io::Env* env, const std::string& path);

// A storage that views [offset, offset + nbytes) of a mapped file (copy-on-write, no copy).
std::shared_ptr<StorageData> mapped_storage(std::shared_ptr<io::MappedFile> file, uint64_t offset, size_t nbytes,
                                            DType dtype);

// The archive-name prefix PyTorch derives from a file name: "ckpt.pt" -> "ckpt".
std::string archive_prefix(const std::string& path);

}  // namespace ckpt::format
