// torch >= 2.6's weights_only rules over a pickle (see weights_only.h). The walk follows
// Unpickler.load of torch/_weights_only_unpickler.py opcode by opcode, with each stack item
// reduced to what the rules look at: its type, a global's name, a short string's text and a
// tuple's items.
#include "format/weights_only.h"

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <set>
#include <unordered_map>

#include "util/bytes.h"
#include "util/errors.h"
#include "util/text.h"

namespace ckpt::weights_only {
namespace {

// What a stack item is, as far as the rules care.
enum class Kind {
  kGlobal,  // an allowed global, uncalled (`name`)
  kList,    // list
  kDict,    // dict
  kOrderedDict,
  kCounter,
  kTuple,  // `items`
  kStr,    // `name` holds its first bytes
  kInt,
  kTensor,     // what a _rebuild_* function returns
  kParameter,  // torch.nn.Parameter
  kStorage,    // a persistent-loaded storage
  kInstance,   // an instance of an allowed class (`name`): set, complex, torch.Size, ...
  kOther,      // None, bool, float, bytes, a layout
};

struct Item;
using ItemPtr = std::shared_ptr<const Item>;
struct Item {
  Kind kind;
  std::string name;
  std::vector<ItemPtr> items;
};

ItemPtr make(Kind k, std::string name = {}, std::vector<ItemPtr> items = {}) {
  return std::make_shared<const Item>(Item{k, std::move(name), std::move(items)});
}

const char* kind_text(Kind k) {
  switch (k) {
    case Kind::kGlobal:
      return "an uncalled global";
    case Kind::kList:
      return "a list";
    case Kind::kDict:
      return "a dict";
    case Kind::kOrderedDict:
      return "an OrderedDict";
    case Kind::kCounter:
      return "a Counter";
    case Kind::kTuple:
      return "a tuple";
    case Kind::kStr:
      return "a str";
    case Kind::kInt:
      return "an int";
    case Kind::kTensor:
      return "a tensor";
    case Kind::kParameter:
      return "a Parameter";
    case Kind::kStorage:
      return "a storage";
    case Kind::kInstance:
      return "an object";
    case Kind::kOther:
      return "a plain value";
  }
  return "?";
}

// How an allowed global may be used.
enum class Use {
  kValue,     // not callable: dtypes, qschemes, legacy storage classes (2.x's StorageType)
  kFunction,  // REDUCE only
  kClass,     // REDUCE or NEWOBJ
};

struct GlobalRule {
  Use use;
  Kind result;  // what calling it gives
};

// torch 2.6.0 torch/_weights_only_unpickler.py _get_allowed_globals(), with torch/storage.py's
// _dtype_to_storage_type_map() and _new_dtypes() and torch._storage_classes of the same release.
// 2.7.0 ... 2.14.0 only add to it (float8_e8m0fnu, float4_e2m1fn_x2, uint1-7, int1-7 in 2.11).
const std::unordered_map<std::string, GlobalRule>& rules() {
  static const auto* table = [] {
    auto* t = new std::unordered_map<std::string, GlobalRule>{
        {"collections.OrderedDict", {Use::kClass, Kind::kOrderedDict}},
        {"collections.Counter", {Use::kClass, Kind::kCounter}},
        {"torch.nn.parameter.Parameter", {Use::kClass, Kind::kParameter}},
        {"torch.serialization._get_layout", {Use::kFunction, Kind::kOther}},
        {"torch.Size", {Use::kClass, Kind::kInstance}},
        {"torch.Tensor", {Use::kClass, Kind::kTensor}},
        {"torch.device", {Use::kClass, Kind::kInstance}},
        {"_codecs.encode", {Use::kFunction, Kind::kOther}},
        {"builtins.bytearray", {Use::kClass, Kind::kInstance}},
        {"builtins.set", {Use::kClass, Kind::kInstance}},
        {"builtins.complex", {Use::kClass, Kind::kInstance}},
        {"torch.storage.TypedStorage", {Use::kClass, Kind::kStorage}},
        {"torch.storage.UntypedStorage", {Use::kClass, Kind::kStorage}},
        {"torch._utils._rebuild_parameter", {Use::kFunction, Kind::kParameter}},
        {"torch._utils._rebuild_parameter_with_state", {Use::kFunction, Kind::kParameter}},
        {"torch._tensor._rebuild_from_type_v2", {Use::kFunction, Kind::kTensor}},
    };
    for (const char* f :
         {"_rebuild_qtensor", "_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3", "_rebuild_sparse_tensor",
          "_rebuild_meta_tensor_no_storage", "_rebuild_nested_tensor", "_rebuild_wrapper_subclass",
          "_rebuild_device_tensor_from_numpy", "_rebuild_device_tensor_from_cpu_tensor"})
      (*t)[std::string("torch._utils.") + f] = {Use::kFunction, Kind::kTensor};
    for (const char* s :
         {"DoubleStorage", "FloatStorage", "HalfStorage", "LongStorage", "IntStorage", "ShortStorage", "CharStorage",
          "ByteStorage", "BoolStorage", "BFloat16Storage", "ComplexDoubleStorage", "ComplexFloatStorage",
          "QInt8Storage", "QInt32Storage", "QUInt8Storage", "QUInt4x2Storage", "QUInt2x4Storage"})
      (*t)[std::string("torch.") + s] = {Use::kValue, Kind::kOther};
    for (const char* d : {// _dtype_to_storage_type_map(), as str(dtype) spells them
                          "float64", "float32", "float16", "int64", "int32", "int16", "int8", "uint8", "bool",
                          "bfloat16", "complex128", "complex64", "qint8", "qint32", "quint8", "quint4x2", "quint2x4",
                          // _new_dtypes()
                          "float8_e5m2", "float8_e4m3fn", "float8_e5m2fnuz", "float8_e4m3fnuz", "bits8", "bits16",
                          "bits1x8", "bits2x4", "bits4x2", "complex32", "uint16", "uint32", "uint64",
                          // quantization schemes
                          "per_tensor_affine", "per_tensor_symmetric", "per_channel_affine", "per_channel_symmetric",
                          "per_channel_affine_float_qparams"})
      (*t)[std::string("torch.") + d] = {Use::kValue, Kind::kOther};
    return t;
  }();
  return *table;
}

// What torch.load's persistent_load takes as a storage's type: a legacy class or UntypedStorage.
bool is_storage_class(const std::string& name) {
  const size_t n = name.size();
  return name == "torch.storage.UntypedStorage" ||
         (rules().count(name) && name.rfind("torch.", 0) == 0 && name.find('.', 6) == std::string::npos && n > 13 &&
          name.compare(n - 7, 7, "Storage") == 0);
}

const char* opcode_name(uint8_t op) {
  switch (op) {
    case '(':
      return "MARK";
    case '.':
      return "STOP";
    case '0':
      return "POP";
    case '1':
      return "POP_MARK";
    case '2':
      return "DUP";
    case 'F':
      return "FLOAT";
    case 'I':
      return "INT";
    case 'J':
      return "BININT";
    case 'K':
      return "BININT1";
    case 'L':
      return "LONG";
    case 'M':
      return "BININT2";
    case 'N':
      return "NONE";
    case 'P':
      return "PERSID";
    case 'Q':
      return "BINPERSID";
    case 'R':
      return "REDUCE";
    case 'S':
      return "STRING";
    case 'T':
      return "BINSTRING";
    case 'U':
      return "SHORT_BINSTRING";
    case 'V':
      return "UNICODE";
    case 'X':
      return "BINUNICODE";
    case 'a':
      return "APPEND";
    case 'b':
      return "BUILD";
    case 'c':
      return "GLOBAL";
    case 'd':
      return "DICT";
    case '}':
      return "EMPTY_DICT";
    case 'e':
      return "APPENDS";
    case 'g':
      return "GET";
    case 'h':
      return "BINGET";
    case 'i':
      return "INST";
    case 'j':
      return "LONG_BINGET";
    case 'l':
      return "LIST";
    case ']':
      return "EMPTY_LIST";
    case 'o':
      return "OBJ";
    case 'p':
      return "PUT";
    case 'q':
      return "BINPUT";
    case 'r':
      return "LONG_BINPUT";
    case 's':
      return "SETITEM";
    case 't':
      return "TUPLE";
    case ')':
      return "EMPTY_TUPLE";
    case 'u':
      return "SETITEMS";
    case 'G':
      return "BINFLOAT";
    case 0x80:
      return "PROTO";
    case 0x81:
      return "NEWOBJ";
    case 0x82:
      return "EXT1";
    case 0x83:
      return "EXT2";
    case 0x84:
      return "EXT4";
    case 0x85:
      return "TUPLE1";
    case 0x86:
      return "TUPLE2";
    case 0x87:
      return "TUPLE3";
    case 0x88:
      return "NEWTRUE";
    case 0x89:
      return "NEWFALSE";
    case 0x8a:
      return "LONG1";
    case 0x8b:
      return "LONG4";
    case 'B':
      return "BINBYTES";
    case 'C':
      return "SHORT_BINBYTES";
    case 0x8c:
      return "SHORT_BINUNICODE";
    case 0x8d:
      return "BINUNICODE8";
    case 0x8e:
      return "BINBYTES8";
    case 0x8f:
      return "EMPTY_SET";
    case 0x90:
      return "ADDITEMS";
    case 0x91:
      return "FROZENSET";
    case 0x92:
      return "NEWOBJ_EX";
    case 0x93:
      return "STACK_GLOBAL";
    case 0x94:
      return "MEMOIZE";
    case 0x95:
      return "FRAME";
    case 0x96:
      return "BYTEARRAY8";
    case 0x97:
      return "NEXT_BUFFER";
    case 0x98:
      return "READONLY_BUFFER";
    default:
      return nullptr;
  }
}

// Unpickler.load of torch 2.6.0 ... 2.14.0 handles exactly these.
const std::string& opcodes() {
  static const std::string ops = [] {
    std::string s = "(.JKMNQRUXabc}ehjqrsu])tG";
    for (int op : {0x80, 0x81, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8a, 0x8f}) s += static_cast<char>(op);
    std::sort(s.begin(), s.end(), [](char a, char b) { return uint8_t(a) < uint8_t(b); });
    return s;
  }();
  return ops;
}

std::string map_module(const std::string& module) {
  if (module == "__builtin__") return "builtins";
  if (module == "copy_reg") return "copyreg";
  return module;
}

struct Violation {
  std::string text;
};

class Checker {
 public:
  Checker(const uint8_t* p, size_t size) : p_(p), size_(size) {}

  void run() {
    for (;;) {
      at_ = pos_;
      const uint8_t op = u8();
      if (opcodes().find(static_cast<char>(op)) == std::string::npos) {
        const char* name = opcode_name(op);
        if (name) no("opcode ", name, " is not one torch's weights_only unpickler accepts");
        char hex[8];
        std::snprintf(hex, sizeof hex, "0x%02x", op);
        no("unknown opcode ", hex);
      }
      if (op == '.') {
        if (stack_.empty()) no("STOP with an empty stack");
        return;
      }
      step(op);
    }
  }

 private:
  const uint8_t* p_;
  size_t size_;
  size_t pos_ = 0, at_ = 0;
  std::vector<ItemPtr> stack_;
  std::vector<std::vector<ItemPtr>> metastack_;
  std::unordered_map<uint32_t, ItemPtr> memo_;

  template <class... Args>
  [[noreturn]] void no(Args&&... args) const {
    throw Violation{str_cat(std::forward<Args>(args)..., " (pickle byte ", at_, ")")};
  }

  void need(size_t n) const {
    if (n > size_ - pos_) no("the pickle ends inside an opcode");
  }
  uint8_t u8() {
    need(1);
    return p_[pos_++];
  }
  uint32_t u32() {
    need(4);
    uint32_t v = load_le32(p_ + pos_);
    pos_ += 4;
    return v;
  }
  void skip(size_t n) {
    need(n);
    pos_ += n;
  }
  std::string line() {
    const void* nl = std::memchr(p_ + pos_, '\n', size_ - pos_);
    if (!nl) no("the pickle ends inside GLOBAL");
    const size_t end = static_cast<size_t>(static_cast<const uint8_t*>(nl) - p_);
    std::string s(reinterpret_cast<const char*>(p_ + pos_), end - pos_);
    pos_ = end + 1;
    return s;
  }

  void push(ItemPtr v) {
    if (stack_.size() >= (size_t{1} << 24)) no("the stack exceeds 16M items");
    stack_.push_back(std::move(v));
  }
  ItemPtr pop(const char* op) {
    if (stack_.empty()) no(op, " with an empty stack");
    ItemPtr v = std::move(stack_.back());
    stack_.pop_back();
    return v;
  }
  const Item& top(const char* op) {
    if (stack_.empty()) no(op, " with an empty stack");
    return *stack_.back();
  }
  std::vector<ItemPtr> pop_mark(const char* op) {
    if (metastack_.empty()) no(op, " without a MARK");
    std::vector<ItemPtr> items = std::move(stack_);
    stack_ = std::move(metastack_.back());
    metastack_.pop_back();
    return items;
  }

  void step(uint8_t op) {
    switch (op) {
      case 0x80: {
        const uint8_t proto = u8();
        if (proto != 2) no("PROTO ", int(proto), ": torch.load warns for every protocol but 2");
        return;
      }
      case '(':
        if (metastack_.size() >= 100000) no("MARKs nest deeper than 100000");
        metastack_.push_back(std::move(stack_));
        stack_.clear();
        return;
      case 'c': {
        std::string module = map_module(line());
        const std::string name = line();
        const std::string full = module + "." + name;
        if (module == "sys" || module == "os" || module == "posix" || module == "nt")
          no("global '", printable(full), "': module '", module, "' is blocked");
        if (!rules().count(full)) no("global '", printable(full), "' is not in torch's weights_only allowlist");
        return push(make(Kind::kGlobal, full));
      }
      case 'R':
      case 0x81: {
        const char* what = op == 'R' ? "REDUCE" : "NEWOBJ";
        ItemPtr args = pop(what);
        ItemPtr fn = pop(what);
        if (fn->kind != Kind::kGlobal) no(what, " on ", kind_text(fn->kind), ", not an allowed global");
        const GlobalRule& r = rules().at(fn->name);
        if (r.use == Use::kValue || (op == 0x81 && r.use != Use::kClass))
          no(what, " on '", fn->name, "', which torch cannot ", op == 'R' ? "call" : "instantiate");
        if (args->kind != Kind::kTuple) no(what, " of '", fn->name, "' with ", kind_text(args->kind), " of arguments");
        return push(make(r.result, fn->name));
      }
      case 'b': {
        pop("BUILD");
        const Item& inst = top("BUILD");
        if (inst.kind != Kind::kTensor && inst.kind != Kind::kParameter && inst.kind != Kind::kOrderedDict &&
            inst.kind != Kind::kCounter && inst.kind != Kind::kInstance)
          no("BUILD on ", kind_text(inst.kind), " (only tensors, Parameters, OrderedDicts and allowed classes)");
        return;
      }
      case 'a':
      case 'e': {
        if (op == 'a')
          pop("APPEND");
        else
          pop_mark("APPENDS");
        const Item& target = top(op == 'a' ? "APPEND" : "APPENDS");
        if (target.kind != Kind::kList)
          no(op == 'a' ? "APPEND" : "APPENDS", " onto ", kind_text(target.kind), ", not a list");
        return;
      }
      case 's':
      case 'u': {
        const char* what = op == 's' ? "SETITEM" : "SETITEMS";
        if (op == 's') {
          pop(what);
          pop(what);
        } else if (pop_mark(what).size() % 2) {
          no("SETITEMS with an odd number of items");
        }
        const Item& target = top(what);
        if (target.kind != Kind::kDict && target.kind != Kind::kOrderedDict && target.kind != Kind::kCounter)
          no(what, " onto ", kind_text(target.kind), " (torch 2.11+ allows only dict, OrderedDict and Counter)");
        return;
      }
      case 't':
        return push(make(Kind::kTuple, {}, pop_mark("TUPLE")));
      case 0x85:
      case 0x86:
      case 0x87: {
        const size_t n = op - 0x84;
        std::vector<ItemPtr> items(n);
        for (size_t i = n; i-- > 0;) items[i] = pop(opcode_name(op));
        return push(make(Kind::kTuple, {}, std::move(items)));
      }
      case ')':
        return push(make(Kind::kTuple));
      case ']':
        return push(make(Kind::kList));
      case '}':
        return push(make(Kind::kDict));
      case 0x8f:
        return push(make(Kind::kInstance, "builtins.set"));
      case 'N':
      case 0x88:
      case 0x89:
        return push(make(Kind::kOther));
      case 'J':
        skip(4);
        return push(make(Kind::kInt));
      case 'K':
        skip(1);
        return push(make(Kind::kInt));
      case 'M':
        skip(2);
        return push(make(Kind::kInt));
      case 0x8a:
        skip(u8());
        return push(make(Kind::kInt));
      case 'G':
        skip(8);
        return push(make(Kind::kOther));
      case 'X': {
        const uint32_t n = u32();
        need(n);
        std::string head(reinterpret_cast<const char*>(p_ + pos_), std::min<size_t>(n, 16));
        pos_ += n;
        return push(make(Kind::kStr, std::move(head)));
      }
      case 'U': {
        const uint8_t n = u8();
        skip(n);
        return push(make(Kind::kOther));  // bytes under torch.load's encoding
      }
      case 'Q': {
        ItemPtr pid = pop("BINPERSID");
        const auto& t = pid->items;
        if (pid->kind != Kind::kTuple || t.empty() || t[0]->kind != Kind::kStr || t[0]->name != "storage")
          no("BINPERSID of something other than a ('storage', ...) tuple");
        if (t.size() != 5 || t[1]->kind != Kind::kGlobal || !is_storage_class(t[1]->name) || t[2]->kind != Kind::kStr ||
            t[3]->kind != Kind::kStr || t[4]->kind != Kind::kInt)
          no("BINPERSID of a storage id that is not (str, storage class, str, str, int)");
        return push(make(Kind::kStorage));
      }
      case 'q': {
        const uint8_t i = u8();
        if (stack_.empty()) no("BINPUT with an empty stack");
        memo_[i] = stack_.back();
        return;
      }
      case 'r': {
        const uint32_t i = u32();
        if (stack_.empty()) no("LONG_BINPUT with an empty stack");
        memo_[i] = stack_.back();
        return;
      }
      case 'h':
      case 'j': {
        const uint32_t i = op == 'h' ? u8() : u32();
        auto it = memo_.find(i);
        if (it == memo_.end()) no("memo ", i, " is read but never stored");
        return push(it->second);
      }
      default:
        no("opcode ", opcode_name(op), " is not handled");  // unreachable: opcodes() lists only the above
    }
  }
};

}  // namespace

const std::vector<std::string>& allowed_globals() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> v;
    for (const auto& [name, rule] : rules()) v.push_back(name);
    std::sort(v.begin(), v.end());
    return v;
  }();
  return names;
}

const std::string& allowed_opcodes() {
  return opcodes();
}

std::string first_violation(const void* data, size_t size) {
  try {
    Checker(static_cast<const uint8_t*>(data), size).run();
    return "";
  } catch (const Violation& v) {
    return printable(v.text, std::string::npos);
  }
}

bool audit_enabled() {
  const char* v = std::getenv("CKPT_AUDIT_WEIGHTS_ONLY");
  return v != nullptr && std::strcmp(v, "1") == 0;
}

}  // namespace ckpt::weights_only
