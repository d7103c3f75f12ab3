// `ckpt diff A B`: where two checkpoints differ.
#pragma once

#include <string>

namespace ckpt::cli {

// A and B are files in any format ckpt reads, or run-directory checkpoints: RUNDIR (its latest),
// RUNDIR@latest, RUNDIR@best or RUNDIR@STEP. Returns the exit code: 0 equal (within rtol/atol),
// 1 different. Throws ckpt::Error on bad input.
int diff_command(const std::string& a, const std::string& b, double rtol, double atol, bool json);

// The file a diff argument names (the path itself unless it is a run directory).
std::string resolve_checkpoint(const std::string& arg);

}  // namespace ckpt::cli
