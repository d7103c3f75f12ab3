#include "util/crc32.h"

#include <isa-l/crc.h>
#include <zlib.h>

#include <algorithm>
#include <thread>
#include <vector>

namespace ckpt {

uint32_t crc32_update(uint32_t crc, const void* data, size_t n) {
  const auto* p = static_cast<const unsigned char*>(data);
  // ISA-L takes a 64-bit length; feed it in one call.
  return n == 0 ? crc : crc32_gzip_refl(crc, p, n);
}

uint32_t crc32_combine(uint32_t crc_a, uint32_t crc_b, uint64_t len_b) {
  return static_cast<uint32_t>(::crc32_combine64(crc_a, crc_b, static_cast<z_off64_t>(len_b)));
}

uint32_t crc32_parallel(const void* data, size_t n, unsigned threads) {
  constexpr size_t kMinChunk = size_t{64} << 20;  // below this one thread is faster
  if (threads == 0) threads = std::max(1u, std::thread::hardware_concurrency());
  size_t chunks = std::min<size_t>(threads, std::max<size_t>(1, n / kMinChunk));
  if (chunks <= 1) return crc32_update(0, data, n);
  const auto* p = static_cast<const unsigned char*>(data);
  size_t chunk = (n + chunks - 1) / chunks;
  std::vector<uint32_t> crcs(chunks, 0);
  std::vector<std::thread> workers;
  for (size_t i = 1; i < chunks; ++i) {
    workers.emplace_back([&, i] {
      size_t begin = i * chunk, end = std::min(n, begin + chunk);
      crcs[i] = crc32_update(0, p + begin, end - begin);
    });
  }
  crcs[0] = crc32_update(0, p, std::min(n, chunk));
  for (auto& w : workers) w.join();
  uint32_t crc = crcs[0];
  for (size_t i = 1; i < chunks; ++i) {
    size_t begin = i * chunk, end = std::min(n, begin + chunk);
    crc = crc32_combine(crc, crcs[i], end - begin);
  }
  return crc;
}

}  // namespace ckpt
