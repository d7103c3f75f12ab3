"""ckpt-train, the main job, checked from outside with the real Python torch.

TrainResume: a short run killed with SIGKILL mid-epoch and run again ends bit-identical to an
uninterrupted run (final checkpoint, best_model.pt, metrics.jsonl); SIGTERM saves and exits 0;
a finished run run again does nothing; --epochs raised trains further.

TrainPython: Python trains the same model for one epoch and writes a checkpoint in the seeds'
layout that `ckpt-train --resume PATH` continues (optimizer state included); Python loads
best_model.pt into its own model and predicts what C++ predicts.

TrainPlot: `ckpt plot` draws every epoch of metrics.jsonl and marks every checkpoint `ckpt ls`
lists, the best one apart.
"""
import gzip
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest
import xml.etree.ElementTree as ET

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../tools/ckpt-train"))
from fashion_cnn import Net  # noqa: E402  doc/train.md's Python twin of ckpt-train's CNN

TRAIN = os.environ.get("CKPT_TRAIN_BIN", "../../build/ckpt-train")
CKPT = os.environ.get("CKPT_BIN", "../../build/ckpt")
DATA = "/usr/share/datasets/fashion-mnist"
QUICK = ["--train-samples", 1000, "--val-samples", 500, "--batch-size", 50, "--threads", 2]  # 20 steps/epoch


def idx(name):
    raw = gzip.open(f"{DATA}/{name}").read()
    dims = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(raw[4 + 4 * dims:], np.uint8).reshape(shape)


def run(*args, **kw):
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=600, **kw)


class Workdir(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="ckpt-train-")

    def tearDown(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def path(self, *parts):
        return os.path.join(self.dir, *parts)

    def train(self, rundir, *args):
        r = run(TRAIN, *QUICK, "--run-dir", rundir, *args)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        return r.stdout

    def ls(self, rundir):
        r = run(CKPT, "ls", rundir, "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        return json.loads(r.stdout)

    def latest(self, rundir):
        return [c for c in self.ls(rundir) if c["latest"]][0]

    def latest_step(self, rundir):
        if not os.path.exists(os.path.join(rundir, "index.json")):
            return -1
        return max([c["step"] for c in self.ls(rundir) if c["latest"]], default=-1)


def same_file(a, b):
    with open(a, "rb") as fa, open(b, "rb") as fb:
        return fa.read() == fb.read()


class TrainResume(Workdir):
    args = ["--epochs", 2, "--save-every-steps", 3, "--keep-last", 2]

    def test_sigkill_mid_epoch_then_rerun_ends_bit_identical(self):
        ref, rundir = self.path("ref"), self.path("run")
        self.train(ref, *self.args)
        for attempt in range(3):  # kill mid-epoch 1 or 2, at least once
            p = subprocess.Popen([TRAIN, *map(str, QUICK), "--run-dir", rundir, *map(str, self.args)],
                                 stdout=subprocess.PIPE, text=True)
            # Wait for a checkpoint past the first few steps, then kill without warning.
            deadline = time.time() + 120
            killed = False
            while time.time() < deadline and p.poll() is None:
                if self.latest_step(rundir) >= 6 + 13 * attempt:
                    p.send_signal(signal.SIGKILL)
                    killed = True
                    break
                time.sleep(0.02)
            p.communicate()
            if not killed:
                break
            self.assertEqual(p.returncode, -signal.SIGKILL)
        out = self.train(rundir, *self.args)
        self.assertIn("resumed from", out)
        a, b = self.latest(ref), self.latest(rundir)
        self.assertEqual(a["step"], 40)
        self.assertEqual(a["file"], b["file"])
        self.assertTrue(same_file(a["path"], b["path"]), "final checkpoints differ")
        self.assertTrue(same_file(os.path.join(ref, "best_model.pt"), os.path.join(rundir, "best_model.pt")))
        def strip(path):
            with open(path) as f:
                return [{k: v for k, v in json.loads(l).items() if k != "elapsed_s"} for l in f]
        self.assertEqual(strip(os.path.join(ref, "metrics.jsonl")), strip(os.path.join(rundir, "metrics.jsonl")))
        ck = torch.load(b["path"])
        self.assertEqual(sorted(k for k in ck), sorted(["model_state", "optimizer_state", "scheduler_state", "epoch",
                                                        "step", "rng_state", "data_state", "metrics"]))

    def test_sigterm_saves_and_exits_cleanly_and_a_finished_run_does_nothing_until_epochs_grow(self):
        rundir = self.path("run")
        p = subprocess.Popen([TRAIN, *map(str, QUICK), "--run-dir", rundir, "--epochs", "3", "--save-every-steps", "0"],
                             stdout=subprocess.PIPE, text=True)
        deadline = time.time() + 120
        while time.time() < deadline and not os.path.exists(os.path.join(rundir, "index.json")):
            time.sleep(0.02)
        p.send_signal(signal.SIGTERM)
        out, _ = p.communicate(timeout=120)
        self.assertEqual(p.returncode, 0, out)
        self.assertIn("interrupted: checkpoint saved at step", out)
        step = int(re.search(r"saved at step (\d+)", out).group(1))
        self.assertEqual(self.latest(rundir)["step"], step)
        out = self.train(rundir, "--epochs", 3, "--save-every-steps", 0)
        self.assertIn(f"step {step})", out)
        self.assertEqual(self.latest(rundir)["step"], 60)
        self.assertIn("nothing to do", self.train(rundir, "--epochs", 3))
        self.train(rundir, "--epochs", 4)
        self.assertEqual(self.latest(rundir)["step"], 80)
        with open(os.path.join(rundir, "metrics.jsonl")) as f:
            self.assertEqual(len(f.readlines()), 4)


class TrainPython(Workdir):
    def test_python_checkpoint_in_the_seeds_layout_is_continued(self):
        torch.manual_seed(0)
        x = torch.tensor(idx("train-images-idx3-ubyte.gz")[:1000], dtype=torch.float32).unsqueeze(1) / 255
        y = torch.tensor(idx("train-labels-idx1-ubyte.gz")[:1000], dtype=torch.long)
        model = Net()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        for i in range(0, 1000, 50):  # one epoch, the seeds' loop
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x[i:i + 50]), y[i:i + 50])
            loss.backward()
            optimizer.step()
        path = self.path("python.pt")
        torch.save({"model_state": model.state_dict(), "optimizer_state": optimizer.state_dict(), "epoch": 1,
                    "step": 20}, path)
        r = run(TRAIN, *QUICK, "--run-dir", self.path("run"), "--epochs", 2, "--resume", path)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn(f"resumed from {path} (epoch 2, step 20)", r.stdout)
        for key in ("scheduler_state", "rng_state", "data_state"):
            self.assertIn(f"has no '{key}': it starts fresh", r.stdout)
        latest = self.latest(self.path("run"))
        self.assertEqual(latest["step"], 40)
        ck = torch.load(latest["path"])
        # Adam continued from Python's moments: 20 steps there plus 20 here.
        steps = {float(s["step"]) for s in ck["optimizer_state"]["state"].values()}
        self.assertEqual(steps, {40.0})
        # The epoch trained a trained model: its loss is well below a fresh model's first epoch.
        self.train(self.path("fresh"), "--epochs", 1)
        fresh = torch.load(self.latest(self.path("fresh"))["path"])["metrics"]["train_loss"]
        self.assertLess(ck["metrics"]["train_loss"], fresh - 0.2)
        Net().load_state_dict(ck["model_state"], strict=True)

    def test_best_model_pt_predicts_in_python_what_it_predicts_in_cpp(self):
        rundir, preds = self.path("run"), self.path("predictions.pt")
        self.train(rundir, "--epochs", 2, "--predict", preds)
        model = Net()
        model.load_state_dict(torch.load(os.path.join(rundir, "best_model.pt")), strict=True)
        model.eval()
        cpp = torch.load(preds)
        images = torch.tensor(idx("t10k-images-idx3-ubyte.gz")[:256], dtype=torch.float32).unsqueeze(1) / 255
        with torch.no_grad():
            logits = model(images)
        self.assertTrue(torch.equal(cpp["labels"], torch.tensor(idx("t10k-labels-idx1-ubyte.gz")[:256],
                                                                 dtype=torch.long)))
        self.assertTrue(torch.equal(logits.argmax(1), cpp["logits"].argmax(1)))
        self.assertTrue(torch.allclose(logits, cpp["logits"], rtol=1e-5, atol=1e-5),
                        (logits - cpp["logits"]).abs().max())


class TrainPlot(Workdir):
    def test_plot_draws_metrics_and_marks_checkpoints_on_disk(self):
        rundir, svg = self.path("run"), self.path("curves.svg")
        self.train(rundir, "--epochs", 3, "--save-every-steps", 7, "--keep-last", 2)
        r = run(CKPT, "plot", rundir, "-o", svg)
        self.assertEqual(r.returncode, 0, r.stderr)
        root = ET.parse(svg).getroot()
        ns = {"s": "http://www.w3.org/2000/svg"}
        with open(os.path.join(rundir, "metrics.jsonl")) as f:
            lines = [json.loads(l) for l in f]
        self.assertEqual(len(lines), 3)
        series = {p.get("data-series"): p for p in root.iterfind(".//s:polyline[@class='series']", ns)}
        self.assertEqual(set(series), {"train_loss", "val_loss", "train_acc", "val_acc"})
        for name, poly in series.items():
            pts = [tuple(map(float, p.split(","))) for p in poly.get("points").split()]
            self.assertEqual(len(pts), len(lines), name)
            # Screen y falls as the value rises: the series' order must match metrics.jsonl's.
            values = [l[name] for l in lines]
            for i in range(len(pts)):
                for j in range(len(pts)):
                    if values[i] < values[j]:
                        self.assertGreater(pts[i][1], pts[j][1], name)
            xs = [p[0] for p in pts]
            self.assertEqual(xs, sorted(xs))
        listed = self.ls(rundir)
        marks = root.findall(".//s:*[@data-step]", ns)
        panels = root.findall(".//s:g[@class='panel']", ns)
        self.assertEqual(len(panels), 2)
        self.assertEqual(sorted(int(m.get("data-step")) for m in marks),
                         sorted(2 * [c["step"] for c in listed]))  # once in each panel
        best = [m for m in marks if "best" in m.get("class")]
        self.assertEqual({int(m.get("data-step")) for m in best}, {c["step"] for c in listed if c["best"]})
        texts = " ".join(t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text"))
        for words in ("epoch", "loss", "accuracy (%)", "train", "validation", "best checkpoint"):
            self.assertIn(words, texts)
        self.assertGreaterEqual(len(root.findall(".//s:line[@class='xtick']", ns)), 4)
        missing = run(CKPT, "plot", self.path("nothing"))
        self.assertEqual(missing.returncode, 1)
        self.assertIn("metrics.jsonl: no such file", missing.stderr)


if __name__ == "__main__":
    unittest.main()
