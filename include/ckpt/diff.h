// ckpt/diff.h — are two checkpoints the same, and if not, where do they differ?
//
//   ckpt::LoadOptions lazy;  lazy.mmap = true;                 // compare without copying either
//   ckpt::DiffReport r = ckpt::diff(ckpt::load("a.pt", lazy), ckpt::load("b.safetensors", lazy));
//   if (!r.equal()) for (const auto& d : r.entries) std::cout << d.path << "\n";
//
// The trees are walked together: dict keys in A's order (then those only in B), list items by
// index. Reported: keys only in A or only in B, a change of kind (int vs str), of dtype or shape,
// a scalar that changed, and for tensors of equal shape (whatever their dtypes) how many elements
// differ with the largest absolute and relative difference. Elements a and b differ when
// |a - b| > atol + rtol * |b| (numpy.isclose's rule; with both 0, any change); two NaNs in one place
// count as equal. The relative difference is |a - b| / |b| (infinite where b is 0 and a is not).
// Floats that are not tensors follow the same rule. Any format ckpt reads can be compared with
// any other (a .pt with a safetensors file, say).
// Thread safety: diff() only reads its arguments; a ProgressFn runs on the calling thread.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "ckpt/serialize.h"
#include "ckpt/value.h"

namespace ckpt {

struct DiffOptions {
  double rtol = 0;
  double atol = 0;
  ProgressFn progress;  // tensor bytes compared so far, of the total
};

struct DiffEntry {
  enum class Kind { kOnlyInA, kOnlyInB, kKind, kDType, kShape, kValue, kTensor };
  Kind kind;
  std::string path;  // "model_state/fc.weight"; "" for the root
  std::string a, b;  // what each side holds there: "float32 [3, 4]", "int 3", ...
  // Element comparison (kTensor, and kDType when the shapes agree).
  uint64_t numel = 0;
  uint64_t differing = 0;
  double max_abs = 0;
  double max_rel = 0;
};

// "only_in_a", "only_in_b", "kind", "dtype", "shape", "value", "tensor".
const char* to_string(DiffEntry::Kind kind);

struct DiffReport {
  std::vector<DiffEntry> entries;
  uint64_t tensors_compared = 0;
  uint64_t elements_compared = 0;
  bool equal() const { return entries.empty(); }
};

DiffReport diff(const Value& a, const Value& b, const DiffOptions& options = {});

}  // namespace ckpt
