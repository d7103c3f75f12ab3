#include "ckpt/error.h"

namespace ckpt {

const char* to_string(ErrorKind kind) noexcept {
  switch (kind) {
    case ErrorKind::kCorruption:
      return "corruption";
    case ErrorKind::kIO:
      return "io";
    case ErrorKind::kNotFound:
      return "not found";
    case ErrorKind::kUnsafe:
      return "unsafe";
    case ErrorKind::kMismatch:
      return "mismatch";
    case ErrorKind::kInvalidArgument:
      return "invalid argument";
    case ErrorKind::kUnsupported:
      return "unsupported";
  }
  return "unknown";
}

}  // namespace ckpt

#include <cstdio>

#include "util/errors.h"

namespace ckpt {

std::string hex32(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", v);
  return buf;
}

}  // namespace ckpt
