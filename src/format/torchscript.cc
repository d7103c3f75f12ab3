// TorchScript object trees -> state dicts (see torchscript.h).
#include "format/torchscript.h"

#include <algorithm>
#include <cstdlib>
#include <unordered_map>

#include "format/pickle.h"
#include "util/errors.h"
#include "util/text.h"

namespace ckpt::script {
namespace {

// The quoted names of a `  __parameters__ = ["weight", "bias", ]` line.
std::vector<std::string> quoted_names(const std::string& line) {
  std::vector<std::string> out;
  size_t pos = line.find('[');
  while (pos != std::string::npos) {
    size_t open = line.find('"', pos);
    if (open == std::string::npos) break;
    size_t close = line.find('"', open + 1);
    if (close == std::string::npos) break;
    out.push_back(line.substr(open + 1, close - open - 1));
    pos = close + 1;
  }
  return out;
}

bool is_instance(const Value& v) {
  return v.is_object() && pickle::is_script_type(v.object_type()) && v.object_args().is_dict();
}

const Dict& attrs(const Value& obj) {
  return obj.object_args().dict();
}

// A tensor as state_dict() returns it: detached, not a Parameter (the same storage).
Value plain_tensor(const Value& t) {
  TensorRef r = t.tensor();
  r.requires_grad = false;
  r.is_parameter = false;
  return Value(std::move(r));
}

// Any object left inside a value (an optimizer option of a struct type, say) becomes its dict.
Value plain(const Value& v, int depth) {
  if (depth > 64) fail(ErrorKind::kCorruption, "TorchScript objects nest deeper than 64");
  if (is_instance(v)) {
    Value d = Value::new_dict();
    for (const auto& [k, x] : attrs(v)) d.dict().set(k, plain(x, depth + 1));
    return d;
  }
  if (v.is_list() || v.is_tuple()) {
    std::vector<Value> items;
    for (const auto& x : v.items()) items.push_back(plain(x, depth + 1));
    return v.is_list() ? Value::list(std::move(items)) : Value::tuple(std::move(items));
  }
  return v;
}

const Value& attr(const Value& obj, const std::string& name, const std::string& where) {
  const Value* v = attrs(obj).find(name);
  if (!v) fail(ErrorKind::kCorruption, "TorchScript ", where, " has no attribute '", printable(name), "'");
  return *v;
}

// "name/0", "name/1", ... as LibTorch's OutputArchive writes a list.
std::vector<Value> numbered(const Value& obj, const std::string& name) {
  std::vector<Value> out;
  for (size_t i = 0;; ++i) {
    const Value* v = attrs(obj).find(name + "/" + std::to_string(i));
    if (!v) return out;
    out.push_back(*v);
  }
}

void module_entries(const Value& obj, const std::string& prefix, const Classes& classes, Dict& out, int depth) {
  if (depth > 64) fail(ErrorKind::kCorruption, "TorchScript modules nest deeper than 64");
  const Dict& a = attrs(obj);
  auto cls = classes.find(obj.object_type());
  auto add = [&](const std::string& name) {
    const Value* v = a.find(name);
    if (v && v->is_tensor()) out.set(prefix + name, plain_tensor(*v));  // None (bias=False) is skipped
  };
  if (cls != classes.end()) {
    for (const auto& name : cls->second.parameters) add(name);
    for (const auto& name : cls->second.buffers) add(name);
  } else {  // no declaration (not written by torch): every tensor attribute, in order
    for (const auto& [k, v] : a)
      if (k.is_string() && v.is_tensor()) add(k.to_string());
  }
  for (const auto& [k, v] : a)
    if (k.is_string() && is_instance(v)) module_entries(v, prefix + k.to_string() + ".", classes, out, depth + 1);
}

Value optimizer_state(const Value& root) {
  const Value& groups_obj = attr(root, "param_groups", "optimizer");
  const Value& state_obj = attr(root, "state", "optimizer");
  if (!is_instance(groups_obj) || !is_instance(state_obj))
    fail(ErrorKind::kCorruption, "TorchScript optimizer: 'state' and 'param_groups' are not objects");
  std::unordered_map<std::string, int64_t> index_of;  // parameter address -> Python's index
  std::vector<Value> groups;
  int64_t next = 0;
  for (const Value& g : numbered(groups_obj, "param_groups")) {
    if (!is_instance(g)) fail(ErrorKind::kCorruption, "TorchScript optimizer: a param group is ", g.kind_name());
    Value group = Value::new_dict();
    const Value& options = attr(g, "options", "param group");
    if (!is_instance(options))
      fail(ErrorKind::kCorruption, "TorchScript optimizer: 'options' is ", options.kind_name());
    for (const auto& [k, v] : attrs(options)) group.dict().set(k, plain(v, 0));
    std::vector<Value> params;
    for (const Value& address : numbered(g, "params")) {
      if (!address.is_string())
        fail(ErrorKind::kCorruption, "TorchScript optimizer: a parameter key is ", address.kind_name());
      index_of[address.to_string()] = next;
      params.push_back(next++);
    }
    group.dict().set("params", Value::list(std::move(params)));
    groups.push_back(group);
  }
  std::vector<std::pair<int64_t, Value>> states;
  for (const auto& [k, v] : attrs(state_obj)) {
    auto it = k.is_string() ? index_of.find(k.to_string()) : index_of.end();
    if (it == index_of.end())
      fail(ErrorKind::kCorruption, "TorchScript optimizer: state for ", short_repr(k), ", which no param group lists");
    Value st = plain(v, 0);
    if (!st.is_dict())
      fail(ErrorKind::kCorruption, "TorchScript optimizer: state of ", short_repr(k), " is ", st.kind_name());
    states.emplace_back(it->second, st);
  }
  std::sort(states.begin(), states.end(), [](const auto& x, const auto& y) { return x.first < y.first; });
  Value state = Value::new_dict();
  for (auto& [i, st] : states) state.dict().set(i, st);
  Value sd = Value::new_dict();
  sd.dict().set("state", state);
  sd.dict().set("param_groups", Value::list(std::move(groups)));
  return sd;
}

// torch::save(tensor) and torch::save(std::vector<Tensor>): attributes "0".."n-1", all tensors.
bool is_tensor_list(const Value& root) {
  const Dict& a = attrs(root);
  if (a.empty()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    const auto& [k, v] = a.items()[i];
    if (!k.is_string() || k.to_string() != std::to_string(i) || !v.is_tensor()) return false;
  }
  return true;
}

}  // namespace

void parse_classes(const std::string& path, const std::string& source, Classes* out) {
  std::string module = path;
  std::replace(module.begin(), module.end(), '/', '.');
  std::string current;
  size_t pos = 0;
  while (pos < source.size()) {
    size_t end = source.find('\n', pos);
    if (end == std::string::npos) end = source.size();
    std::string line = source.substr(pos, end - pos);
    pos = end + 1;
    if (line.rfind("class ", 0) == 0) {
      size_t stop = line.find_first_of("(:", 6);
      current = module + "." + line.substr(6, stop == std::string::npos ? std::string::npos : stop - 6);
      (*out)[current];
    } else if (!current.empty() && line.rfind("  __parameters__ = ", 0) == 0) {
      (*out)[current].parameters = quoted_names(line);
    } else if (!current.empty() && line.rfind("  __buffers__ = ", 0) == 0) {
      (*out)[current].buffers = quoted_names(line);
    } else if (!line.empty() && line[0] != ' ') {
      current.clear();  // a top-level def or statement ends the class
    }
  }
}

Value to_state(const Value& root, const Classes& classes) {
  if (!is_instance(root))
    fail(ErrorKind::kCorruption, "TorchScript archive: data.pkl holds ", root.kind_name(), ", not a module");
  const Dict& a = attrs(root);
  if (a.find("param_groups") && a.find("state") && is_instance(*a.find("param_groups"))) return optimizer_state(root);
  if (is_tensor_list(root)) {
    if (a.size() == 1) return plain_tensor(a.items()[0].second);
    std::vector<Value> items;
    for (const auto& [k, v] : a) items.push_back(plain_tensor(v));
    return Value::list(std::move(items));
  }
  Value sd = Value::ordered_dict();
  module_entries(root, "", classes, sd.dict(), 0);
  return sd;
}

}  // namespace ckpt::script
