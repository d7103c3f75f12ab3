#include "console.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <vector>

#include "ckpt/serialize.h"

namespace ckpt::train {

std::string format_duration(double seconds) {
  long s = seconds < 0 ? 0 : static_cast<long>(seconds + 0.5);
  char buf[32];
  if (s >= 3600)
    std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", s / 3600, s / 60 % 60, s % 60);
  else
    std::snprintf(buf, sizeof buf, "%ld:%02ld", s / 60, s % 60);
  return buf;
}

Console::Console() : tty_(::isatty(STDOUT_FILENO) == 1) {}

void Console::line(const std::string& text) {
  if (quiet_) return;
  if (drawn_) std::printf("\r\033[K");
  drawn_ = false;
  std::printf("%s\n", text.c_str());
  std::fflush(stdout);
}

void Console::progress(int64_t epoch, int64_t epochs, int64_t done, int64_t total, double loss, double acc,
                       double samples_per_s) {
  if (quiet_) return;
  const double f = total ? double(done) / double(total) : 1.0;
  const double eta = samples_per_s > 0 ? double(total - done) / samples_per_s : 0;
  char stats[160];
  std::snprintf(stats, sizeof stats, "%lld/%lld  loss %.4f  acc %5.2f%%  %.0f samples/s  ETA %s",
                static_cast<long long>(done), static_cast<long long>(total), loss, 100 * acc, samples_per_s,
                format_duration(eta).c_str());
  if (!tty_) {
    int quarter = static_cast<int>(f * 4);
    if (quarter == last_quarter_ || quarter == 0 || done == total) return;
    last_quarter_ = quarter;
    std::printf("epoch %lld/%lld %3d%%  %s\n", static_cast<long long>(epoch + 1), static_cast<long long>(epochs),
                quarter * 25, stats);
    std::fflush(stdout);
    return;
  }
  auto now = std::chrono::steady_clock::now();
  if (done < total && now - last_draw_ < std::chrono::milliseconds(100)) return;
  last_draw_ = now;
  const int width = 24;
  int filled = static_cast<int>(f * width);
  std::printf("\r\033[Kepoch %lld/%lld [%s%s] %s", static_cast<long long>(epoch + 1), static_cast<long long>(epochs),
              std::string(size_t(filled), '#').c_str(), std::string(size_t(width - filled), '.').c_str(), stats);
  std::fflush(stdout);
  drawn_ = true;
}

void Console::end_progress() {
  if (drawn_) std::printf("\r\033[K");
  std::fflush(stdout);
  drawn_ = false;
  last_quarter_ = -1;
}

void MetricsLog::load() {
  if (loaded_) return;
  loaded_ = true;
  std::string text;
  try {
    text = read_text_file(path_);
  } catch (const Error& e) {
    if (e.kind() != ErrorKind::kNotFound) throw;
    return;
  }
  for (size_t at = 0; at < text.size();) {
    size_t end = text.find('\n', at);
    if (end == std::string::npos) end = text.size();
    lines_.push_back(text.substr(at, end - at));
    at = end + 1;
  }
}

void MetricsLog::write() const {
  std::string text;
  for (const auto& l : lines_) text += l + "\n";
  write_text_file(path_, text);
}

void MetricsLog::keep_up_to_step(int64_t step) {
  load();
  std::vector<std::string> kept;
  for (const auto& line : lines_) {
    try {
      auto j = nlohmann::json::parse(line);
      if (j.value("step", int64_t{0}) <= step) kept.push_back(line);
    } catch (const std::exception&) {
      // a line cut short by a crash (files written before the log was rewritten whole)
    }
  }
  if (kept.size() == lines_.size()) return;
  lines_ = std::move(kept);
  write();
}

void MetricsLog::append(const nlohmann::ordered_json& record) {
  load();
  // An epoch's line replaces one written before: a run killed after logging an epoch's end but
  // before that epoch's checkpoint committed (or resumed from a checkpoint saved at the epoch's
  // last step, before its end) replays the end and logs it again.
  if (record.contains("epoch")) {
    const std::string epoch = record["epoch"].dump();
    lines_.erase(std::remove_if(lines_.begin(), lines_.end(),
                                [&](const std::string& line) {
                                  try {
                                    auto j = nlohmann::json::parse(line);
                                    return j.contains("epoch") && j["epoch"].dump() == epoch;
                                  } catch (const std::exception&) {
                                    return false;
                                  }
                                }),
                 lines_.end());
  }
  lines_.push_back(record.dump());
  write();
}

}  // namespace ckpt::train
