"""Exact resume and cross-language training state, with the real Python torch.

Resume: a run trained N steps straight and a run stopped at step k, saved, and finished by a
new process from the checkpoint end in byte-identical files (parameters, buffers, optimizer
state, LR, RNG, sampler, metrics) — for every optimizer and scheduler, at an epoch boundary
and mid-epoch.

CrossLanguage: Python training writes a checkpoint that LibTorch restores with bit-identical
state; a checkpoint LibTorch writes loads into Python's model, optimizer and scheduler through
their own load_state_dict and trains on.
"""
import math
import os
import shutil
import subprocess
import tempfile
import unittest

import torch
import torch.nn as nn

TRAIN = os.environ.get("CKPT_TRAIN", "../../build/tests/train_driver")
CKPT = os.environ.get("CKPT_BIN", "../../build/ckpt")
STEPS = 20
STEPS_PER_EPOCH = 7  # 200 samples in batches of 32


def driver(*args):
    r = subprocess.run([TRAIN, *map(str, args)], capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        raise AssertionError(f"train_driver {' '.join(map(str, args))}: {r.stderr}")


class Workdir(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="ckpt-resume-")

    def tearDown(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def path(self, *parts):
        p = os.path.join(self.dir, *parts)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        return p


class Resume(Workdir):
    def check(self, optimizer, scheduler, k):
        common = ["--optimizer", optimizer, "--scheduler", scheduler, "--steps", STEPS]
        straight, resumed = self.path("straight", "final.pt"), self.path("resumed", "final.pt")
        ck = self.path("resumed", "ck.pt")
        driver(*common, "--out", straight)
        driver(*common, "--stop-after", k, "--checkpoint", ck)
        driver(*common, "--resume", ck, "--out", resumed)
        with open(straight, "rb") as a, open(resumed, "rb") as b:
            if a.read() != b.read():
                sa, sb = torch.load(straight), torch.load(resumed)
                diffs = [key for key in sa["model_state"] if not torch.equal(sa["model_state"][key], sb["model_state"][key])]
                self.fail(f"{optimizer}/{scheduler} resumed at step {k} differs from the straight run; model diffs: {diffs}")
        # The checkpoint really was mid-run, and Python reads it.
        state = torch.load(ck)
        self.assertEqual(state["step"], k)
        self.assertEqual(state["epoch"], (k - 1) // STEPS_PER_EPOCH)

    def test_every_optimizer(self):
        for opt in ("sgd", "sgd_nesterov", "sgd_plain", "adam", "adam_amsgrad", "adamw", "rmsprop", "adagrad", "lbfgs"):
            for k in (STEPS_PER_EPOCH, 10):  # at an epoch boundary and mid-epoch
                with self.subTest(optimizer=opt, k=k):
                    self.check(opt, "step", k)

    def test_every_scheduler(self):
        for sched in ("none", "step", "multistep", "exponential", "cosine", "linear", "onecycle", "plateau"):
            for k in (STEPS_PER_EPOCH, 10):
                with self.subTest(scheduler=sched, k=k):
                    self.check("sgd" if sched == "onecycle" else "adam", sched, k)

    def test_resume_twice(self):
        common = ["--optimizer", "rmsprop", "--scheduler", "cosine", "--steps", STEPS]
        driver(*common, "--out", self.path("a", "final.pt"))
        driver(*common, "--stop-after", 5, "--checkpoint", self.path("b", "ck1.pt"))
        driver(*common, "--resume", self.path("b", "ck1.pt"), "--stop-after", 12, "--checkpoint", self.path("b", "ck2.pt"))
        driver(*common, "--resume", self.path("b", "ck2.pt"), "--out", self.path("b", "final.pt"))
        with open(self.path("a", "final.pt"), "rb") as a, open(self.path("b", "final.pt"), "rb") as b:
            self.assertEqual(a.read(), b.read())


# --- the same run in Python ------------------------------------------------------------------------

def python_model():
    return nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 3))


def python_optimizer(name, params):
    O = torch.optim
    return {
        "sgd": lambda: O.SGD(params, lr=0.05, momentum=0.9, weight_decay=1e-4),
        "adam": lambda: O.Adam(params, lr=1e-2),
        "adam_amsgrad": lambda: O.Adam(params, lr=1e-2, amsgrad=True, weight_decay=1e-3),
        "adamw": lambda: O.AdamW(params, lr=1e-2),
        "rmsprop": lambda: O.RMSprop(params, lr=1e-2, momentum=0.5, centered=True),
        "adagrad": lambda: O.Adagrad(params, lr=5e-2),
    }[name]()


def python_scheduler(name, opt):
    S = torch.optim.lr_scheduler
    return {
        "none": lambda: None,
        "step": lambda: S.StepLR(opt, 3, 0.5),
        "multistep": lambda: S.MultiStepLR(opt, [4, 9, 9, 15], 0.5),
        "exponential": lambda: S.ExponentialLR(opt, 0.9),
        "cosine": lambda: S.CosineAnnealingLR(opt, 6, 1e-4),
        "linear": lambda: S.LinearLR(opt, 0.25, 1.0, 8),
        "onecycle": lambda: S.OneCycleLR(opt, max_lr=0.05, total_steps=STEPS + 1),
        "plateau": lambda: S.ReduceLROnPlateau(opt, patience=0, factor=0.5),
    }[name]()


def python_train(opt_name, sched_name, steps):
    """Trains like train_driver (same data; own RNG stream) and returns the checkpoint dict."""
    torch.manual_seed(1234)
    model = python_model()
    opt = python_optimizer(opt_name, model.parameters())
    sched = python_scheduler(sched_name, opt)
    g = torch.Generator().manual_seed(99)
    X, Y = torch.randn(200, 8, generator=g), torch.randint(0, 3, (200,), generator=g)
    order = torch.randperm(200, generator=torch.Generator().manual_seed(7))
    pos, epoch, loss_sum = 0, 0, 0.0
    for _ in range(steps):
        if pos >= 200:
            if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
                sched.step(loss_sum)
            pos, epoch, loss_sum = 0, epoch + 1, 0.0
        idx = order[pos:pos + 32]
        pos += len(idx)
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(X[idx]), Y[idx])
        loss.backward()
        opt.step()
        loss_sum += loss.item()
        if sched is not None and not isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
            sched.step()
    ck = {"model_state": model.state_dict(), "optimizer_state": opt.state_dict(), "epoch": epoch, "step": steps,
          "rng_state": torch.get_rng_state(),
          "data_state": {"epoch": epoch, "index": pos, "size": 200, "shuffle": True, "seed": 7, "order": order},
          "metrics": {"epoch_loss_sum": loss_sum}, "config": (opt_name, sched_name)}
    if sched is not None:
        ck["scheduler_state"] = sched.state_dict()
    return ck, model, opt, sched


def python_steps(model, opt, n=5, after_step=None):
    """n training steps on fixed random batches; returns the losses."""
    g = torch.Generator().manual_seed(5)
    losses = []
    for _ in range(n):
        x, y = torch.randn(32, 8, generator=g), torch.randint(0, 3, (32,), generator=g)
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        if after_step:
            after_step(loss)
        losses.append(loss.item())
    return losses


def assert_same_state(test, a, b, path="<root>"):
    """Tensors bit-identical; numbers equal in value (0 == 0.0); containers recursively."""
    if isinstance(a, torch.Tensor):
        test.assertIsInstance(b, torch.Tensor, path)
        test.assertEqual(a.dtype, b.dtype, path)
        test.assertEqual(a.shape, b.shape, path)
        test.assertTrue(torch.equal(a, b), f"{path}: tensors differ")
    elif isinstance(a, dict):
        test.assertIsInstance(b, dict, path)
        test.assertEqual(set(a.keys()), set(b.keys()), path)
        for k in a:
            assert_same_state(test, a[k], b[k], f"{path}/{k}")
    elif isinstance(a, (list, tuple)):
        test.assertEqual(len(a), len(b), path)
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_state(test, x, y, f"{path}/{i}")
    elif isinstance(a, float) and math.isinf(a):
        test.assertEqual(a, b, path)
    else:
        test.assertEqual(a, b, path)


PYTHON_ONLY_KEYS = {"foreach", "maximize", "capturable", "differentiable", "fused"}


class CrossLanguage(Workdir):
    def test_schedulers_follow_pythons_lr_curve_exactly(self):
        for name in ("step", "multistep", "exponential", "cosine", "linear", "onecycle", "plateau"):
            with self.subTest(scheduler=name):
                steps = STEPS if name != "cosine" else 40  # past T_max: the curve climbs back
                r = subprocess.run([TRAIN, "--optimizer", "sgd", "--scheduler", name, "--steps", str(STEPS),
                                    "--lr-curve", str(steps)], capture_output=True, text=True, timeout=120)
                self.assertEqual(r.returncode, 0, r.stderr)
                cpp = [tuple(float(x) for x in line.split()) for line in r.stdout.split("\n") if line]
                model = python_model()
                opt = python_optimizer("sgd", model.parameters())
                sched = python_scheduler(name, opt)
                py = []
                for i in range(steps):
                    opt.step()
                    if name == "plateau":
                        sched.step(1.0 - 0.1 * i if i < 5 else 0.7)
                    else:
                        sched.step()
                    py.append((opt.param_groups[0]["lr"], opt.param_groups[0]["momentum"]))
                self.assertEqual(len(cpp), steps)
                for i, (a, b) in enumerate(zip(py, cpp)):
                    self.assertEqual(a, b, f"{name}: step {i + 1}: Python lr, momentum {a} vs LibTorch {b}")

    def test_onecycle_built_with_other_bounds_resumes_as_pythons_does(self):
        # Both sides build OneCycleLR with other max_lr, momentum bounds, div_factor and length,
        # then load a LibTorch checkpoint taken at step 10: Python takes the bounds from the
        # restored param_groups and the length from the scheduler state, and so must LibTorch.
        ck = self.path("onecycle.pt")
        driver("--optimizer", "sgd", "--scheduler", "onecycle", "--steps", STEPS, "--stop-after", 10, "--checkpoint", ck)
        left = STEPS + 1 - 10 - 1  # steps until last_epoch reaches total_steps
        r = subprocess.run([TRAIN, "--optimizer", "sgd", "--scheduler", "onecycle_other", "--steps", str(STEPS),
                            "--resume", ck, "--lr-curve", str(left)], capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        cpp = [tuple(float(x) for x in line.split()) for line in r.stdout.split("\n") if line]

        def python_curve(load):
            opt = python_optimizer("sgd", python_model().parameters())
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.5, total_steps=STEPS + 11, max_momentum=0.99,
                                                        base_momentum=0.8, div_factor=10)
            if load:
                state = torch.load(ck)
                opt.load_state_dict(state["optimizer_state"])
                sched.load_state_dict(state["scheduler_state"])
            out = []
            for _ in range(left):
                opt.step()
                sched.step()
                out.append((opt.param_groups[0]["lr"], opt.param_groups[0]["momentum"]))
            return out

        py = python_curve(load=True)
        self.assertNotEqual(py, python_curve(load=False))  # the restored state really decides
        self.assertEqual(len(cpp), left)
        for i, (a, b) in enumerate(zip(py, cpp)):
            self.assertEqual(a, b, f"step {11 + i}: Python lr, momentum {a} vs LibTorch {b}")

    def test_python_checkpoint_restores_bit_identical_in_libtorch(self):
        for opt_name in ("sgd", "adam", "adam_amsgrad", "adamw", "rmsprop", "adagrad"):
            for sched_name in ("step", "multistep", "cosine", "linear", "exponential", "plateau"):
                if sched_name != "step" and opt_name not in ("adam", "sgd"):
                    continue
                with self.subTest(optimizer=opt_name, scheduler=sched_name):
                    ck, *_ = python_train(opt_name, sched_name, 10)
                    src, dump = self.path(f"py_{opt_name}_{sched_name}.pt"), self.path("dump.pt")
                    torch.save(ck, src)
                    driver("--optimizer", opt_name, "--scheduler", sched_name, "--steps", STEPS, "--restore", src, "--out", dump)
                    back = torch.load(dump)
                    assert_same_state(self, ck["model_state"], back["model_state"])
                    self.assertEqual(list(ck["model_state"].keys()), list(back["model_state"].keys()))
                    assert_same_state(self, ck["optimizer_state"]["state"], back["optimizer_state"]["state"])
                    for g_py, g_cpp in zip(ck["optimizer_state"]["param_groups"], back["optimizer_state"]["param_groups"]):
                        for key, value in g_py.items():
                            if key not in PYTHON_ONLY_KEYS:
                                assert_same_state(self, value, g_cpp[key], f"param_groups/{key}")
                    for key, value in ck["scheduler_state"].items():
                        assert_same_state(self, value, back["scheduler_state"][key], f"scheduler_state/{key}")
                    for key in ("epoch", "step", "rng_state", "data_state", "metrics"):
                        assert_same_state(self, ck[key], back[key], key)

    def test_libtorch_checkpoint_trains_on_in_python(self):
        # In the torch 2.14 layout (the default) and in 1.13's: Python 1.13 loads both.
        for opt_name, sched_name, layout in [(o, s, l) for o in ("sgd", "adam", "adamw", "rmsprop", "adagrad")
                                             for s in ("step", "cosine", "onecycle", "plateau")
                                             for l in ("2.x", "1.13") if l == "2.x" or s == "step"]:
                if sched_name == "onecycle" and opt_name == "adagrad":
                    continue  # OneCycleLR cycles momentum, which Adagrad lacks
                with self.subTest(optimizer=opt_name, scheduler=sched_name, layout=layout):
                    ck_path = self.path(f"cpp_{opt_name}_{sched_name}.pt")
                    driver("--optimizer", opt_name, "--scheduler", sched_name, "--steps", STEPS,
                           "--stop-after", 10, "--checkpoint", ck_path, "--layout", layout)
                    ck = torch.load(ck_path)
                    model = python_model()
                    opt = python_optimizer(opt_name, model.parameters())
                    sched = python_scheduler(sched_name, opt)
                    model.load_state_dict(ck["model_state"])  # strict
                    opt.load_state_dict(ck["optimizer_state"])
                    sched.load_state_dict(ck["scheduler_state"])
                    torch.set_rng_state(ck["rng_state"])
                    # What was loaded is what LibTorch had.
                    assert_same_state(self, ck["model_state"], model.state_dict())
                    assert_same_state(self, ck["optimizer_state"]["state"], opt.state_dict()["state"])
                    self.assertEqual(opt.param_groups[0]["lr"], ck["optimizer_state"]["param_groups"][0]["lr"])
                    if sched_name != "plateau":
                        self.assertEqual(sched.get_last_lr(), ck["scheduler_state"]["_last_lr"])
                        self.assertEqual(sched.last_epoch, 10)
                    # And Python trains on from there.
                    before = [p.detach().clone() for p in model.parameters()]
                    step_sched = (lambda loss: sched.step(loss.item())) if sched_name == "plateau" else \
                        (lambda loss: sched.step())
                    self.assertTrue(all(map(math.isfinite, python_steps(model, opt, after_step=step_sched))))
                    self.assertTrue(any(not torch.equal(a, p) for a, p in zip(before, model.parameters())))
                    if opt_name in ("adam", "adamw", "adagrad"):
                        self.assertEqual(opt.state_dict()["state"][0]["step"].item(), 15.0)

    def test_libtorch_state_in_the_113_layout_is_pythons_own(self):
        # Asked for torch 1.13's layout, LibTorch writes the keys, their order and their kinds
        # that Python 1.13's own optimizer and scheduler write at the same moment.
        for opt_name in ("sgd", "adam", "adamw", "rmsprop", "adagrad"):
            for sched_name in ("step", "cosine", "plateau"):
                with self.subTest(optimizer=opt_name, scheduler=sched_name):
                    ck_path = self.path(f"cpp113_{opt_name}_{sched_name}.pt")
                    driver("--optimizer", opt_name, "--scheduler", sched_name, "--steps", STEPS,
                           "--stop-after", 10, "--checkpoint", ck_path, "--layout", "1.13")
                    ck = torch.load(ck_path)
                    py, *_ = python_train(opt_name, sched_name, 10)
                    kinds = lambda d: [(k, type(v).__name__) for k, v in d.items()]
                    self.assertEqual(kinds(ck["optimizer_state"]["param_groups"][0]),
                                     kinds(py["optimizer_state"]["param_groups"][0]))
                    self.assertEqual(kinds(ck["optimizer_state"]["state"][0]), kinds(py["optimizer_state"]["state"][0]))
                    self.assertEqual(kinds(ck["scheduler_state"]), kinds(py["scheduler_state"]))

    def test_python_weights_only_loads_a_libtorch_checkpoint_without_floats(self):
        # 1.13's weights_only rejects every float, so this checks the parts that can pass: the
        # model entry of a LibTorch checkpoint, re-saved alone by ckpt.
        ck_path = self.path("cpp.pt")
        driver("--optimizer", "sgd", "--scheduler", "none", "--steps", 5, "--stop-after", 3, "--checkpoint", ck_path)
        sd = torch.load(ck_path)["model_state"]
        self.assertIsInstance(sd, type(python_model().state_dict()))
        self.assertIn("1.num_batches_tracked", sd)
        self.assertEqual(sd._metadata["1"], {"version": 2})  # BatchNorm's _version


class ScriptNet(nn.Module):
    """A module to script (it lives in a file, which torch.jit.script needs)."""
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 4)
        self.bn = nn.BatchNorm1d(4)
        self.seq = nn.Sequential(nn.Linear(4, 2), nn.ReLU())
        self.register_buffer("scale", torch.full((2,), 0.5))

    def forward(self, x):
        return self.seq(self.bn(self.fc(x))) * self.scale


class TorchScript(Workdir):
    """LibTorch's torch::save and Python's torch.jit.save write TorchScript archives, which
    torch.load only hands to torch.jit.load; `ckpt convert` turns them into torch.save files of
    Python's layouts, running nothing."""

    def convert(self, src):
        dst = src[:-3] + ".converted.pt"
        r = subprocess.run([CKPT, "convert", src, dst], capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        return torch.load(dst)

    def test_libtorch_module_and_optimizer_load_into_python_and_train_on(self):
        for opt_name in ("adam", "sgd", "rmsprop", "adagrad", "adamw"):
            with self.subTest(optimizer=opt_name):
                ck_path, prefix = self.path(f"{opt_name}.pt"), self.path(f"{opt_name}_")
                driver("--optimizer", opt_name, "--scheduler", "none", "--steps", STEPS, "--stop-after", 10,
                       "--checkpoint", ck_path, "--torch-save", prefix)
                ck = torch.load(ck_path)  # the same moment, through ckpt's own TrainingState
                # Without ckpt: torch.load hands the file to torch.jit.load, which compiles its
                # code and returns a ScriptModule, not a state dict (for an optimizer, nothing
                # Python's optimizer can load).
                self.assertIsInstance(torch.load(prefix + "optim.pt"), torch.jit.ScriptModule)
                model = python_model()
                model.load_state_dict(self.convert(prefix + "model.pt"))  # strict
                assert_same_state(self, ck["model_state"], model.state_dict())
                opt = python_optimizer(opt_name, model.parameters())
                converted = self.convert(prefix + "optim.pt")
                opt.load_state_dict(converted)
                saved = ck["optimizer_state"]
                for index, st in saved["state"].items():
                    for key, value in st.items():
                        mine = opt.state_dict()["state"][index][key]
                        if torch.is_tensor(value) and value.dim() > 0:
                            self.assertTrue(torch.equal(value, mine), f"state {index}/{key}")
                        else:
                            self.assertEqual(float(value), float(mine), f"state {index}/{key}")
                # The checkpoint is in torch 2.14's layout (the default); torch 1.13's Adam and
                # AdamW have no 'decoupled_weight_decay', which 2.14 writes as AdamW-or-not.
                for key, value in saved["param_groups"][0].items():
                    if key == "decoupled_weight_decay" and key not in opt.param_groups[0]:
                        self.assertEqual(value, opt_name == "adamw", f"param_groups/{key}")
                    elif key not in PYTHON_ONLY_KEYS and key != "params":
                        self.assertEqual(value, opt.param_groups[0][key], f"param_groups/{key}")
                self.assertTrue(all(map(math.isfinite, python_steps(model, opt))))
                if opt_name in ("adam", "adamw", "adagrad"):
                    self.assertEqual(opt.state_dict()["state"][0]["step"].item(), 15.0)

    def test_a_jit_saved_module_converts_to_its_state_dict(self):
        torch.manual_seed(0)
        net = ScriptNet()
        net.bn.running_mean.uniform_()
        src = self.path("scripted.pt")
        torch.jit.save(torch.jit.script(net), src)
        sd = self.convert(src)
        reference = torch.jit.load(src).state_dict()
        self.assertEqual(list(sd.keys()), list(reference.keys()))
        self.assertEqual(list(sd.keys()), list(net.state_dict().keys()))
        for k in sd:
            self.assertTrue(torch.equal(sd[k], reference[k]), k)
        fresh = ScriptNet()
        fresh.load_state_dict(sd)  # strict, into the eager module
        x = torch.randn(5, 3)
        fresh.eval(), net.eval()
        self.assertTrue(torch.equal(fresh(x), net(x)))


if __name__ == "__main__":
    unittest.main()
