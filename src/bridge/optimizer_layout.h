// What a loaded optimizer state dict looked like, so that writing it back keeps its layout, and
// the one rule that makes a freshly built dict look like a read one.
#pragma once

#include <set>
#include <string>
#include <vector>

#include "ckpt/training.h"

namespace ckpt {

struct OptimizerLayoutRecord {
  // Each saved param group without 'params': every key in its order, with its value.
  std::vector<Value> groups;
  // The first saved 'step' (None when no state had one): its type and dtype are written back.
  Value step;
  // The first saved entry that holds more than None: its keys' order is written back.
  Value entry;
  // (param id, entry) of entries that hold only None (torch 1.13's SGD {'momentum_buffer': None}).
  std::vector<std::pair<Value, Value>> none_entries;
};

namespace bridge {

// `fresh` (a number, tensor, tuple...) in the form `saved` had: an int stays an int when the
// value is integral, a float a float, a 0-dim tensor a tensor of its dtype, a list a list.
Value conform_value(const Value& fresh, const Value& saved);

// A dict with `saved`'s keys in `saved`'s order. A key both have takes `fresh`'s value (in
// `saved`'s form) unless it is in `keep_saved`, where `saved`'s value stays; a key only `saved`
// has keeps its value; a key only `fresh` has is appended unless it is in `drop` (or `drop_all`).
Value conform_dict(const Value& fresh, const Value& saved, const std::set<std::string>& keep_saved,
                   const std::set<std::string>& drop, bool drop_all = false);

// `fresh` with its keys in the order `saved` has them (keys `saved` lacks follow in their order);
// the values are fresh's.
Value reorder_like(const Value& fresh, const Value& saved);

}  // namespace bridge
}  // namespace ckpt
