// The POSIX calls of the default Env that may return short or be interrupted (pwrite, pread,
// read), behind function pointers so that tests can make them do so and prove the loops around
// them, as fmt's test/posix-mock does. Nothing but tests changes them.
#pragma once

#include <sys/types.h>

#include <cstddef>

namespace ckpt::io {

struct PosixCalls {
  ssize_t (*pwrite)(int fd, const void* buf, size_t n, off_t offset);
  ssize_t (*pread)(int fd, void* buf, size_t n, off_t offset);
  ssize_t (*read)(int fd, void* buf, size_t n);
};

// The process-wide table, initially the real calls.
PosixCalls& posix_calls();

}  // namespace ckpt::io
