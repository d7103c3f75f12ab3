// Reading a distributed checkpoint directory (doc/distributed.md) without LibTorch: the rank
// files mapped once each, every record checked against metadata.json and the zip directory and
// CRC-32-verified once before use, and the values of each rank file's pickle.
// Used by ckpt::dist::load (src/dist/distributed.cc) and the torch-free consolidate/verify
// (src/dist/files.cc, the CLI). Not thread-safe: one Reader per thread.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>

#include "ckpt/distributed_files.h"
#include "ckpt/serialize.h"
#include "dist/metadata.h"
#include "format/archive.h"
#include "format/zip.h"
#include "io/env.h"
#include "util/crc32.h"
#include "util/errors.h"

namespace ckpt::dist {

// dir/metadata.json, parsed and checked.
Metadata read_metadata(io::Env* env, const std::string& dir);

struct RankFile {
  std::shared_ptr<io::MappedFile> file;
  std::map<std::string, zip::Entry> records;
  std::set<std::string> verified;  // records whose CRC-32 was checked
  Value values;                    // the pickle (read on first need)
};

class Reader {
 public:
  Reader(std::string dir, Metadata meta, io::Env* env) : dir_(std::move(dir)), meta_(std::move(meta)), env_(env) {}
  const Metadata& meta() const { return meta_; }

  RankFile& file(int rank) {
    auto it = files_.find(rank);
    if (it != files_.end()) return it->second;
    const std::string path = dir_ + "/" + meta_.files.at(rank).file;
    RankFile f;
    f.file = env_->map_file(path);
    try {
      for (auto& e : zip::read_directory(f.file->data(), f.file->size())) f.records[e.name] = e;
    } catch (const Error& e) {
      rethrow_naming(e, path);
    }
    return files_.emplace(rank, std::move(f)).first->second;
  }

  // The record's bytes, CRC-checked once against the metadata and the zip directory.
  const std::byte* record(int rank, const std::string& name, uint64_t nbytes, uint32_t crc, const std::string& key) {
    RankFile& f = file(rank);
    const std::string path = dir_ + "/" + meta_.files[rank].file;
    auto it = f.records.find(name);
    if (it == f.records.end())
      fail(ErrorKind::kCorruption, path, ": key '", key, "': no record '", printable(name, 200), "'");
    const zip::Entry& e = it->second;
    if (e.method != 0 || e.size != nbytes || e.crc32 != crc)
      fail(ErrorKind::kCorruption, path, ": key '", key, "': record '", printable(name, 200), "' holds ", e.size,
           " bytes with CRC-32 ", hex32(e.crc32), " but ", kMetadataFile, " says ", nbytes, " bytes with CRC-32 ",
           hex32(crc));
    if (e.data_offset > f.file->size() || nbytes > f.file->size() - e.data_offset)
      fail(ErrorKind::kCorruption, path, ": key '", key, "': record '", name, "' lies outside the file");
    const std::byte* p = f.file->mutable_range(e.data_offset, nbytes);
    if (f.verified.insert(name).second) {
      const uint32_t got = crc32_parallel(p, nbytes);
      if (got != crc) {
        f.verified.erase(name);
        fail(ErrorKind::kCorruption, path, ": key '", key, "': record '", printable(name, 200),
             "': CRC-32 mismatch (stored ", hex32(crc), ", computed ", hex32(got), ")");
      }
    }
    return p;
  }

  // What rank `rank`'s pickle holds under `key`, its tensors CRC-checked.
  Value value(int rank, const std::string& key) {
    RankFile& f = file(rank);
    const std::string path = dir_ + "/" + meta_.files[rank].file;
    if (f.values.is_none()) {
      for (const auto& [name, e] : f.records)
        if (name.size() >= 8 && name.compare(name.size() - 8, 8, "data.pkl") == 0)
          record(rank, name, e.size, e.crc32, key);  // the pickle against its own CRC
      ckpt::LoadOptions lo;
      lo.mmap = true;
      lo.verify_checksums = false;  // tensors are checked below, only those handed out
      lo.env = env_;
      try {
        f.values = format::read_archive(f.file, lo);
      } catch (const Error& e) {
        rethrow_naming(e, path);
      }
      if (!f.values.is_dict()) fail(ErrorKind::kCorruption, path, ": not a dict of entries");
    }
    const Value* v = f.values.dict().find(key);
    if (!v) fail(ErrorKind::kCorruption, path, ": has no entry '", key, "' that ", kMetadataFile, " says it has");
    check_tensors(rank, *v, key);
    return *v;
  }

 private:
  void check_tensors(int rank, const Value& v, const std::string& key) {
    if (v.is_tensor()) {
      const auto& s = v.tensor().storage;
      RankFile& f = file(rank);
      const uint64_t off = uint64_t(s->data() - f.file->mutable_data());
      for (const auto& [name, e] : f.records)
        if (e.data_offset == off && e.size == s->nbytes()) {
          record(rank, name, e.size, e.crc32, key);
          return;
        }
      fail(ErrorKind::kCorruption, dir_, "/", meta_.files[rank].file, ": key '", key,
           "': a tensor outside every record");
    } else if (v.is_dict()) {
      for (const auto& [k, x] : v.dict()) check_tensors(rank, x, key);
    } else if (v.is_list() || v.is_tuple()) {
      for (const auto& x : v.items()) check_tensors(rank, x, key);
    } else if (v.is_object() && !v.object_args().is_none()) {
      check_tensors(rank, v.object_args(), key);
    }
  }

  std::string dir_;
  Metadata meta_;
  io::Env* env_;
  std::map<int, RankFile> files_;
};

// The entries `select` picks, put together into one value as consolidate() does (tensors whole,
// per-rank entries as `which` says), each path without its first `drop` components (so the
// subtree under a key comes back as that key's value). None when nothing is selected.
Value assemble(Reader& reader, const std::function<bool(const Entry&)>& select, size_t drop,
               const ConsolidateOptions& which);

}  // namespace ckpt::dist
