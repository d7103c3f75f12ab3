// Optimizers <-> Python's optimizer.state_dict(), driven by the table in bridge/optimizers.cc.
#include <torch/optim/optimizer.h>

#include <map>
#include <unordered_map>

#include "bridge/guard.h"
#include "bridge/names.h"
#include "bridge/optimizer_layout.h"
#include "bridge/optimizers.h"
#include "ckpt/tensor.h"
#include "ckpt/training.h"
#include "util/errors.h"
#include "util/text.h"

namespace ckpt {
namespace {

using bridge::GroupKey;
using bridge::OptimizerSpec;
using torch::optim::Optimizer;

std::string key_of(const at::Tensor& p) {
  return c10::guts::to_string(p.unsafeGetTensorImpl());
}

// Runs f, prefixing a ckpt::Error's message with where the value sits.
template <class F>
void at_key(const std::string& where, F&& f) {
  try {
    f();
  } catch (const Error& e) {
    rethrow_with_context(e, where);
  }
}

bool only_none(const Value& entry) {
  if (!entry.is_dict() || entry.dict().empty()) return false;
  for (const auto& [k, v] : entry.dict())
    if (!v.is_none()) return false;
  return true;
}

// A group as LibTorch holds it, in `layout`: its held hyperparameters, the layout's Python
// flags, then the scheduler's extras.
Value fresh_group(const OptimizerSpec& spec, const torch::optim::OptimizerOptions& options, TorchLayout layout,
                  const std::vector<std::pair<std::string, Value>>* extras) {
  Value g = Value::new_dict();
  for (const auto& name : spec.order(layout)) {
    const GroupKey* k = spec.key(name);
    g.dict().set(name, k->held() ? k->get(options) : (layout == TorchLayout::kTorch113 ? k->in_113 : k->in_2));
  }
  if (extras)
    for (const auto& [k, v] : *extras) g.dict().set(k, v);
  return g;
}

// Python-only flags and extras a saved group carries are written back as they were read.
std::set<std::string> python_only_keys(const OptimizerSpec& spec) {
  std::set<std::string> out;
  for (const auto& k : spec.keys)
    if (!k.held()) out.insert(k.name);
  out.insert("param_names");
  return out;
}

void check_group(const OptimizerSpec& spec, const Dict& g, size_t gi) {
  for (const auto& [k, v] : g) {
    if (!k.is_string())
      fail(ErrorKind::kMismatch, "param_groups[", gi, "] has a key of kind ", k.kind_name(), ": ", short_repr(k));
    const std::string& name = k.to_string();
    if (name == "params" || bridge::is_group_extra(name)) continue;
    const GroupKey* key = spec.key(name);
    if (key == nullptr) {
      std::vector<std::string> known;
      for (const auto& x : spec.keys) known.push_back(x.name);
      fail(ErrorKind::kMismatch, "param_groups[", gi, "] has the key '", name, "', which ", spec.name,
           " has in no torch from 1.13 to 2.14 (", spec.name, "'s keys: ", bridge::join(known, 12),
           "); is it the state of another optimizer?");
    }
    if (key->refuse) {
      std::string why = key->refuse(v);
      if (!why.empty()) fail(ErrorKind::kMismatch, "param_groups[", gi, "]: ", why);
    }
  }
  for (const auto& key : spec.keys)
    if (key.held() && g.find(key.name) == nullptr)
      fail(ErrorKind::kMismatch, "param_groups[", gi, "] has no '", key.name, "', which every ", spec.name,
           " group has; is it the state of another optimizer?");
}

}  // namespace

OptimizerLayout OptimizerLayout::of(const Value& sd) {
  auto record = std::make_shared<OptimizerLayoutRecord>();
  if (const Value* groups = sd.is_dict() ? sd.dict().find("param_groups") : nullptr; groups && groups->is_list())
    for (const auto& g : groups->items()) {
      if (!g.is_dict()) continue;
      Dict copy(g.dict().flavor());
      for (const auto& [k, v] : g.dict())
        if (!(k.is_string() && k.to_string() == "params")) copy.set(k, v);
      record->groups.push_back(Value(std::move(copy)));
    }
  if (const Value* state = sd.is_dict() ? sd.dict().find("state") : nullptr; state && state->is_dict())
    for (const auto& [id, entry] : state->dict()) {
      if (only_none(entry)) {
        record->none_entries.emplace_back(id, entry);
      } else if (entry.is_dict() && record->entry.is_none()) {
        Dict keys;  // the order and the scalars' types: no tensor of the file is held
        for (const auto& [k, v] : entry.dict()) keys.set(k, v.is_int() || v.is_float() ? v : Value());
        record->entry = Value(std::move(keys));
        if (const Value* step = entry.dict().find("step"))
          record->step = step->is_tensor() ? Value(step->to_tensor().clone()) : *step;
      }
    }
  OptimizerLayout layout(TorchLayout::kTorch2);
  layout.record_ = std::move(record);
  return layout;
}

Value optimizer_state_dict(const Optimizer& optimizer, const GroupExtras& extras, const OptimizerLayout& layout) {
  const OptimizerSpec& spec = bridge::optimizer_spec(optimizer);
  const OptimizerLayoutRecord* record = layout.record();
  TorchLayout base = layout.layout();
  const std::set<std::string> keep_saved = python_only_keys(spec);

  std::map<int64_t, Value> entries;  // by parameter index, as Python numbers them
  std::vector<Value> groups;
  int64_t index = 0;
  const auto& all = optimizer.state();
  for (size_t gi = 0; gi < optimizer.param_groups().size(); ++gi) {
    const auto& group = optimizer.param_groups()[gi];
    Value g = fresh_group(spec, group.options(), base, gi < extras.size() ? &extras[gi] : nullptr);
    if (record && gi < record->groups.size()) {
      // Keys of another layout that the saved group lacks are left out; extras are kept.
      std::set<std::string> drop;
      for (const auto& k : spec.keys) drop.insert(k.name);
      g = bridge::conform_dict(g, record->groups[gi], keep_saved, drop);
    }
    std::vector<Value> params;
    for (const auto& p : group.params()) {
      auto it = all.find(key_of(p));
      if (it != all.end()) {
        Value entry = spec.save_state(*it->second, base);
        if (record && !record->step.is_none())
          if (Value* step = entry.dict().find("step")) *step = bridge::conform_value(*step, record->step);
        if (record && record->entry.is_dict()) {
          entry = bridge::reorder_like(entry, record->entry);
          for (const auto& [k, saved] : record->entry.dict())  // LBFGS's t: an int when lr was
            if (Value* v = entry.dict().find(k);
                v && (saved.is_int() || saved.is_float()) && (v->is_int() || v->is_float()))
              *v = bridge::conform_value(*v, saved);
        }
        entries[index] = entry;
      }
      params.push_back(index++);
    }
    g.dict().set("params", Value::list(params));
    groups.push_back(g);
  }
  if (record)  // torch 1.13's {'momentum_buffer': None} entries, where LibTorch keeps nothing
    for (const auto& [id, entry] : record->none_entries)
      if (id.is_int() && id.to_int() >= 0 && id.to_int() < index && !entries.count(id.to_int()))
        entries[id.to_int()] = entry;
  Value state = Value::new_dict();
  for (auto& [i, entry] : entries) state.dict().set(i, entry);
  Value sd = Value::new_dict();
  sd.dict().set("state", state);
  sd.dict().set("param_groups", Value::list(groups));
  return sd;
}

OptimizerLayout load_optimizer_state_dict(Optimizer& optimizer, const Value& sd) {
  return bridge::guard_loader("load_optimizer_state_dict", [&] {
    try {
      const OptimizerSpec& spec = bridge::optimizer_spec(optimizer);
      if (!sd.is_dict() || !sd.contains("param_groups") || !sd.contains("state"))
        fail(ErrorKind::kMismatch, "expected {'state': ..., 'param_groups': ...}",
             sd.is_dict() ? str_cat(" but the dict has ", sd.dict().size(), " other keys; ") : std::string(""),
             sd.is_dict() && sd.dict().size() ? "first is " + short_repr(sd.dict().items()[0].first) : "");
      const Value& saved_groups_v = sd["param_groups"];
      if (!saved_groups_v.is_list() && !saved_groups_v.is_tuple())
        fail(ErrorKind::kMismatch, "'param_groups' is ", saved_groups_v.kind_name(), ", not a list");
      const auto& saved_groups = saved_groups_v.items();
      auto& groups = optimizer.param_groups();
      if (saved_groups.size() != groups.size())
        fail(ErrorKind::kMismatch, "the checkpoint has ", saved_groups.size(), " parameter groups but the ", spec.name,
             " optimizer has ", groups.size());
      // Python's load_state_dict maps saved ids to parameters positionally, group by group.
      std::unordered_map<int64_t, at::Tensor> by_id;
      for (size_t gi = 0; gi < groups.size(); ++gi) {
        if (!saved_groups[gi].is_dict())
          fail(ErrorKind::kMismatch, "param_groups[", gi, "] is ", saved_groups[gi].kind_name(), ", not a dict");
        check_group(spec, saved_groups[gi].dict(), gi);
        const Value& ids_v = saved_groups[gi]["params"];
        if (!ids_v.is_list()) fail(ErrorKind::kMismatch, "param_groups[", gi, "]['params'] is ", ids_v.kind_name());
        const auto& ids = ids_v.items();
        if (ids.size() != groups[gi].params().size())
          fail(ErrorKind::kMismatch, "parameter group ", gi, " has ", ids.size(), " parameters in the checkpoint but ",
               groups[gi].params().size(), " in the optimizer");
        for (size_t j = 0; j < ids.size(); ++j) by_id[ids[j].to_int()] = groups[gi].params()[j];
      }
      // Parse everything before changing anything: a bad key leaves the optimizer as it was.
      std::vector<std::unique_ptr<torch::optim::OptimizerOptions>> options;
      for (size_t gi = 0; gi < groups.size(); ++gi) {
        options.push_back(groups[gi].options().clone());
        for (const auto& key : spec.keys)
          if (key.held())
            at_key(str_cat("param_groups[", gi, "]"), [&] { key.set(*options.back(), saved_groups[gi][key.name]); });
      }
      const Value& state_v = sd["state"];
      if (!state_v.is_dict()) fail(ErrorKind::kMismatch, "'state' is ", state_v.kind_name(), ", not a dict");
      std::vector<std::pair<std::string, std::unique_ptr<torch::optim::OptimizerParamState>>> states;
      for (const auto& [k, v] : state_v.dict()) {
        auto it = k.is_int() ? by_id.find(k.to_int()) : by_id.end();
        if (it == by_id.end()) fail(ErrorKind::kMismatch, "state for unknown parameter ", short_repr(k));
        if (!v.is_dict())
          fail(ErrorKind::kMismatch, "state of parameter ", short_repr(k), " is ", v.kind_name(), ", not a dict");
        for (const auto& [sk, _] : v.dict())
          if (!sk.is_string() ||
              std::find(spec.state_keys.begin(), spec.state_keys.end(), sk.to_string()) == spec.state_keys.end())
            fail(ErrorKind::kMismatch, "state of parameter ", short_repr(k), " has the key ", short_repr(sk),
                 ", which ", spec.name, " never keeps (", bridge::join(spec.state_keys, 12), ")");
        at_key(str_cat("state[", short_repr(k), "]"), [&, &k = k, &v = v] {
          if (auto ps = spec.load_state(v.dict(), it->second)) states.emplace_back(key_of(it->second), std::move(ps));
        });
      }
      for (size_t gi = 0; gi < groups.size(); ++gi) groups[gi].set_options(std::move(options[gi]));
      auto& state = optimizer.state();
      state.clear();
      for (auto& [key, ps] : states) state[key] = std::move(ps);
      return OptimizerLayout::of(sd);
    } catch (const Error& e) {
      rethrow_with_context(e, "load_optimizer_state_dict");
    }
  });
}

}  // namespace ckpt
