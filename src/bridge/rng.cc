// The default CPU generator's state: the bytes torch.get_rng_state() returns.
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/Generator.h>

#include <mutex>

#include "bridge/guard.h"
#include "bridge/names.h"
#include "ckpt/tensor.h"
#include "ckpt/training.h"
#include "util/errors.h"

namespace ckpt {
using bridge::torch_dtype_name;

at::Tensor get_rng_state() {
  auto gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  return gen.get_state();
}

void set_rng_state(const at::Tensor& state) {
  bridge::guard_loader("set_rng_state", [&] {
    if (!state.defined() || state.scalar_type() != at::kByte || state.numel() != 5056)
      fail(ErrorKind::kMismatch, "set_rng_state: expected a uint8 tensor of 5056 bytes (torch.get_rng_state()), got ",
           state.defined() ? str_cat(torch_dtype_name(state.scalar_type()), " of ", state.numel(), " elements")
                           : "undefined");
    auto gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_state(state.contiguous());
  });
}

}  // namespace ckpt
