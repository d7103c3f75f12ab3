#include "plot.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <nlohmann/json.hpp>

#include "ckpt/serialize.h"
#include "util/errors.h"

namespace ckpt::cli {
namespace {

std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f", v);
  return buf;
}

std::string escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

// 1, 2, 5 x 10^k steps giving about `count` ticks over [lo, hi].
std::vector<double> nice_ticks(double lo, double hi, int count) {
  if (!(hi > lo)) hi = lo + 1;
  double raw = (hi - lo) / count, mag = std::pow(10, std::floor(std::log10(raw)));
  double step = mag;
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (m * mag >= raw) {
      step = m * mag;
      break;
    }
  std::vector<double> ticks;
  for (double t = std::ceil(lo / step - 1e-9) * step; t <= hi + 1e-9 * step; t += step) ticks.push_back(t);
  return ticks;
}

std::string tick_label(double v) {
  char buf[32];
  if (std::fabs(v) < 1e-9) v = 0;  // no "-0"
  if (std::fabs(v - std::round(v)) < 1e-9)
    std::snprintf(buf, sizeof buf, "%.0f", v);
  else
    std::snprintf(buf, sizeof buf, "%g", std::round(v * 1000) / 1000);
  return buf;
}

constexpr const char* kTrainColor = "#1f77b4";
constexpr const char* kValColor = "#ff7f0e";
constexpr const char* kCkptColor = "#555555";
constexpr const char* kBestColor = "#d62728";

// A five-pointed star centred at (cx, cy).
std::string star_points(double cx, double cy) {
  std::string star;
  for (int k = 0; k < 10; ++k) {
    double a = M_PI / 2 + k * M_PI / 5, r = k % 2 ? 3.5 : 8;
    star += (k ? " " : "") + num(cx + r * std::cos(a)) + "," + num(cy - r * std::sin(a));
  }
  return star;
}

struct Panel {
  double x0, y0, w, h;  // plot area in the SVG
  double xmin, xmax, ymin, ymax;
  double px(double x) const { return x0 + (x - xmin) / (xmax - xmin) * w; }
  double py(double y) const { return y0 + h - (y - ymin) / (ymax - ymin) * h; }
};

// A checkpoint's step as a fractional epoch, interpolated between the epoch ends of metrics.jsonl.
double epoch_of_step(double step, const std::vector<EpochPoint>& pts) {
  double prev_step = 0, prev_epoch = 0;
  for (const auto& p : pts) {
    if (step <= p.step)
      return prev_epoch + (p.step > prev_step ? (step - prev_step) / (p.step - prev_step) : 0) * (p.epoch - prev_epoch);
    prev_step = p.step;
    prev_epoch = p.epoch;
  }
  if (pts.empty() || prev_step <= 0) return 0;
  return prev_epoch + (step - prev_step) / (prev_step / prev_epoch);  // past the last epoch end
}

void draw_panel(std::string& svg, const Panel& p, const std::string& title, const std::string& ylabel,
                const std::vector<std::pair<std::string, std::vector<std::pair<double, double>>>>& series,
                const std::vector<CheckpointRecord>& checkpoints, const std::vector<EpochPoint>& pts) {
  svg += "<g class=\"panel\" data-title=\"" + escape(title) + "\">\n";
  svg += "<text x=\"" + num(p.x0 + p.w / 2) + "\" y=\"" + num(p.y0 - 22) +
         "\" text-anchor=\"middle\" font-size=\"15\" font-weight=\"bold\">" + escape(title) + "</text>\n";
  svg += "<rect x=\"" + num(p.x0) + "\" y=\"" + num(p.y0) + "\" width=\"" + num(p.w) + "\" height=\"" + num(p.h) +
         "\" fill=\"none\" stroke=\"#333\"/>\n";
  for (double t : nice_ticks(p.xmin, p.xmax, 6)) {
    if (t < p.xmin - 1e-9 || t > p.xmax + 1e-9) continue;
    svg += "<line class=\"xtick\" x1=\"" + num(p.px(t)) + "\" y1=\"" + num(p.y0 + p.h) + "\" x2=\"" + num(p.px(t)) +
           "\" y2=\"" + num(p.y0 + p.h + 5) + "\" stroke=\"#333\"/>";
    svg += "<text x=\"" + num(p.px(t)) + "\" y=\"" + num(p.y0 + p.h + 18) +
           "\" text-anchor=\"middle\" font-size=\"11\">" + tick_label(t) + "</text>\n";
  }
  for (double t : nice_ticks(p.ymin, p.ymax, 5)) {
    if (t < p.ymin - 1e-9 || t > p.ymax + 1e-9) continue;
    svg += "<line class=\"ytick\" x1=\"" + num(p.x0 - 5) + "\" y1=\"" + num(p.py(t)) + "\" x2=\"" + num(p.x0 + p.w) +
           "\" y2=\"" + num(p.py(t)) + "\" stroke=\"#ddd\"/>";
    svg += "<text x=\"" + num(p.x0 - 8) + "\" y=\"" + num(p.py(t) + 4) + "\" text-anchor=\"end\" font-size=\"11\">" +
           tick_label(t) + "</text>\n";
  }
  svg += "<text x=\"" + num(p.x0 + p.w / 2) + "\" y=\"" + num(p.y0 + p.h + 38) +
         "\" text-anchor=\"middle\" font-size=\"12\">epoch</text>\n";
  svg += "<text transform=\"translate(" + num(p.x0 - 48) + "," + num(p.y0 + p.h / 2) +
         ") rotate(-90)\" text-anchor=\"middle\" font-size=\"12\">" + escape(ylabel) + "</text>\n";
  for (const auto& [name, xy] : series) {
    const char* color = name.rfind("train", 0) == 0 ? kTrainColor : kValColor;
    std::string points;
    for (const auto& [x, y] : xy) points += (points.empty() ? "" : " ") + num(p.px(x)) + "," + num(p.py(y));
    svg += "<polyline class=\"series\" data-series=\"" + name + "\" points=\"" + points + "\" fill=\"none\" stroke=\"" +
           color + "\" stroke-width=\"2\"" + (name.rfind("val", 0) == 0 ? " stroke-dasharray=\"6,3\"" : "") + "/>\n";
    for (const auto& [x, y] : xy)
      svg += "<circle class=\"point\" data-series=\"" + name + "\" cx=\"" + num(p.px(x)) + "\" cy=\"" + num(p.py(y)) +
             "\" r=\"3\" fill=\"" + color + "\"/>";
    svg += "\n";
  }
  for (const auto& c : checkpoints) {
    double x = std::clamp(epoch_of_step(double(c.step), pts), p.xmin, p.xmax);
    const double cx = p.px(x), top = p.y0;
    std::string data = " data-step=\"" + std::to_string(c.step) + "\" data-file=\"" + escape(c.file) + "\"";
    if (c.best) {
      svg += "<polygon class=\"checkpoint best\"" + data + " points=\"" + star_points(cx, top + 10) + "\" fill=\"" +
             kBestColor + "\"><title>best: " + escape(c.file) + "</title></polygon>\n";
    } else {
      svg += "<path class=\"checkpoint\"" + data + " d=\"M" + num(cx - 5) + "," + num(top + 2) + " L" + num(cx + 5) +
             "," + num(top + 2) + " L" + num(cx) + "," + num(top + 10) + " Z\" fill=\"" + kCkptColor + "\"><title>" +
             escape(c.file) + "</title></path>\n";
    }
    svg += "<line class=\"checkpoint-line\" x1=\"" + num(cx) + "\" y1=\"" + num(top + 10) + "\" x2=\"" + num(cx) +
           "\" y2=\"" + num(p.y0 + p.h) + "\" stroke=\"" + (c.best ? kBestColor : kCkptColor) +
           "\" stroke-opacity=\"0.25\"/>\n";
  }
  svg += "</g>\n";
}

}  // namespace

std::vector<EpochPoint> read_metrics(const std::string& run_dir) {
  const std::string path = run_dir + "/metrics.jsonl";
  std::string text;
  try {
    text = read_text_file(path);  // a file, or an object of an s3:// run
  } catch (const Error& e) {
    if (e.kind() != ErrorKind::kNotFound) throw;
    fail(ErrorKind::kNotFound, path, ": no such file (ckpt plot draws what ckpt-train logs there)");
  }
  std::istringstream in(text);
  std::vector<EpochPoint> out;
  int line_no = 0;
  for (std::string line; std::getline(in, line);) {
    ++line_no;
    if (line.empty()) continue;
    try {
      auto j = nlohmann::json::parse(line);
      EpochPoint p;
      p.epoch = j.at("epoch").get<double>();
      p.step = j.value("step", 0.0);
      auto get = [&](const char* k) { return j.contains(k) && j[k].is_number() ? j[k].get<double>() : NAN; };
      p.train_loss = get("train_loss");
      p.val_loss = get("val_loss");
      p.train_acc = get("train_acc");
      p.val_acc = get("val_acc");
      out.push_back(p);
    } catch (const std::exception& e) {
      fail(ErrorKind::kCorruption, path, ": line ", line_no, " is not a metrics record: ", e.what());
    }
  }
  std::sort(out.begin(), out.end(), [](const EpochPoint& a, const EpochPoint& b) { return a.epoch < b.epoch; });
  return out;
}

std::string plot_svg(const std::string& title, const std::vector<EpochPoint>& pts,
                     const std::vector<CheckpointRecord>& checkpoints) {
  const double W = 980, H = 430;
  double xmax = 1;
  for (const auto& p : pts) xmax = std::max(xmax, p.epoch);
  for (const auto& c : checkpoints) xmax = std::max(xmax, epoch_of_step(double(c.step), pts));
  auto series = [&](double EpochPoint::*field, double scale) {
    std::vector<std::pair<double, double>> xy;
    for (const auto& p : pts)
      if (std::isfinite(p.*field)) xy.push_back({p.epoch, p.*field * scale});
    return xy;
  };
  auto range = [](const std::vector<std::vector<std::pair<double, double>>>& all, double pad_floor) {
    double lo = INFINITY, hi = -INFINITY;
    for (const auto& s : all)
      for (const auto& [x, y] : s) lo = std::min(lo, y), hi = std::max(hi, y);
    if (!std::isfinite(lo)) return std::pair<double, double>{0, 1};
    double pad = std::max((hi - lo) * 0.08, pad_floor);
    return std::pair<double, double>{lo - pad, hi + pad + (hi - lo) * 0.1};  // headroom for the markers
  };
  auto tl = series(&EpochPoint::train_loss, 1), vl = series(&EpochPoint::val_loss, 1);
  auto ta = series(&EpochPoint::train_acc, 100), va = series(&EpochPoint::val_acc, 100);
  auto [lmin, lmax] = range({tl, vl}, 0.01);
  auto [amin, amax] = range({ta, va}, 0.5);

  std::string svg = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" +
                    num(W) + "\" height=\"" + num(H) + "\" viewBox=\"0 0 " + num(W) + " " + num(H) +
                    "\" font-family=\"sans-serif\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  svg += "<text class=\"title\" x=\"" + num(W / 2) + "\" y=\"24\" text-anchor=\"middle\" font-size=\"17\">" +
         escape(title) + "</text>\n";
  Panel loss{75, 70, 380, 270, 0, xmax, std::max(0.0, lmin), lmax};
  Panel acc{575, 70, 380, 270, 0, xmax, std::max(0.0, amin), std::min(100.0, amax)};
  draw_panel(svg, loss, "Loss", "cross-entropy loss (nats)", {{"train_loss", tl}, {"val_loss", vl}}, checkpoints, pts);
  draw_panel(svg, acc, "Accuracy", "accuracy (%)", {{"train_acc", ta}, {"val_acc", va}}, checkpoints, pts);
  // Legend, below the panels.
  double lx = 150, ly = H - 28;
  auto entry = [&](const std::string& shape, const std::string& label) {
    svg += "<g class=\"legend-entry\">" + shape + "<text x=\"" + num(lx + 30) + "\" y=\"" + num(ly + 4) +
           "\" font-size=\"12\">" + label + "</text></g>\n";
    lx += 40 + 7.0 * double(label.size());
  };
  svg += "<g class=\"legend\">\n";
  entry("<line x1=\"" + num(lx) + "\" y1=\"" + num(ly) + "\" x2=\"" + num(lx + 24) + "\" y2=\"" + num(ly) +
            "\" stroke=\"" + kTrainColor + "\" stroke-width=\"2\"/>",
        "train");
  entry("<line x1=\"" + num(lx) + "\" y1=\"" + num(ly) + "\" x2=\"" + num(lx + 24) + "\" y2=\"" + num(ly) +
            "\" stroke=\"" + kValColor + "\" stroke-width=\"2\" stroke-dasharray=\"6,3\"/>",
        "validation");
  entry("<path d=\"M" + num(lx + 7) + "," + num(ly - 5) + " L" + num(lx + 17) + "," + num(ly - 5) + " L" +
            num(lx + 12) + "," + num(ly + 3) + " Z\" fill=\"" + kCkptColor + "\"/>",
        "checkpoint on disk");
  entry("<polygon points=\"" + star_points(lx + 12, ly) + "\" fill=\"" + kBestColor + "\"/>", "best checkpoint");
  svg += "</g>\n</svg>\n";
  return svg;
}

}  // namespace ckpt::cli
