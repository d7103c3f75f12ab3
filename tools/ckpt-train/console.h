// What ckpt-train shows a person: a progress bar per epoch on a terminal, plain log lines
// otherwise; and metrics.jsonl, one JSON object per epoch, in the run directory.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace ckpt::train {

class Console {
 public:
  Console();  // a terminal when stdout is one
  bool tty() const { return tty_; }
  // Prints nothing (the ranks other than 0 of a data-parallel run).
  void set_quiet(bool quiet) { quiet_ = quiet; }
  // A line of its own (clears a bar being drawn first).
  void line(const std::string& text);
  // Progress within an epoch; on a terminal a bar redrawn at most 10 times a second, else a log
  // line at each quarter of the epoch.
  void progress(int64_t epoch, int64_t epochs, int64_t done, int64_t total, double loss, double acc,
                double samples_per_s);
  void end_progress();

 private:
  bool tty_;
  bool quiet_ = false;
  bool drawn_ = false;
  int last_quarter_ = -1;
  std::chrono::steady_clock::time_point last_draw_{};
};

// RUNDIR/metrics.jsonl. At a resume, lines of steps past the restored checkpoint (written
// before a crash lost their checkpoint) are dropped, so the file always tells the story of the
// run that continues, and an epoch logged again (its end replayed after a crash) replaces its
// earlier line. Each append rewrites the (small) file whole and crash-safely through
// io::Env: object storage has no append, and an s3:// run directory works like a local one.
class MetricsLog {
 public:
  explicit MetricsLog(std::string path) : path_(std::move(path)) {}
  void keep_up_to_step(int64_t step);
  void append(const nlohmann::ordered_json& record);

 private:
  void load();
  void write() const;
  std::string path_;
  std::vector<std::string> lines_;
  bool loaded_ = false;
};

std::string format_duration(double seconds);  // "1:05", "1:02:03"

}  // namespace ckpt::train
