#include "ckpt/checkpoint.h"

#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>

#include "ckpt/tensor.h"

#include "bridge/guard.h"
#include "util/errors.h"

namespace ckpt {

Value TrainingState::to_value() const {
  Value v = Value::new_dict();
  Dict& d = v.dict();
  if (model) d.set(keys.model, state_dict(*model));
  if (optimizer)
    d.set(keys.optimizer, optimizer_state_dict(*optimizer, scheduler ? scheduler->group_extras() : GroupExtras{},
                                               optimizer_layout.from_state_dict() ? optimizer_layout : layout));
  if (scheduler) d.set(keys.scheduler, scheduler->state_dict_as(layout));
  d.set(keys.epoch, epoch);
  d.set(keys.step, step);
  if (rng) d.set(keys.rng, Value(get_rng_state()));
  if (data) d.set(keys.data, data->state_dict());
  d.set(keys.metrics, metrics);
  for (const auto& [name, obj] : objects) d.set(name, obj->state_dict());
  if (extra.is_dict())
    for (const auto& [k, x] : extra.dict()) d.set(k, x);
  return v;
}

void TrainingState::restore(const Value& ck, bool strict) {
  bridge::guard_loader("TrainingState::restore", [&] {
    if (!ck.is_dict()) fail(ErrorKind::kMismatch, "checkpoint is ", ck.kind_name(), ", not a dict");
    auto entry = [&](const std::string& key) -> const Value* {
      if (strict) return &ck.at(key);  // throws kNotFound naming the closest key
      return ck.dict().find(key);
    };
    auto with_context = [](const std::string& key, auto&& f) {
      try {
        f();
      } catch (const Error& e) {
        rethrow_with_context(e, "'" + key + "'");
      }
    };
    if (model)
      if (const Value* v = entry(keys.model)) with_context(keys.model, [&] { load_state_dict(*model, *v, strict); });
    if (optimizer)
      if (const Value* v = entry(keys.optimizer))
        with_context(keys.optimizer, [&] { optimizer_layout = load_optimizer_state_dict(*optimizer, *v); });
    if (scheduler)
      if (const Value* v = entry(keys.scheduler)) with_context(keys.scheduler, [&] { scheduler->load_state_dict(*v); });
    if (scheduler && optimizer)  // as in Python, the restored param_groups' bounds win
      if (const Value* o = ck.dict().find(keys.optimizer); o && o->is_dict())
        if (const Value* groups = o->dict().find("param_groups"))
          with_context(keys.optimizer, [&] { scheduler->load_group_extras(*groups); });
    if (data)
      if (const Value* v = entry(keys.data)) with_context(keys.data, [&] { data->load_state_dict(*v); });
    for (const auto& [name, obj] : objects)
      if (const Value* v = entry(name)) with_context(name, [&, obj = obj] { obj->load_state_dict(*v); });
    if (const Value* v = ck.dict().find(keys.epoch)) epoch = v->to_int();
    if (const Value* v = ck.dict().find(keys.step)) step = v->to_int();
    if (const Value* v = ck.dict().find(keys.metrics)) metrics = *v;
    std::vector<std::string> known = {keys.model, keys.optimizer, keys.scheduler, keys.epoch,
                                      keys.step,  keys.rng,       keys.data,      keys.metrics};
    for (const auto& [name, _] : objects) known.push_back(name);
    extra = Value::new_dict();
    for (const auto& [k, x] : ck.dict())
      if (!k.is_string() || std::find(known.begin(), known.end(), k.to_string()) == known.end()) extra.dict().set(k, x);
    if (rng)
      if (const Value* v = entry(keys.rng)) with_context(keys.rng, [&] { set_rng_state(v->to_tensor()); });
  });
}

void TrainingState::save(const std::string& path, const SaveOptions& options) const {
  ckpt::save(to_value(), path, options);
}

void TrainingState::load(const std::string& path, const LoadOptions& options, bool strict) {
  Value ck = ckpt::load(path, options);
  try {
    restore(ck, strict);
  } catch (const Error& e) {
    rethrow_with_context(e, path);
  }
}

}  // namespace ckpt
