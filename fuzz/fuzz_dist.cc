// libFuzzer target: metadata.json of a distributed checkpoint (src/dist/metadata.h). Whatever
// parses must also write back and parse again to the same text.
#include <cstddef>
#include <cstdint>
#include <string>

#include "ckpt/error.h"
#include "dist/metadata.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    const ckpt::dist::Metadata m = ckpt::dist::parse_metadata(text, "metadata.json");
    const std::string again = ckpt::dist::to_json(m);
    if (ckpt::dist::to_json(ckpt::dist::parse_metadata(again, "again")) != again) __builtin_trap();
  } catch (const ckpt::Error&) {
  }
  return 0;
}
