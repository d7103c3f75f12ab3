#include "bridge/optimizer_layout.h"

#include <ATen/ATen.h>

#include <cmath>

#include "ckpt/tensor.h"

namespace ckpt::bridge {

Value conform_value(const Value& fresh, const Value& saved) {
  if (saved.is_int() && fresh.is_float()) {
    double d = fresh.to_double();
    if (std::floor(d) == d && std::fabs(d) < 9.0e15) return Value(static_cast<int64_t>(d));
    return fresh;
  }
  if (saved.is_float() && fresh.is_int()) return Value(static_cast<double>(fresh.to_int()));
  if (saved.is_tensor() && (fresh.is_int() || fresh.is_float() || fresh.is_tensor())) {
    at::Tensor like = saved.to_tensor();
    at::Tensor t = fresh.is_tensor() ? fresh.to_tensor() : at::scalar_tensor(fresh.to_double(), at::kDouble);
    if (t.numel() != 1) return fresh;
    return Value(t.reshape(like.sizes()).to(like.scalar_type()).clone());
  }
  if ((saved.is_int() || saved.is_float()) && fresh.is_tensor() && fresh.tensor().numel() == 1) {
    at::Tensor t = fresh.to_tensor();
    return conform_value(t.is_floating_point() ? Value(t.item<double>()) : Value(t.item<int64_t>()), saved);
  }
  if ((saved.is_list() || saved.is_tuple()) && (fresh.is_list() || fresh.is_tuple()) &&
      saved.items().size() == fresh.items().size()) {
    std::vector<Value> items;
    for (size_t i = 0; i < fresh.items().size(); ++i)
      items.push_back(conform_value(fresh.items()[i], saved.items()[i]));
    return saved.is_list() ? Value::list(std::move(items)) : Value::tuple(std::move(items));
  }
  return fresh;
}

Value conform_dict(const Value& fresh, const Value& saved, const std::set<std::string>& keep_saved,
                   const std::set<std::string>& drop, bool drop_all) {
  Dict out(fresh.dict().flavor());
  for (const auto& [k, v] : saved.dict()) {
    bool keep = k.is_string() && keep_saved.count(k.to_string());
    const Value* f = fresh.dict().find(k);
    out.set(k, f != nullptr && !keep ? conform_value(*f, v) : v);
  }
  for (const auto& [k, v] : fresh.dict()) {
    if (saved.dict().find(k) != nullptr || drop_all) continue;
    if (k.is_string() && drop.count(k.to_string())) continue;
    out.set(k, v);
  }
  return Value(std::move(out));
}

Value reorder_like(const Value& fresh, const Value& saved) {
  Dict out(fresh.dict().flavor());
  for (const auto& [k, _] : saved.dict())
    if (const Value* f = fresh.dict().find(k)) out.set(k, *f);
  for (const auto& [k, v] : fresh.dict())
    if (out.find(k) == nullptr) out.set(k, v);
  return Value(std::move(out));
}

}  // namespace ckpt::bridge
