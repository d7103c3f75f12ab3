// ckpt::diff: two value trees compared (see ckpt/diff.h).
#include "ckpt/diff.h"

#include <cmath>
#include <cstring>
#include <limits>

#include "util/errors.h"
#include "util/text.h"

namespace ckpt {
namespace {

double half_to_double(uint16_t h) {
  const int sign = (h >> 15) & 1, exp = (h >> 10) & 0x1f, frac = h & 0x3ff;
  double v;
  if (exp == 0)
    v = std::ldexp(frac, -24);  // subnormal
  else if (exp == 31)
    v = frac ? std::numeric_limits<double>::quiet_NaN() : std::numeric_limits<double>::infinity();
  else
    v = std::ldexp(frac + 1024, exp - 25);
  return sign ? -v : v;
}

double bf16_to_double(uint16_t b) {
  uint32_t bits = uint32_t(b) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// Element `i` of a storage (`part` 1 for a complex number's imaginary part) as a double.
double element(const std::byte* p, DType d, int part) {
  auto load = [&](auto tag) {
    decltype(tag) v;
    std::memcpy(&v, p, sizeof v);
    return v;
  };
  switch (d) {
    case DType::kFloat64:
      return load(double{});
    case DType::kFloat32:
      return load(float{});
    case DType::kFloat16:
      return half_to_double(load(uint16_t{}));
    case DType::kBFloat16:
      return bf16_to_double(load(uint16_t{}));
    case DType::kInt64:
      return double(load(int64_t{}));
    case DType::kInt32:
      return load(int32_t{});
    case DType::kInt16:
      return load(int16_t{});
    case DType::kInt8:
      return load(int8_t{});
    case DType::kUInt8:
      return load(uint8_t{});
    case DType::kBool:
      return load(uint8_t{}) != 0;
    case DType::kComplex64: {
      float c[2];
      std::memcpy(c, p, sizeof c);
      return c[part];
    }
    case DType::kComplex128: {
      double c[2];
      std::memcpy(c, p, sizeof c);
      return c[part];
    }
  }
  return 0;
}

bool is_complex(DType d) {
  return d == DType::kComplex64 || d == DType::kComplex128;
}

std::string describe(const Value& v) {
  if (v.is_tensor()) return str_cat(dtype_name(v.tensor().dtype), " ", shape_text(v.tensor().sizes));
  if (v.is_dict() || v.is_list() || v.is_tuple()) return str_cat(v.kind_name(), " of ", v.size());
  return str_cat(v.kind_name(), " ", short_repr(v));
}

class Differ {
 public:
  Differ(const DiffOptions& o, uint64_t total) : o_(o), total_(total) {}
  DiffReport report;

  void compare(const Value& a, const Value& b, const std::string& path) {
    if (a.kind() != b.kind() && !(numeric(a) && numeric(b))) return add(DiffEntry::Kind::kKind, path, a, b);
    switch (a.kind()) {
      case Value::Kind::kDict: {
        for (const auto& [k, x] : a.dict()) {
          const std::string p = join(path, k);
          if (const Value* y = b.dict().find(k))
            compare(x, *y, p);
          else
            add(DiffEntry::Kind::kOnlyInA, p, x, Value());
        }
        for (const auto& [k, y] : b.dict())
          if (!a.dict().find(k)) add(DiffEntry::Kind::kOnlyInB, join(path, k), Value(), y);
        return;
      }
      case Value::Kind::kList:
      case Value::Kind::kTuple: {
        const auto &x = a.items(), &y = b.items();
        for (size_t i = 0; i < std::max(x.size(), y.size()); ++i) {
          const std::string p = join(path, Value(static_cast<long long>(i)));
          if (i >= y.size())
            add(DiffEntry::Kind::kOnlyInA, p, x[i], Value());
          else if (i >= x.size())
            add(DiffEntry::Kind::kOnlyInB, p, Value(), y[i]);
          else
            compare(x[i], y[i], p);
        }
        return;
      }
      case Value::Kind::kTensor:
        return tensors(a, b, path);
      case Value::Kind::kObject:
        if (a.object_type() != b.object_type()) return add(DiffEntry::Kind::kValue, path, a, b);
        return compare(a.object_args(), b.object_args(), path);
      default:
        if (numeric(a) && numeric(b) && (a.is_float() || b.is_float())) {
          if (!close(a.to_double(), b.to_double())) add(DiffEntry::Kind::kValue, path, a, b);
          return;
        }
        if (short_repr(a) != short_repr(b) || !same_scalar(a, b)) add(DiffEntry::Kind::kValue, path, a, b);
    }
  }

 private:
  const DiffOptions& o_;
  uint64_t total_, done_ = 0;

  static bool numeric(const Value& v) { return v.is_int() || v.is_float(); }
  static bool same_scalar(const Value& a, const Value& b) {
    switch (a.kind()) {
      case Value::Kind::kString:
        return a.to_string() == b.to_string();
      case Value::Kind::kBytes:
        return a.to_bytes() == b.to_bytes();
      case Value::Kind::kBigInt:
        return a.big_int_bytes() == b.big_int_bytes();
      case Value::Kind::kInt:
        return a.to_int() == b.to_int();
      case Value::Kind::kBool:
        return a.to_bool() == b.to_bool();
      default:
        return true;
    }
  }
  static std::string join(const std::string& path, const Value& key) {
    std::string k = key.is_string() ? key.to_string() : short_repr(key);
    return path.empty() ? k : path + "/" + k;
  }
  bool close(double x, double y) const {
    if (std::isnan(x) && std::isnan(y)) return true;
    if (x == y) return true;  // also equal infinities
    return std::fabs(x - y) <= o_.atol + o_.rtol * std::fabs(y);
  }
  void add(DiffEntry::Kind kind, const std::string& path, const Value& a, const Value& b) {
    DiffEntry e;
    e.kind = kind;
    e.path = path;
    if (kind != DiffEntry::Kind::kOnlyInB) e.a = describe(a);
    if (kind != DiffEntry::Kind::kOnlyInA) e.b = describe(b);
    report.entries.push_back(std::move(e));
  }

  void tensors(const Value& av, const Value& bv, const std::string& path) {
    const TensorRef &a = av.tensor(), &b = bv.tensor();
    report.tensors_compared++;
    if (a.sizes != b.sizes) return add(DiffEntry::Kind::kShape, path, av, bv);
    DiffEntry e;
    e.kind = a.dtype == b.dtype ? DiffEntry::Kind::kTensor : DiffEntry::Kind::kDType;
    e.path = path;
    e.a = describe(av);
    e.b = describe(bv);
    e.numel = uint64_t(a.numel());
    values(a, b, e);
    report.elements_compared += e.numel;
    if (e.kind == DiffEntry::Kind::kDType || e.differing > 0) report.entries.push_back(std::move(e));
  }

  // Walks both tensors' elements in C order through their strides.
  void values(const TensorRef& a, const TensorRef& b, DiffEntry& e) {
    a.check_bounds();
    b.check_bounds();
    const int64_t n = a.numel();
    if (n == 0) return;
    const size_t ea = element_size(a.dtype), eb = element_size(b.dtype);
    if (a.dtype == b.dtype && a.is_contiguous() && b.is_contiguous() &&
        std::memcmp(a.storage->data() + a.storage_offset * int64_t(ea),
                    b.storage->data() + b.storage_offset * int64_t(eb), size_t(n) * ea) == 0) {
      progress(uint64_t(n) * ea);
      return;  // identical bytes: every element equal (NaNs in the same places), whatever the tolerance
    }
    const int parts = is_complex(a.dtype) || is_complex(b.dtype) ? 2 : 1;
    const size_t dims = a.sizes.size();
    std::vector<int64_t> idx(dims, 0);
    uint64_t since = 0;
    for (int64_t i = 0; i < n; ++i) {
      int64_t oa = a.storage_offset, ob = b.storage_offset;
      for (size_t d = 0; d < dims; ++d) {
        oa += idx[d] * a.strides[d];
        ob += idx[d] * b.strides[d];
      }
      const std::byte* pa = a.storage->data() + oa * int64_t(ea);
      const std::byte* pb = b.storage->data() + ob * int64_t(eb);
      bool differs = false;
      for (int part = 0; part < parts; ++part) {
        double x = is_complex(a.dtype) || part == 0 ? element(pa, a.dtype, part) : 0;
        double y = is_complex(b.dtype) || part == 0 ? element(pb, b.dtype, part) : 0;
        if (close(x, y)) continue;
        differs = true;
        double abs = std::fabs(x - y);
        if (std::isnan(abs)) abs = std::numeric_limits<double>::infinity();  // NaN on one side only
        e.max_abs = std::max(e.max_abs, abs);
        e.max_rel = std::max(e.max_rel, y == 0 ? std::numeric_limits<double>::infinity() : abs / std::fabs(y));
      }
      e.differing += differs;
      for (size_t d = dims; d-- > 0;) {
        if (++idx[d] < a.sizes[d]) break;
        idx[d] = 0;
      }
      if (++since == (1u << 20)) {
        progress(since * ea);
        since = 0;
      }
    }
    progress(since * ea);
  }

  void progress(uint64_t bytes) {
    done_ += bytes;
    if (o_.progress) o_.progress(std::min(done_, total_), total_);
  }
};

uint64_t tensor_bytes(const Value& v, int depth) {
  if (depth > 1000) return 0;
  if (v.is_tensor()) return uint64_t(v.tensor().numel()) * element_size(v.tensor().dtype);
  uint64_t n = 0;
  if (v.is_dict())
    for (const auto& [k, x] : v.dict()) n += tensor_bytes(x, depth + 1);
  else if (v.is_list() || v.is_tuple())
    for (const auto& x : v.items()) n += tensor_bytes(x, depth + 1);
  return n;
}

}  // namespace

const char* to_string(DiffEntry::Kind kind) {
  switch (kind) {
    case DiffEntry::Kind::kOnlyInA:
      return "only_in_a";
    case DiffEntry::Kind::kOnlyInB:
      return "only_in_b";
    case DiffEntry::Kind::kKind:
      return "kind";
    case DiffEntry::Kind::kDType:
      return "dtype";
    case DiffEntry::Kind::kShape:
      return "shape";
    case DiffEntry::Kind::kValue:
      return "value";
    case DiffEntry::Kind::kTensor:
      return "tensor";
  }
  return "?";
}

DiffReport diff(const Value& a, const Value& b, const DiffOptions& options) {
  if (options.rtol < 0 || options.atol < 0 || std::isnan(options.rtol) || std::isnan(options.atol))
    fail(ErrorKind::kInvalidArgument, "diff: rtol and atol must be non-negative numbers");
  const uint64_t total = tensor_bytes(a, 0);
  Differ d(options, total);
  d.compare(a, b, "");
  if (options.progress) options.progress(total, total);
  return std::move(d.report);
}

}  // namespace ckpt
