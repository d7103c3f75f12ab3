#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "ckpt/ckpt.h"
#include "test_util.h"

namespace ckpt {
namespace {

using test::TempDir;

const at::ScalarType kAllTypes[] = {at::kDouble, at::kFloat, at::kHalf,         at::kBFloat16,
                                    at::kLong,   at::kInt,   at::kShort,        at::kChar,
                                    at::kByte,   at::kBool,  at::kComplexFloat, at::kComplexDouble};

TEST(Bridge, EveryDtypeRoundTrips) {
  TempDir dir;
  Value root = Value::new_dict();
  std::vector<at::Tensor> originals;
  for (auto type : kAllTypes) {
    at::Tensor t = at::arange(12, at::kDouble).reshape({3, 4}).to(type);
    originals.push_back(t);
    root.dict().set(c10::toString(type), Value(t));
  }
  save(root, dir.file("dtypes.pt"));
  for (bool mmap : {false, true}) {
    LoadOptions o;
    o.mmap = mmap;
    Value back = load(dir.file("dtypes.pt"), o);
    for (size_t i = 0; i < originals.size(); ++i) {
      at::Tensor t = back[c10::toString(kAllTypes[i])].to_tensor();
      EXPECT_EQ(t.scalar_type(), kAllTypes[i]);
      EXPECT_TRUE(at::equal(t, originals[i])) << c10::toString(kAllTypes[i]);
    }
  }
}

TEST(Bridge, ViewsKeepSharingOneStorage) {
  TempDir dir;
  at::Tensor x = at::arange(10, at::kFloat);
  Value root = Value::new_dict();
  root.dict().set("x", Value(x));
  root.dict().set("slice", Value(x.slice(0, 2, 5)));
  root.dict().set("t", Value(x.view({2, 5}).t()));
  save(root, dir.file("views.pt"));
  EXPECT_EQ(verify(dir.file("views.pt")).storages, 1u);
  for (bool mmap : {false, true}) {
    LoadOptions o;
    o.mmap = mmap;
    Value back = load(dir.file("views.pt"), o);
    at::Tensor bx = back["x"].to_tensor(), bs = back["slice"].to_tensor(), bt = back["t"].to_tensor();
    EXPECT_EQ(bs.storage_offset(), 2);
    EXPECT_EQ(bt.strides(), (std::vector<int64_t>{1, 5}));
    EXPECT_FALSE(bt.is_contiguous());
    EXPECT_TRUE(at::equal(bt, x.view({2, 5}).t()));
    bx.fill_(7);  // one memory: writes show through every view
    EXPECT_TRUE(at::equal(bs, at::full({3}, 7.f)));
    // Saving the loaded tensors again still writes one storage.
    Value again = Value::new_dict();
    again.dict().set("x", Value(bx));
    again.dict().set("slice", Value(bs));
    save(again, dir.file("again.pt"));
    EXPECT_EQ(verify(dir.file("again.pt")).storages, 1u);
  }
}

TEST(Bridge, MappedTensorsViewTheFileWithoutCopyingAndWritesStayPrivate) {
  TempDir dir;
  Value root = Value::new_dict();
  root.dict().set("w", Value(at::ones({256, 256})));
  save(root, dir.file("w.pt"));
  std::string before = test::read_file(dir.file("w.pt"));
  LoadOptions o;
  o.mmap = true;
  Value back = load(dir.file("w.pt"), o);
  at::Tensor w = back["w"].to_tensor();
  EXPECT_EQ(w.data_ptr(), static_cast<void*>(back["w"].tensor().storage->data()));
  w.mul_(3);
  EXPECT_EQ(w.sum().item<float>(), 3.f * 256 * 256);
  EXPECT_EQ(test::read_file(dir.file("w.pt")), before);  // copy-on-write: the file is untouched
  // The tensor outlives the Value tree it came from.
  back = Value();
  EXPECT_EQ(w[5][5].item<float>(), 3.f);
}

TEST(Bridge, RequiresGradAndEdgeShapes) {
  TempDir dir;
  Value root = Value::new_dict();
  root.dict().set("grad", Value(at::ones({2}).set_requires_grad(true)));
  root.dict().set("scalar", Value(at::scalar_tensor(3.5)));
  root.dict().set("empty", Value(at::empty({3, 0})));
  root.dict().set("offset", Value(at::arange(20, at::kLong).view({4, 5}).slice(1, 1, 4)));
  root.dict().set("undefined", Value(at::Tensor()));
  save(root, dir.file("e.pt"));
  Value back = load(dir.file("e.pt"));
  EXPECT_TRUE(back["grad"].to_tensor().requires_grad());
  EXPECT_EQ(back["scalar"].to_tensor().dim(), 0);
  EXPECT_EQ(back["scalar"].to_tensor().item<double>(), 3.5);
  EXPECT_EQ(back["empty"].to_tensor().sizes(), (std::vector<int64_t>{3, 0}));
  EXPECT_TRUE(at::equal(back["offset"].to_tensor(), at::arange(20, at::kLong).view({4, 5}).slice(1, 1, 4)));
  EXPECT_TRUE(back["undefined"].is_none());
}

TEST(Bridge, DifferentDtypesOverOneStorageAreRefused) {
  TempDir dir;
  at::Tensor x = at::zeros({4}, at::kFloat);
  Value root = Value::new_dict();
  root.dict().set("f", Value(x));
  root.dict().set("i", Value(x.view(at::kInt)));
  test::expect_error([&] { save(root, dir.file("x.pt")); }, ErrorKind::kInvalidArgument,
                     "share a storage but have dtypes");
}

}  // namespace
}  // namespace ckpt
