// ckpt/error.h — the one exception type ckpt throws.
//
// Every failure is a ckpt::Error (a std::runtime_error) carrying a kind and a one-line message
// that names the file and the problem, e.g.
//   "run/ckpt.pt: record 'ckpt/data/3': CRC-32 mismatch (stored 0x1a2b3c4d, computed 0x0badf00d)"
// Thread safety: an Error is an immutable value.
#pragma once

#include <stdexcept>
#include <string>

namespace ckpt {

enum class ErrorKind {
  kCorruption,       // the bytes on disk are not a valid checkpoint (bad CRC, truncated, malformed)
  kIO,               // the operating system refused (ENOSPC, EACCES, EIO, ...)
  kNotFound,         // a file or key that was asked for does not exist
  kUnsafe,           // the file asks for something ckpt refuses to do (a forbidden pickle global)
  kMismatch,         // the checkpoint does not fit what it is loaded into (shape, dtype, keys)
  kInvalidArgument,  // the caller passed something unusable
  kUnsupported,      // valid, but a feature ckpt does not implement (sparse tensors, ...)
};

const char* to_string(ErrorKind kind) noexcept;

class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, const std::string& message) : std::runtime_error(message), kind_(kind) {}
  ErrorKind kind() const noexcept { return kind_; }

 private:
  ErrorKind kind_;
};

}  // namespace ckpt
