// safetensors written and read (layout against the format's description, round trips, views,
// metadata, zero-copy mmap) and ckpt::diff.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "ckpt/diff.h"
#include "ckpt/serialize.h"
#include "test_util.h"
#include "util/bytes.h"

namespace ckpt {
namespace {

using test::expect_error;
using test::TempDir;

Value tensor(DType dtype, std::vector<int64_t> sizes, std::vector<double> values) {
  TensorRef t;
  t.dtype = dtype;
  int64_t n = 1;
  for (int64_t s : sizes) n *= s;
  t.storage = make_storage(dtype, size_t(n) * element_size(dtype));
  for (int64_t i = 0; i < n; ++i) {
    double v = values.empty() ? double(i) : values[size_t(i) % values.size()];
    std::byte* p = t.storage->data() + i * int64_t(element_size(dtype));
    if (dtype == DType::kFloat32) {
      float f = float(v);
      std::memcpy(p, &f, 4);
    } else if (dtype == DType::kFloat64) {
      std::memcpy(p, &v, 8);
    } else if (dtype == DType::kInt64) {
      int64_t x = int64_t(v);
      std::memcpy(p, &x, 8);
    } else {
      std::memset(p, int(v) & 0xff, element_size(dtype));
    }
  }
  t.sizes = sizes;
  t.strides.assign(sizes.size(), 1);
  for (size_t d = sizes.size(); d-- > 1;) t.strides[d - 1] = t.strides[d] * sizes[d];
  return Value(std::move(t));
}

std::string file_bytes(const std::string& path) {
  return test::read_file(path);
}

TEST(Safetensors, WritesTheFormatsLayoutExactly) {
  TempDir dir;
  Value v = Value::new_dict();
  v.dict().set("attn.0", tensor(DType::kFloat32, {1, 2, 3}, {}));
  save_safetensors(v, dir.file("a.safetensors"));
  // 8-byte little-endian length, compact JSON (dtype, shape, data_offsets), spaces to a multiple
  // of 8, then the little-endian floats 0..5.
  std::string json = R"({"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}})";
  ASSERT_EQ(json.size() % 8, 0u);
  std::string expected;
  put_le64(expected, json.size());
  expected += json;
  for (float f : {0.f, 1.f, 2.f, 3.f, 4.f, 5.f}) expected.append(reinterpret_cast<const char*>(&f), 4);
  EXPECT_TRUE(file_bytes(dir.file("a.safetensors")) == expected);

  // No tensors, with metadata: "__metadata__" first, padded with spaces.
  Value m = Value::new_dict();
  Value meta = Value::new_dict();
  meta.dict().set("framework", "pt");
  m.dict().set("__metadata__", meta);
  save_safetensors(m, dir.file("m.safetensors"));
  std::string head = R"({"__metadata__":{"framework":"pt"}})";
  std::string want;
  put_le64(want, 40);
  want += head + std::string(40 - head.size(), ' ');
  EXPECT_TRUE(file_bytes(dir.file("m.safetensors")) == want);
}

TEST(Safetensors, OrdersByDtypeWidestFirstThenNameAndRoundTrips) {
  TempDir dir;
  Value v = Value::new_dict();
  v.dict().set("z_bool", tensor(DType::kBool, {3}, {1, 0, 1}));
  v.dict().set("b_f32", tensor(DType::kFloat32, {2}, {}));
  v.dict().set("a_f32", tensor(DType::kFloat32, {2, 2}, {}));
  v.dict().set("y_i64", tensor(DType::kInt64, {4}, {}));
  v.dict().set("h_f16", tensor(DType::kFloat16, {5}, {7}));
  v.dict().set("empty", tensor(DType::kFloat32, {0, 3}, {}));
  save_safetensors(v, dir.file("o.safetensors"));
  std::string bytes = file_bytes(dir.file("o.safetensors"));
  uint64_t n = load_le64(bytes.data());
  std::string header = bytes.substr(8, n);
  EXPECT_EQ(n % 8, 0u);
  std::vector<size_t> at;
  for (const char* name : {"\"y_i64\"", "\"a_f32\"", "\"b_f32\"", "\"empty\"", "\"h_f16\"", "\"z_bool\""})
    at.push_back(header.find(name));
  for (size_t i = 1; i < at.size(); ++i) EXPECT_LT(at[i - 1], at[i]) << header;
  for (bool mmap : {false, true}) {
    LoadOptions o;
    o.mmap = mmap;
    Value back = load(dir.file("o.safetensors"), o);
    EXPECT_TRUE(diff(v, back).equal()) << "mmap " << mmap;
    EXPECT_EQ(back.size(), 6u);
  }
  EXPECT_EQ(verify(dir.file("o.safetensors")).format, "safetensors");
}

TEST(Safetensors, ViewsAreWrittenAsTheirOwnBytesAndNestingIsFlattened) {
  TempDir dir;
  Value base = tensor(DType::kFloat64, {3, 4}, {});
  TensorRef t = base.tensor();  // the transpose: a view of the same storage
  std::swap(t.sizes[0], t.sizes[1]);
  std::swap(t.strides[0], t.strides[1]);
  Value model = Value::ordered_dict();
  model.dict().set("w", base);
  model.dict().set("w_t", Value(t));
  Value v = Value::new_dict();
  v.dict().set("model", model);
  v.dict().set("layers", Value::list({tensor(DType::kInt64, {2}, {5, 6})}));
  v.dict().set("epoch", 3);
  v.dict().set("lr", 0.25);
  v.dict().set("ok", true);
  save_safetensors(v, dir.file("n.safetensors"));
  Value back = load(dir.file("n.safetensors"));
  EXPECT_TRUE(diff(base, back["model.w"]).equal());
  EXPECT_TRUE(diff(Value(t), back["model.w_t"]).equal());  // values of the view, in C order
  EXPECT_TRUE(back["model.w_t"].tensor().is_contiguous());
  EXPECT_NE(back["model.w"].tensor().storage.get(), back["model.w_t"].tensor().storage.get());
  EXPECT_EQ(back["layers.0"].tensor().sizes, (std::vector<int64_t>{2}));
  EXPECT_EQ(back["__metadata__"]["epoch"].to_string(), "3");
  EXPECT_EQ(back["__metadata__"]["lr"].to_string(), "0.25");
  EXPECT_EQ(back["__metadata__"]["ok"].to_string(), "True");

  Value bad = Value::new_dict();
  bad.dict().set("opt", Value::new_dict());
  bad["opt"].dict().set("x", Value::none());
  expect_error([&] { save_safetensors(bad, dir.file("bad.safetensors")); }, ErrorKind::kInvalidArgument,
               "'opt.x' is None; the format holds tensors (and string metadata) only");
  Value clash = Value::new_dict();
  clash.dict().set("a.b", tensor(DType::kFloat32, {1}, {}));
  clash.dict().set("a", Value::new_dict());
  clash["a"].dict().set("b", tensor(DType::kFloat32, {1}, {}));
  expect_error([&] { save_safetensors(clash, dir.file("clash.safetensors")); }, ErrorKind::kInvalidArgument,
               "two entries flatten to the name 'a.b'");
  expect_error([&] { save_safetensors(Value(3), dir.file("x.safetensors")); }, ErrorKind::kInvalidArgument,
               "holds a dict of tensors, not int");
  EXPECT_FALSE(std::filesystem::exists(dir.file("bad.safetensors")));
}

TEST(Safetensors, MappedTensorsViewTheFile) {
  TempDir dir;
  Value v = Value::new_dict();
  v.dict().set("a", tensor(DType::kFloat32, {256}, {}));
  v.dict().set("b", tensor(DType::kFloat32, {256}, {}));
  save_safetensors(v, dir.file("z.safetensors"));
  LoadOptions o;
  o.mmap = true;
  Value back = load(dir.file("z.safetensors"), o);
  // Both views lie in one mapping, as far apart as their offsets in the file.
  const std::byte* a = back["a"].tensor().storage->data();
  const std::byte* b = back["b"].tensor().storage->data();
  EXPECT_EQ(b - a, 256 * 4);
}

// Older safetensors writers laid tensors out in name order, unaligned. With a header of 0x380
// bytes the file starts with 0x80 0x03 — the pickle PROTO 3 opcode a legacy torch.save file
// starts with — and must still be read as safetensors: the header itself decides.
TEST(Safetensors, AHeaderLengthStartingWithThePickleProtoByteIsSafetensors) {
  const std::string json =
      R"({"a":{"dtype":"U8","shape":[3],"data_offsets":[0,3]},"b":{"dtype":"F32","shape":[2],"data_offsets":[3,11]},)"
      R"("c":{"dtype":"I64","shape":[1],"data_offsets":[11,19]}})";
  std::string header = json + std::string(0x380 - json.size(), ' ');
  std::string buffer = "\x01\x02\x03";
  const float b[2] = {1.5f, -2.0f};
  const int64_t c = -7;
  buffer.append(reinterpret_cast<const char*>(b), 8).append(reinterpret_cast<const char*>(&c), 8);
  std::string bytes;
  put_le64(bytes, header.size());
  bytes += header + buffer;
  ASSERT_EQ(uint8_t(bytes[0]), 0x80);
  ASSERT_EQ(uint8_t(bytes[1]), 0x03);
  TempDir dir;
  test::write_file(dir.file("old.safetensors"), bytes);
  for (bool mmap : {false, true}) {
    SCOPED_TRACE(mmap ? "mmap" : "eager");
    LoadOptions o;
    o.mmap = mmap;
    Value v = load(dir.file("old.safetensors"), o);
    ASSERT_EQ(v.dict().size(), 3u);
    EXPECT_EQ(v.dict().items()[0].first.to_string(), "a");
    EXPECT_EQ(std::memcmp(v["a"].tensor().storage->data(), "\x01\x02\x03", 3), 0);
    float got[2];
    std::memcpy(got, v["b"].tensor().storage->data() + v["b"].tensor().storage_offset * 4, 8);
    EXPECT_EQ(got[0], 1.5f);
    EXPECT_EQ(got[1], -2.0f);
    int64_t gc;
    std::memcpy(&gc, v["c"].tensor().storage->data() + v["c"].tensor().storage_offset * 8, 8);
    EXPECT_EQ(gc, -7);
  }
  EXPECT_NE(verify(dir.file("old.safetensors")).format.find("safetensors"), std::string::npos);
  // A real legacy file still goes to the legacy reader: its first 8 bytes, read as a length, are
  // far over the safetensors limit.
  expect_error([&] { load_from_bytes(test::unhex("80028a0a6cfc9c46f9206aa85019") + ".{}"); }, ErrorKind::kCorruption,
               "legacy");
}

TEST(Diff, ReportsKeysKindsShapesAndElementCounts) {
  Value a = Value::new_dict(), b = Value::new_dict();
  a.dict().set("same", tensor(DType::kFloat32, {4}, {1, 2, 3, 4}));
  b.dict().set("same", tensor(DType::kFloat32, {4}, {1, 2, 3, 4}));
  a.dict().set("w", tensor(DType::kFloat32, {4}, {1, 2, 3, 4}));
  b.dict().set("w", tensor(DType::kFloat32, {4}, {1, 2, 3.5, 8}));
  a.dict().set("d", tensor(DType::kFloat32, {2}, {1, 2}));
  b.dict().set("d", tensor(DType::kFloat64, {2}, {1, 2}));
  a.dict().set("s", tensor(DType::kFloat32, {2}, {}));
  b.dict().set("s", tensor(DType::kFloat32, {3}, {}));
  a.dict().set("epoch", 3);
  b.dict().set("epoch", 4);
  a.dict().set("k", 1);
  b.dict().set("k", "1");
  a.dict().set("gone", 1);
  b.dict().set("new", 1);
  DiffReport r = diff(a, b);
  ASSERT_EQ(r.entries.size(), 7u);
  auto find = [&](const std::string& path) -> const DiffEntry& {
    for (const auto& e : r.entries)
      if (e.path == path) return e;
    throw std::runtime_error("no entry " + path);
  };
  const DiffEntry& w = find("w");
  EXPECT_EQ(w.kind, DiffEntry::Kind::kTensor);
  EXPECT_EQ(w.differing, 2u);
  EXPECT_EQ(w.numel, 4u);
  EXPECT_DOUBLE_EQ(w.max_abs, 4.0);
  EXPECT_DOUBLE_EQ(w.max_rel, 0.5);
  EXPECT_EQ(find("d").kind, DiffEntry::Kind::kDType);
  EXPECT_EQ(find("d").differing, 0u);
  EXPECT_EQ(find("s").kind, DiffEntry::Kind::kShape);
  EXPECT_EQ(find("epoch").kind, DiffEntry::Kind::kValue);
  EXPECT_EQ(find("k").kind, DiffEntry::Kind::kKind);
  EXPECT_EQ(find("gone").kind, DiffEntry::Kind::kOnlyInA);
  EXPECT_EQ(find("new").kind, DiffEntry::Kind::kOnlyInB);
  EXPECT_EQ(r.tensors_compared, 4u);
  EXPECT_EQ(r.elements_compared, 10u);  // shapes that differ are not compared element-wise
  // Within tolerance: |a-b| <= atol + rtol*|b|.
  Value x = tensor(DType::kFloat32, {2}, {1.0, 100.0}), y = tensor(DType::kFloat32, {2}, {1.001, 100.5});
  EXPECT_FALSE(diff(x, y).equal());
  DiffOptions tol;
  tol.rtol = 0.01;
  EXPECT_TRUE(diff(x, y, tol).equal());
  DiffOptions abs_only;
  abs_only.atol = 0.01;
  EXPECT_EQ(diff(x, y, abs_only).entries.at(0).differing, 1u);
}

TEST(Diff, NansInOnePlaceAreEqualStridedViewsCompareByElement) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  EXPECT_TRUE(diff(tensor(DType::kFloat64, {2}, {nan, 1}), tensor(DType::kFloat64, {2}, {nan, 1})).equal());
  DiffReport r = diff(tensor(DType::kFloat64, {2}, {nan, 1}), tensor(DType::kFloat64, {2}, {0, 1}));
  ASSERT_EQ(r.entries.size(), 1u);
  EXPECT_TRUE(std::isinf(r.entries[0].max_abs));
  Value base = tensor(DType::kFloat32, {2, 3}, {});
  TensorRef t = base.tensor();
  std::swap(t.sizes[0], t.sizes[1]);
  std::swap(t.strides[0], t.strides[1]);
  Value transposed_copy = tensor(DType::kFloat32, {3, 2}, {0, 3, 1, 4, 2, 5});
  EXPECT_TRUE(diff(Value(t), transposed_copy).equal());
  EXPECT_FALSE(diff(base, Value(TensorRef(base.tensor()))).entries.size());
}

}  // namespace
}  // namespace ckpt
