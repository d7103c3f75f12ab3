// Small text helpers shared by the error hints.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace ckpt {

// Levenshtein distance: for "did you mean ...?" hints.
size_t edit_distance(std::string_view a, std::string_view b);

// "1.50 GB", "640 kB", "12 B" (decimal units, as disks are sold).
std::string human_bytes(uint64_t bytes);

// A tensor shape as messages and the CLI print it: "[3, 4]", "[]".
std::string shape_text(const std::vector<int64_t>& sizes);

}  // namespace ckpt
