// Protocol-2 pickler emitting the opcodes and globals torch.save emits (see
// doc/format.md §2), so the output loads in torch 1.13 and in 2.x with
// weights_only=True. Only globals from 2.x's weights-only allowlist are written.
#include <unordered_map>

#include "format/pickle.h"
#include "format/storage_types.h"
#include "format/value_access.h"
#include "util/bytes.h"
#include "util/errors.h"

namespace ckpt::pickle {
namespace {

class Pickler {
 public:
  Pickler(const StorageKey& key, size_t max_depth) : storage_key_(key), max_depth_(max_depth) {}

  std::string run(const Value& root) {
    out_ += "\x80\x02";
    save(root, 0);
    out_ += '.';
    return std::move(out_);
  }

 private:
  const StorageKey& storage_key_;
  size_t max_depth_;
  std::string out_;
  uint32_t next_memo_ = 0;
  std::unordered_map<const void*, uint32_t> memo_;         // shared nodes
  std::unordered_map<std::string, uint32_t> string_memo_;  // equal strings written once
  std::unordered_map<std::string, uint32_t> global_memo_;

  void put_memo() {
    uint32_t idx = next_memo_++;
    if (idx < 256) {
      out_ += 'q';
      out_ += static_cast<char>(idx);
    } else {
      out_ += 'r';
      put_le32(out_, idx);
    }
  }
  void get_memo(uint32_t idx) {
    if (idx < 256) {
      out_ += 'h';
      out_ += static_cast<char>(idx);
    } else {
      out_ += 'j';
      put_le32(out_, idx);
    }
  }
  bool try_memo(const Value& v) {
    auto it = memo_.find(ValueAccess::node(v));
    if (it == memo_.end()) return false;
    get_memo(it->second);
    return true;
  }
  void remember(const Value& v) {
    memo_[ValueAccess::node(v)] = next_memo_;
    put_memo();
  }

  void save_int(int64_t v) {
    if (v >= 0 && v < 256) {
      out_ += 'K';
      out_ += static_cast<char>(v);
    } else if (v >= 0 && v < 65536) {
      out_ += 'M';
      put_le16(out_, static_cast<uint16_t>(v));
    } else if (v >= INT32_MIN && v <= INT32_MAX) {
      out_ += 'J';
      put_le32(out_, static_cast<uint32_t>(static_cast<int32_t>(v)));
    } else {  // LONG1: minimal little-endian two's complement
      std::string b;
      put_le64(b, static_cast<uint64_t>(v));
      while (b.size() > 1) {
        auto last = static_cast<uint8_t>(b.back());
        auto prev = static_cast<uint8_t>(b[b.size() - 2]);
        if ((last == 0x00 && !(prev & 0x80)) || (last == 0xff && (prev & 0x80)))
          b.pop_back();
        else
          break;
      }
      save_long_bytes(b);
    }
  }
  void save_long_bytes(const std::string& b) {
    if (b.size() < 256) {
      out_ += '\x8a';
      out_ += static_cast<char>(b.size());
    } else {
      out_ += '\x8b';
      put_le32(out_, static_cast<uint32_t>(b.size()));
    }
    out_ += b;
  }

  void save_string(const std::string& s) {
    auto it = string_memo_.find(s);
    if (it != string_memo_.end()) return get_memo(it->second);
    out_ += 'X';
    put_le32(out_, static_cast<uint32_t>(s.size()));
    out_ += s;
    string_memo_[s] = next_memo_;
    put_memo();
  }

  // Protocol 2 spells Python 3's `builtins` as `__builtin__`.
  void save_global(const std::string& full) {
    auto it = global_memo_.find(full);
    if (it != global_memo_.end()) return get_memo(it->second);
    auto dot = full.rfind('.');
    std::string module = full.substr(0, dot), name = full.substr(dot + 1);
    if (module == "builtins") module = "__builtin__";
    out_ += 'c';
    out_ += module + '\n' + name + '\n';
    global_memo_[full] = next_memo_;
    put_memo();
  }

  void save_bytes(const std::string& b) {
    // _codecs.encode(<latin-1 text>, 'latin1'), as CPython's protocol-2 pickler writes bytes.
    save_global("_codecs.encode");
    std::string utf8;
    for (unsigned char c : b) {
      if (c < 0x80) {
        utf8 += static_cast<char>(c);
      } else {
        utf8 += static_cast<char>(0xC0 | (c >> 6));
        utf8 += static_cast<char>(0x80 | (c & 0x3F));
      }
    }
    out_ += 'X';
    put_le32(out_, static_cast<uint32_t>(utf8.size()));
    out_ += utf8;
    put_memo();
    save_string("latin1");
    out_ += "\x86R";
    put_memo();
  }

  void save_items_batched(const std::vector<Value>& items, size_t depth) {
    // Like CPython's _batch_appends: 1 item -> APPEND, more -> MARK ... APPENDS per 1000.
    for (size_t i = 0; i < items.size(); i += 1000) {
      size_t n = std::min<size_t>(1000, items.size() - i);
      if (n == 1) {
        save(items[i], depth);
        out_ += 'a';
        continue;
      }
      out_ += '(';
      for (size_t j = i; j < i + n; ++j) save(items[j], depth);
      out_ += 'e';
    }
  }

  void save_dict_items(const Dict& d, size_t depth) {
    const auto& items = d.items();
    for (size_t i = 0; i < items.size(); i += 1000) {
      size_t n = std::min<size_t>(1000, items.size() - i);
      if (n == 1) {
        save(items[i].first, depth);
        save(items[i].second, depth);
        out_ += 's';
        continue;
      }
      out_ += '(';
      for (size_t j = i; j < i + n; ++j) {
        save(items[j].first, depth);
        save(items[j].second, depth);
      }
      out_ += 'u';
    }
  }

  void save_tuple(const std::vector<Value>& items, size_t depth) {
    if (items.empty()) {
      out_ += ')';
      return;
    }
    if (items.size() <= 3) {
      for (const auto& v : items) save(v, depth);
      out_ += static_cast<char>(0x84 + items.size());  // TUPLE1..3
      return;
    }
    out_ += '(';
    for (const auto& v : items) save(v, depth);
    out_ += 't';
  }

  void save_int_tuple(const std::vector<int64_t>& xs) {
    if (xs.empty()) {
      out_ += ')';
      return;
    }
    if (xs.size() > 3) out_ += '(';
    for (int64_t x : xs) save_int(x);
    out_ += xs.size() > 3 ? 't' : static_cast<char>(0x84 + xs.size());
    put_memo();
  }

  void save_tensor(const Value& v) {
    const TensorRef& t = v.tensor();
    if (!t.storage) fail(ErrorKind::kInvalidArgument, "tensor without storage");
    t.check_bounds();
    if (t.is_parameter) save_global("torch._utils._rebuild_parameter");
    save_global("torch._utils._rebuild_tensor_v2");
    out_ += '(';
    // persistent id ('storage', torch.<X>Storage, key, 'cpu', numel)
    out_ += '(';
    save_string("storage");
    save_global(std::string("torch.") + storage_class_name(t.dtype));
    save_string(storage_key_(t));
    save_string("cpu");
    save_int(static_cast<int64_t>(t.storage->numel()));
    out_ += 't';
    put_memo();
    out_ += 'Q';
    save_int(t.storage_offset);
    save_int_tuple(t.sizes);
    save_int_tuple(t.strides);
    out_ += (t.requires_grad && !t.is_parameter) ? '\x88' : '\x89';
    save_global("collections.OrderedDict");
    out_ += ")R";
    put_memo();
    out_ += 't';
    put_memo();
    out_ += 'R';
    if (t.is_parameter) {
      put_memo();
      out_ += t.requires_grad ? '\x88' : '\x89';
      save_global("collections.OrderedDict");
      out_ += ")R";
      put_memo();
      out_ += '\x87';
      put_memo();
      out_ += 'R';
    }
    remember(v);
  }

  void save(const Value& v, size_t depth) {
    if (depth > max_depth_) fail(ErrorKind::kInvalidArgument, "object nests deeper than ", max_depth_, " levels");
    using K = Value::Kind;
    switch (v.kind()) {
      case K::kNone:
        out_ += 'N';
        return;
      case K::kBool:
        out_ += v.to_bool() ? '\x88' : '\x89';
        return;
      case K::kInt:
        save_int(v.to_int());
        return;
      case K::kBigInt:
        save_long_bytes(v.big_int_bytes());
        return;
      case K::kFloat:
        out_ += 'G';
        put_be64(out_, double_bits(v.to_double()));
        return;
      case K::kString:
        save_string(v.to_string());
        return;
      case K::kBytes:
        if (try_memo(v)) return;
        save_bytes(v.to_bytes());
        memo_[ValueAccess::node(v)] = next_memo_ - 1;
        return;
      case K::kList:
        if (try_memo(v)) return;
        out_ += ']';
        remember(v);
        save_items_batched(v.items(), depth + 1);
        return;
      case K::kTuple:
        if (try_memo(v)) return;
        save_tuple(v.items(), depth + 1);
        remember(v);
        return;
      case K::kDict: {
        if (try_memo(v)) return;
        const Dict& d = v.dict();
        if (d.flavor() == Dict::Flavor::kCounter) {
          // Counter.__reduce__ = (Counter, (dict(self),))
          save_global("collections.Counter");
          out_ += '}';
          put_memo();
          save_dict_items(d, depth + 1);
          out_ += "\x85R";
          remember(v);
          return;
        }
        if (d.flavor() == Dict::Flavor::kOrderedDict) {
          save_global("collections.OrderedDict");
          out_ += ")R";
        } else {
          out_ += '}';
        }
        remember(v);
        save_dict_items(d, depth + 1);
        if (!d.attributes().is_none()) {
          if (d.flavor() != Dict::Flavor::kOrderedDict || !d.attributes().is_dict())
            fail(ErrorKind::kInvalidArgument, "only an OrderedDict may carry attributes");
          save(d.attributes(), depth + 1);
          out_ += 'b';
        }
        return;
      }
      case K::kTensor:
        if (try_memo(v)) return;
        save_tensor(v);
        return;
      case K::kObject: {
        if (try_memo(v)) return;
        save_global(v.object_type());
        if (v.object_args().is_none()) return;  // an uncalled global, e.g. torch.float16
        if (!v.object_args().is_tuple()) fail(ErrorKind::kInvalidArgument, "object arguments must be a tuple");
        save_tuple(v.object_args().items(), depth + 1);
        out_ += 'R';
        remember(v);
        return;
      }
    }
  }
};

}  // namespace

std::string pickle(const Value& root, const StorageKey& storage_key, size_t max_depth) {
  return Pickler(storage_key, max_depth).run(root);
}

}  // namespace ckpt::pickle
