// _ckpt — the C++ half of the Python package `ckpt` (python/ckpt/__init__.py is the other).
//
// Python objects become ckpt::Values (and back) here, with the GIL held; the reading, writing,
// verifying and the run manager then run with the GIL released, so other Python threads go on.
// torch.Tensor <-> at::Tensor passes without copies: Debian's Python torch and this module use
// the same system LibTorch. Errors leave as _ckpt.NativeError("kind\x1fmessage"); the Python
// layer raises the matching ckpt.Error subclass.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <torch/csrc/autograd/python_variable.h>

#include <memory>
#include <unordered_map>
#include <unordered_set>

#include "bridge/tensor.h"
#include "ckpt/async.h"
#include "ckpt/ckpt.h"
#include "ckpt/distributed_files.h"
#include "ckpt/manager.h"
#ifdef CKPT_WITH_DIST
#include <torch/csrc/utils/pybind.h>  // c10::intrusive_ptr holders: torch.distributed's ProcessGroup

#include "ckpt/distributed.h"
#endif
#include "format/archive.h"
#include "format/value_access.h"

namespace py = pybind11;
using ckpt::Value;
using ckpt::ValueAccess;

namespace {

struct NativeError : std::exception {
  std::string what_;
  explicit NativeError(const ckpt::Error& e) : what_(std::string(ckpt::to_string(e.kind())) + "\x1f" + e.what()) {}
  const char* what() const noexcept override { return what_.c_str(); }
};

template <class F>
auto translating(F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const ckpt::Error& e) {
    throw NativeError(e);
  }
}

// The Python types a checkpoint may hold, looked up once.
struct Types {
  py::object tensor, parameter, dtype, device, size, ordered_dict, counter;
  static const Types& get() {
    static Types* t = [] {
      auto* types = new Types;
      py::module_ torch = py::module_::import("torch");
      py::module_ collections = py::module_::import("collections");
      types->tensor = torch.attr("Tensor");
      types->parameter = torch.attr("nn").attr("Parameter");
      types->dtype = torch.attr("dtype");
      types->device = torch.attr("device");
      types->size = torch.attr("Size");
      types->ordered_dict = collections.attr("OrderedDict");
      types->counter = collections.attr("Counter");
      return types;
    }();
    return *t;
  }
};

// --- Python -> Value --------------------------------------------------------------------------------

class ToValue {
 public:
  // With marker classes (ckpt.distributed.Shard and PerRank): their objects become the
  // dist::shard() / dist::per_rank() markers of a distributed state.
  ToValue() = default;
  ToValue(py::object shard_cls, py::object per_rank_cls)
      : shard_cls_(std::move(shard_cls)), per_rank_cls_(std::move(per_rank_cls)) {}

  Value convert(py::handle obj, const std::string& where, int depth = 0) {
    if (depth > 900) throw py::value_error(where + ": nested too deeply to save");
    const Types& T = Types::get();
    if (obj.is_none()) return Value();
#ifdef CKPT_WITH_DIST
    if (shard_cls_ && py::isinstance(obj, shard_cls_)) {
      py::object local = obj.attr("local");
      if (!THPVariable_Check(local.ptr())) throw py::type_error(where + ": Shard.local is not a tensor");
      return translating([&] {
        return ckpt::dist::shard(THPVariable_Unpack(local.ptr()), obj.attr("offsets").cast<std::vector<int64_t>>(),
                                 obj.attr("global_shape").cast<std::vector<int64_t>>());
      });
    }
    if (per_rank_cls_ && py::isinstance(obj, per_rank_cls_))
      return ckpt::dist::per_rank(convert(obj.attr("value"), where, depth + 1));
#endif
    if (PyBool_Check(obj.ptr())) return Value(obj.ptr() == Py_True);
    if (PyLong_CheckExact(obj.ptr()) || (PyLong_Check(obj.ptr()) && !PyBool_Check(obj.ptr()))) return integer(obj);
    if (PyFloat_Check(obj.ptr())) return Value(PyFloat_AsDouble(obj.ptr()));
    if (PyUnicode_Check(obj.ptr())) return Value(obj.cast<std::string>());
    if (PyBytes_Check(obj.ptr())) return Value::bytes(obj.cast<std::string>());
    if (PyByteArray_Check(obj.ptr()))
      return Value::object(
          "builtins.bytearray",
          Value::tuple({Value::bytes(py::bytes(py::reinterpret_borrow<py::object>(obj)).cast<std::string>())}));
    if (PyComplex_Check(obj.ptr()))
      return Value::object("builtins.complex", Value::tuple({Value(PyComplex_RealAsDouble(obj.ptr())),
                                                             Value(PyComplex_ImagAsDouble(obj.ptr()))}));
    if (THPVariable_Check(obj.ptr())) {
      at::Tensor t = THPVariable_Unpack(obj.ptr());
      Value v = translating([&] { return Value(t); });
      if (py::isinstance(obj, T.parameter)) {
        ckpt::TensorRef ref = v.tensor();
        ref.is_parameter = true;
        v = Value(std::move(ref));
      }
      return v;
    }
    if (py::isinstance(obj, T.dtype)) return Value::object(py::str(obj).cast<std::string>());  // "torch.float32"
    if (py::isinstance(obj, T.device)) {
      py::object index = obj.attr("index");
      std::string type = obj.attr("type").cast<std::string>();
      return Value::object("torch.device",
                           index.is_none() ? Value::tuple({Value(type)}) : Value::tuple({Value(type), integer(index)}));
    }
    if (py::isinstance(obj, T.size)) {
      std::vector<Value> dims;
      for (py::handle d : obj) dims.push_back(integer(d));
      return Value::object("torch.Size", Value::tuple({Value::tuple(dims)}));
    }
    if (PyDict_Check(obj.ptr())) return dict(obj, where, depth);
    if (PyList_Check(obj.ptr()) || PyTuple_Check(obj.ptr())) {
      Guard g(this, obj, where);
      std::vector<Value> items;
      size_t i = 0;
      for (py::handle x : obj) items.push_back(convert(x, where + "[" + std::to_string(i++) + "]", depth + 1));
      return PyTuple_Check(obj.ptr()) ? Value::tuple(std::move(items)) : Value::list(std::move(items));
    }
    if (PyAnySet_Check(obj.ptr())) {
      Guard g(this, obj, where);
      std::vector<Value> items;
      for (py::handle x : obj) items.push_back(convert(x, where + "{...}", depth + 1));
      return Value::object(PyFrozenSet_Check(obj.ptr()) ? "builtins.frozenset" : "builtins.set",
                           Value::tuple({Value::list(std::move(items))}));
    }
    std::string type = py::str(py::type::handle_of(obj).attr("__qualname__")).cast<std::string>();
    throw py::type_error(where + ": cannot save a '" + type + "' safely");
  }

 private:
  py::object shard_cls_, per_rank_cls_;
  std::unordered_set<PyObject*> open_;  // containers on the current path: a cycle is refused

  struct Guard {
    ToValue* self;
    PyObject* obj;
    Guard(ToValue* s, py::handle o, const std::string& where) : self(s), obj(o.ptr()) {
      if (!self->open_.insert(obj).second) throw py::value_error(where + ": refers to itself (a cycle)");
    }
    ~Guard() { self->open_.erase(obj); }
  };

  static Value integer(py::handle obj) {
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(obj.ptr(), &overflow);
    if (!overflow) return Value(v);
    // Any size: little-endian two's complement, as pickle's LONG1 stores it.
    size_t bits = py::reinterpret_borrow<py::int_>(obj).attr("bit_length")().cast<size_t>();
    py::bytes le =
        py::reinterpret_borrow<py::int_>(obj).attr("to_bytes")(bits / 8 + 1, "little", py::arg("signed") = true);
    return Value::big_int(le.cast<std::string>());
  }

  Value dict(py::handle obj, const std::string& where, int depth) {
    const Types& T = Types::get();
    Guard g(this, obj, where);
    ckpt::Dict::Flavor flavor = py::isinstance(obj, T.ordered_dict) ? ckpt::Dict::Flavor::kOrderedDict
                                : py::isinstance(obj, T.counter)    ? ckpt::Dict::Flavor::kCounter
                                                                    : ckpt::Dict::Flavor::kDict;
    Value out = Value(ckpt::Dict(flavor));
    for (auto [k, v] : py::reinterpret_borrow<py::dict>(obj)) {
      std::string key_text = py::repr(k).cast<std::string>();
      Value key = convert(k, where + "[" + key_text + "] (key)", depth + 1);
      out.dict().set(key, convert(v, where + "[" + key_text + "]", depth + 1));
    }
    if (flavor == ckpt::Dict::Flavor::kOrderedDict && py::hasattr(obj, "_metadata")) {  // state_dict()'s
      Value attrs = Value::new_dict();
      attrs.dict().set("_metadata", convert(obj.attr("_metadata"), where + "._metadata", depth + 1));
      out.dict().set_attributes(attrs);
    }
    return out;
  }
};

// --- Value -> Python --------------------------------------------------------------------------------

class ToPython {
 public:
  explicit ToPython(py::object map_location) : map_location_(std::move(map_location)) {}

  py::object convert(const Value& v) {
    if (ValueAccess::node(v) != nullptr && (v.is_list() || v.is_tuple() || v.is_dict() || v.is_tensor())) {
      auto it = seen_.find(ValueAccess::node(v));
      if (it != seen_.end()) return it->second;  // the same object, as pickle's memo makes it
      py::object out = fresh(v);
      seen_.emplace(ValueAccess::node(v), out);
      return out;
    }
    return fresh(v);
  }

 private:
  py::object map_location_;
  ckpt::StorageMemo storages_;
  std::unordered_map<const void*, py::object> seen_;

  py::object fresh(const Value& v) {
    const Types& T = Types::get();
    switch (v.kind()) {
      case Value::Kind::kNone:
        return py::none();
      case Value::Kind::kBool:
        return py::bool_(v.to_bool());
      case Value::Kind::kInt:
        return py::int_(v.to_int());
      case Value::Kind::kBigInt:
        return py::module_::import("builtins")
            .attr("int")
            .attr("from_bytes")(py::bytes(v.big_int_bytes()), "little", py::arg("signed") = true);
      case Value::Kind::kFloat:
        return py::float_(v.to_double());
      case Value::Kind::kString:
        return py::str(v.to_string());
      case Value::Kind::kBytes:
        return py::bytes(v.to_bytes());
      case Value::Kind::kList: {
        py::list out;
        for (const auto& x : v.items()) out.append(convert(x));
        return std::move(out);
      }
      case Value::Kind::kTuple: {
        py::tuple out(v.items().size());
        for (size_t i = 0; i < v.items().size(); ++i) out[i] = convert(v.items()[i]);
        return std::move(out);
      }
      case Value::Kind::kDict: {
        const ckpt::Dict& d = v.dict();
        py::object out = d.flavor() == ckpt::Dict::Flavor::kOrderedDict ? T.ordered_dict()
                         : d.flavor() == ckpt::Dict::Flavor::kCounter   ? T.counter()
                                                                        : py::object(py::dict());
        for (const auto& [k, x] : d) out[convert(k)] = convert(x);
        if (d.attributes().is_dict())
          for (const auto& [k, x] : d.attributes().dict()) py::setattr(out, convert(k), convert(x));
        return out;
      }
      case Value::Kind::kTensor: {
        const ckpt::TensorRef& r = v.tensor();
        at::Tensor t = ckpt::to_tensor(r, &storages_);
        py::object out = py::reinterpret_steal<py::object>(THPVariable_Wrap(t));
        if (!map_location_.is_none()) out = out.attr("to")(map_location_);
        if (r.is_parameter) out = T.parameter(out, py::arg("requires_grad") = r.requires_grad);
        return out;
      }
      case Value::Kind::kObject:
        return object(v);
    }
    return py::none();
  }

  py::object object(const Value& v) {
    const std::string& type = v.object_type();
    const Value& args = v.object_args();
    auto arg = [&](size_t i) { return convert(args.items().at(i)); };
    py::module_ torch = py::module_::import("torch");
    if (type == "torch.Size") return Types::get().size(arg(0));
    if (type == "torch.device") {
      py::tuple a(args.items().size());
      for (size_t i = 0; i < args.items().size(); ++i) a[i] = arg(i);
      return Types::get().device(*a);
    }
    if (type == "builtins.complex")
      return py::reinterpret_steal<py::object>(PyComplex_FromDoubles(
          args.items().at(0).to_double(), args.items().size() > 1 ? args.items()[1].to_double() : 0));
    if (type == "builtins.set") return py::set(arg(0));
    if (type == "builtins.frozenset") return py::reinterpret_steal<py::object>(PyFrozenSet_New(arg(0).ptr()));
    if (type == "builtins.bytearray") return py::module_::import("builtins").attr("bytearray")(arg(0));
    if (type.rfind("torch.", 0) == 0 && !args.is_tuple()) {  // a dtype such as torch.float16
      std::string name = type.substr(6);
      if (py::hasattr(torch, name.c_str()) && py::isinstance(torch.attr(name.c_str()), Types::get().dtype))
        return torch.attr(name.c_str());
    }
    if (type == "torch.serialization._get_layout") return torch.attr("strided");
    throw NativeError(ckpt::Error(ckpt::ErrorKind::kUnsupported, "cannot rebuild a '" + type + "' in Python"));
  }
};

// --- the module's functions ---------------------------------------------------------------------------

ckpt::LoadOptions load_options(bool mmap, bool verify) {
  ckpt::LoadOptions o;
  o.mmap = mmap;
  o.verify_checksums = verify;
  return o;
}

void save_path(py::handle obj, const std::string& path, bool durable) {
  Value v = ToValue().convert(obj, "obj");
  py::gil_scoped_release release;
  translating([&] {
    ckpt::SaveOptions o;
    o.durable = durable;
    ckpt::save(v, path, o);
  });
}

py::bytes save_bytes(py::handle obj) {
  Value v = ToValue().convert(obj, "obj");
  std::string bytes;
  {
    py::gil_scoped_release release;
    bytes = translating([&] { return ckpt::save_to_bytes(v); });
  }
  return py::bytes(bytes);
}

py::object load_path(const std::string& path, py::object map_location, bool mmap, bool verify) {
  Value v;
  {
    py::gil_scoped_release release;
    v = translating([&] {
      // A distributed checkpoint directory: its shards joined, per-rank entries a list by rank.
      if (ckpt::dist::is_distributed_checkpoint(path)) return ckpt::dist::consolidate(path, load_options(false, verify));
      return ckpt::load(path, load_options(mmap, verify));
    });
  }
  return translating([&] { return ToPython(std::move(map_location)).convert(v); });
}

py::object load_bytes(std::string bytes, const std::string& name, py::object map_location, bool verify) {
  Value v;
  {
    py::gil_scoped_release release;
    v = translating([&] {
      return ckpt::format::read_archive(ckpt::io::memory_file(std::move(bytes), name), load_options(false, verify));
    });
  }
  return translating([&] { return ToPython(std::move(map_location)).convert(v); });
}

py::dict verify_path(const std::string& path) {
  ckpt::VerifyReport r;
  {
    py::gil_scoped_release release;
    r = translating([&] { return ckpt::verify(path); });
  }
  py::list records;
  size_t checked = 0;
  for (const auto& rec : r.records) {
    checked += rec.crc_checked;
    records.append(py::dict(py::arg("name") = rec.name, py::arg("offset") = rec.offset, py::arg("size") = rec.size,
                            py::arg("crc32") = rec.crc32, py::arg("crc_checked") = rec.crc_checked));
  }
  return py::dict(py::arg("path") = path, py::arg("format") = r.format, py::arg("bytes") = r.file_size,
                  py::arg("records") = records, py::arg("crc_checked") = checked, py::arg("tensors") = r.tensors,
                  py::arg("storages") = r.storages, py::arg("tensor_bytes") = r.tensor_bytes);
}

class PyAsyncSaver {
 public:
  explicit PyAsyncSaver(size_t max_in_flight) : saver_(max_in_flight) {}
  void save(py::handle obj, const std::string& path, bool durable) {
    Value v = ToValue().convert(obj, "obj");
    py::gil_scoped_release release;  // the snapshot copy happens inside, before save() returns
    translating([&] {
      ckpt::SaveOptions o;
      o.durable = durable;
      saver_.save(v, path, o);
    });
  }
  void wait() {
    py::gil_scoped_release release;
    translating([&] { saver_.wait(); });
  }
  size_t pending() const { return saver_.pending(); }

 private:
  ckpt::AsyncSaver saver_;
};

py::dict record_dict(const ckpt::CheckpointRecord& r) {
  return py::dict(py::arg("path") = r.path, py::arg("file") = r.file, py::arg("epoch") = r.epoch,
                  py::arg("step") = r.step, py::arg("metrics") = r.metrics, py::arg("bytes") = r.bytes,
                  py::arg("time") = r.unix_time, py::arg("latest") = r.latest, py::arg("best") = r.best,
                  py::arg("damaged") = r.damaged.empty() ? py::object(py::none()) : py::object(py::str(r.damaged)));
}

class PyManager {
 public:
  PyManager(const std::string& dir, const py::dict& o) {
    ckpt::ManagerOptions opt;
    auto get = [&](const char* k, auto def) { return o.contains(k) ? o[k].cast<decltype(def)>() : def; };
    opt.save_every_steps = get("save_every_steps", int64_t{0});
    opt.save_every_epochs = get("save_every_epochs", int64_t{0});
    opt.save_every_minutes = get("save_every_minutes", 0.0);
    opt.keep_last = get("keep_last", 0);
    opt.keep_best = get("keep_best", 0);
    opt.monitor = get("monitor", std::string());
    opt.mode = get("mode", std::string("min")) == "max" ? ckpt::Mode::kMax : ckpt::Mode::kMin;
    opt.keep_every_epochs = get("keep_every_epochs", int64_t{0});
    opt.keep_every_steps = get("keep_every_steps", int64_t{0});
    opt.keep_every_minutes = get("keep_every_minutes", 0.0);
    opt.name_template = get("name_template", opt.name_template);
    opt.model_key = get("model_key", opt.model_key);
    opt.async = get("async_", false);
    opt.max_in_flight = get("max_in_flight", size_t{1});
    opt.durable = get("durable", true);
    opt.handle_preemption = get("handle_preemption", false);
    if (o.contains("warn")) {
      // The manager copies and destroys its options without the GIL: the callback holds a plain
      // pointer to the Python callable, which this object owns and outlives the manager with.
      warn_ = o["warn"];
      PyObject* warn = warn_.ptr();
      opt.warn = [warn](const std::string& w) {
        py::gil_scoped_acquire gil;
        try {
          py::handle callable(warn);
          callable(w);
        } catch (py::error_already_set& e) {
          e.discard_as_unraisable("ckpt warning callback");
        }
      };
    }
    py::gil_scoped_release release;
    manager_ = translating([&] { return std::make_unique<ckpt::CheckpointManager>(dir, opt); });
  }
  ~PyManager() { close(); }
  // Waits for background saves (their errors are printed, as the C++ destructor does) and
  // releases the run directory's lock.
  void close() {
    py::gil_scoped_release release;  // a background commit may call `warn`, which takes the GIL
    manager_.reset();
  }
  ckpt::CheckpointManager& m() {
    if (!manager_) throw NativeError(ckpt::Error(ckpt::ErrorKind::kInvalidArgument, "the CheckpointManager is closed"));
    return *manager_;
  }

  bool save(py::handle obj, int64_t step, int64_t epoch, const std::map<std::string, double>& metrics) {
    Value v = ToValue().convert(obj, "state");
    py::gil_scoped_release release;
    return translating([&] { return m().save(v, step, epoch, metrics); });
  }
  bool should_save(int64_t step) { return m().should_save_step(step); }
  bool preemption_requested() { return m().preemption_requested(); }

  py::tuple load(const std::string& which, py::object map_location) {
    ckpt::RestoreResult r;
    {
      py::gil_scoped_release release;
      r = translating([&] { return m().load(ckpt::ResumeFrom::parse(which)); });
    }
    py::object state = r.restored ? translating([&] { return ToPython(std::move(map_location)).convert(r.checkpoint); })
                                  : py::object(py::none());
    return py::make_tuple(state, r.restored ? py::object(record_dict(r.record)) : py::object(py::none()), r.skipped);
  }
  void wait() {
    py::gil_scoped_release release;
    translating([&] { m().wait(); });
  }
  py::list checkpoints() {
    // Without the GIL: a background commit holds the manager's lock while it may call `warn`,
    // which needs the GIL.
    std::vector<ckpt::CheckpointRecord> records;
    {
      ckpt::CheckpointManager& manager = m();
      py::gil_scoped_release release;
      records = manager.checkpoints();
    }
    py::list out;
    for (const auto& r : records) out.append(record_dict(r));
    return out;
  }

 private:
  py::object warn_;  // destroyed after manager_, with the GIL
  std::unique_ptr<ckpt::CheckpointManager> manager_;
};

#ifdef CKPT_WITH_DIST
// --- ckpt.distributed: the process group is torch.distributed's own (a c10d::ProcessGroup) -----

c10::intrusive_ptr<c10d::ProcessGroup> group_of(py::handle group) {
  try {
    return group.cast<c10::intrusive_ptr<c10d::ProcessGroup>>();
  } catch (const py::cast_error&) {
    throw py::type_error("group: not a torch.distributed ProcessGroup");
  }
}

// Shard markers become None, so the rest converts back to Python (the shards' tensors are the
// caller's, filled in place).
void drop_markers(Value& v) {
  if (ckpt::dist::is_shard(v) || ckpt::dist::is_per_rank(v)) {
    v = Value();
  } else if (v.is_dict()) {
    for (auto& item : const_cast<std::vector<ckpt::Dict::Item>&>(v.dict().items())) drop_markers(item.second);
  } else if (v.is_list() || v.is_tuple()) {
    for (auto& x : v.items()) drop_markers(x);
  }
}

py::dict dist_save(py::handle state, const std::string& path, py::handle group, py::object shard_cls,
                   py::object per_rank_cls, double timeout_s, bool durable) {
  auto pg = group_of(group);
  Value v = ToValue(std::move(shard_cls), std::move(per_rank_cls)).convert(state, "state_dict");
  ckpt::dist::SaveOptions so;
  so.timeout = std::chrono::milliseconds(int64_t(timeout_s * 1000));
  so.durable = durable;
  ckpt::dist::SaveResult r;
  {
    py::gil_scoped_release release;
    r = translating([&] { return ckpt::dist::save(v, path, *pg, so); });
  }
  py::dict out;
  out["path"] = r.dir;
  out["bytes_this_rank"] = r.bytes_this_rank;
  out["metadata_bytes"] = r.metadata_bytes;
  return out;
}

py::tuple dist_load(py::handle state, const std::string& path, py::handle group, py::object shard_cls,
                    py::object per_rank_cls, double timeout_s, bool strict) {
  auto pg = group_of(group);
  Value v = ToValue(std::move(shard_cls), std::move(per_rank_cls)).convert(state, "state_dict");
  ckpt::dist::LoadOptions lo;
  lo.timeout = std::chrono::milliseconds(int64_t(timeout_s * 1000));
  lo.strict = strict;
  ckpt::dist::LoadResult r;
  {
    py::gil_scoped_release release;
    r = translating([&] { return ckpt::dist::load(v, path, *pg, lo); });
  }
  drop_markers(v);
  py::object loaded = translating([&] { return ToPython(py::none()).convert(v); });
  py::dict per_rank;
  for (auto& [key, values] : r.per_rank) {
    py::list by_rank;
    for (auto& x : values) by_rank.append(translating([&] { return ToPython(py::none()).convert(x); }));
    per_rank[py::str(key)] = by_rank;
  }
  return py::make_tuple(loaded, r.saved_world_size, per_rank);
}
#endif

}  // namespace

PYBIND11_MODULE(_ckpt, m) {
  m.doc() = "The C++ core of the ckpt package (use `import ckpt`).";
  static py::exception<NativeError> native(m, "NativeError");
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const NativeError& e) {
      native(e.what());
    }
  });
  m.def("save_path", &save_path, py::arg("obj"), py::arg("path"), py::arg("durable") = true);
  m.def("save_bytes", &save_bytes, py::arg("obj"));
  m.def("load_path", &load_path, py::arg("path"), py::arg("map_location"), py::arg("mmap"), py::arg("verify"));
  m.def("load_bytes", &load_bytes, py::arg("data"), py::arg("name"), py::arg("map_location"), py::arg("verify"));
  m.def("verify_path", &verify_path, py::arg("path"));
#ifdef CKPT_WITH_DIST
  m.def("dist_save", &dist_save, py::arg("state"), py::arg("path"), py::arg("group"), py::arg("shard_cls"),
        py::arg("per_rank_cls"), py::arg("timeout_s"), py::arg("durable"));
  m.def("dist_load", &dist_load, py::arg("state"), py::arg("path"), py::arg("group"), py::arg("shard_cls"),
        py::arg("per_rank_cls"), py::arg("timeout_s"), py::arg("strict"));
  m.attr("has_distributed") = true;
#else
  m.attr("has_distributed") = false;
#endif
  py::class_<PyAsyncSaver>(m, "AsyncSaver")
      .def(py::init<size_t>(), py::arg("max_in_flight") = 1)
      .def("save", &PyAsyncSaver::save, py::arg("obj"), py::arg("path"), py::arg("durable") = true)
      .def("wait", &PyAsyncSaver::wait)
      .def_property_readonly("pending", &PyAsyncSaver::pending);
  py::class_<PyManager>(m, "Manager")
      .def(py::init<const std::string&, const py::dict&>())
      .def("save", &PyManager::save)
      .def("should_save", &PyManager::should_save)
      .def("preemption_requested", &PyManager::preemption_requested)
      .def("load", &PyManager::load)
      .def("wait", &PyManager::wait)
      .def("checkpoints", &PyManager::checkpoints)
      .def("close", &PyManager::close);
}
