// A distributed checkpoint directory in one process, without LibTorch: consolidate (shards
// joined into whole tensors) and verify.
#include <algorithm>
#include <cstring>
#include <functional>
#include <nlohmann/json.hpp>

#include "ckpt/distributed_files.h"
#include "dist/reader.h"

namespace ckpt::dist {

Metadata read_metadata(io::Env* env, const std::string& dir) {
  const std::string path = dir + "/" + kMetadataFile;
  return parse_metadata(env->read_file(path), path);
}

bool is_distributed_checkpoint(const std::string& path) {
  io::Env* env = io::Env::Default();
  return path.rfind("s3://", 0) != 0 && !env->file_exists(path + "/index.json") &&
         env->file_exists(path + "/" + kMetadataFile);
}

namespace {

// Copies the piece `src` (row-major, shape p.shape) into `dst` (row-major, shape `global`) at
// p.offsets, one contiguous run of the last dimension at a time.
void place(const std::byte* src, const Piece& p, std::byte* dst, const std::vector<int64_t>& global, size_t esize) {
  const size_t nd = global.size();
  if (nd == 0) {
    std::memcpy(dst, src, esize);
    return;
  }
  uint64_t rows = 1;
  for (size_t d = 0; d + 1 < nd; ++d) rows *= uint64_t(p.shape[d]);
  if (rows == 0 || p.shape[nd - 1] == 0) return;
  const size_t run = size_t(p.shape[nd - 1]) * esize;
  std::vector<int64_t> idx(nd, 0);
  for (uint64_t row = 0; row < rows; ++row) {
    uint64_t rem = row;
    for (size_t d = nd - 1; d-- > 0;) {
      idx[d] = int64_t(rem % uint64_t(p.shape[d]));
      rem /= uint64_t(p.shape[d]);
    }
    uint64_t g = 0;
    for (size_t d = 0; d + 1 < nd; ++d) g = g * uint64_t(global[d]) + uint64_t(idx[d] + p.offsets[d]);
    g = g * uint64_t(global[nd - 1]) + uint64_t(p.offsets[nd - 1]);
    std::memcpy(dst + g * esize, src + row * run, run);
  }
}

// Puts `leaf` at `path` (a JSON array) under `root`, creating dicts, lists and tuples on the way.
void insert(Value& node, const nlohmann::json& path, size_t i, const Value& leaf) {
  if (i == path.size()) {
    node = leaf;
    return;
  }
  const auto& c = path[i];
  const bool is_list = c.is_object() && c.contains("list");
  const bool is_tuple = c.is_object() && c.contains("tuple");
  if (node.is_none()) node = is_list ? Value::list() : is_tuple ? Value::tuple() : Value::new_dict();
  if (is_list || is_tuple) {
    if (!node.is_list() && !node.is_tuple()) fail(ErrorKind::kCorruption, "a path mixes a list index with a dict key");
    const size_t k = c.begin().value().get<size_t>();
    if (k > (size_t{1} << 24)) fail(ErrorKind::kCorruption, "a list index of ", k);
    if (node.items().size() <= k) node.items().resize(k + 1);
    insert(node.items()[k], path, i + 1, leaf);
    return;
  }
  if (!node.is_dict()) fail(ErrorKind::kCorruption, "a path mixes a dict key with a list index");
  Value key = c.is_string() ? Value(c.get<std::string>()) : Value(static_cast<long long>(c.get<int64_t>()));
  Value* slot = c.is_string() ? node.dict().find(c.get<std::string>()) : node.dict().find(key);
  if (!slot) {
    node.dict().set(key, Value());
    slot = c.is_string() ? node.dict().find(c.get<std::string>()) : node.dict().find(key);
  }
  insert(*slot, path, i + 1, leaf);
}

}  // namespace

Value assemble(Reader& reader, const std::function<bool(const Entry&)>& select, size_t drop,
               const ConsolidateOptions& which) {
  const int saved_world = reader.meta().world_size;
  const bool this_rank = which.rank >= 0 && which.world_size == saved_world;
  Value root;
  for (const Entry& e : reader.meta().entries) {
    if (!select(e)) continue;
    nlohmann::json path = nlohmann::json::parse(e.path_json);
    if (path.size() < drop) continue;
    Value leaf;
    if (e.kind == EntryKind::kReplicated || e.kind == EntryKind::kSharded) {
      const size_t esize = element_size(e.dtype);
      uint64_t n = 1;
      for (int64_t d : e.shape) n *= uint64_t(d);
      TensorRef t;
      t.dtype = e.dtype;
      t.storage = make_storage(e.dtype, n * esize);
      t.sizes = e.shape;
      t.strides.assign(e.shape.size(), 1);
      for (size_t d = e.shape.size(); d-- > 1;) t.strides[d - 1] = t.strides[d] * e.shape[d];
      for (const Piece& p : e.pieces)
        place(reader.record(p.rank, p.record, p.nbytes, p.crc32, e.key), p, t.storage->data(), e.shape, esize);
      leaf = Value(std::move(t));
    } else if (e.kind == EntryKind::kValue) {
      leaf = reader.value(e.ranks.at(0), e.key);
    } else if (this_rank) {
      if (std::find(e.ranks.begin(), e.ranks.end(), which.rank) == e.ranks.end())
        fail(ErrorKind::kNotFound, "key '", e.key, "': rank ", which.rank, " saved no per-rank value");
      leaf = reader.value(which.rank, e.key);
    } else {
      std::vector<Value> by_rank(saved_world);
      for (int r : e.ranks) by_rank[r] = reader.value(r, e.key);
      leaf = Value::list(std::move(by_rank));
    }
    insert(root, path, drop, leaf);
  }
  return root;
}

Value consolidate(const std::string& dir_in, const ckpt::LoadOptions& options, const ConsolidateOptions& which) {
  io::Env* env = options.env ? options.env : io::Env::Default();
  std::string dir = dir_in;
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  Reader reader(dir, read_metadata(env, dir), env);
  Value root;
  try {
    root = assemble(
        reader,
        [&](const Entry& e) {
          if (which.only.empty()) return true;
          nlohmann::json path = nlohmann::json::parse(e.path_json);
          return !path.empty() && path[0].is_string() &&
                 std::find(which.only.begin(), which.only.end(), path[0].get<std::string>()) != which.only.end();
        },
        0, which);
  } catch (const Error& e) {
    rethrow_naming(e, dir);
  }
  return root.is_none() ? Value::new_dict() : root;
}

DistVerifyReport verify_distributed(const std::string& dir_in, const ckpt::LoadOptions& options) {
  io::Env* env = options.env ? options.env : io::Env::Default();
  std::string dir = dir_in;
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  Metadata meta = read_metadata(env, dir);
  DistVerifyReport r;
  r.world_size = meta.world_size;
  r.entries = meta.entries.size();
  for (const auto& f : meta.files) {
    ckpt::LoadOptions lo = options;
    lo.env = env;
    VerifyReport v = ckpt::verify(dir + "/" + f.file, lo);
    r.bytes += v.file_size;
    r.records += v.records.size();
  }
  for (const auto& e : meta.entries) r.pieces += e.pieces.size();
  consolidate(dir, options);  // every piece against the metadata, the tiling, the pickled values
  return r;
}

}  // namespace ckpt::dist
