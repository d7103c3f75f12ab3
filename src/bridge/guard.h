// The boundary of every state loader of the bridge. LibTorch answers bad input with c10::Error
// (item() of a tensor with several elements, a dtype it cannot convert, a shape copy_ rejects),
// the standard library with std::logic_error (out_of_range, invalid_argument). A loader must
// answer bad input with a ckpt::Error, so at the boundary these become kMismatch errors carrying
// the loader's name and the first line of the original message (c10 appends a stack trace).
// ckpt::Error passes unchanged; std::bad_alloc and the like are not input errors and pass too.
#pragma once

#include <c10/util/Exception.h>

#include <stdexcept>
#include <string>

#include "util/errors.h"

namespace ckpt::bridge {

inline std::string first_line(const std::string& s) {
  return s.substr(0, s.find('\n'));
}

template <class F>
auto guard_loader(const char* loader, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const Error&) {
    throw;
  } catch (const c10::Error& e) {
    fail(ErrorKind::kMismatch, loader, ": ", first_line(e.what_without_backtrace()));
  } catch (const std::logic_error& e) {
    fail(ErrorKind::kMismatch, loader, ": ", first_line(e.what()));
  }
}

}  // namespace ckpt::bridge
