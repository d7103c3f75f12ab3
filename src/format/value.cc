#include "ckpt/value.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <new>

#include "format/storage_types.h"
#include "format/value_access.h"
#include "util/errors.h"
#include "util/text.h"

namespace ckpt {

// The node of a kObject Value.
struct ObjectData {
  std::string type;
  Value args;
};

// ---------------------------------------------------------------------------------------------
// dtypes

namespace {
struct DTypeInfo {
  DType dtype;
  const char* name;
  size_t size;
  const char* storage_class;  // torch.<X>Storage
};
constexpr DTypeInfo kDTypes[] = {
    {DType::kFloat64, "float64", 8, "DoubleStorage"},
    {DType::kFloat32, "float32", 4, "FloatStorage"},
    {DType::kFloat16, "float16", 2, "HalfStorage"},
    {DType::kBFloat16, "bfloat16", 2, "BFloat16Storage"},
    {DType::kInt64, "int64", 8, "LongStorage"},
    {DType::kInt32, "int32", 4, "IntStorage"},
    {DType::kInt16, "int16", 2, "ShortStorage"},
    {DType::kInt8, "int8", 1, "CharStorage"},
    {DType::kUInt8, "uint8", 1, "ByteStorage"},
    {DType::kBool, "bool", 1, "BoolStorage"},
    {DType::kComplex64, "complex64", 8, "ComplexFloatStorage"},
    {DType::kComplex128, "complex128", 16, "ComplexDoubleStorage"},
};
const DTypeInfo& info(DType d) {
  return kDTypes[static_cast<size_t>(d)];
}
}  // namespace

size_t element_size(DType dtype) {
  return info(dtype).size;
}
const char* dtype_name(DType dtype) {
  return info(dtype).name;
}
std::optional<DType> dtype_from_name(std::string_view name) {
  for (const auto& d : kDTypes)
    if (name == d.name) return d.dtype;
  return std::nullopt;
}

const char* storage_class_name(DType dtype) {
  return info(dtype).storage_class;
}

std::optional<DType> dtype_of_storage_class(std::string_view global) {
  constexpr std::string_view kModule = "torch.";
  if (global.substr(0, kModule.size()) != kModule) return std::nullopt;
  global.remove_prefix(kModule.size());
  for (const auto& d : kDTypes)
    if (global == d.storage_class) return d.dtype;
  return std::nullopt;
}

namespace {
class OwnedStorage final : public StorageData {
 public:
  OwnedStorage(DType dtype, size_t nbytes) : dtype_(dtype), nbytes_(nbytes) {
    if (nbytes > 0) {
      data_ = static_cast<std::byte*>(std::aligned_alloc(64, (nbytes + 63) / 64 * 64));
      if (data_ == nullptr) fail(ErrorKind::kIO, "out of memory allocating ", nbytes, " bytes");
    }
  }
  ~OwnedStorage() override { std::free(data_); }
  std::byte* data() const override { return data_; }
  size_t nbytes() const override { return nbytes_; }
  DType dtype() const override { return dtype_; }

 private:
  DType dtype_;
  size_t nbytes_;
  std::byte* data_ = nullptr;
};
}  // namespace

std::shared_ptr<StorageData> make_storage(DType dtype, size_t nbytes) {
  return std::make_shared<OwnedStorage>(dtype, nbytes);
}

// ---------------------------------------------------------------------------------------------
// TensorRef

int64_t TensorRef::numel() const {
  int64_t n = 1;
  for (int64_t s : sizes) n *= s;
  return n;
}

bool TensorRef::is_contiguous() const {
  int64_t expected = 1;
  for (size_t i = sizes.size(); i-- > 0;) {
    if (sizes[i] == 1) continue;
    if (strides[i] != expected) return false;
    expected *= sizes[i];
  }
  return true;
}

void TensorRef::check_bounds() const {
  if (sizes.size() != strides.size())
    fail(ErrorKind::kCorruption, "tensor has ", sizes.size(), " sizes but ", strides.size(), " strides");
  if (storage_offset < 0) fail(ErrorKind::kCorruption, "negative storage offset ", storage_offset);
  if (storage && storage->dtype() != dtype)
    fail(ErrorKind::kCorruption, "tensor of dtype ", dtype_name(dtype), " over a storage of dtype ",
         dtype_name(storage->dtype()));
  // The highest element index the view touches, with overflow checks: sizes and strides come
  // from the file and are not trusted.
  constexpr int64_t kMax = int64_t{1} << 62;
  int64_t last = storage_offset;
  bool empty = false;
  for (size_t i = 0; i < sizes.size(); ++i) {
    if (sizes[i] < 0 || sizes[i] > kMax) fail(ErrorKind::kCorruption, "invalid tensor size ", sizes[i]);
    if (strides[i] < 0 || strides[i] > kMax) fail(ErrorKind::kCorruption, "invalid tensor stride ", strides[i]);
    if (sizes[i] == 0) empty = true;
  }
  if (empty) return;
  for (size_t i = 0; i < sizes.size(); ++i) {
    __int128 extent = static_cast<__int128>(sizes[i] - 1) * strides[i];
    if (extent > kMax || last + extent > kMax) fail(ErrorKind::kCorruption, "tensor extent overflows");
    last += static_cast<int64_t>(extent);
  }
  int64_t storage_numel = storage ? static_cast<int64_t>(storage->numel()) : 0;
  if (last >= storage_numel) {
    std::string shape;
    for (size_t i = 0; i < sizes.size(); ++i) shape += (i ? ", " : "") + std::to_string(sizes[i]);
    fail(ErrorKind::kCorruption, "tensor of shape [", shape, "] at offset ", storage_offset, " needs ", last + 1,
         " elements but its storage has ", storage_numel);
  }
}

// ---------------------------------------------------------------------------------------------
// Value

namespace {
struct SeqNode {
  std::vector<Value> items;
};

[[noreturn]] void wrong_kind(const Value& v, const char* wanted) {
  fail(ErrorKind::kMismatch, "expected ", wanted, " but the value is ", v.kind_name(), " (", short_repr(v), ")");
}

}  // namespace

Value::Value(std::string s) : kind_(Kind::kString), node_(std::make_shared<std::string>(std::move(s))) {}

Value::Value(TensorRef t) : kind_(Kind::kTensor), node_(std::make_shared<TensorRef>(std::move(t))) {}

Value::Value(Dict d) : kind_(Kind::kDict), node_(std::make_shared<Dict>(std::move(d))) {}

Value Value::bytes(std::string b) {
  Value v(std::move(b));
  v.kind_ = Kind::kBytes;
  return v;
}

Value Value::big_int(std::string le_bytes) {
  Value v(std::move(le_bytes));
  v.kind_ = Kind::kBigInt;
  return v;
}

Value Value::list(std::vector<Value> items) {
  Value v;
  v.kind_ = Kind::kList;
  v.node_ = std::make_shared<SeqNode>(SeqNode{std::move(items)});
  return v;
}

Value Value::tuple(std::vector<Value> items) {
  Value v = list(std::move(items));
  v.kind_ = Kind::kTuple;
  return v;
}

Value Value::none() {
  return Value();
}
Value Value::new_dict() {
  return Value(Dict(Dict::Flavor::kDict));
}
Value Value::ordered_dict() {
  return Value(Dict(Dict::Flavor::kOrderedDict));
}

Value Value::object(std::string type) {
  return object(std::move(type), Value());
}

Value Value::object(std::string type, Value args) {
  Value v;
  v.kind_ = Kind::kObject;
  v.node_ = std::make_shared<ObjectData>(ObjectData{std::move(type), std::move(args)});
  return v;
}

const char* Value::kind_name() const {
  switch (kind_) {
    case Kind::kNone:
      return "None";
    case Kind::kBool:
      return "bool";
    case Kind::kInt:
      return "int";
    case Kind::kBigInt:
      return "int";
    case Kind::kFloat:
      return "float";
    case Kind::kString:
      return "str";
    case Kind::kBytes:
      return "bytes";
    case Kind::kList:
      return "list";
    case Kind::kTuple:
      return "tuple";
    case Kind::kDict: {
      switch (dict().flavor()) {
        case Dict::Flavor::kDict:
          return "dict";
        case Dict::Flavor::kOrderedDict:
          return "OrderedDict";
        case Dict::Flavor::kCounter:
          return "Counter";
      }
      return "dict";
    }
    case Kind::kTensor:
      return "Tensor";
    case Kind::kObject:
      return "object";
  }
  return "?";
}

bool Value::to_bool() const {
  if (kind_ != Kind::kBool) wrong_kind(*this, "a bool");
  return scalar_.b;
}
int64_t Value::to_int() const {
  if (kind_ == Kind::kBool) return scalar_.b ? 1 : 0;
  if (kind_ != Kind::kInt) wrong_kind(*this, "an int");
  return scalar_.i;
}
double Value::to_double() const {
  if (kind_ == Kind::kInt) return static_cast<double>(scalar_.i);
  if (kind_ != Kind::kFloat) wrong_kind(*this, "a float");
  return scalar_.d;
}
const std::string& Value::to_string() const {
  if (kind_ != Kind::kString) wrong_kind(*this, "a str");
  return *static_cast<const std::string*>(node_.get());
}
const std::string& Value::to_bytes() const {
  if (kind_ != Kind::kBytes) wrong_kind(*this, "bytes");
  return *static_cast<const std::string*>(node_.get());
}
const std::string& Value::big_int_bytes() const {
  if (kind_ != Kind::kBigInt) wrong_kind(*this, "a big int");
  return *static_cast<const std::string*>(node_.get());
}
const std::vector<Value>& Value::items() const {
  if (kind_ != Kind::kList && kind_ != Kind::kTuple) wrong_kind(*this, "a list or tuple");
  return static_cast<const SeqNode*>(node_.get())->items;
}
std::vector<Value>& Value::items() {
  if (kind_ != Kind::kList && kind_ != Kind::kTuple) wrong_kind(*this, "a list or tuple");
  return static_cast<SeqNode*>(node_.get())->items;
}
const Dict& Value::dict() const {
  if (kind_ != Kind::kDict) wrong_kind(*this, "a dict");
  return *static_cast<const Dict*>(node_.get());
}
Dict& Value::dict() {
  if (kind_ != Kind::kDict) wrong_kind(*this, "a dict");
  return *static_cast<Dict*>(node_.get());
}
const TensorRef& Value::tensor() const {
  if (kind_ != Kind::kTensor) wrong_kind(*this, "a tensor");
  return *static_cast<const TensorRef*>(node_.get());
}
TensorRef& Value::tensor() {
  if (kind_ != Kind::kTensor) wrong_kind(*this, "a tensor");
  return *static_cast<TensorRef*>(node_.get());
}
const std::string& Value::object_type() const {
  if (kind_ != Kind::kObject) wrong_kind(*this, "an object");
  return static_cast<const ObjectData*>(node_.get())->type;
}
const Value& Value::object_args() const {
  if (kind_ != Kind::kObject) wrong_kind(*this, "an object");
  return static_cast<const ObjectData*>(node_.get())->args;
}

const Value& Value::at(std::string_view key) const {
  const Dict& d = dict();
  if (const Value* v = d.find(key)) return *v;
  std::string best;
  size_t best_distance = SIZE_MAX;
  std::string keys;
  size_t shown = 0;
  for (const auto& [k, _] : d) {
    if (!k.is_string()) continue;
    const std::string& s = k.to_string();
    if (shown < 8) keys += (shown++ ? ", '" : "'") + printable(s, 60) + "'";
    // A mistyped key or one that merely extends / shortens it ("optimizer" vs "optimizer_state").
    size_t dist = edit_distance(key, s);
    if (s.find(key) != std::string::npos || std::string_view(key).find(s) != std::string_view::npos)
      dist = std::min(dist, size_t{2});
    if (dist < best_distance) best_distance = dist, best = s;
  }
  std::string hint;
  if (!best.empty() && best_distance <= std::max<size_t>(2, key.size() / 3))
    hint = "; did you mean '" + printable(best) + "'?";
  else if (shown > 0)
    hint = "; keys are " + keys + (d.size() > shown ? ", ..." : "");
  fail(ErrorKind::kNotFound, "key '", printable(key), "' not found", hint);
}

Value& Value::at(std::string_view key) {
  return const_cast<Value&>(static_cast<const Value&>(*this).at(key));
}

const Value& Value::operator[](size_t index) const {
  const auto& v = items();
  if (index >= v.size())
    fail(ErrorKind::kNotFound, "index ", index, " out of range for ", kind_name(), " of ", v.size());
  return v[index];
}

Value& Value::operator[](size_t index) {
  return const_cast<Value&>(static_cast<const Value&>(*this)[index]);
}

bool Value::contains(std::string_view key) const {
  return dict().find(key) != nullptr;
}

size_t Value::size() const {
  if (kind_ == Kind::kDict) return dict().size();
  return items().size();
}

// ---------------------------------------------------------------------------------------------
// Dict

namespace {
// Keys hashable by the index: str, int, bool and integral floats (Python: 1 == 1.0 == True).
bool hash_key(const Value& key, size_t* out) {
  switch (key.kind()) {
    case Value::Kind::kString:
      *out = std::hash<std::string>{}(key.to_string());
      return true;
    case Value::Kind::kInt:
    case Value::Kind::kBool:
      *out = std::hash<int64_t>{}(key.to_int()) * 0x9E3779B97F4A7C15ull;
      return true;
    case Value::Kind::kFloat: {
      double d = key.to_double();
      if (std::nearbyint(d) != d || std::fabs(d) > 9e18) return false;
      *out = std::hash<int64_t>{}(static_cast<int64_t>(d)) * 0x9E3779B97F4A7C15ull;
      return true;
    }
    default:
      return false;
  }
}
}  // namespace

bool keys_equal(const Value& a, const Value& b) {
  using K = Value::Kind;
  auto numeric = [](const Value& v) { return v.kind() == K::kInt || v.kind() == K::kBool || v.kind() == K::kFloat; };
  if (numeric(a) && numeric(b)) {
    if (a.kind() == K::kFloat || b.kind() == K::kFloat) return a.to_double() == b.to_double();
    return a.to_int() == b.to_int();
  }
  if (a.kind() != b.kind()) return false;
  switch (a.kind()) {
    case K::kNone:
      return true;
    case K::kString:
      return a.to_string() == b.to_string();
    case K::kBytes:
      return a.to_bytes() == b.to_bytes();
    case K::kBigInt:
      return a.big_int_bytes() == b.big_int_bytes();
    case K::kTuple: {
      const auto& x = a.items();
      const auto& y = b.items();
      if (x.size() != y.size()) return false;
      for (size_t i = 0; i < x.size(); ++i)
        if (!keys_equal(x[i], y[i])) return false;
      return true;
    }
    default:
      return ValueAccess::node(a) != nullptr && ValueAccess::node(a) == ValueAccess::node(b);  // identity
  }
}

void Dict::rehash() {
  size_t cap = 16;
  while (cap < items_.size() * 2 + 2) cap *= 2;
  index_.assign(cap, 0);
  for (size_t i = 0; i < items_.size(); ++i) {
    size_t h;
    if (!hash_key(items_[i].first, &h)) continue;
    size_t mask = cap - 1;
    for (size_t s = h & mask;; s = (s + 1) & mask) {
      if (index_[s] == 0) {
        index_[s] = i + 1;
        break;
      }
    }
  }
}

// The position+1 of `key` in items_, or 0.
size_t Dict::slot_of(const Value& key) const {
  size_t h;
  if (!hash_key(key, &h)) {
    for (size_t i = 0; i < items_.size(); ++i)
      if (keys_equal(items_[i].first, key)) return i + 1;
    return 0;
  }
  if (index_.empty()) return 0;
  size_t mask = index_.size() - 1;
  for (size_t s = h & mask;; s = (s + 1) & mask) {
    size_t pos = index_[s];
    if (pos == 0) return 0;
    if (keys_equal(items_[pos - 1].first, key)) return pos;
  }
}

void Dict::set(Value key, Value value) {
  if (size_t pos = slot_of(key)) {
    items_[pos - 1].second = std::move(value);
    return;
  }
  items_.emplace_back(std::move(key), std::move(value));
  if (index_.size() < items_.size() * 2 + 2) {
    rehash();
    return;
  }
  size_t h;
  if (!hash_key(items_.back().first, &h)) return;
  size_t mask = index_.size() - 1;
  for (size_t s = h & mask;; s = (s + 1) & mask) {
    if (index_[s] == 0) {
      index_[s] = items_.size();
      return;
    }
  }
}

const Value* Dict::find(const Value& key) const {
  size_t pos = slot_of(key);
  return pos ? &items_[pos - 1].second : nullptr;
}
Value* Dict::find(const Value& key) {
  size_t pos = slot_of(key);
  return pos ? &items_[pos - 1].second : nullptr;
}
const Value* Dict::find(std::string_view key) const {
  return find(Value(key));
}
Value* Dict::find(std::string_view key) {
  return find(Value(key));
}

bool Dict::erase(std::string_view key) {
  size_t pos = slot_of(Value(key));
  if (pos == 0) return false;
  items_.erase(items_.begin() + static_cast<std::ptrdiff_t>(pos - 1));
  rehash();
  return true;
}

// ---------------------------------------------------------------------------------------------

std::string short_repr(const Value& v) {
  using K = Value::Kind;
  switch (v.kind()) {
    case K::kNone:
      return "None";
    case K::kBool:
      return v.to_bool() ? "True" : "False";
    case K::kInt:
      return std::to_string(v.to_int());
    case K::kBigInt:
      return str_cat("<int of ", v.big_int_bytes().size(), " bytes>");
    case K::kFloat: {
      char buf[32];
      std::snprintf(buf, sizeof buf, "%.17g", v.to_double());
      return buf;
    }
    case K::kString: {
      const std::string& s = v.to_string();
      return "'" + printable(s, s.size() > 60 ? 57 : 60) + "'";
    }
    case K::kBytes:
      return str_cat("<bytes of ", v.to_bytes().size(), ">");
    case K::kList:
      return str_cat("[", v.items().size(), " items]");
    case K::kTuple:
      return str_cat("(", v.items().size(), " items)");
    case K::kDict:
      return str_cat("{", v.dict().size(), " items}");
    case K::kTensor: {
      const auto& t = v.tensor();
      std::string s = str_cat(dtype_name(t.dtype), "[");
      for (size_t i = 0; i < t.sizes.size(); ++i) s += (i ? ", " : "") + std::to_string(t.sizes[i]);
      return s + "]";
    }
    case K::kObject:
      return printable(v.object_type());
  }
  return "?";
}

}  // namespace ckpt
