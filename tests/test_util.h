// Helpers shared by the C++ tests.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include "ckpt/error.h"
#include "ckpt/value.h"

namespace ckpt::test {

inline std::string unhex(const std::string& hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2)
    out.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  return out;
}

// Deep structural equality, tensors compared by dtype, shape, strides, offset and bytes.
inline bool deep_equal(const Value& a, const Value& b, std::string* why, const std::string& path = "") {
  auto no = [&](const std::string& what) {
    *why = (path.empty() ? "<root>" : path) + ": " + what;
    return false;
  };
  if (a.kind() != b.kind()) return no(std::string("kind ") + a.kind_name() + " vs " + b.kind_name());
  switch (a.kind()) {
    case Value::Kind::kNone:
      return true;
    case Value::Kind::kBool:
      return a.to_bool() == b.to_bool() || no("bool");
    case Value::Kind::kInt:
      return a.to_int() == b.to_int() || no("int");
    case Value::Kind::kBigInt:
      return a.big_int_bytes() == b.big_int_bytes() || no("bigint");
    case Value::Kind::kFloat: {
      double x = a.to_double(), y = b.to_double();
      return std::memcmp(&x, &y, 8) == 0 || no("float");
    }
    case Value::Kind::kString:
      return a.to_string() == b.to_string() || no("str");
    case Value::Kind::kBytes:
      return a.to_bytes() == b.to_bytes() || no("bytes");
    case Value::Kind::kList:
    case Value::Kind::kTuple: {
      if (a.items().size() != b.items().size()) return no("length");
      for (size_t i = 0; i < a.items().size(); ++i)
        if (!deep_equal(a.items()[i], b.items()[i], why, path + "/" + std::to_string(i))) return false;
      return true;
    }
    case Value::Kind::kDict: {
      const Dict &x = a.dict(), &y = b.dict();
      if (x.flavor() != y.flavor()) return no("dict flavor");
      if (x.size() != y.size()) return no("dict size");
      for (size_t i = 0; i < x.size(); ++i) {
        if (!deep_equal(x.items()[i].first, y.items()[i].first, why, path + "/<key>")) return false;
        if (!deep_equal(x.items()[i].second, y.items()[i].second, why, path + "/" + short_repr(x.items()[i].first)))
          return false;
      }
      return deep_equal(x.attributes(), y.attributes(), why, path + "/<attributes>");
    }
    case Value::Kind::kTensor: {
      const TensorRef &x = a.tensor(), &y = b.tensor();
      if (x.dtype != y.dtype || x.sizes != y.sizes || x.strides != y.strides || x.storage_offset != y.storage_offset ||
          x.requires_grad != y.requires_grad || x.is_parameter != y.is_parameter)
        return no("tensor metadata");
      if (x.storage->nbytes() != y.storage->nbytes()) return no("storage size");
      if (x.storage->nbytes() && std::memcmp(x.storage->data(), y.storage->data(), x.storage->nbytes()) != 0)
        return no("storage bytes");
      return true;
    }
    case Value::Kind::kObject:
      if (a.object_type() != b.object_type()) return no("object type");
      return deep_equal(a.object_args(), b.object_args(), why, path + "/<args>");
  }
  return false;
}

inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

inline void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// A fresh directory under the system temp dir, removed at scope exit.
class TempDir {
 public:
  // Under the system temp dir, or under `base`.
  explicit TempDir(const std::string& base = std::filesystem::temp_directory_path().string()) {
    std::string tmpl = (std::filesystem::path(base) / "ckpt-test-XXXXXX").string();
    path_ = mkdtemp(tmpl.data());
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  std::string file(const std::string& name) const { return path_ + "/" + name; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// "" when `s` is one line of printable, valid UTF-8 (no C0/C1 control, DEL, zero-width or bidi
// control, line or paragraph separator, BOM); else what is wrong and where. Written apart from
// util's printable(), so that it checks it.
inline std::string unprintable_at(const std::string& s) {
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    const std::string at = " at byte " + std::to_string(i);
    if (c < 0x20 || c == 0x7F) return "control byte " + std::to_string(c) + at;
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t n = (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
    if (n == 0 || i + n > s.size()) return "invalid UTF-8" + at;
    uint32_t cp = c & (0x7F >> n);
    for (size_t k = 1; k < n; ++k) {
      const auto b = static_cast<unsigned char>(s[i + k]);
      if ((b & 0xC0) != 0x80) return "invalid UTF-8" + at;
      cp = (cp << 6) | (b & 0x3F);
    }
    const uint32_t min = n == 2 ? 0x80 : n == 3 ? 0x800 : 0x10000;
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return "invalid UTF-8" + at;
    if (cp <= 0x9F || (cp >= 0x200B && cp <= 0x200F) || (cp >= 0x2028 && cp <= 0x202E) ||
        (cp >= 0x2060 && cp <= 0x2069) || cp == 0xFEFF)
      return "invisible or control code point" + at;
    i += n;
  }
  return "";
}

// Expects `f` to throw ckpt::Error of `kind` whose message contains `needle`.
template <class F>
void expect_error(F&& f, ErrorKind kind, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "no error; expected one containing '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), kind) << e.what();
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    EXPECT_EQ(unprintable_at(e.what()), "") << "not one printable line: " << e.what();
  }
}

}  // namespace ckpt::test
