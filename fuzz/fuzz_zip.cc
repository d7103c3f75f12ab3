// libFuzzer target: the zip directory parser and entry reader.
#include <cstddef>
#include <cstdint>
#include <string>

#include "ckpt/error.h"
#include "format/zip.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    auto entries = ckpt::zip::read_directory(reinterpret_cast<const std::byte*>(data), size);
    std::string buf;
    for (const auto& e : entries) {
      try {
        ckpt::zip::read_entry(reinterpret_cast<const std::byte*>(data), size, e, &buf);
      } catch (const ckpt::Error&) {
      }
    }
  } catch (const ckpt::Error&) {
  }
  return 0;
}
