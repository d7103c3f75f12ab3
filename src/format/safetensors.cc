// safetensors read and written (see safetensors.h for the layout and the rules).
#include "format/safetensors.h"

#include <algorithm>
#include <charconv>
#include <cstring>
#include <nlohmann/json.hpp>
#include <optional>
#include <tuple>
#include <utility>
#include <vector>

#include "format/archive.h"
#include "util/bytes.h"
#include "util/errors.h"
#include "util/text.h"

namespace ckpt::safetensors {
namespace {

using Json = nlohmann::ordered_json;

constexpr uint64_t kMaxHeader = 100'000'000;

// The format's dtypes in its own order, narrowest first (the writer lays tensors out by this order
// reversed); `dtype` is empty for the ones LibTorch 1.13 lacks.
struct DTypeName {
  const char* name;
  std::optional<DType> dtype;
};
constexpr DTypeName kDTypes[] = {
    {"BOOL", DType::kBool},     {"U8", DType::kUInt8},  {"I8", DType::kInt8},  {"F8_E5M2", std::nullopt},
    {"F8_E4M3", std::nullopt},  {"I16", DType::kInt16}, {"U16", std::nullopt}, {"F16", DType::kFloat16},
    {"BF16", DType::kBFloat16}, {"I32", DType::kInt32}, {"U32", std::nullopt}, {"F32", DType::kFloat32},
    {"F64", DType::kFloat64},   {"I64", DType::kInt64}, {"U64", std::nullopt},
};

int rank_of(DType d) {
  for (int i = 0; i < int(std::size(kDTypes)); ++i)
    if (kDTypes[i].dtype == d) return i;
  fail(ErrorKind::kInvalidArgument, dtype_name(d), " tensors have no safetensors dtype");
}

struct Entry {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  uint64_t begin, end;
};

Entry parse_entry(const std::string& name, const Json& j) {
  auto bad = [&](const std::string& why) -> Entry {
    fail(ErrorKind::kCorruption, "safetensors header: tensor '", printable(name), "': ", why);
  };
  if (!j.is_object()) return bad("is not an object");
  auto dt = j.find("dtype");
  if (dt == j.end() || !dt->is_string()) return bad("no \"dtype\" string");
  const std::string dname = dt->get<std::string>();
  const DTypeName* known = nullptr;
  for (const auto& d : kDTypes)
    if (dname == d.name) known = &d;
  if (!known) return bad("unknown dtype '" + printable(dname, 32) + "'");
  if (!known->dtype)
    fail(ErrorKind::kUnsupported, "safetensors: tensor '", printable(name), "' has dtype ", dname,
         ", which LibTorch 1.13 does not have");
  Entry e{name, *known->dtype, {}, 0, 0};
  auto shape = j.find("shape");
  if (shape == j.end() || !shape->is_array()) return bad("no \"shape\" array");
  for (const auto& s : *shape) {
    if (!s.is_number_unsigned()) return bad("a dimension is not a non-negative integer");
    uint64_t d = s.get<uint64_t>();
    if (d > uint64_t(INT64_MAX)) return bad("a dimension overflows");
    e.shape.push_back(int64_t(d));
  }
  auto off = j.find("data_offsets");
  if (off == j.end() || !off->is_array() || off->size() != 2 || !(*off)[0].is_number_unsigned() ||
      !(*off)[1].is_number_unsigned())
    return bad("\"data_offsets\" is not two non-negative integers");
  e.begin = (*off)[0].get<uint64_t>();
  e.end = (*off)[1].get<uint64_t>();
  return e;
}

uint64_t nbytes_of(const Entry& e) {
  uint64_t n = element_size(e.dtype);
  for (int64_t d : e.shape)
    if (__builtin_mul_overflow(n, uint64_t(d), &n))
      fail(ErrorKind::kCorruption, "safetensors header: tensor '", printable(e.name), "': its shape overflows");
  return n;
}

// --- writing ---------------------------------------------------------------------------------

std::string repr(const Value& v) {
  if (v.is_bool()) return v.to_bool() ? "True" : "False";
  if (v.is_int()) return std::to_string(v.to_int());
  if (v.is_float()) {
    char buf[32];
    auto r = std::to_chars(buf, buf + sizeof buf, v.to_double());
    std::string s(buf, r.ptr);
    if (s.find_first_of(".eni") == std::string::npos) s += ".0";  // Python's repr(2.0) is '2.0'
    return s;
  }
  return v.to_string();
}

struct Flat {
  std::vector<std::pair<std::string, TensorRef>> tensors;
  std::vector<std::pair<std::string, std::string>> metadata;
  std::vector<std::string> names;  // every flattened name, to refuse two that collide
};

void flatten(const Value& v, const std::string& name, Flat& out, int depth) {
  if (depth > 100) fail(ErrorKind::kInvalidArgument, "safetensors: '", printable(name), "' nests deeper than 100");
  auto child = [&](const std::string& key) { return name.empty() ? key : name + "." + key; };
  switch (v.kind()) {
    case Value::Kind::kTensor:
      out.tensors.emplace_back(name, v.tensor());
      out.names.push_back(name);
      return;
    case Value::Kind::kDict:
      for (const auto& [k, x] : v.dict()) {
        if (depth == 0 && k.is_string() && k.to_string() == "__metadata__" && x.is_dict()) continue;  // the header's
        std::string key;
        if (k.is_string())
          key = k.to_string();
        else if (k.is_int())
          key = std::to_string(k.to_int());
        else
          fail(ErrorKind::kInvalidArgument, "safetensors: a key of '", printable(name), "' is ", k.kind_name(),
               " (names are strings)");
        flatten(x, child(key), out, depth + 1);
      }
      return;
    case Value::Kind::kList:
    case Value::Kind::kTuple:
      for (size_t i = 0; i < v.items().size(); ++i) flatten(v.items()[i], child(std::to_string(i)), out, depth + 1);
      return;
    case Value::Kind::kBool:
    case Value::Kind::kInt:
    case Value::Kind::kFloat:
    case Value::Kind::kString:
      out.metadata.emplace_back(name, repr(v));
      out.names.push_back(name);
      return;
    default:
      fail(ErrorKind::kInvalidArgument, "safetensors: '", printable(name), "' is ", v.kind_name(),
           "; the format holds tensors (and string metadata) only");
  }
}

// Copies a strided view's elements into `dst` in C order.
void gather(const TensorRef& t, std::byte* dst) {
  const size_t elem = element_size(t.dtype);
  const std::byte* base = t.storage->data() + t.storage_offset * int64_t(elem);
  const size_t dims = t.sizes.size();
  if (t.numel() == 0) return;
  std::vector<int64_t> idx(dims, 0);
  for (int64_t n = t.numel(); n > 0; --n) {
    int64_t off = 0;
    for (size_t d = 0; d < dims; ++d) off += idx[d] * t.strides[d];
    std::memcpy(dst, base + off * int64_t(elem), elem);
    dst += elem;
    for (size_t d = dims; d-- > 0;) {
      if (++idx[d] < t.sizes[d]) break;
      idx[d] = 0;
    }
  }
}

}  // namespace

bool looks_like(const std::byte* data, uint64_t size) {
  return size >= 9 && static_cast<char>(data[8]) == '{';
}

bool has_header(const std::byte* data, uint64_t size) {
  // The header itself, not a magic byte: its length may begin with any byte (0x80, the pickle
  // PROTO opcode a legacy torch.save file starts with, for a header of 0x380 bytes).
  if (size < 10) return false;
  const uint64_t n = load_le64(data);
  if (n < 2 || n > kMaxHeader || n > size - 8) return false;
  const char* header = reinterpret_cast<const char*>(data) + 8;
  size_t last = static_cast<size_t>(n) - 1;
  while (last > 0 && header[last] == ' ') --last;  // the writers pad with spaces
  return header[0] == '{' && header[last] == '}';
}

Value read(std::shared_ptr<io::MappedFile> file, const LoadOptions& options, VerifyReport* report) {
  const uint64_t size = file->size();
  const std::byte* p = file->data();
  if (size < 8)
    fail(ErrorKind::kCorruption, "safetensors: file is ", size, " bytes, shorter than the 8-byte header length");
  const uint64_t n = load_le64(p);
  if (n > kMaxHeader)
    fail(ErrorKind::kCorruption, "safetensors: the header claims ", n, " bytes, more than the format's limit of ",
         kMaxHeader);
  if (n > size - 8)
    fail(ErrorKind::kCorruption, "safetensors: the header claims ", n, " bytes but the file has ", size - 8,
         " after the length (truncated?)");
  std::string text(reinterpret_cast<const char*>(p) + 8, static_cast<size_t>(n));
  if (text.empty() || text[0] != '{') fail(ErrorKind::kCorruption, "safetensors: the header does not start with '{'");
  Json j;
  try {
    j = Json::parse(text);
  } catch (const Json::exception& e) {
    fail(ErrorKind::kCorruption, "safetensors: the header is not valid JSON (", printable(e.what()), ")");
  }
  if (!j.is_object()) fail(ErrorKind::kCorruption, "safetensors: the header is not a JSON object");

  std::vector<Entry> entries;
  Value metadata;
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it.key() == "__metadata__") {
      if (!it->is_object()) fail(ErrorKind::kCorruption, "safetensors: \"__metadata__\" is not an object");
      metadata = Value::new_dict();
      for (auto m = it->begin(); m != it->end(); ++m) {
        if (!m->is_string())
          fail(ErrorKind::kCorruption, "safetensors: metadata '", printable(m.key()), "' is not a string");
        metadata.dict().set(m.key(), m->get<std::string>());
      }
      continue;
    }
    entries.push_back(parse_entry(it.key(), *it));
  }
  // In offset order, the tensors must tile the buffer: no hole, no overlap, nothing after.
  std::stable_sort(entries.begin(), entries.end(),
                   [](const Entry& a, const Entry& b) { return std::tie(a.begin, a.end) < std::tie(b.begin, b.end); });
  const uint64_t buffer = size - 8 - n;
  uint64_t at = 0;
  for (const Entry& e : entries) {
    if (e.begin != at || e.end < e.begin)
      fail(ErrorKind::kCorruption, "safetensors: tensor '", printable(e.name), "': data_offsets [", e.begin, ", ",
           e.end, "] ", e.begin > at ? "leave a hole" : "overlap", " (the previous tensor ends at ", at, ")");
    const uint64_t need = nbytes_of(e);
    if (e.end - e.begin != need)
      fail(ErrorKind::kCorruption, "safetensors: tensor '", printable(e.name), "': data_offsets span ", e.end - e.begin,
           " bytes but ", dtype_name(e.dtype), " of that shape needs ", need);
    if (e.end > buffer)
      fail(ErrorKind::kCorruption, "safetensors: tensor '", printable(e.name), "' ends at byte ", e.end, " of a ",
           buffer, "-byte buffer (truncated file?)");
    at = e.end;
  }
  if (at != buffer)
    fail(ErrorKind::kCorruption, "safetensors: the tensors end at byte ", at, " of the buffer but it holds ", buffer,
         " bytes (trailing data)");

  Value out = Value::ordered_dict();
  if (!metadata.is_none()) out.dict().set("__metadata__", metadata);
  if (report) {
    report->format = "safetensors";
    report->file_size = size;
  }
  for (const Entry& e : entries) {
    const uint64_t offset = 8 + n + e.begin, bytes = e.end - e.begin;
    const size_t elem = element_size(e.dtype);
    std::shared_ptr<StorageData> storage;
    if (options.mmap && offset % elem == 0) {
      storage = format::mapped_storage(file, offset, static_cast<size_t>(bytes), e.dtype);
    } else {
      storage = make_storage(e.dtype, static_cast<size_t>(bytes));
      if (bytes) file->read_at(offset, storage->data(), static_cast<size_t>(bytes));
    }
    TensorRef t;
    t.storage = std::move(storage);
    t.dtype = e.dtype;
    t.sizes = e.shape;
    t.strides.assign(e.shape.size(), 1);
    for (size_t d = e.shape.size(); d-- > 1;) t.strides[d - 1] = t.strides[d] * std::max<int64_t>(e.shape[d], 1);
    out.dict().set(e.name, Value(std::move(t)));
    if (report) {
      report->records.push_back(RecordReport{e.name, offset, bytes, 0, false});
      report->tensors++;
      report->storages++;
      report->tensor_bytes += bytes;
    }
  }
  if (options.progress) options.progress(buffer, buffer);
  return out;
}

SavedFile write(io::Env* env, const Value& value, const std::string& path, const SaveOptions& options) {
  if (!value.is_dict())
    fail(ErrorKind::kInvalidArgument, path, ": safetensors holds a dict of tensors, not ", value.kind_name());
  Flat flat;
  if (const Value* meta = value.dict().find("__metadata__"); meta && meta->is_dict()) {
    for (const auto& [mk, mv] : meta->dict()) {
      if (!mk.is_string() || !mv.is_string())
        fail(ErrorKind::kInvalidArgument, path, ": safetensors metadata holds strings only; '__metadata__' has ",
             short_repr(mk), ": ", mv.kind_name());
      flat.metadata.emplace_back(mk.to_string(), mv.to_string());
    }
  }
  try {
    flatten(value, "", flat, 0);
  } catch (const Error& e) {
    rethrow_naming(e, path);
  }
  std::vector<std::string> sorted = flat.names;
  std::sort(sorted.begin(), sorted.end());
  for (size_t i = 1; i < sorted.size(); ++i)
    if (sorted[i] == sorted[i - 1])
      fail(ErrorKind::kInvalidArgument, path, ": two entries flatten to the name '", printable(sorted[i]), "'");

  // The reference writer's order: widest dtype first, then by name.
  std::vector<std::pair<int, size_t>> order;
  for (size_t i = 0; i < flat.tensors.size(); ++i) {
    try {
      order.emplace_back(rank_of(flat.tensors[i].second.dtype), i);
    } catch (const Error& e) {
      fail(e.kind(), path, ": tensor '", printable(flat.tensors[i].first), "': ", e.what());
    }
  }
  std::sort(order.begin(), order.end(), [&](const auto& a, const auto& b) {
    if (a.first != b.first) return a.first > b.first;
    return flat.tensors[a.second].first < flat.tensors[b.second].first;
  });

  Json header = Json::object();
  if (!flat.metadata.empty()) {
    Json m = Json::object();
    for (const auto& [k, v] : flat.metadata) m[k] = v;
    header["__metadata__"] = m;
  }
  uint64_t offset = 0;
  for (const auto& [rank, i] : order) {
    const TensorRef& t = flat.tensors[i].second;
    t.check_bounds();
    const uint64_t bytes = uint64_t(t.numel()) * element_size(t.dtype);
    header[flat.tensors[i].first] =
        Json{{"dtype", kDTypes[rank].name}, {"shape", t.sizes}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  const uint64_t total = 8 + text.size() + offset;

  if (options.check_free_space) {
    uint64_t available = 0;
    try {
      available = env->free_space(io::dirname_of(path));
    } catch (const Error&) {
      available = 0;  // no answer: no early check
    }
    if (available && available < total)
      fail(ErrorKind::kIO, path, ": not enough disk space: the file needs ", total, " bytes, ", available,
           " bytes are available");
  }
  try {
    io::AtomicFile out(env, path);
    std::string head;
    put_le64(head, text.size());
    head += text;
    out.file().append(head.data(), head.size());
    uint64_t done = 0;
    std::vector<std::byte> scratch;
    for (const auto& [rank, i] : order) {
      const TensorRef& t = flat.tensors[i].second;
      const uint64_t bytes = uint64_t(t.numel()) * element_size(t.dtype);
      if (bytes == 0) continue;
      if (t.is_contiguous()) {
        out.file().append(t.storage->data() + t.storage_offset * int64_t(element_size(t.dtype)), bytes);
      } else {
        scratch.resize(bytes);
        gather(t, scratch.data());
        out.file().append(scratch.data(), bytes);
      }
      done += bytes;
      if (options.progress) options.progress(done, offset);
    }
    out.commit(options.durable);
  } catch (const Error& e) {
    rethrow_naming(e, path);
  }
  if (options.progress) options.progress(offset, offset);
  return SavedFile{path, total, 0};
}

}  // namespace ckpt::safetensors
