// What ckpt's own layers need of a Value beyond its public API: the identity of its shared node,
// so that writers memoize a shared object once and readers detect sharing and cycles.
#pragma once

#include "ckpt/value.h"

namespace ckpt {

struct ValueAccess {
  // Equal for copies of one container, string, tensor or object Value; null for scalars.
  static const void* node(const Value& v) { return v.node_.get(); }
};

}  // namespace ckpt
