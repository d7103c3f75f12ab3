#include "manager/run_dir.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <nlohmann/json.hpp>
#include <set>

#include "util/errors.h"

namespace ckpt::run {

using Json = nlohmann::ordered_json;

// --- names ---------------------------------------------------------------------------------------

namespace {

std::string regex_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (std::string("\\^$.|?*+()[]{}").find(c) != std::string::npos) out += '\\';
    out += c;
  }
  return out;
}

bool plain_name_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.' || c == '=' || c == '+' ||
         c == ',';
}

}  // namespace

NameTemplate::NameTemplate(std::string text, std::string suffix) : text_(std::move(text)), suffix_(std::move(suffix)) {
  auto bad = [&](const std::string& why) { fail(ErrorKind::kInvalidArgument, "name template '", text_, "': ", why); };
  std::string literal;
  bool has_step = false;
  for (size_t i = 0; i < text_.size(); ++i) {
    char c = text_[i];
    if (c == '}') bad("'}' without '{'");
    if (c != '{') {
      if (!plain_name_char(c)) bad(str_cat("character '", c, "' is not allowed in a file name here"));
      literal += c;
      continue;
    }
    auto close = text_.find('}', i);
    if (close == std::string::npos) bad("'{' without '}'");
    std::string spec = text_.substr(i + 1, close - i - 1);
    Field f;
    f.literal = literal;
    literal.clear();
    auto colon = spec.find(':');
    f.name = spec.substr(0, colon);
    if (f.name.empty()) bad("a field has no name");
    for (char n : f.name)
      if (!(std::isalnum(static_cast<unsigned char>(n)) || n == '_' || n == '/'))
        bad("field '" + f.name + "' is not a plain name");
    if (colon != std::string::npos) {
      std::string fmt = spec.substr(colon + 1);
      if (fmt.size() >= 2 && fmt[0] == '0' && std::all_of(fmt.begin() + 1, fmt.end(), ::isdigit))
        f.width = std::stoi(fmt.substr(1));
      else if (fmt.size() >= 3 && fmt[0] == '.' && fmt.back() == 'f' &&
               std::all_of(fmt.begin() + 1, fmt.end() - 1, ::isdigit))
        f.decimals = std::stoi(fmt.substr(1, fmt.size() - 2));
      else
        bad("format '" + fmt + "' of field '" + f.name + "' (use 0N for integers, .Nf for decimals)");
      if (f.width > 20 || f.decimals > 12) bad("format of field '" + f.name + "' is too wide");
    }
    if (f.name == "step") has_step = true;
    fields_.push_back(f);
    i = close;
  }
  if (!has_step) bad("it must contain {step}, so that every checkpoint gets its own name");
  if (!literal.empty() || fields_.empty()) fields_.push_back(Field{literal, "", 0, -1});
  std::string re;
  for (const Field& f : fields_) {
    re += regex_escape(f.literal);
    if (f.name == "step" || f.name == "epoch")
      re += "(-?[0-9]+)";
    else if (!f.name.empty())
      re += "([-+0-9.eEinfaNA]+)";
  }
  pattern_ = std::regex(re + regex_escape(suffix_));
}

std::string NameTemplate::format(int64_t epoch, int64_t step, const std::map<std::string, double>& metrics) const {
  std::string out;
  char buf[64];
  for (const Field& f : fields_) {
    out += f.literal;
    if (f.name.empty()) continue;
    if (f.name == "step" || f.name == "epoch") {
      long long v = f.name == "step" ? step : epoch;
      std::snprintf(buf, sizeof buf, "%0*lld", f.width, v);
      out += buf;
      continue;
    }
    auto it = metrics.find(f.name);
    if (it == metrics.end() || !std::isfinite(it->second)) {
      out += it == metrics.end() ? "NA" : (std::isnan(it->second) ? "nan" : (it->second > 0 ? "inf" : "-inf"));
      continue;
    }
    if (f.decimals >= 0)
      std::snprintf(buf, sizeof buf, "%.*f", f.decimals, it->second);
    else if (f.width > 0)
      std::snprintf(buf, sizeof buf, "%0*lld", f.width, static_cast<long long>(std::llround(it->second)));
    else
      std::snprintf(buf, sizeof buf, "%.6g", it->second);
    out += buf;
  }
  return out + suffix_;
}

bool NameTemplate::parse(const std::string& file, int64_t* step, int64_t* epoch) const {
  std::smatch m;
  if (!std::regex_match(file, m, pattern_)) return false;
  size_t group = 1;
  for (const Field& f : fields_) {
    if (f.name.empty()) continue;
    const std::string text = m[group++].str();
    try {
      if (f.name == "step" && step) *step = std::stoll(text);
      if (f.name == "epoch" && epoch) *epoch = std::stoll(text);
    } catch (const std::exception&) {
      return false;
    }
  }
  return true;
}

// --- index ---------------------------------------------------------------------------------------

const CheckpointRecord* Index::find(const std::string& file) const {
  for (const auto& r : records)
    if (r.file == file) return &r;
  return nullptr;
}

void Index::refresh(const std::string& monitor_name, Mode mode_) {
  monitor = monitor_name;
  mode = mode_;
  latest.clear();
  best.clear();
  for (auto it = records.rbegin(); it != records.rend() && latest.empty(); ++it)
    if (it->damaged.empty()) latest = it->file;
  if (latest.empty() && !records.empty()) latest = records.back().file;
  const CheckpointRecord* b = nullptr;
  if (!monitor.empty())
    for (const auto& r : records) {
      if (!r.damaged.empty()) continue;
      auto m = r.metrics.find(monitor);
      if (m == r.metrics.end() || std::isnan(m->second)) continue;
      if (b == nullptr || better(m->second, b->metrics.at(monitor), mode)) b = &r;
    }
  if (b) best = b->file;
  for (auto& r : records) {
    r.latest = r.file == latest;
    r.best = r.file == best;
  }
}

std::string iso_time(double unix_time) {
  std::time_t t = static_cast<std::time_t>(unix_time);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

double now_unix() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

namespace {

Json metric_json(double v) {
  if (std::isfinite(v)) return v;
  return std::isnan(v) ? "nan" : (v > 0 ? "inf" : "-inf");  // JSON has no NaN
}

double metric_from_json(const Json& j) {
  if (j.is_number()) return j.get<double>();
  if (j.is_string()) {
    std::string s = j.get<std::string>();
    if (s == "nan") return std::nan("");
    if (s == "inf") return INFINITY;
    if (s == "-inf") return -INFINITY;
  }
  throw std::runtime_error("a metric is neither a number nor nan/inf");
}

}  // namespace

std::string to_json(const Index& index) {
  Json j;
  j["format"] = kFormat;
  j["name_template"] = index.name_template;
  j["created_unix"] = index.created_unix;
  j["monitor"] = index.monitor.empty() ? Json(nullptr) : Json(index.monitor);
  j["mode"] = index.mode == Mode::kMin ? "min" : "max";
  j["latest"] = index.latest.empty() ? Json(nullptr) : Json(index.latest);
  j["best"] = index.best.empty() ? Json(nullptr) : Json(index.best);
  Json list = Json::array();
  for (const auto& r : index.records) {
    Json m = Json::object();
    for (const auto& [k, v] : r.metrics) m[k] = metric_json(v);
    Json e{{"file", r.file},
           {"epoch", r.epoch},
           {"step", r.step},
           {"metrics", m},
           {"bytes", r.bytes},
           {"unix_time", r.unix_time},
           {"time", iso_time(r.unix_time)},
           {"content_crc", hex32(r.content_crc)},
           {"seq", r.seq}};
    if (!r.damaged.empty()) e["damaged"] = r.damaged;
    list.push_back(e);
  }
  j["checkpoints"] = list;
  j["pending_delete"] = index.pending_delete;
  j["best_exported"] = index.best_exported.empty() ? Json(nullptr) : Json(index.best_exported);
  return j.dump(2) + "\n";
}

Index from_json(const std::string& text, const std::string& dir) {
  Index index;
  try {
    Json j = Json::parse(text);
    if (!j.is_object() || j.value("format", "") != kFormat)
      throw std::runtime_error(str_cat("not a ckpt run index (format is not '", kFormat, "')"));
    index.name_template = j.at("name_template").get<std::string>();
    index.created_unix = j.value("created_unix", 0.0);
    if (j.contains("monitor") && j["monitor"].is_string()) index.monitor = j["monitor"].get<std::string>();
    index.mode = j.value("mode", "min") == "max" ? Mode::kMax : Mode::kMin;
    std::set<std::string> seen;
    for (const Json& e : j.at("checkpoints")) {
      CheckpointRecord r;
      r.file = e.at("file").get<std::string>();
      if (r.file.empty() || r.file.find('/') != std::string::npos || r.file[0] == '.')
        throw std::runtime_error("checkpoint name '" + r.file + "' is not a plain file name");
      if (!seen.insert(r.file).second) throw std::runtime_error("checkpoint '" + r.file + "' is listed twice");
      r.path = dir + "/" + r.file;
      r.epoch = e.at("epoch").get<int64_t>();
      r.step = e.at("step").get<int64_t>();
      for (const auto& [k, v] : e.at("metrics").items()) r.metrics[k] = metric_from_json(v);
      r.bytes = e.at("bytes").get<uint64_t>();
      r.unix_time = e.at("unix_time").get<double>();
      r.content_crc = static_cast<uint32_t>(std::stoul(e.at("content_crc").get<std::string>(), nullptr, 16));
      r.seq = e.at("seq").get<uint64_t>();
      r.damaged = e.value("damaged", "");
      index.next_seq = std::max(index.next_seq, r.seq + 1);
      index.records.push_back(std::move(r));
    }
    if (j.contains("best_exported") && j["best_exported"].is_string())
      index.best_exported = j["best_exported"].get<std::string>();
    for (const Json& p : j.value("pending_delete", Json::array())) {
      std::string name = p.get<std::string>();
      if (name.find('/') == std::string::npos && !name.empty() && name[0] != '.') index.pending_delete.push_back(name);
    }
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    fail(ErrorKind::kCorruption, dir, "/", kIndexFile, ": damaged run index: ", e.what());
  }
  return index;
}

std::optional<Index> read_index(io::Env* env, const std::string& dir) {
  const std::string path = dir + "/" + kIndexFile;
  if (!env->file_exists(path)) return std::nullopt;
  Index index = from_json(env->read_file(path), dir);
  index.refresh(index.monitor, index.mode);
  return index;
}

namespace {
void write_small_file(io::Env* env, const std::string& path, const std::string& text, bool durable) {
  io::AtomicFile f(env, path);
  f.file().append(text.data(), text.size());
  f.commit(durable);
}
}  // namespace

void write_index_file(io::Env* env, const std::string& dir, const Index& index, bool durable) {
  write_small_file(env, dir + "/" + kIndexFile, to_json(index), durable);
}

// The pointer for people and scripts; the index is what ckpt trusts.
void write_latest_file(io::Env* env, const std::string& dir, const Index& index, bool durable) {
  write_small_file(env, dir + "/" + kLatestFile, index.latest + "\n", durable);
}

void write_index(io::Env* env, const std::string& dir, const Index& index, bool durable) {
  write_index_file(env, dir, index, durable);
  write_latest_file(env, dir, index, durable);
}

// --- retention -----------------------------------------------------------------------------------

std::vector<bool> retained(const std::vector<CheckpointRecord>& records, const RetentionPolicy& policy,
                           double created_unix, const std::vector<std::string>& protected_files) {
  const size_t n = records.size();
  std::vector<bool> keep(n, policy.keeps_everything());
  for (size_t i = 0; i < n; ++i)
    if (std::find(protected_files.begin(), protected_files.end(), records[i].file) != protected_files.end())
      keep[i] = true;
  std::vector<size_t> good;  // damaged checkpoints count for no policy
  for (size_t i = 0; i < n; ++i)
    if (records[i].damaged.empty()) good.push_back(i);
  // Most recent first (records are in commit order).
  if (policy.keep_last > 0)
    for (size_t k = 0; k < good.size() && k < size_t(policy.keep_last); ++k) keep[good[good.size() - 1 - k]] = true;
  if (policy.keep_best > 0 && !policy.monitor.empty()) {
    std::vector<size_t> ranked;
    for (size_t i : good) {
      auto m = records[i].metrics.find(policy.monitor);
      if (m != records[i].metrics.end() && !std::isnan(m->second)) ranked.push_back(i);
    }
    std::stable_sort(ranked.begin(), ranked.end(), [&](size_t a, size_t b) {
      return better(records[a].metrics.at(policy.monitor), records[b].metrics.at(policy.monitor), policy.mode);
    });
    for (size_t k = 0; k < ranked.size() && k < size_t(policy.keep_best); ++k) keep[ranked[k]] = true;
  }
  // Milestones: the first commit in each window [kN, (k+1)N), k >= 1.
  auto milestones = [&](auto window_of) {
    std::set<int64_t> taken;
    for (size_t i : good) {
      int64_t w = window_of(records[i]);
      if (w >= 1 && taken.insert(w).second) keep[i] = true;
    }
  };
  if (policy.keep_every_steps > 0)
    milestones([&](const CheckpointRecord& r) { return r.step / policy.keep_every_steps; });
  if (policy.keep_every_epochs > 0)
    milestones([&](const CheckpointRecord& r) { return r.epoch / policy.keep_every_epochs; });
  if (policy.keep_every_minutes > 0)
    milestones([&](const CheckpointRecord& r) {
      return static_cast<int64_t>(std::floor((r.unix_time - created_unix) / (60.0 * policy.keep_every_minutes)));
    });
  return keep;
}

}  // namespace ckpt::run
