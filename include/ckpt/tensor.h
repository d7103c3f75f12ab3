// ckpt/tensor.h — ckpt::Value and LibTorch tensors, without copies.
//
//   #include <ckpt/tensor.h>
//   ckpt::Value ck = ckpt::load("ckpt.pt");
//   at::Tensor w = ck["model_state"]["fc.weight"].to_tensor();   // views the loaded bytes
//   ck.dict().set("extra", ckpt::Value(torch::ones({3})));        // wraps the tensor's storage
//   ckpt::save(ck, "ckpt.pt");                                    // torch.load reads it
//
// Value(const at::Tensor&) and Value::to_tensor() are declared in ckpt/value.h and defined in
// ckpt::torch; this header makes at::Tensor a complete type for them and converts dtypes.
// Thread safety: the conversions are pure; the tensors share storage with the Value.
#pragma once

#include <ATen/core/Tensor.h>

#include "ckpt/error.h"
#include "ckpt/serialize.h"
#include "ckpt/value.h"

namespace ckpt {

at::ScalarType to_scalar_type(DType dtype);
// Throws kUnsupported for scalar types PyTorch 1.13's TypedStorage has no class for.
DType to_dtype(at::ScalarType type);

}  // namespace ckpt
