// metadata.json of a distributed checkpoint directory (doc/distributed.md): which rank file and
// record holds each piece of each key. Torch-free, so the CLI can read it.
//
//   {
//     "format": "ckpt-dist/1",
//     "world_size": 2,
//     "files": [{"rank": 0, "file": "rank-00000.pt", "bytes": 1234}, ...],   // one per rank
//     "entries": [                                                           // sorted by key
//       {"key": "model/w", "path": ["model", "w"], "kind": "replicated" | "sharded",
//        "dtype": "float32", "shape": [4, 3],                                // the global tensor
//        "pieces": [{"rank": 1, "file": "rank-00001.pt", "record": "rank-00001/data/0",
//                    "offsets": [0, 0], "shape": [4, 3], "data_offset": 64, "nbytes": 48,
//                    "crc32": "0x1a2b3c4d"}]},
//       {"key": "step", "path": ["step"], "kind": "value", "ranks": [0]},      // in rank 0's pickle
//       {"key": "rng", "path": ["rng"], "kind": "per_rank", "ranks": [0, 1]}   // in each one's pickle
//     ]
//   }
// A path component is a str or int dict key, or {"list": i} / {"tuple": i} for an item of one.
// In a rank file the entries are a flat dict from key to value (tensors: the piece).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "ckpt/error.h"
#include "ckpt/value.h"

namespace ckpt::dist {

inline constexpr const char* kMetadataFile = "metadata.json";
inline constexpr const char* kMetadataFormat = "ckpt-dist/1";

enum class EntryKind { kReplicated, kSharded, kPerRank, kValue };
const char* entry_kind_name(EntryKind kind);

struct Piece {
  int rank = 0;
  std::string file, record;
  std::vector<int64_t> offsets, shape;
  uint64_t data_offset = 0, nbytes = 0;
  uint32_t crc32 = 0;
};

struct Entry {
  std::string key;
  std::string path_json;  // the path as a JSON array of str / int components
  EntryKind kind = EntryKind::kValue;
  DType dtype = DType::kFloat32;  // tensors
  std::vector<int64_t> shape;     // tensors: the global shape
  std::vector<Piece> pieces;      // tensors
  std::vector<int> ranks;         // value / per_rank: the rank files whose pickle holds it
};

struct FileInfo {
  int rank = 0;
  std::string file;
  uint64_t bytes = 0;
};

struct Metadata {
  int world_size = 0;
  std::vector<FileInfo> files;
  std::vector<Entry> entries;  // sorted by key
  const Entry* find(const std::string& key) const;
};

// "rank-00003.pt"
std::string rank_file_name(int rank);

std::string to_json(const Metadata& m);
// Parses and checks everything a reader will trust: names, ranks, shapes, byte counts, and that
// each tensor's pieces tile it exactly. Throws a one-line kCorruption naming `origin`.
Metadata parse_metadata(const std::string& text, const std::string& origin);
// The tiling check alone (also run by the coordinator on what the ranks sent): kInvalidArgument
// naming the key and the ranks whose pieces overlap, fall outside, or leave a hole.
void check_tiling(const Entry& e, ErrorKind kind, const std::string& origin);

}  // namespace ckpt::dist
