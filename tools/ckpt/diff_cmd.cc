// `ckpt diff`: loads both sides mapped (neither is copied into memory), compares, prints.
#include "diff_cmd.h"

#include <cmath>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "ckpt/diff.h"
#include "ckpt/distributed_files.h"
#include "ckpt/manager.h"
#include "progress.h"
#include "util/errors.h"

namespace ckpt::cli {
namespace {

using Json = nlohmann::ordered_json;

Json number(double v) {
  if (std::isfinite(v)) return v;
  return std::isnan(v) ? "nan" : (v > 0 ? "inf" : "-inf");
}

std::string g(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.6g", v);
  return buf;
}

std::string line(const DiffEntry& e) {
  const std::string at = e.path.empty() ? "<root>" : e.path;
  std::string values;
  if (e.numel > 0 && (e.kind == DiffEntry::Kind::kTensor || e.kind == DiffEntry::Kind::kDType))
    values = str_cat(e.differing, " of ", e.numel, " elements differ",
                     e.differing ? ", max abs " + g(e.max_abs) + ", max rel " + g(e.max_rel) : std::string());
  switch (e.kind) {
    case DiffEntry::Kind::kOnlyInA:
      return str_cat("only in A: ", at, " (", e.a, ")");
    case DiffEntry::Kind::kOnlyInB:
      return str_cat("only in B: ", at, " (", e.b, ")");
    case DiffEntry::Kind::kKind:
      return str_cat("kind:  ", at, ": ", e.a, " vs ", e.b);
    case DiffEntry::Kind::kShape:
      return str_cat("shape: ", at, ": ", e.a, " vs ", e.b);
    case DiffEntry::Kind::kValue:
      return str_cat("value: ", at, ": ", e.a, " vs ", e.b);
    case DiffEntry::Kind::kDType:
      return str_cat("dtype: ", at, ": ", e.a, " vs ", e.b, values.empty() ? "" : "; ", values);
    case DiffEntry::Kind::kTensor:
      return str_cat("tensor: ", at, ": ", values);
  }
  return at;
}

}  // namespace

std::string resolve_checkpoint(const std::string& arg) {
  std::string dir = arg, which = "latest";
  if (auto at = arg.rfind('@'); at != std::string::npos && is_run_directory(arg.substr(0, at))) {
    dir = arg.substr(0, at);
    which = arg.substr(at + 1);
  } else if (!is_run_directory(arg)) {
    return arg;
  }
  std::vector<CheckpointRecord> records = list_run(dir);
  for (auto it = records.rbegin(); it != records.rend(); ++it) {
    if ((which == "latest" && it->latest) || (which == "best" && it->best) || which == std::to_string(it->step))
      return it->path;
  }
  fail(ErrorKind::kNotFound, dir, ": no checkpoint '", which, "' (latest, best, or a step the run directory lists)");
}

int diff_command(const std::string& a_arg, const std::string& b_arg, double rtol, double atol, bool json) {
  const std::string a_path = resolve_checkpoint(a_arg), b_path = resolve_checkpoint(b_arg);
  LoadOptions lazy;
  lazy.mmap = true;  // tensors view the files: nothing of either is copied
  // A distributed checkpoint directory compares as its consolidated state.
  auto read = [&](const std::string& path) {
    return dist::is_distributed_checkpoint(path) ? dist::consolidate(path) : load(path, lazy);
  };
  Value a = read(a_path), b = read(b_path);
  DiffOptions o;
  o.rtol = rtol;
  o.atol = atol;
  ProgressBar bar("comparing");
  o.progress = bar.fn();
  DiffReport r = diff(a, b, o);
  bar.done();
  if (json) {
    Json entries = Json::array();
    for (const auto& e : r.entries) {
      Json j{{"path", e.path}, {"kind", to_string(e.kind)}};
      j["a"] = e.kind == DiffEntry::Kind::kOnlyInB ? Json(nullptr) : Json(e.a);
      j["b"] = e.kind == DiffEntry::Kind::kOnlyInA ? Json(nullptr) : Json(e.b);
      if (e.numel > 0 && (e.kind == DiffEntry::Kind::kTensor || e.kind == DiffEntry::Kind::kDType)) {
        j["numel"] = e.numel;
        j["differing"] = e.differing;
        j["max_abs"] = number(e.max_abs);
        j["max_rel"] = number(e.max_rel);
      }
      entries.push_back(j);
    }
    Json out{{"a", a_path},
             {"b", b_path},
             {"equal", r.equal()},
             {"rtol", rtol},
             {"atol", atol},
             {"tensors_compared", r.tensors_compared},
             {"elements_compared", r.elements_compared},
             {"differences", entries}};
    std::cout << out.dump(2) << "\n";
    return r.equal() ? 0 : 1;
  }
  for (const auto& e : r.entries) std::cout << line(e) << "\n";
  const std::string counts = str_cat(r.tensors_compared, " tensors, ", r.elements_compared, " elements compared; rtol ",
                                     g(rtol), ", atol ", g(atol));
  if (r.equal())
    std::cout << "A and B are equal (" << counts << ")\n";
  else
    std::cout << "A and B differ: " << r.entries.size() << (r.entries.size() == 1 ? " difference" : " differences")
              << " (" << counts << ")\n";
  return r.equal() ? 0 : 1;
}

}  // namespace ckpt::cli
