// The run directory's files, one parser for each: checkpoint names (from a template), the
// index (index.json), the pointers (latest, best.pt, best_model.pt), the lock, and the temp
// files a crash can leave. Garbage collection trusts only these parsers: a name none of them
// recognises is never deleted.
//
// index.json, replaced atomically (temp -> fsync -> rename -> fsync dir):
//   {
//     "format": "ckpt-run/1",
//     "name_template": "epoch={epoch:03}-step={step:06}",
//     "created_unix": 1795000000.0,            // the run's start: milestones in minutes count from it
//     "monitor": "val_loss", "mode": "min",
//     "latest": "epoch=002-step=000900.pt",    // the latest commit
//     "best": "epoch=001-step=000600.pt",      // or null
//     "checkpoints": [                          // in commit order
//       {"file": "...", "epoch": 1, "step": 600, "metrics": {"val_loss": 0.31},
//        "bytes": 1234, "unix_time": 1795000100.5, "time": "2026-12-01T06:20:00Z",
//        "content_crc": "0x1a2b3c4d", "seq": 3, "damaged": "..."}   // damaged only when set
//     ],
//     "pending_delete": ["..."],                // retention's victims, removed after this flip
//     "best_exported": "epoch=001-step=000600.pt"  // what best.pt and best_model.pt hold
//   }
#pragma once

#include <optional>
#include <regex>
#include <string>
#include <vector>

#include "ckpt/manager.h"
#include "io/env.h"

namespace ckpt::run {

inline constexpr const char* kIndexFile = "index.json";
inline constexpr const char* kLatestFile = "latest";
inline constexpr const char* kBestFile = "best.pt";
inline constexpr const char* kBestModelFile = "best_model.pt";
inline constexpr const char* kLockFile = ".lock";
inline constexpr const char* kFormat = "ckpt-run/1";

// "epoch={epoch:03}-step={step:06}-val_loss={val_loss:.4f}" -> file names and back.
class NameTemplate {
 public:
  // `suffix` ends every name: ".pt" for one file per checkpoint, "" for the directories of a
  // distributed run. Throws kInvalidArgument naming the problem.
  explicit NameTemplate(std::string text, std::string suffix = ".pt");
  const std::string& text() const { return text_; }
  std::string format(int64_t epoch, int64_t step, const std::map<std::string, double>& metrics) const;
  // Whether `file` is a name this template makes; fills step (and epoch when present).
  bool parse(const std::string& file, int64_t* step, int64_t* epoch) const;

 private:
  struct Field {
    std::string literal;  // text before the field
    std::string name;     // "" for the trailing literal
    int width = 0;        // {x:0N}
    int decimals = -1;    // {x:.Nf}
  };
  std::string text_, suffix_;
  std::vector<Field> fields_;
  std::regex pattern_;
};

struct Index {
  std::string name_template;
  double created_unix = 0;
  std::string monitor;
  Mode mode = Mode::kMin;
  std::vector<CheckpointRecord> records;  // commit order; latest/best flags are derived
  std::string latest, best;
  std::vector<std::string> pending_delete;
  std::string best_exported;  // the checkpoint best.pt and best_model.pt were made from
  uint64_t next_seq = 1;

  const CheckpointRecord* find(const std::string& file) const;
  // Recomputes `latest` (the last commit that is not damaged... or the last commit) and `best`.
  void refresh(const std::string& monitor, Mode mode);
};

std::string to_json(const Index& index);
// Throws kCorruption naming the problem when the text is not a valid index.
Index from_json(const std::string& text, const std::string& dir);

// Reads dir/index.json. nullopt when it does not exist; throws when it is damaged.
std::optional<Index> read_index(io::Env* env, const std::string& dir);
// Atomically replace dir/index.json (the commit point) and dir/latest (the pointer for people).
void write_index_file(io::Env* env, const std::string& dir, const Index& index, bool durable);
void write_latest_file(io::Env* env, const std::string& dir, const Index& index, bool durable);
// Both, in that order.
void write_index(io::Env* env, const std::string& dir, const Index& index, bool durable);

// Whether `metric` of a is better than of b under `mode`.
inline bool better(double a, double b, Mode mode) {
  return mode == Mode::kMin ? a < b : a > b;
}

// Which records `policy` keeps (parallel to `records`), given the run's start and the files
// that must never go (latest, best, newest verified, in flight).
std::vector<bool> retained(const std::vector<CheckpointRecord>& records, const RetentionPolicy& policy,
                           double created_unix, const std::vector<std::string>& protected_files);

// "2026-12-01T06:20:00Z"
std::string iso_time(double unix_time);
double now_unix();

}  // namespace ckpt::run
