// ckpt_roundtrip IN OUT [--mmap] — loads IN with ckpt::load, turns every tensor into an
// at::Tensor (Value::to_tensor) and back (Value(at::Tensor)), and saves OUT. Used by the
// Python interop tests to drive the LibTorch bridge both ways.
#include <cstring>
#include <iostream>
#include <unordered_map>

#include "ckpt/ckpt.h"
#include "format/value_access.h"

namespace {

using ckpt::ValueAccess;

ckpt::Value rebuild(const ckpt::Value& v, std::unordered_map<const void*, ckpt::Value>& done) {
  using K = ckpt::Value::Kind;
  if (ValueAccess::node(v) != nullptr) {
    auto it = done.find(ValueAccess::node(v));
    if (it != done.end()) return it->second;
  }
  ckpt::Value out;
  switch (v.kind()) {
    case K::kTensor: {
      at::Tensor t = v.to_tensor();
      out = ckpt::Value(t);
      out.tensor().is_parameter = v.tensor().is_parameter;
      break;
    }
    case K::kList:
    case K::kTuple: {
      std::vector<ckpt::Value> items;
      for (const auto& x : v.items()) items.push_back(rebuild(x, done));
      out = v.is_list() ? ckpt::Value::list(items) : ckpt::Value::tuple(items);
      break;
    }
    case K::kDict: {
      ckpt::Dict d(v.dict().flavor());
      for (const auto& [k, x] : v.dict()) d.set(rebuild(k, done), rebuild(x, done));
      d.set_attributes(rebuild(v.dict().attributes(), done));
      out = ckpt::Value(std::move(d));
      break;
    }
    default:
      out = v;
  }
  if (ValueAccess::node(v) != nullptr) done[ValueAccess::node(v)] = out;
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: ckpt_roundtrip IN OUT [--mmap]\n";
    return 2;
  }
  try {
    ckpt::LoadOptions options;
    options.mmap = argc > 3 && std::strcmp(argv[3], "--mmap") == 0;
    ckpt::Value in = ckpt::load(argv[1], options);
    std::unordered_map<const void*, ckpt::Value> done;
    ckpt::save(rebuild(in, done), argv[2]);
  } catch (const std::exception& e) {
    std::cerr << "ckpt_roundtrip: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
