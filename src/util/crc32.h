// CRC-32 (the zip / zlib polynomial), pclmul-accelerated through ISA-L, with zlib's
// crc32_combine to join chunks computed in parallel.
#pragma once

#include <cstddef>
#include <cstdint>

namespace ckpt {

// CRC-32 of `n` bytes continuing from `crc` (0 to start).
uint32_t crc32_update(uint32_t crc, const void* data, size_t n);

// CRC of A||B given crc(A), crc(B) and len(B).
uint32_t crc32_combine(uint32_t crc_a, uint32_t crc_b, uint64_t len_b);

// CRC-32 of a large buffer, split across up to `threads` threads (0 = hardware concurrency).
uint32_t crc32_parallel(const void* data, size_t n, unsigned threads = 0);

}  // namespace ckpt
