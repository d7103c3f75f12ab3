// libFuzzer target: the restricted unpickler. Persistent ids resolve to a small storage so the
// tensor-rebuilding paths run too.
#include <cstddef>
#include <cstdint>

#include "ckpt/error.h"
#include "format/pickle.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto storage = ckpt::make_storage(ckpt::DType::kFloat32, 64);
  auto load = [&](const ckpt::Value& pid) {
    ckpt::TensorRef t;
    t.storage = storage;
    t.dtype = ckpt::DType::kFloat32;
    t.sizes = {16};
    t.strides = {1};
    return ckpt::Value(t);
  };
  ckpt::pickle::Limits limits;
  limits.max_objects = 1 << 20;
  try {
    ckpt::Value v = ckpt::pickle::unpickle(reinterpret_cast<const std::byte*>(data), size, load, limits);
    // Whatever loads must pickle again.
    ckpt::pickle::pickle(v, [](const ckpt::TensorRef&) { return std::string("0"); });
  } catch (const ckpt::Error&) {
  }
  return 0;
}
