// PyTorch's typed storage classes (torch.FloatStorage, ...) <-> ckpt's dtypes: the one table,
// in value.cc beside the dtype names.
#pragma once

#include <optional>
#include <string_view>

#include "ckpt/value.h"

namespace ckpt {

// "FloatStorage" for kFloat32 (the class in module torch).
const char* storage_class_name(DType dtype);
// From a global's full name, "torch.FloatStorage".
std::optional<DType> dtype_of_storage_class(std::string_view global);

}  // namespace ckpt
