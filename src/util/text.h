// Small text helpers shared by the error hints.
#pragma once

#include <cstddef>
#include <string_view>

namespace ckpt {

// Levenshtein distance: for "did you mean ...?" hints.
size_t edit_distance(std::string_view a, std::string_view b);

}  // namespace ckpt
