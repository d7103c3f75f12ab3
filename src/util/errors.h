// Internal helpers for building ckpt::Error messages.
#pragma once

#include <sstream>
#include <string>
#include <utility>

#include "ckpt/error.h"
#include "util/text.h"

namespace ckpt {

namespace detail {
inline void append_all(std::ostringstream&) {}
template <class T, class... Rest>
void append_all(std::ostringstream& os, T&& first, Rest&&... rest) {
  os << std::forward<T>(first);
  append_all(os, std::forward<Rest>(rest)...);
}
}  // namespace detail

// Concatenates its arguments with operator<<.
template <class... Args>
std::string str_cat(Args&&... args) {
  std::ostringstream os;
  detail::append_all(os, std::forward<Args>(args)...);
  return os.str();
}

// Throws a ckpt::Error whose message is its arguments concatenated. The message is one line of
// printable text whatever the arguments hold (printable(), uncut): the places that quote what a
// file says also pass it through printable() themselves, to cut it short; this is the backstop.
template <class... Args>
[[noreturn]] void fail(ErrorKind kind, Args&&... args) {
  throw Error(kind, printable(str_cat(std::forward<Args>(args)...), std::string::npos));
}

// Re-throws `e` with `context + ": "` in front of its message, keeping its kind.
[[noreturn]] inline void rethrow_with_context(const Error& e, const std::string& context) {
  throw Error(e.kind(), printable(context + ": " + e.what(), std::string::npos));
}

// Re-throws `e` so that its message names `path`: unchanged when it already does, else with
// `path + ": "` in front.
[[noreturn]] inline void rethrow_naming(const Error& e, const std::string& path) {
  if (std::string(e.what()).find(path) != std::string::npos) throw e;
  rethrow_with_context(e, path);
}

// "0x1a2b3c4d"
std::string hex32(uint32_t v);

}  // namespace ckpt
