"""The Python package `ckpt` (build/python, or installed), with the real Python torch.

PyRoundTrip: every case of the interop corpus round-trips identical between ckpt.save/ckpt.load
and torch.save/torch.load in both directions, to paths and file objects, eager and mmap.
PyHostile: code-running pickles are refused with nothing run; damaged files raise the right
ckpt.Error subclass; unsupported objects raise TypeError naming where they sit.
PyCrash: a process killed with SIGKILL during ckpt.save leaves the old file intact.
PyAsync: async saves store the values at the call while the caller changes the tensors, and the
GIL is released while saving.
PyManager: retention, best model and fallback from Python; `ckpt ls` and `ckpt verify` read the
directory it writes.
"""
import collections
import io
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import warnings

import torch

import ckpt
from test_interop import Net, Reduce, compare, make_cases, torch_layout_zip

CKPT = os.environ.get("CKPT_BIN", "../../build/ckpt")


class Workdir(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="ckpt-python-")

    def tearDown(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def path(self, name):
        return os.path.join(self.dir, name)


class PyRoundTrip(Workdir):
    def test_every_case_both_directions(self):
        for name, obj in make_cases().items():
            with self.subTest(case=name):
                ours, theirs = self.path(f"{name}.ckpt.pt"), self.path(f"{name}.torch.pt")
                ckpt.save(obj, ours)
                torch.save(obj, theirs)
                compare(obj, torch.load(ours), "torch.load(ckpt.save)")
                compare(obj, ckpt.load(theirs), "ckpt.load(torch.save)")
                compare(obj, ckpt.load(ours), "ckpt.load(ckpt.save)")
                compare(obj, ckpt.load(ours, mmap=True), "ckpt.load(mmap=True)")
                # legacy files torch wrote before 1.6
                legacy = self.path(f"{name}.legacy.pt")
                torch.save(obj, legacy, _use_new_zipfile_serialization=False)
                compare(obj, ckpt.load(legacy), "ckpt.load(legacy)")

    def test_file_objects_both_directions(self):
        obj = make_cases()["seed_adam"]
        buf = io.BytesIO()
        ckpt.save(obj, buf)
        buf.seek(0)
        compare(obj, torch.load(buf))
        buf = io.BytesIO()
        torch.save(obj, buf)
        buf.seek(0)
        compare(obj, ckpt.load(buf))
        with open(self.path("f.pt"), "wb") as f:
            ckpt.save(obj, f)
        with open(self.path("f.pt"), "rb") as f:
            compare(obj, ckpt.load(f))

    def test_tensors_pass_without_copies_and_mmap_views_the_file(self):
        t = torch.arange(1 << 20, dtype=torch.float32)
        ckpt.save({"t": t}, self.path("t.pt"))
        loaded = ckpt.load(self.path("t.pt"), mmap=True)["t"]
        self.assertTrue(torch.equal(loaded, t))
        loaded[0] = -1  # copy-on-write: the file is not changed
        self.assertEqual(float(ckpt.load(self.path("t.pt"))["t"][0]), 0.0)

    def test_map_location(self):
        ckpt.save({"t": torch.ones(2)}, self.path("m.pt"))
        self.assertEqual(ckpt.load(self.path("m.pt"), map_location="cpu")["t"].device.type, "cpu")
        self.assertEqual(ckpt.load(self.path("m.pt"), map_location=torch.device("cpu"))["t"].device.type, "cpu")
        self.assertEqual(ckpt.load(self.path("m.pt"), map_location={"cuda:0": "cpu"})["t"].device.type, "cpu")
        with self.assertRaises(ckpt.InvalidArgumentError):
            ckpt.load(self.path("m.pt"), map_location=42)
        with self.assertRaises(ckpt.InvalidArgumentError):
            ckpt.load(self.path("m.pt"), map_location=lambda storage, location: storage)

    def test_optimizer_state_loads_where_weights_only_cannot(self):
        obj = make_cases()["seed_sgd"]
        torch.save(obj, self.path("opt.pt"))
        with self.assertRaises(Exception):  # torch 1.13's weights_only unpickler rejects floats
            torch.load(self.path("opt.pt"), weights_only=True)
        compare(obj, ckpt.load(self.path("opt.pt")))

    def test_verify_and_inspect(self):
        obj = make_cases()["views"]
        ckpt.save(obj, self.path("v.pt"))
        report = ckpt.verify(self.path("v.pt"))
        self.assertEqual(report["crc_checked"], len(report["records"]))
        self.assertEqual(report["storages"], 1)
        info = ckpt.inspect(self.path("v.pt"))
        cli = json.loads(subprocess.run([CKPT, "inspect", "--json", self.path("v.pt")], capture_output=True,
                                        text=True).stdout)
        self.assertEqual([t["path"] for t in info["tensors"]], [t["path"] for t in cli["tensors"]])
        for ours, theirs in zip(info["tensors"], cli["tensors"]):
            self.assertEqual(ours, theirs)
        self.assertEqual(info["totals"], cli["totals"])


class PySeeds(Workdir):
    def test_the_quizs_key_error_names_the_key_that_is_there(self):
        model = torch.nn.Linear(2, 1)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        ckpt.save({"model_state": model.state_dict(), "optimizer_state": optimizer.state_dict(), "epoch": 5},
                  self.path("ck.pt"))
        with self.assertRaises(KeyError) as cm:
            ckpt.restore(self.path("ck.pt"), model=model, optimizer=optimizer, optimizer_key="optimizer")
        self.assertEqual(str(cm.exception), f"{self.path('ck.pt')}: key 'optimizer' not found; "
                                            "did you mean 'optimizer_state'?")
        self.assertIsInstance(cm.exception, ckpt.Error)
        fresh = torch.nn.Linear(2, 1)
        fresh_opt = torch.optim.SGD(fresh.parameters(), lr=0.5)
        ck = ckpt.restore(self.path("ck.pt"), model=fresh, optimizer=fresh_opt)
        self.assertEqual(ck["epoch"], 5)
        self.assertTrue(torch.equal(fresh.weight, model.weight))
        self.assertEqual(fresh_opt.param_groups[0]["lr"], 0.1)


class PyHostile(Workdir):
    def test_code_running_pickles_are_refused_and_nothing_runs(self):
        sentinel = self.path("PWNED")
        for payload, needle in ((Reduce(os.system, (f"touch {sentinel}",)), "posix.system"),
                                (Reduce(eval, (f"open({sentinel!r}, 'w')",)), "builtins.eval"),
                                (Net(), "is not allowed")):
            p = self.path("evil.pt")
            torch_layout_zip(p, pickle.dumps({"model": payload}, protocol=2))
            with self.assertRaises(ckpt.UnsafeError) as cm:
                ckpt.load(p)
            self.assertIn(needle, str(cm.exception))
            self.assertIn(p, str(cm.exception))
            self.assertFalse(os.path.exists(sentinel))

    def test_damaged_files_raise_the_right_error(self):
        ckpt.save({"w": torch.arange(1000.0)}, self.path("ok.pt"))
        data = bytearray(open(self.path("ok.pt"), "rb").read())
        data[len(data) // 2] ^= 1
        open(self.path("flip.pt"), "wb").write(data)
        with self.assertRaises(ckpt.CorruptionError) as cm:
            ckpt.load(self.path("flip.pt"))
        self.assertIn("CRC-32 mismatch", str(cm.exception))
        self.assertNotIn("\n", str(cm.exception))
        ckpt.load(self.path("flip.pt"), verify=False)  # asked not to check
        open(self.path("trunc.pt"), "wb").write(data[:200])
        with self.assertRaises(ckpt.CorruptionError):
            ckpt.load(self.path("trunc.pt"))
        with self.assertRaises(ckpt.NotFoundError) as cm:
            ckpt.load(self.path("missing.pt"))
        self.assertIsInstance(cm.exception, FileNotFoundError)
        self.assertIsInstance(cm.exception, ckpt.Error)

    def test_unsupported_objects_raise_type_error_naming_where_they_sit(self):
        class MyClass:
            pass

        state = {"optimizer": {"param_groups": [{"lr": 0.1, "foo": MyClass()}]}}
        with self.assertRaises(TypeError) as cm:
            ckpt.save(state, self.path("x.pt"))
        self.assertTrue(str(cm.exception).startswith("obj['optimizer']['param_groups'][0]['foo']: cannot save a '"),
                        str(cm.exception))
        self.assertTrue(str(cm.exception).endswith("MyClass' safely"), str(cm.exception))
        for bad in (lambda: 1, Net(), object()):
            with self.assertRaises(TypeError):
                ckpt.save({"x": bad}, self.path("y.pt"))
        self.assertFalse(os.path.exists(self.path("x.pt")))
        cyclic = []
        cyclic.append(cyclic)
        with self.assertRaises(ValueError):
            ckpt.save(cyclic, self.path("z.pt"))


class PyCrash(Workdir):
    def test_sigkill_during_save_leaves_the_old_file_intact(self):
        path = self.path("state.pt")
        old = {"w": torch.full((1000,), 1.0)}
        ckpt.save(old, path)
        before = open(path, "rb").read()
        code = ("import ckpt, torch, sys\n"
                "big = {'w': torch.full((64 << 20,), 2.0)}\n"  # 256 MiB: the save takes a while
                "print('saving', flush=True)\n"
                f"while True: ckpt.save(big, {path!r})\n")
        env = dict(os.environ)
        for attempt in range(5):
            p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, env=env, text=True)
            self.assertEqual(p.stdout.readline().strip(), "saving")
            time.sleep(0.05 + 0.1 * attempt)
            p.send_signal(signal.SIGKILL)
            p.wait()
            state = ckpt.load(path)  # the old file or a complete new one, never a part
            self.assertIn(float(state["w"][0]), (1.0, 2.0))
            if float(state["w"][0]) == 1.0:
                self.assertEqual(open(path, "rb").read(), before)
        leftovers = [n for n in os.listdir(self.dir) if ".tmp-" in n]
        self.assertLessEqual(len(leftovers), 5)  # killed writers' temp files, never under the final name


class PyAsync(Workdir):
    def test_saves_store_the_values_at_the_call(self):
        t = torch.zeros(4 << 20)
        saver = ckpt.AsyncSaver()
        for i in range(3):
            t.fill_(float(i))
            saver.save({"t": t, "i": i}, self.path(f"a{i}.pt"))
            t.fill_(-1.0)  # at once, while the write may still run
        saver.wait()
        for i in range(3):
            state = torch.load(self.path(f"a{i}.pt"))
            self.assertEqual(state["i"], i)
            self.assertTrue(bool((state["t"] == float(i)).all()))
        handle = ckpt.save_async({"x": torch.ones(3)}, self.path("h.pt"))
        handle.wait()
        with ckpt.AsyncSaver() as s:  # leaving the block waits
            s.save({"y": torch.zeros(2)}, self.path("w.pt"))
        self.assertTrue(torch.equal(torch.load(self.path("w.pt"))["y"], torch.zeros(2)))
        self.assertTrue(torch.equal(torch.load(self.path("h.pt"))["x"], torch.ones(3)))

    def test_a_failed_background_save_is_raised(self):
        saver = ckpt.AsyncSaver()
        saver.save({"x": torch.ones(3)}, self.path("no/such/dir/x.pt"))
        with self.assertRaises(ckpt.NotFoundError):
            saver.wait()

    def test_the_gil_is_released_while_saving(self):
        big = {"t": torch.ones(96 << 20)}  # 384 MiB
        ticks = []
        stop = threading.Event()

        def count():
            while not stop.is_set():
                ticks.append(1)
                time.sleep(0.001)

        th = threading.Thread(target=count)
        th.start()
        time.sleep(0.05)
        before = len(ticks)
        t0 = time.time()
        ckpt.save(big, self.path("big.pt"))
        elapsed = time.time() - t0
        during = len(ticks) - before
        stop.set()
        th.join()
        # With the GIL held the other thread would not tick at all during the save.
        self.assertGreater(during, 10 * elapsed, (during, elapsed))


class PyManager(Workdir):
    def state(self, step):
        return {"model_state": collections.OrderedDict(w=torch.full((4,), float(step))),
                "optimizer_state": {"state": {}, "param_groups": []}, "epoch": step // 10, "step": step}

    def test_retention_best_and_fallback(self):
        run = self.path("run")
        losses = {10: 0.9, 20: 0.3, 30: 0.5, 40: 0.6, 50: 0.7}
        with ckpt.CheckpointManager(run, keep_last=2, keep_best=1, monitor="val_loss", mode="min") as mgr:
            self.assertIsNone(mgr.restore())  # a fresh start
            for step, loss in losses.items():
                self.assertTrue(mgr.save(step, self.state(step), metrics={"val_loss": loss}))
            self.assertFalse(mgr.save(50, self.state(50), metrics={"val_loss": 0.7}))  # same step: no-op
            self.assertEqual([c["step"] for c in mgr.checkpoints()], [20, 40, 50])
            self.assertEqual(mgr.best["step"], 20)
        best_model = torch.load(os.path.join(run, "best_model.pt"))
        self.assertTrue(torch.equal(best_model["w"], torch.full((4,), 20.0)))
        # Damage the newest: a new manager falls back to the one before, with a warning.
        newest = os.path.join(run, "epoch=005-step=000050.pt")
        data = bytearray(open(newest, "rb").read())
        data[len(data) - 200] ^= 0xFF
        open(newest, "wb").write(data)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            mgr = ckpt.CheckpointManager(run, keep_last=2, keep_best=1, monitor="val_loss")
            state = mgr.restore()
        self.assertEqual(state["step"], 40)
        self.assertTrue(torch.equal(state["model_state"]["w"], torch.full((4,), 40.0)))
        self.assertEqual(mgr.last_restored["step"], 40)
        self.assertTrue(any(newest in str(w.message) and "skipping" in str(w.message) for w in caught))
        self.assertEqual(mgr.restore("best")["step"], 20)
        self.assertEqual(mgr.restore("step=40")["step"], 40)
        del mgr

    def test_a_warning_from_a_background_commit_while_python_asks_for_the_list(self):
        # No "model_state": every new best warns from the writer thread, under the manager's lock,
        # while this thread keeps asking for the checkpoints. This deadlocked when checkpoints()
        # held the GIL.
        warned = []
        with ckpt.CheckpointManager(self.path("run"), async_save=True, monitor="loss",
                                    warn=warned.append) as mgr:
            for step in range(1, 21):
                mgr.save(step, {"w": torch.ones(1 << 16), "step": step}, metrics={"loss": 1.0 / step})
                while len(mgr.checkpoints()) < step:  # poll while the background commit runs
                    pass
        self.assertTrue(warned)
        self.assertIn("no 'model_state' entry", warned[0])

    def test_a_second_manager_on_one_directory_fails(self):
        run = self.path("run")
        mgr = ckpt.CheckpointManager(run)
        code = f"import ckpt; ckpt.CheckpointManager({run!r})"
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn(f"pid {os.getpid()}", r.stderr)
        self.assertIn("ckpt.IOError", r.stderr)
        del mgr

    def test_ckpt_ls_and_verify_read_what_python_wrote(self):
        run = self.path("run")
        with ckpt.CheckpointManager(run, async_save=True, monitor="val_loss") as mgr:
            for step in (5, 10, 15):
                mgr.save(step, self.state(step), metrics={"val_loss": 1.0 / step})
        listed = json.loads(subprocess.run([CKPT, "ls", run, "--json"], capture_output=True, text=True).stdout)
        self.assertEqual([c["step"] for c in listed], [5, 10, 15])
        self.assertEqual([c["step"] for c in listed if c["latest"]], [15])
        self.assertEqual([c["step"] for c in listed if c["best"]], [15])
        r = subprocess.run([CKPT, "verify", run], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("3 of 3 checkpoints verify", r.stdout)


if __name__ == "__main__":
    unittest.main()
