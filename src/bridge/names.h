// How the bridge's messages name dtypes, shapes and lists of keys.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

#include "ckpt/tensor.h"
#include "util/errors.h"
#include "util/text.h"

namespace ckpt::bridge {

// PyTorch's name of a scalar type ("float32", not ATen's "Float"), as every message uses.
inline std::string torch_dtype_name(at::ScalarType type) {
  try {
    return dtype_name(to_dtype(type));
  } catch (const Error&) {
    return c10::toString(type);  // a type 1.13's storages do not have
  }
}

inline std::string shape_str(at::IntArrayRef sizes) {
  return shape_text(std::vector<int64_t>(sizes.begin(), sizes.end()));
}

// "a, b, c, ... (4 more)"
inline std::string join(const std::vector<std::string>& xs, size_t max = 6) {
  std::string s;
  for (size_t i = 0; i < xs.size() && i < max; ++i) s += (i ? ", " : "") + xs[i];
  if (xs.size() > max) s += str_cat(", ... (", xs.size() - max, " more)");
  return s;
}

}  // namespace ckpt::bridge
