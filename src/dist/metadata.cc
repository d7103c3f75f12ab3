#include "dist/metadata.h"

#include <algorithm>
#include <cstdio>
#include <limits>
#include <nlohmann/json.hpp>

#include "util/errors.h"

namespace ckpt::dist {

using json = nlohmann::ordered_json;

const char* entry_kind_name(EntryKind kind) {
  switch (kind) {
    case EntryKind::kReplicated:
      return "replicated";
    case EntryKind::kSharded:
      return "sharded";
    case EntryKind::kPerRank:
      return "per_rank";
    case EntryKind::kValue:
      return "value";
  }
  return "?";
}

std::string rank_file_name(int rank) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "rank-%05d.pt", rank);
  return buf;
}

const Entry* Metadata::find(const std::string& key) const {
  auto it = std::lower_bound(entries.begin(), entries.end(), key,
                             [](const Entry& e, const std::string& k) { return e.key < k; });
  return it != entries.end() && it->key == key ? &*it : nullptr;
}

std::string to_json(const Metadata& m) {
  json j;
  j["format"] = kMetadataFormat;
  j["world_size"] = m.world_size;
  j["files"] = json::array();
  for (const auto& f : m.files) j["files"].push_back({{"rank", f.rank}, {"file", f.file}, {"bytes", f.bytes}});
  j["entries"] = json::array();
  for (const auto& e : m.entries) {
    json je;
    je["key"] = e.key;
    je["path"] = json::parse(e.path_json);
    je["kind"] = entry_kind_name(e.kind);
    if (e.kind == EntryKind::kReplicated || e.kind == EntryKind::kSharded) {
      je["dtype"] = dtype_name(e.dtype);
      je["shape"] = e.shape;
      je["pieces"] = json::array();
      for (const auto& p : e.pieces)
        je["pieces"].push_back({{"rank", p.rank},
                                {"file", p.file},
                                {"record", p.record},
                                {"offsets", p.offsets},
                                {"shape", p.shape},
                                {"data_offset", p.data_offset},
                                {"nbytes", p.nbytes},
                                {"crc32", hex32(p.crc32)}});
    } else {
      je["ranks"] = e.ranks;
    }
    j["entries"].push_back(std::move(je));
  }
  return j.dump(1) + "\n";
}

namespace {

constexpr int kMaxWorld = 1 << 20;
constexpr size_t kMaxDims = 64;

[[noreturn]] void bad(const std::string& origin, const std::string& what) {
  fail(ErrorKind::kCorruption, origin, ": ", what);
}

const json& field(const json& j, const char* name, const std::string& origin, const std::string& where) {
  if (!j.is_object() || !j.contains(name)) bad(origin, where + "has no \"" + name + "\"");
  return j[name];
}

int64_t get_int(const json& j, const char* name, int64_t lo, int64_t hi, const std::string& origin,
                const std::string& where) {
  const json& v = field(j, name, origin, where);
  if (!v.is_number_integer()) bad(origin, where + "\"" + name + "\" is not an integer");
  int64_t x = v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(std::numeric_limits<int64_t>::max())
                  ? std::numeric_limits<int64_t>::max()
                  : v.get<int64_t>();
  if (x < lo || x > hi) bad(origin, str_cat(where, "\"", name, "\" = ", x, " is outside [", lo, ", ", hi, "]"));
  return x;
}

std::string get_str(const json& j, const char* name, const std::string& origin, const std::string& where) {
  const json& v = field(j, name, origin, where);
  if (!v.is_string()) bad(origin, where + "\"" + name + "\" is not a string");
  return v.get<std::string>();
}

std::vector<int64_t> get_dims(const json& j, const char* name, const std::string& origin, const std::string& where) {
  const json& v = field(j, name, origin, where);
  if (!v.is_array() || v.size() > kMaxDims) bad(origin, where + "\"" + name + "\" is not a list of at most 64 sizes");
  std::vector<int64_t> out;
  for (const auto& x : v) {
    if (!x.is_number_integer() || x.get<int64_t>() < 0 || (x.is_number_unsigned() && x.get<uint64_t>() >> 62))
      bad(origin, where + "\"" + name + "\" holds something other than a size");
    out.push_back(x.get<int64_t>());
  }
  return out;
}

// The product of `dims`, or nullopt-like -1 on overflow past 2^62.
int64_t volume(const std::vector<int64_t>& dims) {
  int64_t n = 1;
  for (int64_t d : dims) {
    if (d == 0) return 0;
    if (n > (int64_t{1} << 62) / d) return -1;
    n *= d;
  }
  return n;
}

std::string dims_text(const std::vector<int64_t>& d) {
  std::string s = "[";
  for (size_t i = 0; i < d.size(); ++i) s += (i ? ", " : "") + std::to_string(d[i]);
  return s + "]";
}

}  // namespace

void check_tiling(const Entry& e, ErrorKind kind, const std::string& origin) {
  const std::string where = origin + ": key '" + printable(e.key, 200) + "'";
  const int64_t total = volume(e.shape);
  if (total < 0) fail(kind, where, ": global shape ", dims_text(e.shape), " is too large");
  int64_t covered = 0;
  for (size_t i = 0; i < e.pieces.size(); ++i) {
    const Piece& p = e.pieces[i];
    if (p.offsets.size() != e.shape.size() || p.shape.size() != e.shape.size())
      fail(kind, where, ": the piece of rank ", p.rank, " has ", p.offsets.size(), "-d offsets and a ", p.shape.size(),
           "-d shape for a ", e.shape.size(), "-d tensor");
    for (size_t d = 0; d < e.shape.size(); ++d)
      if (p.offsets[d] < 0 || p.shape[d] < 0 || p.offsets[d] > e.shape[d] || p.shape[d] > e.shape[d] - p.offsets[d])
        fail(kind, where, ": the piece of rank ", p.rank, " at offsets ", dims_text(p.offsets), " with shape ",
             dims_text(p.shape), " falls outside the global shape ", dims_text(e.shape));
    const int64_t v = volume(p.shape);  // inside the global shape, so no overflow
    if (v == 0) continue;
    for (size_t k = 0; k < i; ++k) {
      const Piece& q = e.pieces[k];
      bool overlap = volume(q.shape) != 0;
      for (size_t d = 0; d < e.shape.size() && overlap; ++d)
        overlap = p.offsets[d] < q.offsets[d] + q.shape[d] && q.offsets[d] < p.offsets[d] + p.shape[d];
      if (overlap)
        fail(kind, where, ": the pieces of ranks ", q.rank, " (offsets ", dims_text(q.offsets), ", shape ",
             dims_text(q.shape), ") and ", p.rank, " (offsets ", dims_text(p.offsets), ", shape ", dims_text(p.shape),
             ") overlap");
    }
    covered += v;  // no overlaps so far: covered stays within total
  }
  if (covered != total) {
    std::string ranks;
    for (const auto& p : e.pieces) ranks += (ranks.empty() ? "" : ", ") + std::to_string(p.rank);
    fail(kind, where, ": the pieces of ranks [", ranks, "] cover ", covered, " of its ", total,
         " elements (global shape ", dims_text(e.shape), "): a hole");
  }
}

Metadata parse_metadata(const std::string& text, const std::string& origin) {
  json j;
  try {
    j = json::parse(text);
  } catch (const std::exception& ex) {
    bad(origin, std::string("not valid JSON: ") + ex.what());
  }
  if (!j.is_object()) bad(origin, "not a JSON object");
  if (get_str(j, "format", origin, "") != kMetadataFormat)
    bad(origin, "format is not \"" + std::string(kMetadataFormat) + "\"");
  Metadata m;
  m.world_size = static_cast<int>(get_int(j, "world_size", 1, kMaxWorld, origin, ""));
  const json& files = field(j, "files", origin, "");
  if (!files.is_array() || files.size() != size_t(m.world_size))
    bad(origin, str_cat("\"files\" does not list one file for each of the ", m.world_size, " ranks"));
  for (size_t i = 0; i < files.size(); ++i) {
    const std::string where = str_cat("files[", i, "] ");
    FileInfo f;
    f.rank = static_cast<int>(get_int(files[i], "rank", i, i, origin, where));
    f.file = get_str(files[i], "file", origin, where);
    if (f.file != rank_file_name(f.rank))
      bad(origin, where + "names '" + printable(f.file, 80) + "', not " + rank_file_name(f.rank));
    f.bytes = static_cast<uint64_t>(get_int(files[i], "bytes", 0, std::numeric_limits<int64_t>::max(), origin, where));
    m.files.push_back(f);
  }
  const json& entries = field(j, "entries", origin, "");
  if (!entries.is_array()) bad(origin, "\"entries\" is not a list");
  for (size_t i = 0; i < entries.size(); ++i) {
    const json& je = entries[i];
    Entry e;
    e.key = get_str(je, "key", origin, str_cat("entries[", i, "] "));
    const std::string where = "key '" + printable(e.key, 200) + "': ";
    const json& path = field(je, "path", origin, where);
    if (!path.is_array()) bad(origin, where + "\"path\" is not a list");
    for (const auto& c : path)
      if (!c.is_string() && !c.is_number_integer() &&
          !(c.is_object() && c.size() == 1 && (c.contains("list") || c.contains("tuple")) &&
            c.begin().value().is_number_unsigned()))
        bad(origin, where + "\"path\" holds something other than str, int, {\"list\": i} or {\"tuple\": i}");
    e.path_json = path.dump();
    const std::string kind = get_str(je, "kind", origin, where);
    if (kind == "replicated" || kind == "sharded") {
      e.kind = kind == "sharded" ? EntryKind::kSharded : EntryKind::kReplicated;
      auto dt = dtype_from_name(get_str(je, "dtype", origin, where));
      if (!dt) bad(origin, where + "unknown dtype");
      e.dtype = *dt;
      e.shape = get_dims(je, "shape", origin, where);
      const json& pieces = field(je, "pieces", origin, where);
      if (!pieces.is_array() || pieces.empty() || pieces.size() > size_t(m.world_size))
        bad(origin, where + "\"pieces\" is not a list of 1 to world_size pieces");
      for (const auto& jp : pieces) {
        Piece p;
        p.rank = static_cast<int>(get_int(jp, "rank", 0, m.world_size - 1, origin, where + "piece "));
        p.file = get_str(jp, "file", origin, where);
        if (p.file != m.files[p.rank].file)
          bad(origin, where + "piece of rank " + std::to_string(p.rank) + " names another rank's file");
        p.record = get_str(jp, "record", origin, where);
        p.offsets = get_dims(jp, "offsets", origin, where);
        p.shape = get_dims(jp, "shape", origin, where);
        p.data_offset = static_cast<uint64_t>(get_int(jp, "data_offset", 0, int64_t{1} << 62, origin, where));
        p.nbytes = static_cast<uint64_t>(get_int(jp, "nbytes", 0, int64_t{1} << 62, origin, where));
        const std::string crc = get_str(jp, "crc32", origin, where);
        char* end = nullptr;
        unsigned long c = std::strtoul(crc.c_str(), &end, 16);
        if (crc.size() < 3 || crc.size() > 10 || crc.compare(0, 2, "0x") != 0 || *end != '\0')
          bad(origin, where + "crc32 '" + printable(crc, 20) + "' is not 0x and 8 hex digits");
        p.crc32 = static_cast<uint32_t>(c);
        const int64_t n = volume(p.shape);
        if (n < 0 || uint64_t(n) > (uint64_t{1} << 62) / element_size(e.dtype) ||
            uint64_t(n) * element_size(e.dtype) != p.nbytes)
          bad(origin, str_cat(where, "the piece of rank ", p.rank, " has ", p.nbytes, " bytes for shape ",
                              dims_text(p.shape), " of ", dtype_name(e.dtype)));
        e.pieces.push_back(std::move(p));
      }
      if (e.kind == EntryKind::kReplicated && e.pieces.size() != 1)
        bad(origin, where + "a replicated tensor has more than one piece");
      check_tiling(e, ErrorKind::kCorruption, origin);
    } else if (kind == "value" || kind == "per_rank") {
      e.kind = kind == "value" ? EntryKind::kValue : EntryKind::kPerRank;
      const json& ranks = field(je, "ranks", origin, where);
      if (!ranks.is_array() || ranks.empty() || ranks.size() > size_t(m.world_size))
        bad(origin, where + "\"ranks\" is not a list of ranks");
      for (const auto& r : ranks) {
        if (!r.is_number_integer() || r.get<int64_t>() < 0 || r.get<int64_t>() >= m.world_size)
          bad(origin, where + "\"ranks\" holds something other than a rank below world_size");
        e.ranks.push_back(r.get<int>());
      }
    } else {
      bad(origin, where + "unknown kind '" + printable(kind, 40) + "'");
    }
    if (!m.entries.empty() && !(m.entries.back().key < e.key))
      bad(origin, where + "entries are not sorted by key, or repeat one");
    m.entries.push_back(std::move(e));
  }
  return m;
}

}  // namespace ckpt::dist
