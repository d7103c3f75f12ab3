// Distributed checkpoints: save, commit and load across the ranks of a c10d::ProcessGroup.
//
// The save protocol, step by step (DIR = the checkpoint, PARENT its directory, TMP =
// PARENT/.NAME.tmp-dist; every collective waits at most options.timeout):
//   1. Rank 0 refuses a DIR that exists, removes leftover ".*.tmp-dist" directories of PARENT
//      (saves that never published: nothing else writes there while we save), and creates TMP.
//      Collective 1 (broadcast from 0): its status; on an error every rank throws it.
//   2. Every rank flattens its state, assigns the replicated tensors to ranks (largest first,
//      to the rank with the fewest bytes so far: the same answer on every rank), writes its
//      file TMP/rank-NNNNN.pt through the format layer (temp -> fsync -> rename -> fsync TMP),
//      and describes it in a manifest (JSON: each piece's record, offsets, bytes, CRC-32).
//      An error here becomes the manifest {"ok": false, "error": ...}: the rank still takes part
//      in the collectives, so the others learn which rank failed and why.
//   3. Collective 2 (allgather of one int64 per rank): the manifests' lengths.
//      Collective 3 (gather to rank 0): the manifests.
//   4. Rank 0 (the coordinator) checks them: any failed rank, disagreeing replicated keys,
//      sharded pieces that overlap, leave holes or disagree on dtype or global shape fail the
//      save here. It writes TMP/metadata.json (temp -> fsync -> rename -> fsync TMP).
//   5. COMMIT POINT: rank 0 renames TMP to DIR and fsyncs PARENT. Before this, DIR does not exist
//      and every earlier checkpoint is untouched; after it, DIR is complete and durable.
//   6. Collective 4 (broadcast from 0): the outcome. On an error rank 0 has removed TMP, and
//      every rank throws the same ckpt::Error, which names the failed ranks.
// A rank that dies or hangs makes the collective of the others fail (at once for a closed
// connection, after options.timeout for a silent peer): they throw, and DIR is never published.
#include "ckpt/distributed.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <unordered_set>

#include "dist/collectives.h"
#include "dist/metadata.h"
#include "dist/reader.h"
#include "format/archive.h"
#include "format/zip.h"
#include "io/env.h"
#include "manager/run.h"
#include "util/crc32.h"
#include "util/errors.h"

namespace ckpt::dist {

using json = nlohmann::ordered_json;

namespace {

constexpr const char* kShardType = "ckpt.dist.Shard";
constexpr const char* kPerRankType = "ckpt.dist.PerRank";

std::vector<int64_t> ints_of(const Value& tuple) {
  std::vector<int64_t> out;
  for (const auto& v : tuple.items()) out.push_back(v.to_int());
  return out;
}

Value tuple_of(const std::vector<int64_t>& v) {
  std::vector<Value> items;
  for (int64_t x : v) items.emplace_back(static_cast<long long>(x));
  return Value::tuple(std::move(items));
}

std::string dims_text(const std::vector<int64_t>& d) {
  std::string s = "[";
  for (size_t i = 0; i < d.size(); ++i) s += (i ? ", " : "") + std::to_string(d[i]);
  return s + "]";
}

// ---- walking a state: leaves with their key ("a/b/0") and path (JSON array) ----

using LeafFn = std::function<void(Value& leaf, const std::string& key, const json& path)>;

void walk(Value& v, std::string key, json path, const LeafFn& fn) {
  auto child = [&](Value& c, const json& component) {
    json p = path;
    p.push_back(component);
    std::string k = key.empty() ? "" : key + "/";
    k += component.is_string()   ? component.get<std::string>()
         : component.is_object() ? std::to_string(component.begin().value().get<int64_t>())
                                 : std::to_string(component.get<int64_t>());
    walk(c, k, p, fn);
  };
  if (v.is_dict() && v.size() > 0) {
    for (auto& item : const_cast<std::vector<Dict::Item>&>(v.dict().items())) {
      if (item.first.is_string())
        child(item.second, item.first.to_string());
      else if (item.first.is_int())
        child(item.second, item.first.to_int());
      else
        fail(ErrorKind::kInvalidArgument, "key '", key, "': a dict key of kind ", item.first.kind_name(),
             " (distributed states take str and int keys)");
    }
  } else if ((v.is_list() || v.is_tuple()) && v.size() > 0) {
    for (size_t i = 0; i < v.items().size(); ++i)
      child(v.items()[i], json{{v.is_list() ? "list" : "tuple", static_cast<int64_t>(i)}});
  } else {
    fn(v, key, path);
  }
}

// ---- directories: run::is_directory and run::remove_tree (the Env has no directory removal) ----

using run::is_directory;
using run::remove_tree;

bool is_temp_dir_name(const std::string& name) {
  const std::string suffix = ".tmp-dist";
  return name.size() > suffix.size() + 1 && name[0] == '.' &&
         name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// ---- step 2: one rank's file and manifest ----

struct Prepared {
  Value file_value = Value::new_dict();  // key -> what this rank writes
  json entries = json::array();
  std::vector<std::pair<size_t, const void*>> tensor_entries;  // manifest index -> storage identity
  std::string digest_text;                                     // the replicated keys every rank must agree on
};

// A storage of exactly `t`'s bytes (t contiguous), sharing its memory: the DataPtr's context
// keeps the whole storage alive. A row slice of a larger tensor is written without a copy.
at::Tensor alias_exact(const at::Tensor& t) {
  const size_t nbytes = size_t(t.numel()) * t.element_size();
  auto* keep = new at::Storage(t.storage());
  char* data = static_cast<char*>(t.storage().data()) + t.storage_offset() * t.element_size();
  at::DataPtr ptr(data, keep, [](void* ctx) { delete static_cast<at::Storage*>(ctx); }, t.device());
  at::Storage storage(at::Storage::use_byte_size_t(), nbytes, std::move(ptr), nullptr, false);
  return at::empty({0}, t.options()).set_(storage, 0, t.sizes(), t.strides());
}

at::Tensor own_storage(const at::Tensor& t, std::unordered_set<const void*>& seen) {
  at::Tensor x = t.device().is_cpu() ? t : t.cpu();
  const bool exact =
      x.is_contiguous() && x.storage_offset() == 0 && x.storage().nbytes() == size_t(x.numel()) * x.element_size();
  if (exact && seen.insert(x.storage().unsafeGetStorageImpl()).second) return x;
  // Part of a larger storage, or a storage another entry already writes: a storage of its own —
  // an alias of its bytes when they are contiguous, else a contiguous copy.
  x = x.is_contiguous() && x.numel() > 0 ? alias_exact(x) : x.clone(at::MemoryFormat::Contiguous);
  seen.insert(x.storage().unsafeGetStorageImpl());
  return x;
}

Prepared prepare_rank(const Value& state, int rank, int world) {
  Prepared out;
  struct Leaf {
    Value value;
    std::string key;
    json path;
  };
  std::vector<Leaf> leaves;
  Value root = state;  // walk takes a mutable handle; nothing is changed
  walk(root, "", json::array(), [&](Value& v, const std::string& key, const json& path) {
    leaves.push_back({v, key, path});
  });
  std::set<std::string> keys;
  for (const auto& l : leaves)
    if (!keys.insert(l.key).second)
      fail(ErrorKind::kInvalidArgument, "key '", l.key, "' names two entries of the state (a '/' inside a key?)");

  // Replicated tensors: largest first, each to the rank with the fewest bytes so far.
  std::vector<size_t> replicated;
  for (size_t i = 0; i < leaves.size(); ++i)
    if (leaves[i].value.is_tensor()) replicated.push_back(i);
  auto nbytes_of = [&](size_t i) {
    const TensorRef& t = leaves[i].value.tensor();
    return uint64_t(t.numel()) * element_size(t.dtype);
  };
  std::sort(replicated.begin(), replicated.end(), [&](size_t a, size_t b) {
    return nbytes_of(a) != nbytes_of(b) ? nbytes_of(a) > nbytes_of(b) : leaves[a].key < leaves[b].key;
  });
  std::vector<uint64_t> load(world, 0);
  std::map<size_t, int> writer;
  for (size_t i : replicated) {
    const int r = int(std::min_element(load.begin(), load.end()) - load.begin());
    load[r] += nbytes_of(i) + 1;  // +1: empty tensors spread too
    writer[i] = r;
  }

  std::unordered_set<const void*> seen;
  for (size_t i = 0; i < leaves.size(); ++i) {
    const Leaf& l = leaves[i];
    json e;
    e["key"] = l.key;
    e["path"] = l.path;
    if (l.value.is_tensor()) {
      const TensorRef& t = l.value.tensor();
      out.digest_text += str_cat(l.key, "|", dtype_name(t.dtype), "|", dims_text(t.sizes), ";");
      if (writer[i] != rank) continue;
      at::Tensor x = own_storage(l.value.to_tensor(), seen);
      e["kind"] = "replicated";
      e["dtype"] = dtype_name(t.dtype);
      e["shape"] = t.sizes;
      e["offsets"] = std::vector<int64_t>(t.sizes.size(), 0);
      Value xv(x);
      out.file_value.dict().set(l.key, xv);
      out.tensor_entries.emplace_back(out.entries.size(), xv.tensor().storage->identity());
    } else if (is_shard(l.value)) {
      ShardInfo s = shard_info(l.value);
      if (s.offsets.size() != size_t(s.local.dim()) || s.global_shape.size() != size_t(s.local.dim()))
        fail(ErrorKind::kInvalidArgument, "key '", l.key, "': a shard of a ", s.local.dim(), "-d tensor with ",
             s.offsets.size(), " offsets and a ", s.global_shape.size(), "-d global shape");
      at::Tensor x = own_storage(s.local, seen);
      Value xv(x);
      e["kind"] = "sharded";
      e["dtype"] = dtype_name(xv.tensor().dtype);
      e["shape"] = s.global_shape;
      e["offsets"] = s.offsets;
      e["local_shape"] = xv.tensor().sizes;
      out.file_value.dict().set(l.key, xv);
      out.tensor_entries.emplace_back(out.entries.size(), xv.tensor().storage->identity());
    } else if (is_per_rank(l.value)) {
      e["kind"] = "per_rank";
      out.file_value.dict().set(l.key, l.value.object_args().items().at(0));
    } else {
      if (rank != 0) continue;
      e["kind"] = "value";
      out.file_value.dict().set(l.key, l.value);
    }
    out.entries.push_back(std::move(e));
  }
  return out;
}

json write_rank(const Value& state, const std::string& tmp, int rank, int world, io::Env* env, bool durable) {
  Prepared p = prepare_rank(state, rank, world);
  const std::string path = tmp + "/" + rank_file_name(rank);
  format::PreparedArchive archive = format::prepare_archive(p.file_value);
  ckpt::SaveOptions so;
  so.durable = durable;
  so.env = env;
  format::check_free_space(env, archive, path);
  SavedFile saved = format::write_prepared(env, archive, path, so);
  // Where each piece's record landed: the directory of the file just written.
  auto file = env->map_file(path);
  std::vector<zip::Entry> dir = zip::read_directory(file->data(), file->size());
  std::map<std::string, const zip::Entry*> by_suffix;
  for (const auto& e : dir) {
    auto pos = e.name.find("/data/");
    if (pos != std::string::npos) by_suffix[e.name.substr(pos + 6)] = &e;
  }
  std::map<const void*, size_t> record_of;
  for (size_t i = 0; i < archive.storages.size(); ++i) record_of[archive.storages[i]->identity()] = i;
  for (const auto& [index, identity] : p.tensor_entries) {
    json& e = p.entries[index];
    auto r = record_of.find(identity);
    const zip::Entry* ze = r == record_of.end() ? nullptr : by_suffix[std::to_string(r->second)];
    if (!ze)
      fail(ErrorKind::kCorruption, path, ": no record for key '", e["key"].get<std::string>(), "' after writing it");
    e["record"] = ze->name;
    e["data_offset"] = ze->data_offset;
    e["nbytes"] = ze->size;
    e["crc32"] = hex32(ze->crc32);
  }
  json m;
  m["ok"] = true;
  m["rank"] = rank;
  m["file"] = rank_file_name(rank);
  m["bytes"] = saved.bytes;
  m["digest"] = hex32(crc32_update(0, p.digest_text.data(), p.digest_text.size()));
  m["entries"] = std::move(p.entries);
  return m;
}

// ---- step 4: the coordinator ----

Metadata merge_manifests(const std::vector<std::string>& manifests) {
  const int world = int(manifests.size());
  std::vector<json> ms(world);
  std::string failures;
  ErrorKind first_kind = ErrorKind::kIO;
  for (int r = 0; r < world; ++r) {
    try {
      ms[r] = json::parse(manifests[r]);
    } catch (const std::exception& e) {
      fail(ErrorKind::kCorruption, "rank ", r, " sent a manifest that is not JSON: ", e.what());
    }
    if (!ms[r].value("ok", false)) {
      if (failures.empty()) first_kind = static_cast<ErrorKind>(ms[r].value("kind", int(ErrorKind::kIO)));
      failures +=
          str_cat(failures.empty() ? "" : "; ", "rank ", r, " failed: ", ms[r].value("error", std::string("?")));
    }
  }
  if (!failures.empty()) fail(first_kind, "distributed save not committed: ", failures);
  for (int r = 1; r < world; ++r)
    if (ms[r]["digest"] != ms[0]["digest"])
      fail(ErrorKind::kInvalidArgument, "distributed save not committed: ranks 0 and ", r,
           " disagree on the replicated tensors (their keys, dtypes or shapes differ; mark slices with "
           "ckpt::dist::shard and rank-specific entries with ckpt::dist::per_rank)");
  Metadata m;
  m.world_size = world;
  std::map<std::string, Entry> entries;
  std::map<std::string, int> first_rank;
  for (int r = 0; r < world; ++r) {
    m.files.push_back({r, rank_file_name(r), ms[r]["bytes"].get<uint64_t>()});
    for (const auto& je : ms[r]["entries"]) {
      const std::string key = je["key"].get<std::string>();
      const std::string kind = je["kind"].get<std::string>();
      EntryKind k = kind == "replicated" ? EntryKind::kReplicated
                    : kind == "sharded"  ? EntryKind::kSharded
                    : kind == "per_rank" ? EntryKind::kPerRank
                                         : EntryKind::kValue;
      auto [it, inserted] = entries.try_emplace(key);
      Entry& e = it->second;
      if (inserted) {
        first_rank[key] = r;
        e.key = key;
        e.path_json = je["path"].dump();
        e.kind = k;
        if (je.contains("dtype")) {
          e.dtype = *dtype_from_name(je["dtype"].get<std::string>());
          e.shape = je["shape"].get<std::vector<int64_t>>();
        }
      } else if (e.kind != k) {
        fail(ErrorKind::kInvalidArgument, "distributed save not committed: key '", key, "' is ",
             entry_kind_name(e.kind), " on rank ", first_rank[key], " but ", kind, " on rank ", r);
      } else if (je.contains("dtype") && (*dtype_from_name(je["dtype"].get<std::string>()) != e.dtype ||
                                          je["shape"].get<std::vector<int64_t>>() != e.shape)) {
        fail(ErrorKind::kInvalidArgument, "distributed save not committed: key '", key, "': rank ", first_rank[key],
             " has a ", dtype_name(e.dtype), " tensor of global shape ", dims_text(e.shape), ", rank ", r, " a ",
             je["dtype"].get<std::string>(), " one of global shape ",
             dims_text(je["shape"].get<std::vector<int64_t>>()));
      }
      if (k == EntryKind::kReplicated || k == EntryKind::kSharded) {
        Piece p;
        p.rank = r;
        p.file = rank_file_name(r);
        p.record = je["record"].get<std::string>();
        p.offsets = je["offsets"].get<std::vector<int64_t>>();
        p.shape = je.contains("local_shape") ? je["local_shape"].get<std::vector<int64_t>>() : e.shape;
        p.data_offset = je["data_offset"].get<uint64_t>();
        p.nbytes = je["nbytes"].get<uint64_t>();
        p.crc32 = static_cast<uint32_t>(std::stoul(je["crc32"].get<std::string>(), nullptr, 16));
        e.pieces.push_back(std::move(p));
      } else {
        e.ranks.push_back(r);
      }
    }
  }
  for (auto& [key, e] : entries) {
    if (e.kind == EntryKind::kSharded || e.kind == EntryKind::kReplicated)
      check_tiling(e, ErrorKind::kInvalidArgument, "distributed save not committed");
    m.entries.push_back(std::move(e));
  }
  return m;
}

}  // namespace

// ---- markers ----

Value shard(const at::Tensor& local, std::vector<int64_t> offsets, std::vector<int64_t> global_shape) {
  return Value::object(kShardType, Value::tuple({Value(local), tuple_of(offsets), tuple_of(global_shape)}));
}

Value per_rank(Value value) {
  return Value::object(kPerRankType, Value::tuple({std::move(value)}));
}

bool is_shard(const Value& v) {
  return v.is_object() && v.object_type() == kShardType;
}

bool is_per_rank(const Value& v) {
  return v.is_object() && v.object_type() == kPerRankType;
}

ShardInfo shard_info(const Value& v) {
  if (!is_shard(v)) fail(ErrorKind::kInvalidArgument, "not a ckpt::dist::shard(): a ", v.kind_name());
  const auto& a = v.object_args().items();
  return {a.at(0).to_tensor(), ints_of(a.at(1)), ints_of(a.at(2))};
}

// ---- save ----

SaveResult save(const Value& state, const std::string& dir_in, c10d::ProcessGroup& pg, const SaveOptions& options) {
  io::Env* env = options.env ? options.env : io::Env::Default();
  const int rank = pg.getRank(), world = pg.getSize();
  std::string dir = dir_in;
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  if (dir.rfind("s3://", 0) == 0)
    fail(ErrorKind::kUnsupported, dir,
         ": distributed checkpoints on object storage are not supported yet (their commit renames a directory); "
         "save to a shared filesystem");
  const std::string parent = io::dirname_of(dir), name = io::basename_of(dir);
  const std::string tmp = parent + "/." + name + ".tmp-dist";

  // 1. Rank 0 prepares TMP.
  Status start;
  if (rank == 0) {
    try {
      if (env->publishes_in_place(dir))
        fail(ErrorKind::kUnsupported, dir, ": distributed checkpoints need a filesystem (they rename a directory)");
      if (env->file_exists(dir) || is_directory(dir))
        fail(ErrorKind::kInvalidArgument, dir, ": already exists (a distributed checkpoint is a new directory)");
      env->create_dirs(parent);
      for (const auto& e : env->list_dir(parent))
        if (is_temp_dir_name(e.name)) remove_tree(env, parent + "/" + e.name);
      env->create_dirs(tmp);
    } catch (const Error& e) {
      start = {false, e.kind(), 0, e.what()};
    }
  }
  start = broadcast_status(pg, start, options.timeout, "starting the save");
  if (!start.ok) fail(start.kind, "distributed save of ", dir, " not started: rank 0: ", start.message);

  // 2. Every rank writes its file.
  SaveResult result;
  result.dir = dir;
  std::string manifest;
  try {
    json m = write_rank(state, tmp, rank, world, env, options.durable);
    result.bytes_this_rank = m["bytes"].get<uint64_t>();
    manifest = m.dump();
  } catch (const Error& e) {
    manifest = json{{"ok", false}, {"kind", int(e.kind())}, {"error", printable(e.what(), 1000)}}.dump();
  } catch (const std::exception& e) {
    manifest = json{{"ok", false}, {"kind", int(ErrorKind::kIO)}, {"error", printable(e.what(), 1000)}}.dump();
  }

  // 3. The manifests go to rank 0.
  std::vector<std::string> manifests = gather_bytes(pg, manifest, options.timeout);

  // 4-5. Rank 0 checks, writes the metadata and publishes.
  Status outcome;
  if (rank == 0) {
    try {
      Metadata meta = merge_manifests(manifests);
      const std::string text = to_json(meta);
      io::AtomicFile out(env, tmp + "/" + kMetadataFile);
      out.file().append(text.data(), text.size());
      out.commit(options.durable);
      env->rename_file(tmp, dir);  // the commit point
      if (options.durable) env->sync_dir(parent);
      outcome.number = text.size();
    } catch (const Error& e) {
      outcome = {false, e.kind(), 0, e.what()};
    } catch (const std::exception& e) {
      outcome = {false, ErrorKind::kIO, 0, e.what()};
    }
    if (!outcome.ok) remove_tree(env, tmp);
  }
  // 6. Everyone learns the outcome.
  outcome = broadcast_status(pg, outcome, options.timeout, "committing the save");
  if (!outcome.ok) fail(outcome.kind, outcome.message);
  result.metadata_bytes = outcome.number;
  return result;
}

// ---- load ----

namespace {

// Fills `dst` (the slice at `offsets` of the entry's global tensor) from the pieces overlapping it.
void fill(Reader& reader, const Entry& e, at::Tensor dst, const std::vector<int64_t>& offsets) {
  const size_t nd = e.shape.size();
  int64_t covered = 0;
  for (const Piece& p : e.pieces) {
    std::vector<int64_t> lo(nd), hi(nd);
    bool overlap = true;
    int64_t n = 1;
    for (size_t d = 0; d < nd; ++d) {
      lo[d] = std::max(p.offsets[d], offsets[d]);
      hi[d] = std::min(p.offsets[d] + p.shape[d], offsets[d] + dst.size(int64_t(d)));
      if (lo[d] >= hi[d]) overlap = false;
      n *= std::max<int64_t>(hi[d] - lo[d], 0);
    }
    if (!overlap) continue;
    const std::byte* bytes = reader.record(p.rank, p.record, p.nbytes, p.crc32, e.key);
    at::Tensor src =
        at::from_blob(const_cast<std::byte*>(bytes), p.shape, at::TensorOptions().dtype(to_scalar_type(e.dtype)));
    at::Tensor d_view = dst;
    for (size_t d = 0; d < nd; ++d) {
      src = src.narrow(int64_t(d), lo[d] - p.offsets[d], hi[d] - lo[d]);
      d_view = d_view.narrow(int64_t(d), lo[d] - offsets[d], hi[d] - lo[d]);
    }
    d_view.copy_(src);
    covered += n;
  }
  if (covered != dst.numel())
    fail(ErrorKind::kCorruption, "key '", e.key, "': the pieces cover ", covered, " of the ", dst.numel(),
         " elements asked for");
}

void load_rank(Value& template_, Reader& reader, int rank, int world, const LoadOptions& options, LoadResult& result) {
  const Metadata& meta = reader.meta();
  auto entry_for = [&](const std::string& key, std::initializer_list<EntryKind> kinds) -> const Entry* {
    const Entry* e = meta.find(key);
    if (!e) {
      if (options.strict) fail(ErrorKind::kNotFound, "key '", key, "' is not in the checkpoint");
      return nullptr;
    }
    if (std::find(kinds.begin(), kinds.end(), e->kind) == kinds.end())
      fail(ErrorKind::kMismatch, "key '", key, "' was saved as ", entry_kind_name(e->kind),
           ", which does not fit the template's ", "entry");
    return e;
  };
  auto check_tensor = [&](const Entry& e, const at::Tensor& t, const std::vector<int64_t>& global) {
    if (to_dtype(t.scalar_type()) != e.dtype || global != e.shape)
      fail(ErrorKind::kMismatch, "key '", e.key, "': the checkpoint holds a ", dtype_name(e.dtype), " tensor of shape ",
           dims_text(e.shape), ", the template a ", dtype_name(to_dtype(t.scalar_type())), " one of shape ",
           dims_text(global));
  };
  walk(template_, "", json::array(), [&](Value& v, const std::string& key, const json& path) {
    if (v.is_tensor()) {
      const Entry* e = entry_for(key, {EntryKind::kReplicated, EntryKind::kSharded});
      if (!e) return;
      at::Tensor t = v.to_tensor();
      check_tensor(*e, t, t.sizes().vec());
      fill(reader, *e, t, std::vector<int64_t>(t.dim(), 0));
    } else if (is_shard(v)) {
      const Entry* e = entry_for(key, {EntryKind::kReplicated, EntryKind::kSharded});
      if (!e) return;
      ShardInfo s = shard_info(v);
      check_tensor(*e, s.local, s.global_shape);
      if (s.offsets.size() != size_t(s.local.dim()))
        fail(ErrorKind::kInvalidArgument, "key '", key, "': ", s.offsets.size(), " offsets for a ", s.local.dim(),
             "-d shard");
      for (int64_t d = 0; d < s.local.dim(); ++d)
        if (s.offsets[d] < 0 || s.offsets[d] + s.local.size(d) > s.global_shape[d])
          fail(ErrorKind::kInvalidArgument, "key '", key, "': the shard at offsets ", dims_text(s.offsets),
               " with shape ", dims_text(s.local.sizes().vec()), " falls outside the global shape ",
               dims_text(s.global_shape));
      fill(reader, *e, s.local, s.offsets);
    } else if (is_per_rank(v)) {
      const Entry* e = entry_for(key, {EntryKind::kPerRank});
      if (!e) return;
      if (meta.world_size == world) {
        if (std::find(e->ranks.begin(), e->ranks.end(), rank) == e->ranks.end())
          fail(ErrorKind::kNotFound, "key '", key, "': rank ", rank, " saved no per-rank value");
        Value saved = reader.value(rank, key);
        Value inner = v.object_args().items().at(0);
        if (inner.is_tensor() && saved.is_tensor()) {
          at::Tensor t = inner.to_tensor(), s = saved.to_tensor();
          if (t.sizes() != s.sizes() || t.scalar_type() != s.scalar_type())
            fail(ErrorKind::kMismatch, "key '", key, "': the per-rank tensor of rank ", rank, " has shape ",
                 dims_text(s.sizes().vec()), ", the template's ", dims_text(t.sizes().vec()));
          t.copy_(s);
          v = inner;
        } else {
          v = saved;
        }
      } else {
        auto& all = result.per_rank[key];
        all.assign(meta.world_size, Value());
        for (int r : e->ranks) all[r] = reader.value(r, key);
      }
    } else {
      // A value the checkpoint holds as a whole, or a subtree whose leaves it holds one by one
      // (the template has an empty dict or list, or a value, where the saved state had a
      // container: an optimizer without state yet, a list that grew): put together.
      if (!meta.find(key)) {
        const std::string prefix = key + "/";
        ConsolidateOptions which;
        which.rank = rank;
        which.world_size = world;
        Value sub = assemble(
            reader, [&](const Entry& e) { return e.key.compare(0, prefix.size(), prefix) == 0; }, path.size(), which);
        if (!sub.is_none()) {
          v = std::move(sub);
          return;
        }
      }
      const Entry* e = entry_for(key, {EntryKind::kValue});
      if (!e) return;
      v = reader.value(e->ranks.at(0), key);
    }
  });
}

}  // namespace

LoadResult load(Value& template_, const std::string& dir_in, c10d::ProcessGroup& pg, const LoadOptions& options) {
  io::Env* env = options.env ? options.env : io::Env::Default();
  const int rank = pg.getRank(), world = pg.getSize();
  std::string dir = dir_in;
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  LoadResult result;
  std::string error;
  ErrorKind kind = ErrorKind::kIO;
  try {
    const std::string path = dir + "/" + kMetadataFile;
    Reader reader(dir, parse_metadata(env->read_file(path), path), env);
    result.saved_world_size = reader.meta().world_size;
    try {
      load_rank(template_, reader, rank, world, options, result);
    } catch (const Error& e) {
      rethrow_naming(e, dir);
    }
  } catch (const Error& e) {
    error = e.what();
    kind = e.kind();
  } catch (const std::exception& e) {
    error = e.what();
  }
  // Every rank learns whether every other one loaded: one int per rank.
  std::vector<at::Tensor> in{at::tensor({static_cast<int64_t>(error.empty() ? -1 : int(kind))}, at::kLong)};
  std::vector<std::vector<at::Tensor>> out(1);
  for (int i = 0; i < world; ++i) out[0].push_back(at::empty({1}, at::kLong));
  wait_for(pg.allgather(out, in), options.timeout, "agreeing on the load");
  if (!error.empty()) fail(kind, error);
  std::string failed;
  for (int i = 0; i < world; ++i)
    if (out[0][i].item<int64_t>() >= 0) failed += (failed.empty() ? "" : ", ") + std::to_string(i);
  if (!failed.empty())
    fail(ErrorKind::kIO, dir, ": distributed load failed on rank(s) ", failed, " (see their errors)");
  return result;
}

}  // namespace ckpt::dist
