// Memory advice shared by the object writer and reader (internal to src/io/s3).
#pragma once

#include <sys/mman.h>

#include <cstdint>

namespace ckpt::io::s3 {

// Asks for transparent huge pages on the 2 MiB-aligned interior of [p, p+n): filling a GB from
// the network then takes hundreds of page faults, not hundreds of thousands. Advice only.
inline void huge_pages(void* p, uint64_t n) {
  constexpr uintptr_t kHuge = uintptr_t{2} << 20;
  const uintptr_t b = (reinterpret_cast<uintptr_t>(p) + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t e = (reinterpret_cast<uintptr_t>(p) + n) & ~(kHuge - 1);
  if (e > b) ::madvise(reinterpret_cast<void*>(b), e - b, MADV_HUGEPAGE);
}

}  // namespace ckpt::io::s3
