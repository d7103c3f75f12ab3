// Internal: TensorRef -> at::Tensor with storages shared across a whole tree, so views that
// share one storage in the file share one at::Storage (as torch.load gives them).
#pragma once

#include <ATen/core/Tensor.h>

#include <unordered_map>

#include "ckpt/value.h"

namespace ckpt {

using StorageMemo = std::unordered_map<const void*, c10::Storage>;  // StorageData identity -> storage

// Value::to_tensor() of one tensor; with `memo`, tensors over the same storage share it.
at::Tensor to_tensor(const TensorRef& ref, StorageMemo* memo);

}  // namespace ckpt
