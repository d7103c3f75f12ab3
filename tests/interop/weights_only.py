"""Does a torch.save zip load under torch >= 2.6's default torch.load (weights_only=True)?

An independent check of what ckpt writes (the C++ side has its own, src/format/weights_only.cc):
pickletools.genops over the archive's data.pkl, every opcode against the set torch 2.6.0's
weights_only Unpickler.load handles and every GLOBAL against its _get_allowed_globals().
Source: torch 2.6.0 torch/_weights_only_unpickler.py and torch/storage.py (the installed wheel
committed in zaidshaikh987/AI-Hospital-Optimizer @ 295b238a9249, venv/Lib/site-packages/torch/);
2.14.0's file (knightmare04-boop/Shadow_project_1 @ 4a8526f73399) accepts the same opcodes and a
superset of these globals. The tensor classes (torch.FloatTensor, ...) are left out: ckpt never
writes them, and the check may only be stricter than torch. See ../../../shared/notes/pytorch-2x.md §4.

Usage: python3 weights_only.py FILE...  (prints each file's first violation; exit 1 if any)
"""
import pickletools
import sys
import zipfile

ALLOWED_OPCODES = {
    "APPEND", "APPENDS", "BINFLOAT", "BINGET", "BININT", "BININT1", "BININT2", "BINPERSID", "BINPUT", "BINUNICODE",
    "BUILD", "EMPTY_DICT", "EMPTY_LIST", "EMPTY_SET", "EMPTY_TUPLE", "GLOBAL", "LONG1", "LONG_BINGET", "LONG_BINPUT",
    "MARK", "NEWFALSE", "NEWOBJ", "NEWTRUE", "NONE", "PROTO", "REDUCE", "SETITEM", "SETITEMS", "SHORT_BINSTRING",
    "STOP", "TUPLE", "TUPLE1", "TUPLE2", "TUPLE3",
}

_STORAGES = ["Double", "Float", "Half", "Long", "Int", "Short", "Char", "Byte", "Bool", "BFloat16", "ComplexDouble",
             "ComplexFloat", "QInt8", "QInt32", "QUInt8", "QUInt4x2", "QUInt2x4"]
_DTYPES = ["float64", "float32", "float16", "int64", "int32", "int16", "int8", "uint8", "bool", "bfloat16",
           "complex128", "complex64", "qint8", "qint32", "quint8", "quint4x2", "quint2x4",  # _dtype_to_storage_type_map
           "float8_e5m2", "float8_e4m3fn", "float8_e5m2fnuz", "float8_e4m3fnuz", "bits8", "bits16", "bits1x8",
           "bits2x4", "bits4x2", "complex32", "uint16", "uint32", "uint64"]  # _new_dtypes
_QSCHEMES = ["per_tensor_affine", "per_tensor_symmetric", "per_channel_affine", "per_channel_symmetric",
             "per_channel_affine_float_qparams"]
_REBUILD = ["_rebuild_parameter", "_rebuild_parameter_with_state", "_rebuild_qtensor", "_rebuild_tensor",
            "_rebuild_tensor_v2", "_rebuild_tensor_v3", "_rebuild_sparse_tensor", "_rebuild_meta_tensor_no_storage",
            "_rebuild_nested_tensor", "_rebuild_wrapper_subclass", "_rebuild_device_tensor_from_numpy",
            "_rebuild_device_tensor_from_cpu_tensor"]

ALLOWED_GLOBALS = {
    "collections.OrderedDict", "collections.Counter", "torch.nn.parameter.Parameter",
    "torch.serialization._get_layout", "torch.Size", "torch.Tensor", "torch.device", "_codecs.encode",
    "builtins.bytearray", "builtins.set", "builtins.complex", "torch._tensor._rebuild_from_type_v2",
    "torch.storage.TypedStorage", "torch.storage.UntypedStorage",
} | {f"torch.{s}Storage" for s in _STORAGES} | {f"torch.{d}" for d in _DTYPES + _QSCHEMES} \
  | {f"torch._utils.{f}" for f in _REBUILD}

# Protocol 2 spells Python 3 modules the Python 2 way; torch maps them back (IMPORT_MAPPING).
_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}


def pickle_violations(data):
    """Every opcode or global of one pickle that torch 2.6's weights_only unpickler refuses."""
    out = []
    for op, arg, pos in pickletools.genops(data):
        if op.name not in ALLOWED_OPCODES:
            out.append(f"opcode {op.name} at byte {pos}")
        elif op.name == "PROTO" and arg != 2:
            out.append(f"protocol {arg} at byte {pos} (torch warns)")
        elif op.name == "GLOBAL":
            module, name = arg.split(" ", 1)
            full = f"{_MODULES.get(module, module)}.{name}"
            if full not in ALLOWED_GLOBALS:
                out.append(f"global {full} at byte {pos}")
    return out


def file_violations(path):
    """The violations of a torch.save zip's data.pkl ([] when torch >= 2.6 loads it by default)."""
    with zipfile.ZipFile(path) as z:
        names = [n for n in z.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(names) != 1:
            return [f"{len(names)} data.pkl records"]
        return pickle_violations(z.read(names[0]))


if __name__ == "__main__":
    bad = 0
    for f in sys.argv[1:]:
        v = file_violations(f)
        print(f"{f}: {'ok' if not v else v[0]}")
        bad += bool(v)
    sys.exit(1 if bad else 0)
