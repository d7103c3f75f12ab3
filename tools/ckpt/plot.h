// `ckpt plot`: a run's learning curves as a standalone SVG.
#pragma once

#include <cmath>
#include <string>
#include <vector>

#include "ckpt/manager.h"

namespace ckpt::cli {

// One line of RUNDIR/metrics.jsonl: the results at the end of an epoch.
struct EpochPoint {
  double epoch = 0;  // epochs completed (1, 2, ...)
  double step = 0;
  double train_loss = NAN, val_loss = NAN, train_acc = NAN, val_acc = NAN;
};

// Reads RUNDIR/metrics.jsonl (kNotFound when absent, kCorruption naming the line when damaged).
std::vector<EpochPoint> read_metrics(const std::string& run_dir);

// Two panels — loss and accuracy (%) against epochs — with train and validation series, every
// checkpoint still on disk marked at its position in the run (a triangle at the top of each
// panel) and the best one as a star; titled axes with units, ticks, a legend. Elements carry
// classes and data- attributes (series, checkpoint, best) so tests and tools can read them back.
std::string plot_svg(const std::string& title, const std::vector<EpochPoint>& points,
                     const std::vector<CheckpointRecord>& checkpoints);

}  // namespace ckpt::cli
