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

// `s` made fit for a one-line message or a terminal: what a file says (a pickle global, a key,
// a record name, a JSON snippet) may hold any bytes. Valid, printable UTF-8 passes unchanged;
// everything else is spelled in printable ASCII, as a JSON parser's "last read" shows it:
//   \n \r \t                for those three,
//   \xNN                    for other C0 controls, DEL and every byte that is not valid UTF-8
//                           (a stray continuation byte, an overlong form, a surrogate, > U+10FFFF),
//   \u{XXXX}                for code points that print nothing or move the text: C1 controls
//                           (U+0080-U+009F), zero-width and bidi controls (U+200B-U+200F,
//                           U+202A-U+202E, U+2060-U+2069), U+2028/U+2029 and U+FEFF.
// Backslashes stay as they are, so escaping twice changes nothing. When `s` is longer than
// `max_bytes`, only its first `max_bytes` are shown, followed by "...".
std::string printable(std::string_view s, size_t max_bytes = 200);

}  // namespace ckpt
