// Runs tasks 0..n-1 on up to `threads` threads (the caller's among them). The first exception a
// task throws stops the handing out of tasks; it is rethrown once every thread has stopped, so
// no task still runs when the call returns, whatever happened.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace ckpt {

template <typename Task>
void parallel_for(size_t n, size_t threads, const Task& task) {
  std::atomic<size_t> next{0};
  std::mutex mu;
  std::exception_ptr error;
  auto work = [&] {
    for (size_t i = next++; i < n; i = next++) {
      try {
        task(i);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mu);
        if (!error) error = std::current_exception();
        next = n;
      }
    }
  };
  threads = std::min(n, std::max<size_t>(1, threads));
  std::vector<std::thread> pool;
  for (size_t t = 1; t < threads; ++t) pool.emplace_back(work);
  work();
  for (auto& t : pool) t.join();
  if (error) std::rethrow_exception(error);
}

}  // namespace ckpt
