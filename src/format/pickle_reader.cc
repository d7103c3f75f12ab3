// The restricted unpickler. Opcode semantics follow CPython's Lib/pickle.py (_Unpickler);
// the allowlist follows torch/_weights_only_unpickler.py (PyTorch 2.x).
#include <cmath>
#include <cstring>
#include <unordered_map>
#include <unordered_set>

#include "format/pickle.h"
#include "format/value_access.h"
#include "util/bytes.h"
#include "util/errors.h"
#include "util/text.h"

namespace ckpt::pickle {
namespace {

enum Op : uint8_t {
  MARK = '(',
  STOP = '.',
  POP = '0',
  POP_MARK = '1',
  DUP = '2',
  BINFLOAT = 'G',
  BININT = 'J',
  BININT1 = 'K',
  BININT2 = 'M',
  NONE = 'N',
  BINPERSID = 'Q',
  REDUCE = 'R',
  BINSTRING = 'T',
  SHORT_BINSTRING = 'U',
  BINUNICODE = 'X',
  APPEND = 'a',
  BUILD = 'b',
  GLOBAL = 'c',
  DICT = 'd',
  EMPTY_DICT = '}',
  APPENDS = 'e',
  BINGET = 'h',
  LONG_BINGET = 'j',
  LIST = 'l',
  EMPTY_LIST = ']',
  BINPUT = 'q',
  LONG_BINPUT = 'r',
  SETITEM = 's',
  TUPLE = 't',
  EMPTY_TUPLE = ')',
  SETITEMS = 'u',
  BINBYTES = 'B',
  SHORT_BINBYTES = 'C',
  PROTO = 0x80,
  NEWOBJ = 0x81,
  TUPLE1 = 0x85,
  TUPLE2 = 0x86,
  TUPLE3 = 0x87,
  NEWTRUE = 0x88,
  NEWFALSE = 0x89,
  LONG1 = 0x8a,
  LONG4 = 0x8b,
  SHORT_BINUNICODE = 0x8c,
  BINUNICODE8 = 0x8d,
  BINBYTES8 = 0x8e,
  EMPTY_SET = 0x8f,
  ADDITEMS = 0x90,
  FROZENSET = 0x91,
  STACK_GLOBAL = 0x93,
  MEMOIZE = 0x94,
  FRAME = 0x95,
  BYTEARRAY8 = 0x96,
};

// Names of the opcodes refused outright, for error messages.
const char* refused_opcode_name(uint8_t op) {
  switch (op) {
    case 'I':
      return "INT (protocol 0)";
    case 'L':
      return "LONG (protocol 0)";
    case 'F':
      return "FLOAT (protocol 0)";
    case 'S':
      return "STRING (protocol 0)";
    case 'V':
      return "UNICODE (protocol 0)";
    case 'P':
      return "PERSID (protocol 0)";
    case 'g':
      return "GET (protocol 0)";
    case 'p':
      return "PUT (protocol 0)";
    case 'i':
      return "INST";
    case 'o':
      return "OBJ";
    case 0x82:
    case 0x83:
    case 0x84:
      return "EXT (extension registry)";
    case 0x92:
      return "NEWOBJ_EX";
    case 0x97:
      return "NEXT_BUFFER (out-of-band data)";
    case 0x98:
      return "READONLY_BUFFER (out-of-band data)";
    default:
      return nullptr;
  }
}

// What an allowed global is.
enum class Global {
  kValue,  // stays a value: dtypes, storage types, torch.Tensor, qschemes, ...
  kRebuildTensorV2,
  kRebuildTensor,
  kRebuildParameter,
  kRebuildParameterWithState,
  kRebuildFromTypeV2,
  kOrderedDict,
  kCounter,
  kTorchSize,
  kTorchDevice,
  kSet,
  kFrozenSet,
  kComplex,
  kByteArray,
  kBytes,
  kCodecsEncode,
  kGetLayout,
  kUnsupportedTensor,  // allowed by torch, but a tensor kind ckpt does not load
};

const std::unordered_map<std::string, Global>& allowed_globals() {
  static const auto* table = [] {
    auto* t = new std::unordered_map<std::string, Global>{
        {"torch._utils._rebuild_tensor_v2", Global::kRebuildTensorV2},
        {"torch._utils._rebuild_tensor", Global::kRebuildTensor},
        {"torch._utils._rebuild_parameter", Global::kRebuildParameter},
        {"torch._utils._rebuild_parameter_with_state", Global::kRebuildParameterWithState},
        {"torch._tensor._rebuild_from_type_v2", Global::kRebuildFromTypeV2},
        {"collections.OrderedDict", Global::kOrderedDict},
        {"collections.Counter", Global::kCounter},
        {"torch.Size", Global::kTorchSize},
        {"torch.device", Global::kTorchDevice},
        {"builtins.set", Global::kSet},
        {"builtins.frozenset", Global::kFrozenSet},
        {"builtins.complex", Global::kComplex},
        {"builtins.bytearray", Global::kByteArray},
        {"builtins.bytes", Global::kBytes},
        {"_codecs.encode", Global::kCodecsEncode},
        {"torch.serialization._get_layout", Global::kGetLayout},
        {"torch.Tensor", Global::kValue},
        {"torch.nn.parameter.Parameter", Global::kValue},
        {"torch.storage.UntypedStorage", Global::kValue},
        {"torch.storage.TypedStorage", Global::kValue},
    };
    for (const char* f :
         {"_rebuild_tensor_v3", "_rebuild_qtensor", "_rebuild_sparse_tensor", "_rebuild_sparse_csr_tensor",
          "_rebuild_meta_tensor_no_storage", "_rebuild_nested_tensor", "_rebuild_wrapper_subclass",
          "_rebuild_device_tensor_from_numpy", "_rebuild_device_tensor_from_cpu_tensor"})
      (*t)[std::string("torch._utils.") + f] = Global::kUnsupportedTensor;
    for (const char* s :
         {"DoubleStorage", "FloatStorage", "HalfStorage", "BFloat16Storage", "LongStorage", "IntStorage",
          "ShortStorage", "CharStorage", "ByteStorage", "BoolStorage", "ComplexDoubleStorage", "ComplexFloatStorage",
          "QInt8Storage", "QUInt8Storage", "QInt32Storage", "QUInt4x2Storage", "QUInt2x4Storage"})
      (*t)[std::string("torch.") + s] = Global::kValue;
    for (const char* d : {"float64",
                          "float32",
                          "float16",
                          "bfloat16",
                          "int64",
                          "int32",
                          "int16",
                          "int8",
                          "uint8",
                          "bool",
                          "complex128",
                          "complex64",
                          "complex32",
                          "qint8",
                          "qint32",
                          "quint8",
                          "quint4x2",
                          "quint2x4",
                          "float8_e5m2",
                          "float8_e4m3fn",
                          "float8_e5m2fnuz",
                          "float8_e4m3fnuz",
                          "uint16",
                          "uint32",
                          "uint64",
                          "per_tensor_affine",
                          "per_tensor_symmetric",
                          "per_channel_affine",
                          "per_channel_symmetric",
                          "per_channel_affine_float_qparams"})
      (*t)[std::string("torch.") + d] = Global::kValue;
    return t;
  }();
  return *table;
}

// TorchScript's list builders (torch/jit/_pickle.py; emitted by
// torch/csrc/jit/serialization/pickler.cpp): torch.jit.save wraps an attribute of type List[int],
// List[float], List[bool] or List[Tensor] in build_intlist / build_doublelist / build_boollist /
// build_tensorlist(list), and any other typed list or dict in restore_type_tag(container,
// 'List[str]'). Each returns its first argument, so they only build data; read inside TorchScript
// archives only (weights_only refuses them in a torch.save file, and so does ckpt).
enum class ScriptBuilder { kIntList, kDoubleList, kBoolList, kTensorList, kTypeTag };

const ScriptBuilder* script_builder(const std::string& full) {
  static const std::unordered_map<std::string, ScriptBuilder> table = {
      {"torch.jit._pickle.build_intlist", ScriptBuilder::kIntList},
      {"torch.jit._pickle.build_doublelist", ScriptBuilder::kDoubleList},
      {"torch.jit._pickle.build_boollist", ScriptBuilder::kBoolList},
      {"torch.jit._pickle.build_tensorlist", ScriptBuilder::kTensorList},
      {"torch.jit._pickle.restore_type_tag", ScriptBuilder::kTypeTag},
  };
  auto it = table.find(full);
  return it == table.end() ? nullptr : &it->second;
}

// Python 2 module names that protocol-2 pickles use (pickle's IMPORT_MAPPING, the part that
// matters here).
std::string map_module(const std::string& module) {
  if (module == "__builtin__") return "builtins";
  if (module == "copy_reg") return "copyreg";
  return module;
}

// UTF-8 -> code points <= 255 -> bytes (what _codecs.encode(s, 'latin1') returns).
bool latin1_encode(const std::string& utf8, std::string* out) {
  out->clear();
  for (size_t i = 0; i < utf8.size();) {
    auto c = static_cast<unsigned char>(utf8[i]);
    if (c < 0x80) {
      out->push_back(static_cast<char>(c));
      ++i;
    } else if ((c & 0xE0) == 0xC0 && i + 1 < utf8.size()) {
      unsigned cp = ((c & 0x1F) << 6) | (static_cast<unsigned char>(utf8[i + 1]) & 0x3F);
      if (cp > 0xFF) return false;
      out->push_back(static_cast<char>(cp));
      i += 2;
    } else {
      return false;
    }
  }
  return true;
}

class Unpickler {
 public:
  Unpickler(const std::byte* data, size_t size, const PersistentLoad& load, const Limits& limits)
      : p_(reinterpret_cast<const uint8_t*>(data)), size_(size), load_(load), limits_(limits) {}

  ~Unpickler() {
    // Break any reference cycle a hostile pickle built, so nothing leaks.
    if (!succeeded_) {
      for (auto& v : containers_) clear_children(v);
    }
  }

  Value run(size_t* consumed) {
    for (;;) {
      op_pos_ = pos_;
      uint8_t op = read_u8();
      if (op == STOP) break;
      step(op);
    }
    if (stack_.size() != 1 || !marks_.empty())
      bad(ErrorKind::kCorruption, "STOP with ", stack_.size(), " objects on the stack and ", marks_.size(),
          " open MARKs (expected 1 and 0)");
    if (consumed) *consumed = pos_;
    Value result = std::move(stack_.back());
    stack_.clear();
    memo_dense_.clear();
    memo_sparse_.clear();
    check_tree(result);
    succeeded_ = true;
    containers_.clear();
    return result;
  }

 private:
  const uint8_t* p_;
  size_t size_;
  size_t pos_ = 0;
  size_t op_pos_ = 0;
  const PersistentLoad& load_;
  const Limits& limits_;
  std::vector<Value> stack_;
  std::vector<size_t> marks_;
  // Pickles number memo slots 0, 1, 2, ...: those live in a vector; a stray large index (legal,
  // but never written by CPython or torch) goes to the map, so it cannot force a huge vector.
  static constexpr uint64_t kDenseMemo = uint64_t{1} << 20;
  std::vector<Value> memo_dense_;
  std::vector<bool> memo_set_;
  std::unordered_map<uint64_t, Value> memo_sparse_;
  size_t memo_count_ = 0;
  std::vector<Value> containers_;  // every mutable container made, to break cycles on failure
  bool succeeded_ = false;

  template <class... Args>
  [[noreturn]] void bad(ErrorKind kind, Args&&... args) const {
    fail(kind, str_cat(std::forward<Args>(args)...), " (pickle byte ", op_pos_, ")");
  }

  // --- reading the byte stream -------------------------------------------------------------
  void need(uint64_t n) const {
    if (n > size_ - pos_)
      bad(ErrorKind::kCorruption, "pickle truncated: needs ", n, " more bytes, ", size_ - pos_, " left");
  }
  uint8_t read_u8() {
    need(1);
    return p_[pos_++];
  }
  uint32_t read_u32() {
    need(4);
    uint32_t v = load_le32(p_ + pos_);
    pos_ += 4;
    return v;
  }
  uint64_t read_u64() {
    need(8);
    uint64_t v = load_le64(p_ + pos_);
    pos_ += 8;
    return v;
  }
  std::string read_bytes(uint64_t n) {
    need(n);
    std::string s(reinterpret_cast<const char*>(p_ + pos_), static_cast<size_t>(n));
    pos_ += static_cast<size_t>(n);
    return s;
  }
  std::string read_line() {
    const void* nl = std::memchr(p_ + pos_, '\n', size_ - pos_);
    if (nl == nullptr) bad(ErrorKind::kCorruption, "pickle truncated inside GLOBAL");
    size_t end = static_cast<size_t>(static_cast<const uint8_t*>(nl) - p_);
    std::string s(reinterpret_cast<const char*>(p_ + pos_), end - pos_);
    pos_ = end + 1;
    return s;
  }

  // --- the stack ----------------------------------------------------------------------------
  void push(Value v) {
    if (stack_.size() >= limits_.max_stack)
      bad(ErrorKind::kCorruption, "pickle stack exceeds ", limits_.max_stack, " objects");
    stack_.push_back(std::move(v));
  }
  size_t floor() const { return marks_.empty() ? 0 : marks_.back(); }
  Value pop() {
    if (stack_.size() <= floor()) bad(ErrorKind::kCorruption, "pickle stack underflow");
    Value v = std::move(stack_.back());
    stack_.pop_back();
    return v;
  }
  Value& top() {
    if (stack_.size() <= floor()) bad(ErrorKind::kCorruption, "pickle stack underflow");
    return stack_.back();
  }
  std::vector<Value> pop_mark() {
    if (marks_.empty()) bad(ErrorKind::kCorruption, "pickle has no MARK to pop to");
    size_t m = marks_.back();
    marks_.pop_back();
    std::vector<Value> items(std::make_move_iterator(stack_.begin() + static_cast<std::ptrdiff_t>(m)),
                             std::make_move_iterator(stack_.end()));
    stack_.resize(m);
    return items;
  }
  Value container(Value v) {
    containers_.push_back(v);
    return v;
  }
  void memo_put(uint64_t index) {
    bool fresh = index < kDenseMemo ? !(index < memo_set_.size() && memo_set_[index]) : memo_sparse_.count(index) == 0;
    if (fresh && memo_count_ >= limits_.max_memo)
      bad(ErrorKind::kCorruption, "pickle memo exceeds ", limits_.max_memo, " entries");
    memo_count_ += fresh;
    if (index < kDenseMemo) {
      if (index >= memo_dense_.size()) {
        memo_dense_.resize(index + 1);
        memo_set_.resize(index + 1);
      }
      memo_dense_[index] = top();
      memo_set_[index] = true;
    } else {
      memo_sparse_[index] = top();
    }
  }
  void memo_get(uint64_t index) {
    if (index < memo_set_.size() && memo_set_[index]) return push(memo_dense_[index]);
    auto it = index >= kDenseMemo ? memo_sparse_.find(index) : memo_sparse_.end();
    if (it == memo_sparse_.end()) bad(ErrorKind::kCorruption, "pickle memo key ", index, " was never stored");
    push(it->second);
  }

  static bool is_set_object(const Value& v) {
    return v.is_object() && (v.object_type() == "builtins.set") && v.object_args().is_tuple();
  }

  // --- one opcode ---------------------------------------------------------------------------
  void step(uint8_t op) {
    switch (op) {
      case PROTO: {
        uint8_t proto = read_u8();
        if (proto < 2 || proto > 5)
          bad(ErrorKind::kUnsupported, "pickle protocol ", int(proto), " (ckpt reads protocols 2 to 5)");
        return;
      }
      case FRAME:
        read_u64();
        return;  // framing is only a hint to readers that buffer
      case MARK:
        if (marks_.size() >= limits_.max_depth)
          bad(ErrorKind::kCorruption, "pickle nests MARKs deeper than ", limits_.max_depth);
        marks_.push_back(stack_.size());
        return;
      case POP:
        pop();
        return;
      case POP_MARK:
        pop_mark();
        return;
      case DUP:
        push(top());
        return;
      case NONE:
        push(Value());
        return;
      case NEWTRUE:
        push(Value(true));
        return;
      case NEWFALSE:
        push(Value(false));
        return;
      case BININT:
        push(Value(static_cast<int64_t>(static_cast<int32_t>(read_u32()))));
        return;
      case BININT1:
        push(Value(static_cast<int64_t>(read_u8())));
        return;
      case BININT2: {
        need(2);
        push(Value(static_cast<int64_t>(load_le16(p_ + pos_))));
        pos_ += 2;
        return;
      }
      case LONG1:
        push_long(read_u8());
        return;
      case LONG4: {
        auto n = static_cast<int32_t>(read_u32());
        if (n < 0) bad(ErrorKind::kCorruption, "LONG4 with negative length");
        push_long(static_cast<uint64_t>(n));
        return;
      }
      case BINFLOAT: {
        need(8);
        push(Value(bits_double(load_be64(p_ + pos_))));
        pos_ += 8;
        return;
      }
      case BINUNICODE:
        push(Value(read_bytes(read_u32())));
        return;
      case SHORT_BINUNICODE:
        push(Value(read_bytes(read_u8())));
        return;
      case BINUNICODE8:
        push(Value(read_bytes(read_u64())));
        return;
      case BINSTRING: {
        auto n = static_cast<int32_t>(read_u32());
        if (n < 0) bad(ErrorKind::kCorruption, "BINSTRING with negative length");
        push(Value(read_bytes(static_cast<uint64_t>(n))));
        return;
      }
      case SHORT_BINSTRING:
        push(Value(read_bytes(read_u8())));
        return;
      case BINBYTES:
        push(Value::bytes(read_bytes(read_u32())));
        return;
      case SHORT_BINBYTES:
        push(Value::bytes(read_bytes(read_u8())));
        return;
      case BINBYTES8:
        push(Value::bytes(read_bytes(read_u64())));
        return;
      case BYTEARRAY8:
        push(Value::object("builtins.bytearray", Value::tuple({Value::bytes(read_bytes(read_u64()))})));
        return;
      case EMPTY_TUPLE:
        push(Value::tuple());
        return;
      case TUPLE:
        push(Value::tuple(pop_mark()));
        return;
      case TUPLE1: {
        Value a = pop();
        push(Value::tuple({std::move(a)}));
        return;
      }
      case TUPLE2: {
        Value b = pop(), a = pop();
        push(Value::tuple({std::move(a), std::move(b)}));
        return;
      }
      case TUPLE3: {
        Value c = pop(), b = pop(), a = pop();
        push(Value::tuple({std::move(a), std::move(b), std::move(c)}));
        return;
      }
      case EMPTY_LIST:
        push(container(Value::list()));
        return;
      case LIST:
        push(container(Value::list(pop_mark())));
        return;
      case APPEND: {
        Value v = pop();
        append_to(top(), {std::move(v)});
        return;
      }
      case APPENDS: {
        std::vector<Value> items = pop_mark();
        append_to(top(), std::move(items));
        return;
      }
      case EMPTY_DICT:
        push(container(Value::new_dict()));
        return;
      case DICT: {
        std::vector<Value> items = pop_mark();
        Value d = container(Value::new_dict());
        set_items(d, std::move(items));
        push(std::move(d));
        return;
      }
      case SETITEM: {
        Value v = pop(), k = pop();
        set_items(top(), {std::move(k), std::move(v)});
        return;
      }
      case SETITEMS: {
        std::vector<Value> items = pop_mark();
        set_items(top(), std::move(items));
        return;
      }
      case EMPTY_SET:
        push(container(Value::object("builtins.set", Value::tuple({container(Value::list())}))));
        return;
      case ADDITEMS: {
        std::vector<Value> items = pop_mark();
        Value& s = top();
        if (!is_set_object(s)) bad(ErrorKind::kCorruption, "ADDITEMS on ", s.kind_name(), ", not a set");
        auto& list = const_cast<Value&>(s.object_args().items()[0]);
        for (auto& v : items) list.items().push_back(std::move(v));
        return;
      }
      case FROZENSET:
        push(Value::object("builtins.frozenset", Value::tuple({Value::list(pop_mark())})));
        return;
      case GLOBAL: {
        std::string module = read_line();
        std::string name = read_line();
        push(make_global(module, name));
        return;
      }
      case STACK_GLOBAL: {
        Value name = pop(), module = pop();
        if (!name.is_string() || !module.is_string()) bad(ErrorKind::kCorruption, "STACK_GLOBAL needs two strings");
        push(make_global(module.to_string(), name.to_string()));
        return;
      }
      case REDUCE: {
        Value args = pop(), callable = pop();
        push(call(callable, args));
        return;
      }
      case NEWOBJ: {  // cls.__new__(cls, *args): only for the same classes REDUCE may call
        Value args = pop(), cls = pop();
        push(call(cls, args));
        return;
      }
      case BUILD: {
        Value state = pop();
        build(top(), state);
        return;
      }
      case BINPERSID: {
        Value pid = pop();
        if (!load_) bad(ErrorKind::kCorruption, "persistent id in a pickle that may not have one");
        push(load_(pid));
        return;
      }
      case BINGET:
        memo_get(read_u8());
        return;
      case LONG_BINGET:
        memo_get(read_u32());
        return;
      case BINPUT:
        memo_put(read_u8());
        return;
      case LONG_BINPUT:
        memo_put(read_u32());
        return;
      case MEMOIZE:
        memo_put(memo_count_);
        return;
      default:
        if (const char* name = refused_opcode_name(op))
          bad(ErrorKind::kUnsafe, "pickle opcode ", name, " is not allowed");
        bad(ErrorKind::kCorruption, "unknown pickle opcode 0x", std::hex, int(op));
    }
  }

  void push_long(uint64_t n) {
    std::string b = read_bytes(n);
    if (n == 0) return push(Value(int64_t{0}));
    if (n <= 8) {
      uint64_t v = 0;
      for (size_t i = 0; i < n; ++i) v |= uint64_t(static_cast<uint8_t>(b[i])) << (8 * i);
      if (n < 8 && (static_cast<uint8_t>(b[n - 1]) & 0x80)) v |= ~uint64_t{0} << (8 * n);  // sign-extend
      return push(Value(static_cast<int64_t>(v)));
    }
    // Wider than 8 bytes: still an int64 if every extra byte is sign extension.
    bool negative = static_cast<uint8_t>(b[n - 1]) & 0x80;
    bool fits = true;
    for (size_t i = 8; i < n; ++i)
      if (static_cast<uint8_t>(b[i]) != (negative ? 0xff : 0x00)) fits = false;
    if (fits && bool(static_cast<uint8_t>(b[7]) & 0x80) == negative) {
      uint64_t v = load_le64(b.data());
      return push(Value(static_cast<int64_t>(v)));
    }
    push(Value::big_int(std::move(b)));
  }

  void append_to(Value& target, std::vector<Value> items) {
    if (target.is_list()) {
      auto& dst = target.items();
      for (auto& v : items) dst.push_back(std::move(v));
      return;
    }
    bad(ErrorKind::kCorruption, "APPEND to ", target.kind_name(), ", not a list");
  }

  void set_items(Value& target, std::vector<Value> kv) {
    if (!target.is_dict()) bad(ErrorKind::kCorruption, "SETITEM on ", target.kind_name(), ", not a dict");
    if (kv.size() % 2 != 0) bad(ErrorKind::kCorruption, "SETITEMS with an odd number of objects");
    Dict& d = target.dict();
    for (size_t i = 0; i < kv.size(); i += 2) {
      const Value& k = kv[i];
      if (k.is_list() || k.is_dict() || k.is_tensor())
        bad(ErrorKind::kCorruption, "unhashable dict key of type ", k.kind_name());
      d.set(std::move(kv[i]), std::move(kv[i + 1]));
    }
  }

  Value make_global(const std::string& raw_module, const std::string& name) {
    if (limits_.script_objects && is_script_type(raw_module)) return Value::object(raw_module + "." + name);
    std::string full = map_module(raw_module) + "." + name;
    if (script_builder(full)) {
      if (limits_.script_objects) return Value::object(full);
      bad(ErrorKind::kUnsafe, "global '", full,
          "' is not allowed in a torch.save file (TorchScript's list builders are read only inside torch.jit.save "
          "archives, as torch.load's weights_only refuses them too)");
    }
    if (full == "builtins.getattr" &&
        std::string_view(reinterpret_cast<const char*>(p_), size_).find("OneCycleLR") != std::string_view::npos)
      bad(ErrorKind::kUnsafe,
          "global 'builtins.getattr': this is torch 1.13's OneCycleLR.state_dict(), which pickles the bound "
          "method 'anneal_func' (and with it the optimizer), so no safe loader can read it; in Python, save "
          "{k: v for k, v in sched.state_dict().items() if k != 'anneal_func'} instead, or use torch 2.x, whose "
          "OneCycleLR stores '_anneal_func_type' (ckpt's OneCycleLR loads either)");
    if (allowed_globals().count(full) == 0)
      bad(ErrorKind::kUnsafe, "global '", printable(full),
          "' is not allowed (ckpt loads only tensors, containers and plain values; nothing in the file is executed)");
    return Value::object(full);  // uncalled: args None
  }

  static bool is_global(const Value& v) { return v.is_object() && v.object_args().is_none(); }

  const Value& arg(const std::vector<Value>& a, size_t i, const char* fn) const {
    if (i >= a.size()) bad(ErrorKind::kCorruption, fn, " called with ", a.size(), " arguments");
    return a[i];
  }

  std::vector<int64_t> int_tuple(const Value& v, const char* what) const {
    if (!v.is_tuple() && !v.is_list()) bad(ErrorKind::kCorruption, what, " is ", v.kind_name(), ", not a tuple");
    std::vector<int64_t> out;
    for (const auto& x : v.items()) {
      if (!x.is_int()) bad(ErrorKind::kCorruption, what, " holds ", x.kind_name(), ", not an int");
      out.push_back(x.to_int());
    }
    return out;
  }

  // build_*list(list) and restore_type_tag(container, type string): the container itself, its
  // items checked against the list's type.
  Value build_script_list(ScriptBuilder b, const std::string& fn, const std::vector<Value>& a) const {
    const size_t want = b == ScriptBuilder::kTypeTag ? 2 : 1;
    if (a.size() != want)
      bad(ErrorKind::kCorruption, fn, " takes ", want, want == 1 ? " argument" : " arguments", ", not ", a.size());
    const Value& c = a[0];
    if (b == ScriptBuilder::kTypeTag) {
      if (!c.is_list() && !c.is_dict())
        bad(ErrorKind::kCorruption, fn, ": the value is ", c.kind_name(), ", not a list or dict");
      if (!a[1].is_string()) bad(ErrorKind::kCorruption, fn, ": the type is ", a[1].kind_name(), ", not a str");
      return c;
    }
    if (!c.is_list()) bad(ErrorKind::kCorruption, fn, ": the argument is ", c.kind_name(), ", not a list");
    const char* want_kind = b == ScriptBuilder::kIntList      ? "int"
                            : b == ScriptBuilder::kDoubleList ? "float"
                            : b == ScriptBuilder::kBoolList   ? "bool"
                                                              : "tensor";
    for (size_t i = 0; i < c.items().size(); ++i) {
      const Value& x = c.items()[i];
      const bool ok = b == ScriptBuilder::kIntList      ? x.is_int()
                      : b == ScriptBuilder::kDoubleList ? x.is_float()
                      : b == ScriptBuilder::kBoolList   ? x.is_bool()
                                                        : x.is_tensor();
      if (!ok) bad(ErrorKind::kCorruption, fn, ": item ", i, " is ", x.kind_name(), ", not ", want_kind);
    }
    return c;
  }

  Value rebuild_tensor(const std::vector<Value>& a, const char* fn, bool v2) {
    const Value& storage = arg(a, 0, fn);
    if (!storage.is_tensor())
      bad(ErrorKind::kCorruption, fn, ": first argument is ", storage.kind_name(), ", not a storage");
    TensorRef t;
    t.storage = storage.tensor().storage;
    t.dtype = storage.tensor().dtype;
    const Value& offset = arg(a, 1, fn);
    if (!offset.is_int()) bad(ErrorKind::kCorruption, fn, ": storage offset is ", offset.kind_name());
    t.storage_offset = offset.to_int();
    t.sizes = int_tuple(arg(a, 2, fn), "tensor size");
    t.strides = int_tuple(arg(a, 3, fn), "tensor stride");
    if (v2) {
      const Value& rg = arg(a, 4, fn);
      if (!rg.is_bool()) bad(ErrorKind::kCorruption, fn, ": requires_grad is ", rg.kind_name());
      t.requires_grad = rg.to_bool();
      if (a.size() > 6) {  // 2.x metadata: conj / neg bits
        const Value& meta = a[6];
        if (meta.is_dict()) {
          for (const auto& [k, v] : meta.dict())
            if (k.is_string() && v.is_bool() && v.to_bool())
              bad(ErrorKind::kUnsupported, "tensor with the '", printable(k.to_string()),
                  "' bit set (resolve it before saving)");
        }
      }
    }
    try {
      t.check_bounds();
    } catch (const Error& e) {
      bad(e.kind(), e.what());
    }
    return Value(std::move(t));
  }

  Value call(const Value& callable, const Value& args) {
    if (!is_global(callable))
      bad(ErrorKind::kUnsafe, "call of ", callable.kind_name(), " ", short_repr(callable),
          ", which is not an allowed function");
    if (!args.is_tuple())
      bad(ErrorKind::kCorruption, "arguments of ", callable.object_type(), " are ", args.kind_name(), ", not a tuple");
    const std::string& fn = callable.object_type();
    const auto& a = args.items();
    if (is_script_type(fn)) {  // only made when limits_.script_objects
      if (!a.empty())
        bad(ErrorKind::kUnsupported, "TorchScript class '", printable(fn), "' constructed with arguments");
      return Value::object(fn, Value::new_dict());  // an instance: its attributes come with BUILD
    }
    if (const ScriptBuilder* b = script_builder(fn)) return build_script_list(*b, fn, a);
    switch (allowed_globals().at(fn)) {
      case Global::kRebuildTensorV2:
        return rebuild_tensor(a, fn.c_str(), true);
      case Global::kRebuildTensor:
        return rebuild_tensor(a, fn.c_str(), false);
      case Global::kRebuildParameter:
      case Global::kRebuildParameterWithState: {
        const Value& data = arg(a, 0, fn.c_str());
        const Value& rg = arg(a, 1, fn.c_str());
        if (!data.is_tensor() || !rg.is_bool()) bad(ErrorKind::kCorruption, fn, ": expected (tensor, bool, ...)");
        TensorRef t = data.tensor();
        t.requires_grad = rg.to_bool();
        t.is_parameter = true;
        return Value(std::move(t));
      }
      case Global::kRebuildFromTypeV2: {  // (func, type, args, state): only plain tensor types
        const Value& func = arg(a, 0, fn.c_str());
        const Value& type = arg(a, 1, fn.c_str());
        const Value& fargs = arg(a, 2, fn.c_str());
        if (!is_global(type) ||
            (type.object_type() != "torch.Tensor" && type.object_type() != "torch.nn.parameter.Parameter"))
          bad(ErrorKind::kUnsafe, fn, " of type ", short_repr(type), " (only torch.Tensor and Parameter are allowed)");
        return call(func, fargs);
      }
      case Global::kOrderedDict: {
        Value d = container(Value::ordered_dict());
        if (!a.empty()) {  // OrderedDict([(k, v), ...])
          const Value& pairs = a[0];
          if (!pairs.is_list() && !pairs.is_tuple())
            bad(ErrorKind::kCorruption, "OrderedDict argument is ", pairs.kind_name());
          for (const auto& kv : pairs.items()) {
            if (!kv.is_tuple() || kv.items().size() != 2) bad(ErrorKind::kCorruption, "OrderedDict item is not a pair");
            set_items(d, {kv.items()[0], kv.items()[1]});
          }
        }
        return d;
      }
      case Global::kCounter: {
        Value d = container(Value(Dict(Dict::Flavor::kCounter)));
        if (!a.empty()) {
          if (!a[0].is_dict()) bad(ErrorKind::kCorruption, "Counter argument is ", a[0].kind_name());
          for (const auto& [k, v] : a[0].dict()) d.dict().set(k, v);
        }
        return d;
      }
      case Global::kTorchSize:
        if (a.size() != 1) bad(ErrorKind::kCorruption, "torch.Size takes 1 argument");
        int_tuple(a[0], "torch.Size");
        return Value::object(fn, args);
      case Global::kTorchDevice:
        if (a.empty() || !a[0].is_string()) bad(ErrorKind::kCorruption, "torch.device needs a string");
        return Value::object(fn, args);
      case Global::kSet:
      case Global::kFrozenSet: {
        Value items = Value::list();
        if (!a.empty()) {
          if (!a[0].is_list() && !a[0].is_tuple()) bad(ErrorKind::kCorruption, fn, " argument is ", a[0].kind_name());
          items = Value::list(a[0].items());
        }
        return container(Value::object(fn, Value::tuple({container(items)})));
      }
      case Global::kComplex:
        for (const auto& x : a)
          if (!x.is_float() && !x.is_int()) bad(ErrorKind::kCorruption, "complex() of ", x.kind_name());
        return Value::object(fn, args);
      case Global::kByteArray:
        if (a.size() > 1 || (a.size() == 1 && !a[0].is_bytes()))
          bad(ErrorKind::kCorruption, "bytearray() of unexpected arguments");
        return Value::object(fn, a.empty() ? Value::tuple({Value::bytes("")}) : args);
      case Global::kBytes:
        if (!a.empty()) bad(ErrorKind::kUnsafe, "builtins.bytes with arguments");
        return Value::bytes("");
      case Global::kCodecsEncode: {
        if (a.size() != 2 || !a[0].is_string() || !a[1].is_string())
          bad(ErrorKind::kCorruption, "_codecs.encode needs (str, encoding)");
        const std::string& enc = a[1].to_string();
        if (enc != "latin1" && enc != "latin-1")
          bad(ErrorKind::kUnsupported, "_codecs.encode with encoding '", printable(enc), "'");
        std::string out;
        if (!latin1_encode(a[0].to_string(), &out))
          bad(ErrorKind::kCorruption, "_codecs.encode of a string outside latin-1");
        return Value::bytes(std::move(out));
      }
      case Global::kGetLayout:
        return Value::object(fn, args);
      case Global::kUnsupportedTensor:
        bad(ErrorKind::kUnsupported, fn,
            " (sparse, quantized, meta, nested and float8/uint16+ tensors are not supported)");
      case Global::kValue:
        break;
    }
    bad(ErrorKind::kUnsafe, "'", fn, "' may not be called");
  }

  void build(Value& target, const Value& state) {
    if (target.is_dict() && target.dict().flavor() == Dict::Flavor::kOrderedDict && state.is_dict()) {
      // OrderedDict instance attributes (state_dict()'s `_metadata`).
      target.dict().set_attributes(state);
      return;
    }
    if (target.is_tensor() && state.is_dict() && state.dict().empty()) return;  // no attributes
    if (target.is_object() && is_script_type(target.object_type()) && target.object_args().is_dict()) {
      if (!state.is_dict())
        bad(ErrorKind::kUnsupported, "TorchScript object '", printable(target.object_type()), "' with a ",
            state.kind_name(), " state (a custom __setstate__, which would run the archive's code)");
      Value attrs = target.object_args();  // shares the instance's attribute dict
      for (const auto& [k, v] : state.dict()) attrs.dict().set(k, v);
      return;
    }
    bad(ErrorKind::kUnsafe, "BUILD on ", target.kind_name(), " (only OrderedDict attributes are allowed)");
  }

  // --- after STOP: no cycles, bounded depth and expanded size --------------------------------
  static void for_each_child(const Value& v, const std::function<void(const Value&)>& f) {
    switch (v.kind()) {
      case Value::Kind::kList:
      case Value::Kind::kTuple:
        for (const auto& x : v.items()) f(x);
        break;
      case Value::Kind::kDict:
        for (const auto& [k, x] : v.dict()) {
          f(k);
          f(x);
        }
        f(v.dict().attributes());
        break;
      case Value::Kind::kObject:
        f(v.object_args());
        break;
      default:
        break;
    }
  }

  static bool has_children(const Value& v) {
    auto k = v.kind();
    return k == Value::Kind::kList || k == Value::Kind::kTuple || k == Value::Kind::kDict || k == Value::Kind::kObject;
  }

  void check_tree(const Value& root) {
    struct State {
      bool done = false;
      size_t expanded = 0;
    };
    std::unordered_map<const void*, State> seen;
    struct Frame {
      Value v;
      std::vector<Value> children;
      size_t next = 0;
      size_t expanded = 1;
    };
    std::vector<Frame> frames;
    auto enter = [&](const Value& v) {
      Frame f{v, {}, 0, 1};
      for_each_child(v, [&](const Value& c) { f.children.push_back(c); });
      seen[ValueAccess::node(v)] = State{};
      frames.push_back(std::move(f));
      if (frames.size() > limits_.max_depth)
        fail(ErrorKind::kCorruption, "pickle nests containers deeper than ", limits_.max_depth);
    };
    if (!has_children(root)) return;
    enter(root);
    while (!frames.empty()) {
      Frame& f = frames.back();
      if (f.next == f.children.size()) {
        seen[ValueAccess::node(f.v)] = State{true, f.expanded};
        size_t e = f.expanded;
        frames.pop_back();
        if (!frames.empty()) frames.back().expanded += e;
        continue;
      }
      Value c = f.children[f.next++];
      if (!has_children(c)) {
        ++f.expanded;
      } else {
        auto it = seen.find(ValueAccess::node(c));
        if (it == seen.end()) {
          enter(c);
          continue;
        }
        if (!it->second.done) fail(ErrorKind::kCorruption, "pickle builds a cyclic structure");
        f.expanded += it->second.expanded;
      }
      if (f.expanded > limits_.max_objects)
        fail(ErrorKind::kCorruption, "pickle expands to more than ", limits_.max_objects, " objects");
    }
  }

  static void clear_children(Value& v) {
    if (v.is_list())
      v.items().clear();
    else if (v.is_dict())
      v.dict() = Dict();
    else if (v.is_object() && v.object_args().is_tuple()) {
      for (auto& x : const_cast<Value&>(v.object_args()).items()) clear_children(x);
    }
  }
};

}  // namespace

bool is_script_type(const std::string& type) {
  return type == "__torch__" || type.rfind("__torch__.", 0) == 0;
}

Value unpickle(const std::byte* data, size_t size, const PersistentLoad& persistent_load, const Limits& limits,
               size_t* consumed) {
  Unpickler u(data, size, persistent_load, limits);
  return u.run(consumed);
}

}  // namespace ckpt::pickle
