// ckpt/distributed_files.h — a distributed checkpoint directory (ckpt/distributed.h,
// doc/distributed.md) read in one process, without LibTorch or a process group.
//
//   ckpt::Value whole = ckpt::dist::consolidate("ckpts/step-000100");   // shards joined
//   ckpt::save(whole, "step-000100.pt");                                  // one plain file
//
// consolidate() returns the saved state as one value: sharded tensors joined into whole ones,
// replicated tensors and values as saved, each per-rank entry as a list by saved rank. Every
// record it reads is CRC-32-checked. Errors are one-line ckpt::Errors naming the file.
// Thread safety: independent calls may run concurrently.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "ckpt/serialize.h"
#include "ckpt/value.h"

namespace ckpt::dist {

// True when `path` is a directory holding a distributed checkpoint's metadata.json.
bool is_distributed_checkpoint(const std::string& path);

// Which parts consolidate() reads, and how it hands back per-rank entries.
struct ConsolidateOptions {
  // Top-level keys to read (empty: all). Only their pieces are read and verified.
  std::vector<std::string> only;
  // >= 0: a per-rank entry becomes the value rank `rank` saved — when the checkpoint was saved
  // by `world_size` ranks; otherwise (and by default) it is a list by saved rank.
  int rank = -1;
  int world_size = 0;
};

Value consolidate(const std::string& dir, const ckpt::LoadOptions& options = {},
                  const ConsolidateOptions& which = {});

struct DistVerifyReport {
  int world_size = 0;
  size_t entries = 0, pieces = 0, records = 0;
  uint64_t bytes = 0;  // all rank files
};
// Every rank file as ckpt::verify checks one, then every piece against metadata.json.
DistVerifyReport verify_distributed(const std::string& dir, const ckpt::LoadOptions& options = {});

}  // namespace ckpt::dist
