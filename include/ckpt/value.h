// ckpt/value.h — the object tree of a checkpoint, as torch.load would return it.
//
// A Value is a small handle, like c10::IValue: scalars are held inline, containers, strings and
// tensors are shared (copying a Value shares the node, as Python objects are shared).
// This header needs no LibTorch. With LibTorch, include ckpt/ckpt.h for Value(at::Tensor)
// and Value::to_tensor().
// Thread safety: a Value is a shared handle (like c10::IValue): copies share the node, so reading
// one Value from several threads is safe, changing one while another thread reads it is not.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace at {
class Tensor;
}

namespace ckpt {

// The tensor element types of PyTorch 1.13's TypedStorage classes.
enum class DType : uint8_t {
  kFloat64,
  kFloat32,
  kFloat16,
  kBFloat16,
  kInt64,
  kInt32,
  kInt16,
  kInt8,
  kUInt8,
  kBool,
  kComplex64,
  kComplex128,
};

size_t element_size(DType dtype);
// PyTorch's name: "float32", "bfloat16", "int64", "bool", ...
const char* dtype_name(DType dtype);
std::optional<DType> dtype_from_name(std::string_view name);

// The bytes of one storage, shared by every tensor that views it. Implementations: a region of
// a memory-mapped file, an owned buffer, an at::Storage. data() may be written through (a
// mapped file is mapped copy-on-write).
class StorageData {
 public:
  virtual ~StorageData() = default;
  virtual std::byte* data() const = 0;
  virtual size_t nbytes() const = 0;
  virtual DType dtype() const = 0;
  // Two StorageData with the same identity are one storage (written once by save()).
  virtual const void* identity() const { return this; }
  size_t numel() const { return nbytes() / element_size(dtype()); }
};

// An owned, 64-byte-aligned buffer.
std::shared_ptr<StorageData> make_storage(DType dtype, size_t nbytes);

// A strided view of a storage, as torch._utils._rebuild_tensor_v2 describes one.
struct TensorRef {
  std::shared_ptr<StorageData> storage;
  DType dtype = DType::kFloat32;
  int64_t storage_offset = 0;  // in elements
  std::vector<int64_t> sizes;
  std::vector<int64_t> strides;  // in elements
  bool requires_grad = false;
  bool is_parameter = false;  // saved as torch.nn.Parameter

  int64_t numel() const;
  bool is_contiguous() const;
  // Throws kCorruption unless every element lies inside the storage.
  void check_bounds() const;
};

class Dict;
struct ValueAccess;  // ckpt's own internals (src/format/value_access.h)

class Value {
 public:
  enum class Kind : uint8_t {
    kNone,
    kBool,
    kInt,
    kBigInt,
    kFloat,
    kString,
    kBytes,
    kList,
    kTuple,
    kDict,
    kTensor,
    // An allowlisted Python object kept verbatim for round trips: torch.device('cpu'),
    // torch.Size([2, 3]), set, frozenset, complex, bytearray, or a dtype like torch.float16.
    kObject,
  };

  Value() = default;  // None
  Value(bool v) : kind_(Kind::kBool) { scalar_.b = v; }
  Value(int v) : kind_(Kind::kInt) { scalar_.i = v; }
  Value(long v) : kind_(Kind::kInt) { scalar_.i = static_cast<int64_t>(v); }
  Value(long long v) : kind_(Kind::kInt) { scalar_.i = static_cast<int64_t>(v); }
  Value(unsigned v) : kind_(Kind::kInt) { scalar_.i = v; }
  Value(double v) : kind_(Kind::kFloat) { scalar_.d = v; }
  Value(const char* s) : Value(std::string(s)) {}
  Value(std::string s);
  Value(std::string_view s) : Value(std::string(s)) {}
  Value(TensorRef t);
  Value(Dict d);
  // Defined in the LibTorch bridge (ckpt/ckpt.h): wraps the tensor's storage without copying.
  Value(const at::Tensor& t);

  static Value none();
  static Value bytes(std::string b);
  // A Python int beyond int64: little-endian two's complement bytes.
  static Value big_int(std::string le_bytes);
  static Value list(std::vector<Value> items = {});
  static Value tuple(std::vector<Value> items = {});
  static Value new_dict();      // a plain Python dict
  static Value ordered_dict();  // an empty collections.OrderedDict (what state_dict() returns)
  // `type` is "module.name"; args is a tuple (or None for an uncalled global such as a dtype).
  static Value object(std::string type, Value args);
  static Value object(std::string type);

  Kind kind() const { return kind_; }
  const char* kind_name() const;
  bool is_none() const { return kind_ == Kind::kNone; }
  bool is_bool() const { return kind_ == Kind::kBool; }
  bool is_int() const { return kind_ == Kind::kInt; }
  bool is_float() const { return kind_ == Kind::kFloat; }
  bool is_string() const { return kind_ == Kind::kString; }
  bool is_bytes() const { return kind_ == Kind::kBytes; }
  bool is_list() const { return kind_ == Kind::kList; }
  bool is_tuple() const { return kind_ == Kind::kTuple; }
  bool is_dict() const { return kind_ == Kind::kDict; }
  bool is_tensor() const { return kind_ == Kind::kTensor; }
  bool is_object() const { return kind_ == Kind::kObject; }

  // Accessors throw ckpt::Error(kMismatch) naming both kinds when the kind is wrong.
  bool to_bool() const;
  int64_t to_int() const;
  double to_double() const;  // an int converts
  const std::string& to_string() const;
  const std::string& to_bytes() const;
  const std::string& big_int_bytes() const;
  const std::vector<Value>& items() const;  // list or tuple
  std::vector<Value>& items();
  const Dict& dict() const;
  Dict& dict();
  const TensorRef& tensor() const;
  TensorRef& tensor();
  const std::string& object_type() const;
  const Value& object_args() const;
  // Defined in the LibTorch bridge: an at::Tensor over the same bytes (no copy).
  at::Tensor to_tensor() const;

  // Dict lookups: throw kNotFound (with the closest existing key as a hint) when absent.
  const Value& at(std::string_view key) const;
  Value& at(std::string_view key);
  const Value& operator[](std::string_view key) const { return at(key); }
  Value& operator[](std::string_view key) { return at(key); }
  const Value& operator[](size_t index) const;  // list or tuple
  Value& operator[](size_t index);
  const Value& operator[](int index) const { return (*this)[static_cast<size_t>(index)]; }
  Value& operator[](int index) { return (*this)[static_cast<size_t>(index)]; }
  bool contains(std::string_view key) const;
  size_t size() const;  // elements of a list, tuple or dict

 private:
  friend struct ValueAccess;
  Kind kind_ = Kind::kNone;
  union {
    bool b;
    int64_t i;
    double d;
  } scalar_{};
  std::shared_ptr<void> node_;
};

// A Python dict, OrderedDict or collections.Counter: insertion-ordered, keys of any hashable
// kind (str and int in practice). Setting an existing key replaces its value in place.
class Dict {
 public:
  enum class Flavor : uint8_t { kDict, kOrderedDict, kCounter };
  using Item = std::pair<Value, Value>;

  explicit Dict(Flavor flavor = Flavor::kDict) : flavor_(flavor) {}

  Flavor flavor() const { return flavor_; }
  void set_flavor(Flavor f) { flavor_ = f; }
  size_t size() const { return items_.size(); }
  bool empty() const { return items_.empty(); }
  const std::vector<Item>& items() const { return items_; }
  auto begin() const { return items_.begin(); }
  auto end() const { return items_.end(); }

  void set(Value key, Value value);
  const Value* find(const Value& key) const;
  Value* find(const Value& key);
  const Value* find(std::string_view key) const;
  Value* find(std::string_view key);
  const Value* find(const char* key) const { return find(std::string_view(key)); }
  Value* find(const char* key) { return find(std::string_view(key)); }
  const Value* find(const std::string& key) const { return find(std::string_view(key)); }
  Value* find(const std::string& key) { return find(std::string_view(key)); }
  bool erase(std::string_view key);

  // Instance attributes set by pickle's BUILD (state_dict()'s `_metadata`); None when absent.
  const Value& attributes() const { return attributes_; }
  void set_attributes(Value attrs) { attributes_ = std::move(attrs); }

 private:
  Flavor flavor_;
  std::vector<Item> items_;
  Value attributes_;
  std::vector<size_t> index_;  // open-addressing hash of items_ positions (+1), for str/int keys
  void rehash();
  size_t slot_of(const Value& key) const;
};

// Python's ==, for the kinds that can be dict keys (None, bool, int, float, str, bytes, tuple).
bool keys_equal(const Value& a, const Value& b);

// A one-line rendering for messages and `ckpt inspect`: 'name', 3, 1.5, [3 items], ...
std::string short_repr(const Value& v);

}  // namespace ckpt
