"""Does your training loop resume exactly? A self-test to run on it (C++: ckpt/check_resume.h).

    def make_state():                       # fresh objects, the same every time
        torch.manual_seed(0)
        model = Net()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        return {"model": model, "optimizer": opt, "scheduler": StepLR(opt, 2), "sampler": MySampler()}

    def train_step(state, step):            # one step of your loop
        ...

    report = ckpt.check_resume(make_state, train_step, steps=8)            # ckpt's save/load
    report = ckpt.check_resume(make_state, train_step, save=my_save, load=my_load)  # or yours
    if not report.ok:
        print(report)                       # the step, the entry, the likely cause

It runs `steps` steps straight, snapshotting after every step the state_dict() of every object
make_state() returned, torch's CPU generator, Python's `random` and (when numpy is imported)
numpy's generator. Then it runs again, and before step `save_at` (default steps // 2) saves,
drops the objects, builds fresh ones with make_state(), loads, and trains on, comparing with the
straight run right after make_state(), after every step and right after the load. The save and
load go through a real file: `save(state, path)` / `load(state, path)` when given (state is the
dict make_state() returned), otherwise ckpt's own (every object's state_dict and the generators,
through ckpt.save / ckpt.load, then once more through a ckpt.CheckpointManager run directory).

Before every make_state() the generators and torch's thread count are put back to what they were
when check_resume was called, as a fresh process would find them, and they are left so at the end.
"""
import collections
import copy
import math
import os
import random
import sys
import tempfile

__all__ = ["check_resume", "ResumeReport"]

_RNG_KEYS = ("rng_state", "python_random", "numpy_random")


class ResumeReport:
    """What check_resume found. ok; first_step (0-based; -1 when ok); entry (the first differing
    entry, e.g. "optimizer/state/0/exp_avg", "rng_state", "scheduler/last_epoch"); max_abs_diff
    (the largest element difference over every entry at that point); str(report) is one
    readable paragraph with the likely cause."""

    def __init__(self, steps, save_at):
        self.ok = True
        self.steps = steps
        self.save_at = save_at
        self.via = ""  # "file", "run manager", "save/load" (yours), or "straight" (no resume needed)
        self.first_step = -1
        self.after_load = False  # the difference was there right after the load, before first_step ran
        self.after_make_state = False
        self.entry = ""
        self.expected = ""
        self.actual = ""
        self.max_abs_diff = 0.0
        self.entries = []
        self.threads_straight = 0
        self.threads_resumed = 0
        self.cause = ""
        self.passed = []  # the resumes that matched, in order

    def __bool__(self):
        return self.ok

    def __repr__(self):
        return (f"ResumeReport(ok={self.ok}, first_step={self.first_step}, entry={self.entry!r}, "
                f"max_abs_diff={self.max_abs_diff:g}, via={self.via!r})")

    def __str__(self):
        hows = {"file": "through a file", "run manager": "through the run manager", "save/load": "through your save/load"}
        plan = (f"{self.steps} steps straight and with a save → fresh objects → load before step {self.save_at}")
        if self.ok:
            how = " and ".join(hows.get(p, p) for p in self.passed)
            s = (f"Resume check passed: {plan}" + (f" ({how})" if how else "") +
                 " match after every step — parameters, optimizer slots, scheduler, data position, RNG and every "
                 "other entry of the state")
            if self.threads_straight != self.threads_resumed:
                s += f", even with {_threads(self.threads_resumed)} after the load instead of {self.threads_straight}"
            return s + "."
        if self.after_make_state:
            where = "right after make_state(), before any step"
        elif self.after_load:
            where = f"right after the load, before step {self.first_step} ran"
        else:
            where = f"after step {self.first_step}"
        s = f"Resume check FAILED ({plan}, {hows.get(self.via, 'without any resume')}): {where}, '{self.entry}' differs"
        if self.expected != self.actual:
            s += f" (expected {self.expected or 'nothing'}, got {self.actual or 'nothing'})"
        elif self.expected:
            s += f" ({self.expected})"
        if self.max_abs_diff > 0:
            s += f"; the largest difference there is {self.max_abs_diff:.3g}"
        if len(self.entries) > 1:
            s += f"; {len(self.entries)} entries differ ({', '.join(self.entries[:4])}{', ...' if len(self.entries) > 4 else ''})"
        return s + ". Likely cause: " + self.cause


def _threads(n):
    return f"{n} thread" + ("" if n == 1 else "s")


# --- the process state a fresh process starts with ----------------------------------------------

def _numpy():
    return sys.modules.get("numpy")


class _Process:
    """The generators and thread count as check_resume found them."""

    def __init__(self):
        import torch
        self.threads = torch.get_num_threads()
        self.torch_rng = torch.get_rng_state()
        self.python_rng = random.getstate()
        np = _numpy()
        self.numpy_rng = np.random.get_state() if np is not None else None

    def reset(self):
        import torch
        if torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)
        torch.set_rng_state(self.torch_rng)
        random.setstate(self.python_rng)
        np = _numpy()
        if np is not None and self.numpy_rng is not None:
            np.random.set_state(self.numpy_rng)


def _rng_entries():
    """The generators as one float64 tensor each (their words are < 2**32, so exact), which a
    checkpoint holds and a comparison reports as one entry: torch's state; Python's 625 words and
    gauss_next (NaN for None); numpy's 624 words, pos, has_gauss and cached_gaussian."""
    import torch
    version, words, gauss = random.getstate()
    out = {"rng_state": torch.get_rng_state(),
           "python_random": torch.tensor(list(words) + [math.nan if gauss is None else gauss], dtype=torch.float64)}
    np = _numpy()
    if np is not None:
        _, keys, pos, has_gauss, cached = np.random.get_state()
        out["numpy_random"] = torch.tensor(keys.tolist() + [pos, has_gauss, cached], dtype=torch.float64)
    return out


def _set_rng(ck):
    import torch
    torch.set_rng_state(ck["rng_state"])
    if "python_random" in ck:
        v = ck["python_random"].tolist()
        random.setstate((3, tuple(int(w) for w in v[:-1]), None if math.isnan(v[-1]) else v[-1]))
    np = _numpy()
    if np is not None and "numpy_random" in ck:
        v = ck["numpy_random"].tolist()
        np.random.set_state(("MT19937", np.array(v[:624], dtype=np.uint32), int(v[624]), int(v[625]), v[626]))


# --- ckpt's own save and load ----------------------------------------------------------------------

def _stateful(state):
    if not isinstance(state, dict):
        raise TypeError(f"make_state() must return a dict of name -> object with state_dict(), not {type(state).__name__}")
    clash = [k for k in _RNG_KEYS if k in state]
    if clash:
        raise ValueError(f"make_state() returned an object named {clash[0]!r}, a name check_resume uses for a generator")
    return {k: v for k, v in state.items() if hasattr(v, "state_dict")}


def _payload(state):
    out = {name: obj.state_dict() for name, obj in _stateful(state).items()}
    out.update(_rng_entries())
    return out


def _restore(state, ck):
    for name, obj in _stateful(state).items():
        obj.load_state_dict(ck[name])
    _set_rng(ck)  # last: building and loading objects may draw from it


def _save_file(state, path):
    from . import save
    save(_payload(state), path, durable=False)


def _load_file(state, path):
    from . import load
    _restore(state, load(path))


def _manager_functions(step):
    from . import CheckpointManager

    def save_run(state, path):
        with CheckpointManager(path, durable=False) as mgr:
            mgr.save(step, _payload(state))

    def load_run(state, path):
        with CheckpointManager(path, durable=False) as mgr:
            ck = mgr.restore()
        if ck is None:
            raise FileNotFoundError(f"check_resume: the run directory {path} has no checkpoint")
        _restore(state, ck)

    return save_run, load_run


# --- snapshots and their comparison ----------------------------------------------------------------

def _copy(v):
    import torch
    if isinstance(v, torch.Tensor):
        return v.detach().clone()
    if isinstance(v, dict):
        items = ((k, _copy(x)) for k, x in v.items())
        return type(v)(items) if type(v) in (dict, collections.OrderedDict) else dict(items)
    if isinstance(v, (list, tuple)) and type(v) in (list, tuple):
        return type(v)(_copy(x) for x in v)
    try:
        return copy.deepcopy(v)
    except Exception:  # a function (LambdaLR's lambdas are None in state_dict; anything else stays shared)
        return v


def _snapshot(state):
    import torch
    snap = {name: _copy(obj.state_dict()) for name, obj in _stateful(state).items()}
    snap.update(_copy(_rng_entries()))
    return snap, torch.get_num_threads()


def _describe(v):
    import torch
    if isinstance(v, torch.Tensor):
        return f"{str(v.dtype).replace('torch.', '')} {list(v.shape)}"
    if isinstance(v, (dict, list, tuple)):
        return f"{type(v).__name__} of {len(v)}"
    r = repr(v)
    return f"{type(v).__name__} {r if len(r) <= 40 else r[:37] + '...'}"


class _Differ:
    def __init__(self, atol, rtol):
        self.atol, self.rtol = atol, rtol
        self.entries = []  # (path, expected, actual, max_abs)

    def add(self, path, a, b, abs_diff=0.0, missing=None):
        self.entries.append((path, "" if missing == "a" else _describe(a), "" if missing == "b" else _describe(b),
                             abs_diff))

    def close(self, x, y):
        if x == y or (isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y)):
            return True
        return abs(x - y) <= self.atol + self.rtol * abs(y)

    def compare(self, a, b, path):
        import torch
        join = (lambda k: f"{path}/{k}" if path else str(k))
        if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
            if a.shape != b.shape or a.dtype != b.dtype:
                return self.add(path, a, b)
            if torch.equal(a, b) or a.numel() == 0:
                return
            if a.is_floating_point() or a.is_complex():
                x, y = a.detach().to(torch.complex128 if a.is_complex() else torch.float64), b.detach().to(
                    torch.complex128 if b.is_complex() else torch.float64)
                same = torch.isclose(x, y, rtol=self.rtol, atol=self.atol, equal_nan=True)
                if bool(same.all()):
                    return
                d = (x - y).abs()[~same]
                d = torch.where(torch.isnan(d), torch.full_like(d, math.inf), d)
                return self.add(path, a, b, float(d.max()))
            d = (a.to(torch.float64) - b.to(torch.float64)).abs()
            return self.add(path, a, b, float(d.max()))
        if isinstance(a, dict) and isinstance(b, dict):
            for k, x in a.items():
                if k in b:
                    self.compare(x, b[k], join(k))
                else:
                    self.add(join(k), x, None, missing="b")
            for k, y in b.items():
                if k not in a:
                    self.add(join(k), None, y, missing="a")
            return
        if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and type(a) is type(b):
            for i in range(max(len(a), len(b))):
                if i >= len(b):
                    self.add(join(i), a[i], None, missing="b")
                elif i >= len(a):
                    self.add(join(i), None, b[i], missing="a")
                else:
                    self.compare(a[i], b[i], join(i))
            return
        numbers = (int, float)
        if isinstance(a, numbers) and isinstance(b, numbers) and not isinstance(a, bool) and not isinstance(b, bool):
            if not self.close(a, b):
                self.add(path, a, b, abs(a - b) if not (math.isnan(a) or math.isnan(b)) else math.inf)
            return
        try:
            equal = type(a) is type(b) and bool(a == b)
        except Exception:
            equal = a is b
        if not equal:
            self.add(path, a, b)


# --- what the first difference likely means --------------------------------------------------------

def _kind(obj, name):
    import torch
    if isinstance(obj, torch.nn.Module):
        return "model"
    if isinstance(obj, torch.optim.Optimizer):
        return "optimizer"
    if hasattr(obj, "last_epoch") or type(obj).__name__ in ("ReduceLROnPlateau",) or "scheduler" in type(obj).__name__.lower():
        return "scheduler"
    if any(w in (type(obj).__name__ + " " + str(name)).lower() for w in ("sampler", "loader", "data")):
        return "data"
    return "object"


def _cause(r, objects):
    if r.via == "straight":
        if r.after_make_state:
            return ("make_state() built different objects the second time: seed every generator it uses inside it "
                    "(torch.manual_seed, random.seed, numpy.random.seed) and build the same objects in the same order; "
                    "a resume cannot be exact before two fresh starts agree.")
        return (f"the loop does not repeat itself: two runs from make_state() already differ at step {r.first_step} "
                "without any resume. Make the step deterministic (the same data in the same order, seeded generators, "
                "deterministic kernels) before checking the resume.")
    if not r.after_load:
        if r.threads_straight != r.threads_resumed:
            s = (f"the state matched right after the load, but the thread count changed from {r.threads_straight} to "
                 f"{r.threads_resumed}: a reduction (a sum, a matmul, a norm) splits its floats across threads, so "
                 "another thread count adds them in another order and the last bits change, then grow. Resume with "
                 "the same number of threads (torch.set_num_threads) as the interrupted run.")
        else:
            s = (f"the state matched right after the load, yet step {r.first_step} went differently: the step uses "
                 "something the checkpoint does not hold — a data loader or sampler not in the dict make_state() "
                 "returns, a generator of its own — or a kernel that is not deterministic.")
        if 0 < r.max_abs_diff < 1e-4:
            s += (f" The differences are tiny (at most {r.max_abs_diff:.3g}), the way rounding from another thread "
                  "count or a nondeterministic kernel looks.")
        return s
    top = r.entry.split("/", 1)[0]
    if top == "rng_state":
        return ("torch's RNG was not saved or not restored: the fresh objects reseed it, so dropout masks, noise and "
                "shuffles after the resume differ. Save torch.get_rng_state() with the checkpoint and call "
                "torch.set_rng_state() last, after building the objects (building a model draws from it).")
    if top == "python_random":
        return ("Python's random module was not restored: save random.getstate() with the checkpoint and call "
                "random.setstate() on load.")
    if top == "numpy_random":
        return ("numpy's global generator was not restored: save numpy.random.get_state() with the checkpoint and "
                "call numpy.random.set_state() on load.")
    kind = _kind(objects.get(top), top) if top in objects else "object"
    if kind == "scheduler":
        return (f"the learning-rate scheduler '{top}' was not restored: a fresh scheduler starts its schedule over "
                "(last_epoch, _step_count). Save scheduler.state_dict() and load it after the optimizer's.")
    if kind == "data":
        return (f"the data position ('{top}') was not restored: a fresh sampler or loader restarts its epoch, so the "
                "resumed run sees batches again or in another order. Save its state_dict() and load it.")
    if kind == "optimizer":
        if r.entry.startswith(f"{top}/state") and (not r.actual or r.actual.endswith(" of 0")):
            return (f"the optimizer '{top}' has no per-parameter state after the load (Adam's exp_avg, momentum "
                    "buffers, step): it was built after the load, or its state_dict was never loaded, so it starts "
                    "from zero. Build the optimizer with the model, then load the checkpoint into both.")
        if "/param_groups" in r.entry:
            return (f"the optimizer '{top}''s hyperparameters (param_groups: lr, betas, weight decay) were not "
                    "restored: load its state_dict, and the scheduler's after it.")
        return (f"the optimizer '{top}''s state was not restored, or was restored into an optimizer that was then "
                "replaced: load its state_dict into the optimizer the training step uses.")
    if kind == "model":
        return f"the model '{top}' was not restored: load its state_dict into the fresh model."
    return f"'{top}' was not restored: save its state_dict() with the checkpoint and load it back."


# --- the check -----------------------------------------------------------------------------------

class _Checker:
    def __init__(self, make_state, train_step, report, atol, rtol, resume_threads):
        self.make_state, self.train_step, self.report = make_state, train_step, report
        self.atol, self.rtol, self.resume_threads = atol, rtol, resume_threads
        self.process = _Process()
        self.straight = []
        self.via = ""

    def run_straight(self):
        self.process.reset()
        state = self.make_state()
        self.straight.append(_snapshot(state))
        for i in range(self.report.steps):
            self.train_step(state, i)
            self.straight.append(_snapshot(state))
        self.report.threads_straight = self.report.threads_resumed = self.straight[-1][1]

    def resume(self, via, save, load, path):
        import torch
        r = self.report
        self.via = via
        self.process.reset()
        state = self.make_state()
        if not self.same(0, _snapshot(state), "made", state):
            return False
        for i in range(r.save_at):
            self.train_step(state, i)
            if not self.same(i, _snapshot(state), "step", state):
                return False
        save(state, path)
        del state  # the objects are gone before the fresh ones are built, as in a new process
        self.process.reset()
        state = self.make_state()
        load(state, path)
        if self.resume_threads:
            torch.set_num_threads(self.resume_threads)
        if not self.same(r.save_at, _snapshot(state), "loaded", state):
            return False
        for i in range(r.save_at, r.steps):
            self.train_step(state, i)
            if not self.same(i, _snapshot(state), "step", state):
                return False
        r.passed.append(via)
        r.threads_resumed = torch.get_num_threads()
        return True

    def same(self, step, got, point, state):
        want = self.straight[step + 1 if point == "step" else step]
        d = _Differ(self.atol, self.rtol)
        d.compare(want[0], got[0], "")
        if not d.entries:
            return True
        r = self.report
        r.ok = False
        before_save = point == "made" or (point == "step" and step < r.save_at)
        r.via = "straight" if before_save else self.via
        r.first_step = step
        r.after_load = point == "loaded"
        r.after_make_state = point == "made"
        r.entry, r.expected, r.actual = d.entries[0][:3]
        r.entries = [e[0] for e in d.entries]
        r.max_abs_diff = max(e[3] for e in d.entries)
        r.threads_straight, r.threads_resumed = want[1], got[1]
        r.cause = _cause(r, state if isinstance(state, dict) else {})
        return False


def check_resume(make_state, train_step, steps=8, save=None, load=None, *, save_at=None, work_dir=None, atol=0.0,
                 rtol=0.0, resume_threads=0):
    """Runs `steps` steps straight and again with save → fresh objects from make_state() → load
    before step `save_at` (default steps // 2), comparing every object's state_dict(), torch's,
    Python's and numpy's generators after every step; returns a ResumeReport.

    make_state() returns a dict of name -> object with state_dict()/load_state_dict() (modules,
    optimizers, schedulers, samplers, ...); train_step(state, step) runs one step (step counts
    from 0). save(state, path) / load(state, path): your checkpoint functions (both or neither);
    neither: ckpt's own, through a file and then through a ckpt.CheckpointManager run directory.
    work_dir: where the files go (kept); default a temporary directory, removed afterwards.
    Elements differ when |a - b| > atol + rtol * |b| (default: any change). resume_threads > 0
    runs the resumed half with that many threads (torch.set_num_threads)."""
    steps = int(steps)
    if steps < 1:
        raise ValueError(f"check_resume: steps is {steps}; at least 1")
    save_at = steps // 2 if save_at is None else int(save_at)
    if not 0 <= save_at <= steps:
        raise ValueError(f"check_resume: save_at is {save_at} but {steps} steps run; 0 <= save_at <= steps")
    if (save is None) != (load is None):
        raise ValueError("check_resume: give both save and load, or neither (ckpt's own then)")
    report = ResumeReport(steps, save_at)
    checker = _Checker(make_state, train_step, report, float(atol), float(rtol), int(resume_threads))
    try:
        with tempfile.TemporaryDirectory(prefix="ckpt-check-resume-") as tmp:
            base = os.fsdecode(work_dir) if work_dir is not None else tmp
            os.makedirs(base, exist_ok=True)

            def fresh(name):
                p = os.path.join(base, name)
                if os.path.isdir(p):
                    import shutil
                    shutil.rmtree(p)
                elif os.path.exists(p):
                    os.remove(p)
                return p

            checker.run_straight()
            if save is not None:
                checker.resume("save/load", save, load, fresh("check-resume.pt"))
                return report
            if not checker.resume("file", _save_file, _load_file, fresh("check-resume.pt")):
                return report
            save_run, load_run = _manager_functions(save_at)
            checker.resume("run manager", save_run, load_run, fresh("check-resume-run"))
            return report
    finally:
        checker.process.reset()
