"""ckpt — safe, verified, crash-proof and fast checkpoints for PyTorch, and a run manager.

    import ckpt
    ckpt.save({"model_state": model.state_dict(), "optimizer_state": opt.state_dict()}, "ck.pt")
    state = ckpt.load("ck.pt")                 # never runs code from the file; every CRC-32 checked
    model.load_state_dict(state["model_state"])

    mgr = ckpt.CheckpointManager("runs/x", keep_last=3, keep_best=1, monitor="val_loss", mode="min")
    state = mgr.restore()                      # the newest checkpoint that verifies, or None
    ...
    mgr.save(step, {"model_state": model.state_dict(), ...}, metrics={"val_loss": 0.31})

Files are PyTorch's own format: torch.load reads what ckpt.save writes, and ckpt.load reads what
torch.save wrote (torch 1.6+ zip files and the legacy format) — as long as they hold what
torch.load(weights_only=True) can rebuild: containers, numbers, strings, tensors, parameters,
dtypes, devices, sizes. The C++ core (_ckpt) does the work with the GIL released.
"""
import collections
import io as _io
import os

from . import _ckpt

__all__ = ["save", "load", "restore", "verify", "inspect", "save_async", "AsyncSaver", "CheckpointManager", "Error",
           "CorruptionError", "UnsafeError", "NotFoundError", "IOError", "MismatchError", "UnsupportedError",
           "InvalidArgumentError", "KeyNotFoundError", "check_resume", "ResumeReport"]


class Error(Exception):
    """Every failure of ckpt: a one-line message naming the file and the problem."""


class CorruptionError(Error):
    """The bytes are not a valid checkpoint: a bad CRC-32, truncated, malformed."""


class UnsafeError(Error):
    """The file asks for something ckpt refuses to do (a global outside the allowlist)."""


class NotFoundError(Error, FileNotFoundError):
    """A file or key that was asked for does not exist."""


class KeyNotFoundError(NotFoundError, KeyError):
    """A checkpoint has no entry of that name; the message names the closest one."""

    def __str__(self):  # KeyError would quote the whole message
        return self.args[0] if self.args else ""


class IOError(Error, OSError):  # noqa: A001 - the name mirrors the C++ kind
    """The operating system refused: no space, no permission, an I/O error."""


class MismatchError(Error, ValueError):
    """A checkpoint does not fit what it is loaded into."""


class InvalidArgumentError(Error, ValueError):
    """The caller passed something unusable."""


class UnsupportedError(Error):
    """Valid, but a feature ckpt does not implement (sparse tensors, ...)."""


_KINDS = {"corruption": CorruptionError, "unsafe": UnsafeError, "not found": NotFoundError, "io": IOError,
          "I/O": IOError, "mismatch": MismatchError, "invalid argument": InvalidArgumentError,
          "unsupported": UnsupportedError}


def _error(e):
    kind, _, message = str(e).partition("\x1f")
    return _KINDS.get(kind, Error)(message)


def _native(fn, *args):
    try:
        return fn(*args)
    except _ckpt.NativeError as e:
        raise _error(e) from None


def _path(f):
    if isinstance(f, (str, bytes, os.PathLike)):
        return os.fsdecode(f)
    return None


def save(obj, f, *, durable=True):
    """Drop-in for torch.save(obj, f).

    f is a path or a writable binary file object. For a path the save is atomic and, by default,
    durable: the file appears under its name only when complete and fsynced (temp file, fsync,
    rename, fsync of the directory), so a crash never leaves half a checkpoint and never harms the
    file it replaces. Raises TypeError naming where an unsupported object sits, e.g.
    "obj['optimizer']['param_groups'][0]['foo']: cannot save a 'MyClass' safely".
    """
    path = _path(f)
    if path is not None:
        _native(_ckpt.save_path, obj, path, durable)
    else:
        f.write(_native(_ckpt.save_bytes, obj))


def load(f, map_location=None, *, mmap=False, verify=True):
    """Drop-in for torch.load(f, map_location).

    Never executes anything from the file; loads optimizer states, which torch 1.13's
    weights_only=True cannot. verify=True checks the CRC-32 of every record (torch.load never
    does). mmap=True returns tensors over a copy-on-write mapping of the file: ready at once,
    pages read on first touch. map_location: None, a device, a device string, or a dict mapping
    saved locations to them (tensors are read to the CPU, then moved).
    """
    import torch
    if isinstance(map_location, dict):  # {saved location: target}; ckpt reads every storage to the CPU
        map_location = map_location.get("cpu")
    if isinstance(map_location, str):
        map_location = torch.device(map_location)
    elif map_location is not None and not isinstance(map_location, torch.device):
        raise InvalidArgumentError("map_location must be None, a torch.device, a device string or a dict of "
                                   "them (a function is not supported)")
    path = _path(f)
    if path is not None:
        return _native(_ckpt.load_path, path, map_location, mmap, verify)
    data = f.read()
    return _native(_ckpt.load_bytes, bytes(data), getattr(f, "name", "<file object>") if isinstance(
        getattr(f, "name", None), str) else "<file object>", map_location, verify)


def restore(f, *, model=None, optimizer=None, scheduler=None, model_key="model_state",
            optimizer_key="optimizer_state", scheduler_key="scheduler_state", strict=True, map_location=None):
    """The seeds' load_ckp(path, model, optimizer), safely: loads the checkpoint (nothing from the
    file runs; every CRC-32 checked) and calls load_state_dict on what is given. An entry that is
    not there raises KeyNotFoundError (a KeyError) naming the nearest key:

        "ck.pt: key 'optimizer' not found; did you mean 'optimizer_state'?"

    Returns the whole checkpoint dict (epoch, step, metrics, ...)."""
    import difflib
    ck = load(f, map_location)
    name = _path(f) or getattr(f, "name", "<file object>")
    if not isinstance(ck, dict):
        raise MismatchError(f"{name}: the checkpoint is a {type(ck).__name__}, not a dict")

    def entry(key):
        if key in ck:
            return ck[key]
        keys = [k for k in ck if isinstance(k, str)]
        close = difflib.get_close_matches(key, keys, n=1, cutoff=0.3) or [k for k in keys if key in k or k in key][:1]
        hint = f"; did you mean {close[0]!r}?" if close else f" (its keys: {', '.join(map(repr, keys[:8]))})"
        raise KeyNotFoundError(f"{name}: key {key!r} not found{hint}")

    if model is not None:
        model.load_state_dict(entry(model_key), strict=strict)
    if optimizer is not None:
        optimizer.load_state_dict(entry(optimizer_key))
    if scheduler is not None:
        scheduler.load_state_dict(entry(scheduler_key))
    return ck


def verify(path):
    """Checks the whole file — structure, every record's CRC-32, the pickle against the
    allowlist, every tensor against its storage — and returns a report dict. Raises on the first
    problem."""
    return _native(_ckpt.verify_path, os.fsdecode(path))


_DTYPE_NAMES = None


def inspect(path):
    """What `ckpt inspect --json` prints, as a dict: {"file", "root", "tensors": [{"path",
    "dtype", "shape", "strides", "storage_offset", "bytes", "requires_grad", "parameter"}, ...],
    "totals": {...}}. Reads through a mapping of the file, after verifying its CRC-32s."""
    import torch
    obj = load(path, mmap=True)
    tensors, seen, storages = [], set(), {}

    def walk(v, where):
        if isinstance(v, torch.Tensor):
            if id(v) in seen:
                return
            seen.add(id(v))
            storage = v.storage()
            storages[storage.data_ptr()] = storage.nbytes() if hasattr(storage, "nbytes") else storage.size() * v.element_size()
            tensors.append({"path": where, "dtype": str(v.dtype).replace("torch.", ""), "shape": list(v.shape),
                            "strides": list(v.stride()), "storage_offset": v.storage_offset(),
                            "bytes": v.numel() * v.element_size(), "requires_grad": v.requires_grad,
                            "parameter": isinstance(v, torch.nn.Parameter)})
        elif isinstance(v, dict):
            for k, x in v.items():
                walk(x, f"{where}/{k}" if where else str(k))
        elif isinstance(v, (list, tuple)) and not isinstance(v, torch.Size):
            for i, x in enumerate(v):
                walk(x, f"{where}/{i}" if where else str(i))

    walk(obj, "")
    root = type(obj).__name__ if not isinstance(obj, collections.OrderedDict) else "OrderedDict"
    return {"file": os.fsdecode(path), "root": root, "tensors": tensors,
            "totals": {"tensors": len(tensors), "elements": sum(t["bytes"] // max(1, _elem(t["dtype"])) for t in tensors),
                       "tensor_bytes": sum(t["bytes"] for t in tensors), "storages": len(storages),
                       "storage_bytes": sum(storages.values())}}


def _elem(dtype_name):
    import torch
    return torch.empty((), dtype=getattr(torch, dtype_name)).element_size()


class AsyncSaver:
    """Saves that stall the caller only for a memory copy.

        saver = ckpt.AsyncSaver()
        saver.save(state, "run/last.pt")   # returns once the tensors are copied; change them at once
        saver.wait()                       # the last save is durable, or its error is raised

    At most `max_in_flight` saves are queued or being written; save() waits for room. A failed
    background save is raised by the next save() or by wait()."""

    def __init__(self, max_in_flight=1):
        self._saver = _ckpt.AsyncSaver(max_in_flight)

    def save(self, obj, path, *, durable=True):
        _native(self._saver.save, obj, os.fsdecode(path), durable)
        return self

    def wait(self):
        _native(self._saver.wait)

    @property
    def pending(self):
        return self._saver.pending

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if exc[0] is None:
            self.wait()  # a background failure is raised here, not lost


def save_async(obj, path, *, durable=True):
    """One background save: returns a handle whose wait() blocks until it is durable."""
    return AsyncSaver().save(obj, path, durable=durable)


class CheckpointManager:
    """A run directory with the same layout and rules as ckpt's C++ CheckpointManager (and
    `ckpt ls` / `verify` / `prune` work on it): one file per checkpoint, index.json, latest,
    best.pt and best_model.pt (the state's "model_state" alone), retention after each commit,
    verified fallback when the newest checkpoint is damaged, one writer per directory.

        mgr = ckpt.CheckpointManager("runs/x", keep_last=3, keep_best=1, monitor="val_loss", mode="min")
        state = mgr.restore()              # newest checkpoint that verifies, as a dict; None: fresh
        ...
        mgr.save(step, {"model_state": ..., "optimizer_state": ..., "epoch": e}, metrics={"val_loss": v})
        mgr.wait()
    """

    def __init__(self, directory, *, keep_last=0, keep_best=0, monitor=None, mode="min", save_every_steps=0,
                 save_every_minutes=0.0, keep_every_epochs=0, keep_every_steps=0, keep_every_minutes=0.0,
                 name_template="epoch={epoch:03}-step={step:06}", model_key="model_state", async_save=False,
                 max_in_flight=1, durable=True, handle_preemption=False, warn=None):
        if mode not in ("min", "max"):
            raise InvalidArgumentError(f"mode must be 'min' or 'max', not {mode!r}")
        import warnings
        options = dict(keep_last=keep_last, keep_best=keep_best, monitor=monitor or "", mode=mode,
                       save_every_steps=save_every_steps, save_every_minutes=float(save_every_minutes),
                       keep_every_epochs=keep_every_epochs, keep_every_steps=keep_every_steps,
                       keep_every_minutes=float(keep_every_minutes), name_template=name_template,
                       model_key=model_key or "", async_=async_save, max_in_flight=max_in_flight, durable=durable,
                       handle_preemption=handle_preemption,
                       warn=warn or (lambda message: warnings.warn(message, RuntimeWarning, stacklevel=3)))
        self.directory = os.fsdecode(directory)
        self._mgr = _native(_ckpt.Manager, self.directory, options)
        self.last_restored = None

    def save(self, step, state, *, epoch=None, metrics=None):
        """Saves `state` (a dict) as the checkpoint of `step`; epoch defaults to state["epoch"].
        A second save at the latest checkpoint's step is a no-op; returns whether it saved."""
        if epoch is None:
            epoch = state.get("epoch", 0) if isinstance(state, dict) else 0
        metrics = {k: float(v) for k, v in (metrics or {}).items()}
        return _native(self._mgr.save, state, int(step), int(epoch), metrics)

    def should_save(self, step):
        """Whether save_every_steps / save_every_minutes (or a preemption signal) say to save now."""
        return self._mgr.should_save(int(step)) or self._mgr.preemption_requested()

    @property
    def preemption_requested(self):
        return self._mgr.preemption_requested()

    def restore(self, which="latest", map_location=None):
        """The checkpoint to resume from — "latest" (the newest that verifies; damaged ones are
        skipped with a warning), "best", "step=N" or a path — as a dict, or None when the
        directory has none. self.last_restored describes it."""
        state, record, skipped = _native(self._mgr.load, which, map_location)
        self.last_restored = record
        self.skipped = skipped
        return state

    def wait(self):
        _native(self._mgr.wait)

    def checkpoints(self):
        """The committed checkpoints in commit order: dicts with path, file, epoch, step, metrics,
        bytes, time, latest, best, damaged."""
        return self._mgr.checkpoints()

    @property
    def latest(self):
        return next((c for c in self.checkpoints() if c["latest"]), None)

    @property
    def best(self):
        return next((c for c in self.checkpoints() if c["best"]), None)

    def close(self):
        """Waits for background saves and releases the directory (its lock) for another writer."""
        self._mgr.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        try:
            if exc[0] is None:
                self.wait()  # a background failure is raised here, not lost
        finally:
            self.close()


from .check_resume import ResumeReport, check_resume  # noqa: E402 - uses save, load and CheckpointManager
