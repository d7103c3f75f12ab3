// A progress bar for the CLI's long commands.
#pragma once

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>

#include "ckpt/serialize.h"
#include "util/text.h"

namespace ckpt::cli {

// A progress bar on stderr when it is a terminal and the work is large; silent otherwise.
class ProgressBar {
 public:
  explicit ProgressBar(std::string label) : label_(std::move(label)), tty_(::isatty(STDERR_FILENO) == 1) {}
  ~ProgressBar() { done(); }
  ckpt::ProgressFn fn() {
    if (!tty_) return nullptr;
    return [this](uint64_t done, uint64_t total) { draw(done, total); };
  }
  void done() {
    if (drawn_) std::fprintf(stderr, "\r\033[K");
    drawn_ = false;
  }

 private:
  std::string label_;
  bool tty_;
  bool drawn_ = false;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now(), last_{};
  void draw(uint64_t done, uint64_t total) {
    if (total < (uint64_t{64} << 20)) return;  // small: over before a bar helps
    auto now = std::chrono::steady_clock::now();
    if (done < total && now - last_ < std::chrono::milliseconds(100)) return;
    last_ = now;
    const int width = 30;
    double f = total ? double(done) / double(total) : 1.0;
    int filled = static_cast<int>(f * width);
    double secs = std::chrono::duration<double>(now - start_).count();
    std::fprintf(stderr, "\r%s [%s%s] %3d%% %s / %s  %.0f MB/s", label_.c_str(), std::string(filled, '#').c_str(),
                 std::string(width - filled, ' ').c_str(), static_cast<int>(f * 100), ckpt::human_bytes(done).c_str(),
                 ckpt::human_bytes(total).c_str(), secs > 0 ? double(done) / secs / 1e6 : 0.0);
    std::fflush(stderr);
    drawn_ = true;
  }
};

}  // namespace ckpt::cli
