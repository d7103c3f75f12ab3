// ckpt/distributed.h — checkpoints written and committed together by the ranks of a
// c10d::ProcessGroup, and loaded back under any world size.
//
//   ckpt::dist::Group g = ckpt::dist::init_from_env();        // under torchrun: RANK, WORLD_SIZE, ...
//   ckpt::Value state = ckpt::Value::new_dict();
//   state.dict().set("weight", ckpt::Value(weight));                    // replicated (the default)
//   state.dict().set("emb", ckpt::dist::shard(local_rows, {row0, 0}, {rows, dim}));  // a slice
//   state.dict().set("rng", ckpt::dist::per_rank(ckpt::Value(rng_state)));       // one per rank
//   ckpt::dist::save(state, "ckpts/step-000100", *g.pg);       // every rank calls it
//   ...
//   ckpt::dist::load(state, "ckpts/step-000100", *g.pg);       // fills state's tensors in place
//
// Every tensor entry of the state (nested dicts, lists and tuples are walked) is one of:
//   - replicated: a plain tensor, the same on every rank; written once in total, the tensors
//     spread over the ranks by bytes;
//   - sharded: shard(local, offsets, global_shape), this rank's slice of a global tensor; the
//     slices of all ranks must tile the global tensor exactly (overlaps, holes, disagreeing
//     dtypes or global shapes are refused naming the key and the ranks);
//   - per rank: per_rank(value), kept for each rank (RNG states, data positions).
// Any other leaf (numbers, strings, ...) is saved from rank 0.
//
// Layout (doc/distributed.md): a directory with one ordinary torch.save file per rank
// (rank-00000.pt, ...; torch.load reads each alone) and metadata.json mapping every key to its
// pieces with their CRC-32s. The directory appears under its final name only once every rank's
// file and the metadata are durable (two-phase commit, doc/distributed.md); a failure on any rank
// leaves nothing published, and every rank gets a ckpt::Error naming the failed rank.
//
// Thread safety: save() and load() are collective: every rank of the group calls them, in the
// same order, from one thread per rank. Different groups may save concurrently to different
// directories.
#pragma once

#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "ckpt/serialize.h"
#include "ckpt/tensor.h"
#include "ckpt/value.h"

namespace ckpt::dist {

// The commit's bound on every collective of save() and load(): a rank that has not answered by
// then (hung, or still writing) makes the others fail with a ckpt::Error rather than wait for
// c10d's own 30-minute default. It covers the slowest rank's write, so it must exceed that.
inline constexpr std::chrono::milliseconds kDefaultTimeout = std::chrono::minutes(10);

// A marker in a state: this rank holds `local`, the slice of a tensor of shape `global_shape`
// that starts at `offsets` (one per dimension). On load, `local` is filled in place.
// Appears in a Value as an object of type "ckpt.dist.Shard" (never written to a file as such).
Value shard(const at::Tensor& local, std::vector<int64_t> offsets, std::vector<int64_t> global_shape);
// A marker: `value` is kept for each rank ("ckpt.dist.PerRank").
Value per_rank(Value value);

struct ShardInfo {
  at::Tensor local;
  std::vector<int64_t> offsets, global_shape;
};
// The parts of a shard() marker; throws kInvalidArgument when `v` is none.
ShardInfo shard_info(const Value& v);
bool is_shard(const Value& v);
bool is_per_rank(const Value& v);

struct SaveOptions {
  std::chrono::milliseconds timeout = kDefaultTimeout;
  bool durable = true;     // fsync every file and directory (false: tests and scratch only)
  io::Env* env = nullptr;  // this rank's file layer (nullptr: POSIX); tests inject faults here
};

struct LoadOptions {
  std::chrono::milliseconds timeout = kDefaultTimeout;
  io::Env* env = nullptr;
  // An entry of the template missing from the checkpoint is an error (kNotFound naming it).
  bool strict = true;
};

struct LoadResult {
  int saved_world_size = 0;
  // Filled only when the world size differs from the saved one: for each per-rank key (path
  // components joined by '/'), every saved rank's value, by saved rank. With the same world size
  // the template's per_rank() markers are replaced by (tensors: filled with) this rank's value.
  std::map<std::string, std::vector<Value>> per_rank;
};

struct SaveResult {
  std::string dir;
  uint64_t bytes_this_rank = 0;  // this rank's file
  uint64_t metadata_bytes = 0;   // on every rank (broadcast with the commit)
};

// Collective. Writes `state` into the new directory `dir` (which must not exist).
SaveResult save(const Value& state, const std::string& dir, c10d::ProcessGroup& pg, const SaveOptions& options = {});
// Collective. Fills `template_` in place from the checkpoint in `dir`, reading only the pieces
// that overlap each of this rank's tensors, each verified against its CRC-32.
LoadResult load(Value& template_, const std::string& dir, c10d::ProcessGroup& pg, const LoadOptions& options = {});

// A process group from torchrun's environment: RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT,
// TORCHELASTIC_RESTART_COUNT and TORCHELASTIC_USE_AGENT_STORE (the agent's store, whose keys
// are prefixed "/worker/attempt_N" as torch's Python workers do). Gloo over `hostname`.
struct InitOptions {
  std::chrono::milliseconds timeout = kDefaultTimeout;  // store connection and the group's collectives
  std::string hostname = "127.0.0.1";                   // the interface Gloo binds
};
struct Group {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroup> pg;
  int rank = 0, world_size = 1;
};
Group init_from_env(const InitOptions& options = {});
// Another process group over the same ranks and store, its keys under `name` (every rank calls
// it with the same name): for collectives that must not interleave with the first group's, such
// as the run manager's async commits.
c10::intrusive_ptr<c10d::ProcessGroup> new_group(const Group& group, const std::string& name,
                                                 const InitOptions& options = {});

}  // namespace ckpt::dist
