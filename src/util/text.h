// Small text helpers shared by the error hints.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace ckpt {

// Levenshtein distance: for "did you mean ...?" hints.
size_t edit_distance(std::string_view a, std::string_view b);

// "1.50 GB", "640 kB", "12 B" (decimal units, as disks are sold).
std::string human_bytes(uint64_t bytes);

}  // namespace ckpt
