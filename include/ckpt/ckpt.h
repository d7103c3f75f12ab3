// ckpt/ckpt.h — everything, for LibTorch users.
//
//   #include <ckpt/ckpt.h>
//   ckpt::Value ck = ckpt::load("ckpt.pt");
//   at::Tensor w = ck["model_state"]["fc.weight"].to_tensor();   // no copy
//   ck.dict().set("extra", ckpt::Value(torch::ones({3})));
//   ckpt::save(ck, "ckpt.pt");                                    // torch.load reads it
// Thread safety: as the headers it includes say; Value <-> at::Tensor conversions are pure.
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
