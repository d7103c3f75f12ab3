// libFuzzer target: a whole file in any format load() reads (zip, legacy, TorchScript, safetensors),
// loaded eagerly and mapped.
#include <cstddef>
#include <cstdint>
#include <string>

#include "format/archive.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string bytes(reinterpret_cast<const char*>(data), size);
  for (bool mmap : {false, true}) {
    ckpt::LoadOptions options;
    options.mmap = mmap;
    options.max_objects = 1 << 20;
    try {
      ckpt::format::read_archive(ckpt::io::memory_file(bytes, "fuzz.pt"), options);
    } catch (const ckpt::Error&) {
    }
  }
  return 0;
}
