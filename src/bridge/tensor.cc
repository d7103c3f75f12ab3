// Value <-> at::Tensor without copies: a Value's tensor wraps an at::Storage, and an
// at::Tensor made from a file's bytes keeps that StorageData alive through its DataPtr.
#include <ATen/ATen.h>

#include "bridge/tensor.h"
#include "ckpt/tensor.h"
#include "util/errors.h"

namespace ckpt {
namespace {

// The DataPtr context of a tensor made by to_tensor() over non-torch bytes.
struct WrappedBytes {
  std::shared_ptr<StorageData> data;
};
void delete_wrapped(void* ctx) {
  delete static_cast<WrappedBytes*>(ctx);
}

class TorchStorage final : public StorageData {
 public:
  TorchStorage(at::Storage storage, DType dtype) : storage_(std::move(storage)), dtype_(dtype) {}
  std::byte* data() const override { return static_cast<std::byte*>(storage_.data()); }
  size_t nbytes() const override { return storage_.nbytes(); }
  DType dtype() const override { return dtype_; }
  const void* identity() const override {
    // A storage that to_tensor() made over a file's bytes is that storage.
    const at::DataPtr& ptr = storage_.data_ptr();
    if (ptr.get_deleter() == &delete_wrapped) return static_cast<WrappedBytes*>(ptr.get_context())->data->identity();
    return storage_.unsafeGetStorageImpl();
  }
  const at::Storage& storage() const { return storage_; }

 private:
  at::Storage storage_;
  DType dtype_;
};

}  // namespace

at::ScalarType to_scalar_type(DType dtype) {
  switch (dtype) {
    case DType::kFloat64:
      return at::kDouble;
    case DType::kFloat32:
      return at::kFloat;
    case DType::kFloat16:
      return at::kHalf;
    case DType::kBFloat16:
      return at::kBFloat16;
    case DType::kInt64:
      return at::kLong;
    case DType::kInt32:
      return at::kInt;
    case DType::kInt16:
      return at::kShort;
    case DType::kInt8:
      return at::kChar;
    case DType::kUInt8:
      return at::kByte;
    case DType::kBool:
      return at::kBool;
    case DType::kComplex64:
      return at::kComplexFloat;
    case DType::kComplex128:
      return at::kComplexDouble;
  }
  fail(ErrorKind::kInvalidArgument, "unknown dtype");
}

DType to_dtype(at::ScalarType type) {
  switch (type) {
    case at::kDouble:
      return DType::kFloat64;
    case at::kFloat:
      return DType::kFloat32;
    case at::kHalf:
      return DType::kFloat16;
    case at::kBFloat16:
      return DType::kBFloat16;
    case at::kLong:
      return DType::kInt64;
    case at::kInt:
      return DType::kInt32;
    case at::kShort:
      return DType::kInt16;
    case at::kChar:
      return DType::kInt8;
    case at::kByte:
      return DType::kUInt8;
    case at::kBool:
      return DType::kBool;
    case at::kComplexFloat:
      return DType::kComplex64;
    case at::kComplexDouble:
      return DType::kComplex128;
    default:
      fail(ErrorKind::kUnsupported, "tensors of scalar type ", c10::toString(type), " cannot be saved");
  }
}

Value::Value(const at::Tensor& tensor) {
  if (!tensor.defined()) return;  // an undefined tensor is None
  at::Tensor t = tensor;
  if (t.layout() != at::kStrided || t.is_quantized())
    fail(ErrorKind::kUnsupported, "only dense strided tensors can be saved (got layout ", t.layout(), ")");
  if (!t.device().is_cpu()) t = t.cpu();
  if (t.is_conj()) t = t.resolve_conj();
  if (t.is_neg()) t = t.resolve_neg();
  TensorRef ref;
  ref.dtype = to_dtype(t.scalar_type());
  ref.storage = std::make_shared<TorchStorage>(t.storage(), ref.dtype);
  ref.storage_offset = t.storage_offset();
  ref.sizes = t.sizes().vec();
  ref.strides = t.strides().vec();
  ref.requires_grad = t.requires_grad();
  *this = Value(std::move(ref));
}

at::Tensor to_tensor(const TensorRef& r, StorageMemo* memo) {
  at::ScalarType type = to_scalar_type(r.dtype);
  at::Storage storage;
  auto cached = memo ? memo->find(r.storage->identity()) : StorageMemo::iterator();
  if (memo && cached != memo->end()) {
    storage = cached->second;
  } else if (const auto* ts = dynamic_cast<const TorchStorage*>(r.storage.get())) {
    storage = ts->storage();
  } else {
    auto* ctx = new WrappedBytes{r.storage};
    at::DataPtr ptr(r.storage->data(), ctx, &delete_wrapped, at::Device(at::kCPU));
    storage = at::Storage(at::Storage::use_byte_size_t(), r.storage->nbytes(), std::move(ptr),
                          /*allocator=*/nullptr, /*resizable=*/false);
  }
  if (memo) memo->emplace(r.storage->identity(), storage);
  at::Tensor t = at::empty({0}, at::TensorOptions().dtype(type)).set_(storage, r.storage_offset, r.sizes, r.strides);
  if (r.requires_grad && (at::isFloatingType(type) || at::isComplexType(type))) t.set_requires_grad(true);
  return t;
}

at::Tensor Value::to_tensor() const {
  return ckpt::to_tensor(tensor(), nullptr);
}

}  // namespace ckpt
