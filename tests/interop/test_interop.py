"""Interop tests against the real Python torch (run with /usr/bin/python3).

Files written by torch.save are loaded by ckpt (the CLI's convert, and the LibTorch bridge via
ckpt_roundtrip, eager and mmap) and written back; Python then checks torch.load gives the same
objects. Damaged and malicious files must be refused with one clear line, and nothing in them
may run. Binaries come from $CKPT_BIN and $CKPT_ROUNDTRIP (set by ctest).
"""
import collections
import io
import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
import tempfile
import unittest
import zipfile

import torch
import torch.nn as nn

CKPT = os.environ.get("CKPT_BIN", "../../build/ckpt")
ROUNDTRIP = os.environ.get("CKPT_ROUNDTRIP", "../../build/tests/ckpt_roundtrip")
DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "pytorch")


def run(*args):
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=300)


# --- deep comparison -----------------------------------------------------------------------------

class Mismatch(Exception):
    pass


def compare(a, b, path="<root>", storages=None):
    """Same types, same values, same tensor metadata and the same storage-sharing structure."""
    if storages is None:
        storages = {}
    if type(a) is not type(b):
        raise Mismatch(f"{path}: type {type(a).__name__} vs {type(b).__name__}")
    if isinstance(a, torch.Tensor):
        for attr in ("dtype", "shape", "requires_grad"):
            if getattr(a, attr) != getattr(b, attr):
                raise Mismatch(f"{path}: {attr} {getattr(a, attr)} vs {getattr(b, attr)}")
        if a.stride() != b.stride() or a.storage_offset() != b.storage_offset():
            raise Mismatch(f"{path}: layout {a.stride()}+{a.storage_offset()} vs {b.stride()}+{b.storage_offset()}")
        sa, sb = a.storage().data_ptr(), b.storage().data_ptr()
        if a.storage().size() > 0:
            if storages.setdefault(("a", sa), sb) != sb or storages.setdefault(("b", sb), sa) != sa:
                raise Mismatch(f"{path}: storage sharing differs")
        if a.dtype.is_floating_point or a.dtype.is_complex:
            same = torch.equal(torch.view_as_real(a) if a.is_complex() else a, torch.view_as_real(b) if b.is_complex() else b) \
                or bool(((a == b) | (a.isnan() & b.isnan())).all())
        else:
            same = torch.equal(a, b)
        if not same:
            raise Mismatch(f"{path}: tensor values differ")
        return
    if isinstance(a, dict):
        if list(a.keys()) != list(b.keys()):
            raise Mismatch(f"{path}: keys {list(a.keys())[:5]} vs {list(b.keys())[:5]}")
        if getattr(a, "_metadata", None) != getattr(b, "_metadata", None):
            raise Mismatch(f"{path}: _metadata differs")
        for k in a:
            compare(a[k], b[k], f"{path}/{k}", storages)
        return
    if isinstance(a, (list, tuple)):
        if len(a) != len(b):
            raise Mismatch(f"{path}: length {len(a)} vs {len(b)}")
        for i, (x, y) in enumerate(zip(a, b)):
            compare(x, y, f"{path}/{i}", storages)
        return
    if isinstance(a, float) and a != a and b != b:
        return
    if a != b:
        raise Mismatch(f"{path}: {a!r} vs {b!r}")


# --- the cases -----------------------------------------------------------------------------------

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.layers = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Dropout(0.1), nn.Linear(8, 3))

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))
        x = nn.functional.adaptive_avg_pool2d(x, 2).flatten(1)
        return self.layers(x)


def trained_checkpoint(make_optimizer):
    torch.manual_seed(0)
    model = Net()
    opt = make_optimizer(model.parameters())
    for _ in range(3):
        opt.zero_grad()
        loss = model(torch.randn(5, 1, 6, 6)).pow(2).mean()
        loss.backward()
        opt.step()
    return {"model_state": model.state_dict(), "optimizer_state": opt.state_dict(), "epoch": 3}


def make_cases():
    cases = {}
    torch.manual_seed(1)
    cases["state_dict"] = Net().state_dict()
    optimizers = {
        "sgd": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4),
        "sgd_plain": lambda p: torch.optim.SGD(p, lr=0.1),
        "adam": lambda p: torch.optim.Adam(p, lr=1e-3),
        "adam_amsgrad": lambda p: torch.optim.Adam(p, lr=1e-3, amsgrad=True),
        "adamw": lambda p: torch.optim.AdamW(p, lr=1e-3),
        "rmsprop": lambda p: torch.optim.RMSprop(p, lr=1e-2, momentum=0.5, centered=True),
        "adagrad": lambda p: torch.optim.Adagrad(p, lr=1e-2),
    }
    for name, make in optimizers.items():
        cases[f"seed_{name}"] = trained_checkpoint(make)
    x = torch.arange(10.0)
    cases["views"] = {"x": x, "slice": x[2:5], "t": x.view(2, 5).t(), "again": x}
    dtypes = [torch.float16, torch.float32, torch.float64, torch.bfloat16, torch.int8, torch.int16, torch.int32,
              torch.int64, torch.uint8, torch.bool, torch.complex64, torch.complex128]
    cases["dtypes"] = {str(d): (torch.arange(6).reshape(2, 3) % 2 == 0).to(d) if d == torch.bool
                       else (torch.arange(6).reshape(2, 3) * 3 - 5).to(d) for d in dtypes}
    cases["nested"] = {
        1: "int key", -7: None, "tuple": (1, 2.5, "x", (3, (4,))), "unicode": "héllo ✓ 日本",
        "big": 2 ** 100, "neg_big": -(2 ** 70), "i64": -(2 ** 63), "floats": [float("inf"), -0.0, 1e-300, float("nan")],
        "bools": [True, False], "empty": [[], {}, ()], "bytes": b"\x00\x01\xff", "nested": {"a": {"b": {"c": [1, {"d": torch.ones(2)}]}}},
    }
    cases["parameters"] = {"p": nn.Parameter(torch.randn(3, 2)), "frozen": nn.Parameter(torch.ones(2), requires_grad=False),
                           "grad": torch.zeros(2, requires_grad=True)}
    cases["shapes"] = {"scalar": torch.tensor(3.5), "empty": torch.zeros(3, 0), "empty_i": torch.empty(0, dtype=torch.int64),
                       "noncontig": torch.randn(4, 6)[:, ::2], "expanded_clone": torch.randn(3, 1).expand(3, 4).contiguous(),
                       "fortran": torch.randn(3, 4).t().contiguous().t()}
    cases["ordered"] = collections.OrderedDict([("z", 1), ("a", torch.ones(1)), ("m", 2)])
    cases["top_list"] = [torch.ones(2), {"k": torch.zeros(1)}, 5]
    cases["many"] = {f"t{i}": torch.full((i % 7 + 1,), float(i)) for i in range(1500)}
    return cases


WRITERS = {
    "p2": dict(),
    "p4": dict(pickle_protocol=4),
    "p5": dict(pickle_protocol=5),
    "legacy": dict(_use_new_zipfile_serialization=False),
}


class Workdir(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="ckpt-interop-")

    def tearDown(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def path(self, name):
        return os.path.join(self.dir, name)

    def assert_refused(self, file, *needles, tools=("verify", "inspect", "roundtrip")):
        """Every tool refuses `file` with exit 1 and one stderr line naming the file and the problem."""
        for tool in tools:
            if tool == "roundtrip":
                r = run(ROUNDTRIP, file, self.path("out.pt"))
            else:
                r = run(CKPT, tool, file)
            with self.subTest(tool=tool):
                self.assertEqual(r.returncode, 1, f"{tool}: {r.stdout}{r.stderr}")
                lines = r.stderr.strip().splitlines()
                self.assertEqual(len(lines), 1, r.stderr)
                self.assertIn(file, lines[0])
                for n in needles:
                    self.assertIn(n, lines[0])
                self.assertFalse(os.path.exists(self.path("out.pt")))


class RoundTrip(Workdir):
    """torch.save -> ckpt -> torch.load gives the same objects, through every path."""

    def check(self, name, obj, writer):
        src = self.path(f"{name}.{writer}.pt")
        torch.save(obj, src, **WRITERS[writer])
        expected = torch.load(src)
        r = run(CKPT, "verify", src)
        self.assertEqual(r.returncode, 0, r.stderr)
        outs = {"convert": [CKPT, "convert"], "bridge": [ROUNDTRIP], "bridge_mmap": [ROUNDTRIP]}
        for how, cmd in outs.items():
            out = self.path(f"{name}.{writer}.{how}.pt")
            args = cmd + [src, out] + (["--mmap"] if how == "bridge_mmap" else [])
            r = run(*args)
            self.assertEqual(r.returncode, 0, f"{how}: {r.stderr}")
            got = torch.load(out)
            try:
                compare(expected, got)
            except Mismatch as e:
                self.fail(f"{name} written as {writer}, through {how}: {e}")
            # Our files are well-formed zips with valid CRCs and 64-byte aligned records.
            with zipfile.ZipFile(out) as z:
                self.assertIsNone(z.testzip())
                for info in z.infolist():
                    self.assertEqual(info.compress_type, zipfile.ZIP_STORED)
            with open(out, "rb") as f:
                data = f.read()
            for info in zipfile.ZipFile(out).infolist():
                n, m = struct.unpack("<HH", data[info.header_offset + 26:info.header_offset + 30])
                self.assertEqual((info.header_offset + 30 + n + m) % 64, 0, info.filename)

    def test_all_cases_all_writers(self):
        for name, obj in make_cases().items():
            for writer in WRITERS:
                if writer != "p2" and name.startswith("seed_") and name not in ("seed_adam", "seed_sgd"):
                    continue  # one protocol suffices for most optimizers; p2 covers them all
                with self.subTest(case=name, writer=writer):
                    self.check(name, obj, writer)

    def test_weights_only_loads_our_files(self):
        # 1.13's weights_only unpickler rejects every float (BINFLOAT), so use float-free content.
        obj = {"model_state": Net().state_dict(), "ints": [1, 2, (3, 4)], "name": "x", "p": nn.Parameter(torch.ones(2))}
        src, out = self.path("w.pt"), self.path("w.out.pt")
        torch.save(obj, src)
        self.assertEqual(run(CKPT, "convert", src, out).returncode, 0)
        compare(torch.load(src), torch.load(out, weights_only=True))

    def test_storage_bytes_written_once(self):
        x = torch.randn(1000)
        torch.save({"a": x, "b": x[10:20], "c": x.view(10, 100)}, self.path("s.pt"))
        self.assertEqual(run(CKPT, "convert", self.path("s.pt"), self.path("o.pt")).returncode, 0)
        names = zipfile.ZipFile(self.path("o.pt")).namelist()
        self.assertEqual(sum("/data/" in n for n in names), 1, names)

    def test_rezipped_zip64_and_deflated_files(self):
        """Any archive prefix, ZIP64 extra fields and deflated records, as other zip tools write them."""
        obj = {"w": torch.randn(64, 64), "n": 3}
        torch.save(obj, self.path("orig.pt"))
        for variant in ("zip64", "deflate", "prefix"):
            with zipfile.ZipFile(self.path("orig.pt")) as zin, zipfile.ZipFile(self.path(f"{variant}.pt"), "w") as zout:
                for info in zin.infolist():
                    data = zin.read(info)
                    name = info.filename if variant != "prefix" else "another_prefix/" + info.filename.split("/", 1)[1]
                    zi = zipfile.ZipInfo(name)
                    zi.compress_type = zipfile.ZIP_DEFLATED if variant == "deflate" else zipfile.ZIP_STORED
                    with zout.open(zi, "w", force_zip64=(variant == "zip64")) as f:
                        f.write(data)
            with self.subTest(variant=variant):
                self.assertEqual(run(CKPT, "verify", self.path(f"{variant}.pt")).returncode, 0)
                out = self.path(f"{variant}.out.pt")
                r = run(ROUNDTRIP, self.path(f"{variant}.pt"), out)
                self.assertEqual(r.returncode, 0, r.stderr)
                compare(torch.load(self.path("orig.pt")), torch.load(out))

    def test_shared_testdata_from_torch_2x(self):
        """Genuine files written by torch 2.x (byteorder, .format_version, serialization_id records)."""
        root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "../data/pytorch/torch-2.x-burn")
        files = [f for f in sorted(os.listdir(root)) if f.endswith(".pt") and f != "broken.pt"]
        self.assertGreater(len(files), 20)
        for f in files:
            with self.subTest(file=f):
                src = os.path.join(root, f)
                out = self.path(f)
                r = run(ROUNDTRIP, src, out, "--mmap")
                self.assertEqual(r.returncode, 0, r.stderr)
                compare(torch.load(src), torch.load(out))


# --- damaged files -------------------------------------------------------------------------------

def rewrite_record(src, dst, record_suffix, transform):
    """Copies a torch zip, replacing one record's bytes (CRCs recomputed by zipfile)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename.endswith(record_suffix):
                data = transform(data)
            zout.writestr(info.filename, data)


class Damaged(Workdir):
    def setUp(self):
        super().setUp()
        self.good = self.path("good.pt")
        torch.save({"w": torch.arange(1000.0), "opt": {"lr": 0.1}}, self.good)
        with open(self.good, "rb") as f:
            self.bytes = f.read()
        self.zinfo = {i.filename.split("/", 1)[1]: i for i in zipfile.ZipFile(self.good).infolist()}

    def payload_offset(self, record):
        info = self.zinfo[record]
        n, m = struct.unpack("<HH", self.bytes[info.header_offset + 26:info.header_offset + 30])
        return info.header_offset + 30 + n + m

    def write(self, name, data):
        p = self.path(name)
        with open(p, "wb") as f:
            f.write(data)
        return p

    def test_empty(self):
        self.assert_refused(self.write("empty.pt", b""), "empty file")

    def test_not_a_zip(self):
        self.assert_refused(self.write("text.pt", b"this is not a checkpoint\n"), "not a PyTorch checkpoint")

    def test_truncated(self):
        for cut in (10, len(self.bytes) // 2, len(self.bytes) - 30, len(self.bytes) - 1):
            with self.subTest(cut=cut):
                self.assert_refused(self.write(f"cut{cut}.pt", self.bytes[:cut]))

    def test_flipped_bit_in_tensor_data(self):
        b = bytearray(self.bytes)
        b[self.payload_offset("data/0") + 1234] ^= 0x10
        self.assert_refused(self.write("flip.pt", bytes(b)), "record 'good/data/0'", "CRC-32 mismatch")

    def test_flipped_bit_in_pickle(self):
        b = bytearray(self.bytes)
        b[self.payload_offset("data.pkl") + 20] ^= 0x01
        self.assert_refused(self.write("flip.pt", bytes(b)), "record 'good/data.pkl'", "CRC-32 mismatch")

    def test_shape_larger_than_storage(self):
        # The pickle says (2000,) while the storage holds 1000 floats; CRCs are valid.
        def grow(pkl):
            return pkl.replace(b"M\xe8\x03\x85", b"M\xd0\x07\x85", 1)  # size tuple (1000,) -> (2000,)
        rewrite_record(self.good, self.path("shape.pt"), "data.pkl", grow)
        self.assert_refused(self.path("shape.pt"), "needs 2000 elements but its storage has 1000")

    def test_storage_record_too_short(self):
        rewrite_record(self.good, self.path("short.pt"), "data/0", lambda d: d[:-4])
        self.assert_refused(self.path("short.pt"), "has 3996 bytes but its storage needs 1000 x 4-byte float32")

    def test_missing_version(self):
        with zipfile.ZipFile(self.good) as zin, zipfile.ZipFile(self.path("nov.pt"), "w") as zout:
            for info in zin.infolist():
                if not info.filename.endswith("/version"):
                    zout.writestr(info.filename, zin.read(info))
        self.assert_refused(self.path("nov.pt"), "no 'version' record")

    def test_old_file_survives_a_failed_convert(self):
        target = self.write("target.pt", self.bytes)
        bad = self.write("bad.pt", self.bytes[:100])
        r = run(CKPT, "convert", bad, target)
        self.assertEqual(r.returncode, 1)
        with open(target, "rb") as f:
            self.assertEqual(f.read(), self.bytes)
        self.assertEqual(sorted(os.listdir(self.dir)), ["bad.pt", "good.pt", "target.pt"])


# --- malicious files -----------------------------------------------------------------------------

class Reduce:
    """Pickles as a call of `fn(*args)`, the way an attacker's object would."""

    def __init__(self, fn, args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return (self.fn, self.args)


def torch_layout_zip(path, pkl_bytes, extra_names=()):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pkl_bytes)
        for n in extra_names:
            z.writestr(n, b"x")
        z.writestr("archive/version", b"3\n")


class Malicious(Workdir):
    def sentinel(self):
        return self.path("PWNED")

    def check_payload(self, obj, *needles, protocol=2):
        for fmt in ("zip", "legacy"):
            with self.subTest(format=fmt):
                p = self.path(f"evil_{fmt}.pt")
                if fmt == "zip":
                    torch_layout_zip(p, pickle.dumps({"model": obj}, protocol=protocol))
                else:
                    torch.save({"model": obj}, p, _use_new_zipfile_serialization=False, pickle_protocol=protocol)
                self.assert_refused(p, *needles)
                self.assertFalse(os.path.exists(self.sentinel()), "the payload ran!")

    def test_os_system(self):
        self.check_payload(Reduce(os.system, (f"touch {self.sentinel()}",)), "global 'posix.system' is not allowed")

    def test_eval(self):
        self.check_payload(Reduce(eval, (f"open({self.sentinel()!r}, 'w')",)), "global 'builtins.eval' is not allowed")

    def test_protocol4_stack_global(self):
        self.check_payload(Reduce(os.system, (f"touch {self.sentinel()}",)), "global 'posix.system'", protocol=4)

    def test_other_globals(self):
        self.check_payload(Reduce(getattr, (1, "real")), "global 'builtins.getattr' is not allowed")
        self.check_payload(collections.defaultdict(int), "global 'collections.defaultdict' is not allowed")
        self.check_payload(Net(), "is not allowed")  # a whole nn.Module object

    def test_dotdot_entry_name(self):
        p = self.path("slip.pt")
        torch_layout_zip(p, pickle.dumps({"a": 1}, protocol=2), extra_names=["archive/../../etc/evil"])
        self.assert_refused(p, "escapes the archive")

    def test_torch_would_run_it(self):
        """The payload is real: Python's own torch.load (weights_only=False) runs it."""
        p = self.path("evil.pt")
        torch_layout_zip(p, pickle.dumps(Reduce(os.system, (f"touch {self.sentinel()}",)), protocol=2))
        torch.load(p)
        self.assertTrue(os.path.exists(self.sentinel()))


# --- the command-line tool -----------------------------------------------------------------------

class Cli(Workdir):
    def test_inspect_json_lists_every_tensor(self):
        obj = trained_checkpoint(lambda p: torch.optim.Adam(p, lr=1e-3))
        obj["list"] = [torch.ones(2, 3, dtype=torch.bfloat16), (torch.zeros(1, dtype=torch.bool),)]
        torch.save(obj, self.path("c.pt"))
        r = run(CKPT, "inspect", "--json", self.path("c.pt"))
        self.assertEqual(r.returncode, 0, r.stderr)
        doc = json.loads(r.stdout)
        got = {t["path"]: (t["dtype"], t["shape"]) for t in doc["tensors"]}
        want = {}
        def walk(v, path):
            if isinstance(v, torch.Tensor):
                want[path] = (str(v.dtype).replace("torch.", ""), list(v.shape))
            elif isinstance(v, dict):
                for k, x in v.items():
                    walk(x, f"{path}/{k}" if path else str(k))
            elif isinstance(v, (list, tuple)):
                for i, x in enumerate(v):
                    walk(x, f"{path}/{i}" if path else str(i))
        walk(obj, "")
        self.assertEqual(got, want)
        self.assertIn("list/1/0", got)
        self.assertEqual(got["optimizer_state/state/0/step"], ("float32", []))
        self.assertEqual(doc["totals"]["tensors"], len(want))

    def test_inspect_text(self):
        torch.save({"model_state": nn.Linear(3, 2).state_dict(), "epoch": 7}, self.path("c.pt"))
        r = run(CKPT, "inspect", self.path("c.pt"))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("weight: Tensor float32 [2, 3] 24 bytes", r.stdout)
        self.assertIn("epoch: int 7", r.stdout)
        self.assertIn("totals: 2 tensors, 8 elements, 32 bytes", r.stdout)

    def test_verify_ok(self):
        torch.save({"a": torch.ones(3)}, self.path("c.pt"))
        r = run(CKPT, "verify", self.path("c.pt"))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("OK", r.stdout)
        self.assertIn("3 CRC-32 verified", r.stdout)

    def test_help_and_usage_errors(self):
        for cmd in ([], ["inspect"], ["verify"], ["convert"], ["diff"]):
            r = run(CKPT, *cmd, "--help")
            self.assertEqual(r.returncode, 0, cmd)
            self.assertIn("Usage", r.stdout)
        self.assertEqual(run(CKPT).returncode, 2)
        self.assertEqual(run(CKPT, "inspect").returncode, 2)
        self.assertEqual(run(CKPT, "frobnicate").returncode, 2)
        self.assertEqual(run(CKPT, "convert", "only-one").returncode, 2)
        r = run(CKPT, "verify", self.path("missing.pt"))
        self.assertEqual(r.returncode, 1)
        self.assertIn("missing.pt", r.stderr)

# --- safetensors and diff --------------------------------------------------------------------------

# The format's dtypes, narrowest first: the reference writer lays tensors out widest first.
ST_DTYPES = ["BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3", "I16", "U16", "F16", "BF16", "I32", "U32", "F32", "F64",
             "I64", "U64"]
ST_TORCH = {"BOOL": torch.bool, "U8": torch.uint8, "I8": torch.int8, "I16": torch.int16, "F16": torch.float16,
            "BF16": torch.bfloat16, "I32": torch.int32, "F32": torch.float32, "F64": torch.float64,
            "I64": torch.int64}


def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def write_bytes(path, data):
    with open(path, "wb") as f:
        f.write(data)


def parse_safetensors(path):
    """An independent reader, from the format's description: 8-byte LE length, JSON, raw bytes."""
    data = read_bytes(path)
    (n,) = struct.unpack("<Q", data[:8])
    header_bytes = data[8:8 + n]
    header = json.loads(header_bytes, object_pairs_hook=collections.OrderedDict)
    meta = header.pop("__metadata__", None)
    buffer = data[8 + n:]
    tensors = collections.OrderedDict()
    for name, info in header.items():
        b, e = info["data_offsets"]
        raw = bytearray(buffer[b:e])
        t = torch.frombuffer(raw, dtype=ST_TORCH[info["dtype"]]) if raw else torch.empty(0, dtype=ST_TORCH[info["dtype"]])
        tensors[name] = t.reshape(info["shape"])
    return n, header_bytes, header, meta, buffer, tensors


def write_safetensors(path, tensors, metadata=None):
    """An independent writer (no reference library is packaged in Debian), in the reference's layout."""
    inv = {v: k for k, v in ST_TORCH.items()}
    items = sorted(tensors.items(), key=lambda kv: (-ST_DTYPES.index(inv[kv[1].dtype]), kv[0]))
    header, offset, blobs = collections.OrderedDict(), 0, []
    if metadata:
        header["__metadata__"] = metadata
    for name, t in items:
        raw = t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": inv[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        blobs.append(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def st_sample():
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    return {
        "model": {"w": base, "w_t": base.t(), "row": base[1], "bias": torch.linspace(-1, 1, 6, dtype=torch.float64)},
        "emb": torch.randn(5, 3).to(torch.bfloat16),
        "half": torch.randn(7).half(),
        "ids": torch.arange(9, dtype=torch.int64),
        "i32": torch.arange(-3, 3, dtype=torch.int32),
        "i16": torch.arange(4, dtype=torch.int16),
        "i8": torch.tensor([-5, 7], dtype=torch.int8),
        "u8": torch.tensor([0, 255], dtype=torch.uint8),
        "mask": torch.tensor([True, False, True]),
        "scalar": torch.tensor(3.5),
        "empty": torch.zeros(0, 4),
    }


def flat(d, prefix=""):
    out = {}
    for k, v in d.items():
        name = f"{prefix}.{k}" if prefix else k
        if isinstance(v, dict):
            out.update(flat(v, name))
        else:
            out[name] = v
    return out


class Safetensors(Workdir):
    def convert(self, src, dst, *extra):
        r = run(CKPT, "convert", src, dst, *extra)
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_written_files_follow_the_format_exactly(self):
        torch.manual_seed(0)
        obj = st_sample()
        obj["epoch"], obj["note"] = 7, "fine-tuned"
        torch.save(obj, self.path("s.pt"))
        self.convert(self.path("s.pt"), self.path("s.safetensors"))
        n, header_bytes, header, meta, buffer, tensors = parse_safetensors(self.path("s.safetensors"))
        self.assertEqual(n % 8, 0)
        self.assertEqual(header_bytes.rstrip(b" ") + b" " * (n - len(header_bytes.rstrip(b" "))), header_bytes)
        self.assertTrue(header_bytes.startswith(b'{"__metadata__":'))  # metadata first, compact JSON
        self.assertNotIn(b": ", header_bytes.rstrip(b" "))
        self.assertEqual(meta, {"epoch": "7", "note": "fine-tuned"})
        want = flat({k: v for k, v in obj.items() if torch.is_tensor(v) or isinstance(v, dict)})
        self.assertEqual(set(tensors), set(want))
        # The reference writer's order: widest dtype first, then by name; offsets tile the buffer.
        names = list(header)
        inv = {v: k for k, v in ST_TORCH.items()}
        self.assertEqual(names, sorted(names, key=lambda k: (-ST_DTYPES.index(header[k]["dtype"]), k)))
        end = 0
        for name in names:
            b, e = header[name]["data_offsets"]
            self.assertEqual(b, end, name)
            self.assertEqual(list(header[name].keys()), ["dtype", "shape", "data_offsets"])
            self.assertEqual(header[name]["dtype"], inv[want[name].dtype])
            end = e
        self.assertEqual(end, len(buffer))
        for name, t in want.items():
            self.assertTrue(torch.equal(tensors[name], t), name)
        # Views of one storage are each written as their own bytes.
        self.assertEqual(header["model.w_t"]["data_offsets"][1] - header["model.w_t"]["data_offsets"][0], 24 * 4)
        # And ckpt reads its own file, eager and mapped, to the same tensors.
        r = run(CKPT, "verify", "--json", self.path("s.safetensors"))
        self.assertEqual(r.returncode, 0, r.stderr)
        doc = json.loads(r.stdout)
        self.assertEqual((doc["format"], doc["tensors"]), ("safetensors", len(want)))

    def test_python_written_files_read_and_every_pair_of_formats_round_trips(self):
        torch.manual_seed(1)
        tensors = flat(st_sample())
        write_safetensors(self.path("py.safetensors"), tensors, {"format": "pt", "source": "python"})
        self.convert(self.path("py.safetensors"), self.path("py.pt"))
        back = torch.load(self.path("py.pt"))
        self.assertEqual(back["__metadata__"], {"format": "pt", "source": "python"})
        for k, t in tensors.items():
            self.assertTrue(torch.equal(back[k], t), k)
            self.assertEqual(back[k].dtype, t.dtype)
        # safetensors -> pt -> safetensors -> pt, and a LibTorch archive -> safetensors: ckpt diff
        # finds each pair equal, and Python agrees.
        self.convert(self.path("py.pt"), self.path("again.safetensors"))
        self.convert(self.path("again.safetensors"), self.path("again.pt"))
        for a, b in (("py.safetensors", "py.pt"), ("py.pt", "again.safetensors"), ("py.safetensors", "again.pt")):
            r = run(CKPT, "diff", self.path(a), self.path(b))
            self.assertEqual(r.returncode, 0, f"{a} vs {b}: {r.stdout}{r.stderr}")
            self.assertIn("A and B are equal", r.stdout)
        _, _, _, meta, _, again = parse_safetensors(self.path("again.safetensors"))
        self.assertEqual(meta, {"format": "pt", "source": "python"})
        for k, t in tensors.items():
            self.assertTrue(torch.equal(again[k], t), k)
        libtorch = os.path.join(DATA, "libtorch-1.13", "net_cpp.pt")
        self.convert(libtorch, self.path("net.safetensors"))
        self.convert(libtorch, self.path("net.pt"))
        self.assertEqual(run(CKPT, "diff", self.path("net.safetensors"), self.path("net.pt")).returncode, 0)
        sd = torch.load(self.path("net.pt"))
        _, _, _, _, _, st = parse_safetensors(self.path("net.safetensors"))
        self.assertEqual(set(sd), set(st))
        for k in sd:
            self.assertTrue(torch.equal(sd[k], st[k]), k)

    def test_hostile_headers_are_refused_with_one_line(self):
        good = self.path("good.safetensors")
        write_safetensors(good, {"a": torch.ones(2), "b": torch.zeros(3)})
        data = read_bytes(good)
        (n,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8:8 + n])
        def with_header(name, h, buffer=data[8 + n:]):
            text = json.dumps(h, separators=(",", ":")).encode()
            write_bytes(self.path(name), struct.pack("<Q", len(text)) + text + buffer)
            return self.path(name)
        overlap = dict(header); overlap["b"] = dict(header["b"], data_offsets=[4, 16])
        hole = dict(header); hole["b"] = dict(header["b"], data_offsets=[12, 24])
        unknown = dict(header); unknown["a"] = dict(header["a"], dtype="F4")
        cases = [
            (with_header("overlap.safetensors", overlap), "overlap"),
            (with_header("hole.safetensors", hole), "leave a hole"),
            (with_header("range.safetensors", header, data[8 + n:-4]), "ends at byte"),
            (with_header("dtype.safetensors", unknown), "unknown dtype 'F4'"),
        ]
        huge = self.path("huge.safetensors")
        write_bytes(huge, struct.pack("<Q", 10 ** 9) + b"{}")
        cases.append((huge, "more than the format's limit"))
        badjson = self.path("badjson.safetensors")
        write_bytes(badjson, struct.pack("<Q", 6) + b'{"a":[')
        cases.append((badjson, "not valid JSON"))
        for path, needle in cases:
            with self.subTest(file=os.path.basename(path)):
                self.assert_refused(path, needle, tools=("verify", "inspect"))


class Diff(Workdir):
    def test_reports_where_two_checkpoints_differ_with_exit_codes_and_json(self):
        torch.manual_seed(2)
        a = {"model": {"w": torch.randn(4, 5), "b": torch.zeros(5)}, "epoch": 3, "gone": 1, "d": torch.ones(2)}
        b = {"model": {"w": a["model"]["w"].clone(), "b": torch.zeros(6)}, "epoch": 4, "new": 1,
             "d": torch.ones(2, dtype=torch.float64)}
        b["model"]["w"][1, 2] += 0.5
        b["model"]["w"][3, 0] *= 1.001
        torch.save(a, self.path("a.pt"))
        torch.save(b, self.path("b.pt"))
        r = run(CKPT, "diff", self.path("a.pt"), self.path("b.pt"))
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("only in A: gone", r.stdout)
        self.assertIn("only in B: new", r.stdout)
        self.assertIn("shape: model/b: float32 [5] vs float32 [6]", r.stdout)
        self.assertIn("value: epoch: int 3 vs int 4", r.stdout)
        self.assertIn("dtype: d: float32 [2] vs float64 [2]; 0 of 2 elements differ", r.stdout)
        self.assertIn("tensor: model/w: 2 of 20 elements differ", r.stdout)
        r = run(CKPT, "diff", "--json", "--rtol", "0.01", self.path("a.pt"), self.path("b.pt"))
        self.assertEqual(r.returncode, 1, r.stderr)
        doc = json.loads(r.stdout)
        self.assertEqual(set(doc), {"a", "b", "equal", "rtol", "atol", "tensors_compared", "elements_compared",
                                    "differences"})
        self.assertFalse(doc["equal"])
        w = [d for d in doc["differences"] if d["path"] == "model/w"][0]
        self.assertEqual(w["kind"], "tensor")
        self.assertEqual((w["numel"], w["differing"]), (20, 1))  # the 0.1% change is within rtol
        diffs = (a["model"]["w"] - b["model"]["w"]).abs().double()
        self.assertAlmostEqual(w["max_abs"], diffs.max().item(), places=6)
        kinds = {d["path"]: d["kind"] for d in doc["differences"]}
        self.assertEqual(kinds, {"model/w": "tensor", "model/b": "shape", "epoch": "value", "gone": "only_in_a",
                                 "d": "dtype", "new": "only_in_b"})
        # Equal files: exit 0; a tolerance large enough makes w equal.
        self.assertEqual(run(CKPT, "diff", self.path("a.pt"), self.path("a.pt")).returncode, 0)
        c = dict(a, model={"w": a["model"]["w"] + 1e-4, "b": a["model"]["b"]})
        torch.save(c, self.path("c.pt"))
        self.assertEqual(run(CKPT, "diff", self.path("a.pt"), self.path("c.pt")).returncode, 1)
        self.assertEqual(run(CKPT, "diff", "--atol", "1e-3", self.path("a.pt"), self.path("c.pt")).returncode, 0)
        # Usage errors: exit 2.
        self.assertEqual(run(CKPT, "diff", self.path("a.pt")).returncode, 2)
        self.assertEqual(run(CKPT, "diff", "--rtol", "-1", self.path("a.pt"), self.path("b.pt")).returncode, 2)
        r = run(CKPT, "diff", self.path("a.pt"), self.path("missing.pt"))
        self.assertEqual(r.returncode, 1)
        self.assertIn("missing.pt", r.stderr)



if __name__ == "__main__":
    unittest.main()
