// libFuzzer target: the restricted unpickler (plain and with TorchScript's objects and typed-list
// builders allowed) and the weights_only auditor. Persistent ids resolve to a small storage so
// the tensor-rebuilding paths run too.
#include <cstddef>
#include <cstdint>
#include <string>

#include "ckpt/error.h"
#include "format/pickle.h"
#include "format/weights_only.h"
#include "util/text.h"

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
  for (bool script : {false, true}) {
    ckpt::pickle::Limits limits;
    limits.max_objects = 1 << 20;
    limits.script_objects = script;
    try {
      ckpt::Value v = ckpt::pickle::unpickle(reinterpret_cast<const std::byte*>(data), size, load, limits);
      // Whatever loads must pickle again.
      ckpt::pickle::pickle(v, [](const ckpt::TensorRef&) { return std::string("0"); });
    } catch (const ckpt::Error& e) {
      // Every message is one printable line, whatever bytes the input holds.
      if (std::string(e.what()) != ckpt::printable(e.what(), std::string::npos)) __builtin_trap();
    }
  }
  const std::string why = ckpt::weights_only::first_violation(data, size);
  if (why != ckpt::printable(why, std::string::npos)) __builtin_trap();
  return 0;
}
