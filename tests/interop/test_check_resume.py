"""ckpt.check_resume on real Python torch loops, and `ckpt-train --check-resume` on the main job.

CheckResume: a correct loop passes through a file and through the run manager; each usual cause
of an inexact resume — an RNG not saved, a scheduler not restored, a sampler not restored, an
optimizer built after the load, another thread count, Python's `random` not saved — is caught at
the step where it shows, with the entry that names it.

CheckResumeCli: `ckpt-train --check-resume` passes on the main job (a few steps on a small
subset) and leaves --run-dir alone; with the resumed half on another thread count it fails,
naming it.
"""
import os
import random
import shutil
import subprocess
import tempfile
import unittest

import torch
import torch.nn as nn

import ckpt

TRAIN = os.environ.get("CKPT_TRAIN_BIN", "../../build/ckpt-train")
SAMPLES, BATCH = 48, 8  # 6 steps an epoch: the save before step 4 is mid-epoch
X = torch.arange(SAMPLES * 4, dtype=torch.float32).reshape(SAMPLES, 4).mul(0.37).sin()
Y = X.sum(1, keepdim=True).cos()


class Sampler:
    """A shuffling sampler that can resume mid-epoch, as users write one."""

    def __init__(self, n, seed):
        self.n, self.seed, self.epoch, self.pos = n, seed, 0, 0
        self._draw()

    def _draw(self):
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        self.order = torch.randperm(self.n, generator=g).tolist()

    def next(self, batch):
        if self.pos >= self.n:
            self.epoch, self.pos = self.epoch + 1, 0
            self._draw()
        idx = self.order[self.pos:self.pos + batch]
        self.pos += len(idx)
        return idx

    def state_dict(self):
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, d):
        self.epoch, self.pos = int(d["epoch"]), int(d["pos"])
        self._draw()


def make_state():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 1))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    return {"model": model, "optimizer": opt, "scheduler": torch.optim.lr_scheduler.StepLR(opt, 2, 0.5),
            "sampler": Sampler(SAMPLES, 7)}


def train_step(state, step):
    idx = state["sampler"].next(BATCH)
    state["model"].train()
    state["optimizer"].zero_grad()
    loss = nn.functional.mse_loss(state["model"](X[idx]), Y[idx])
    loss.backward()
    state["optimizer"].step()
    state["scheduler"].step()


def own_save_load(skip=()):
    """A user's torch.save / torch.load checkpoint functions, leaving out what `skip` names."""

    def save(state, path):
        ck = {k: v.state_dict() for k, v in state.items() if k not in skip}
        if "rng" not in skip:
            ck["rng"] = torch.get_rng_state()
        torch.save(ck, path)

    def load(state, path):
        ck = torch.load(path)
        for k, v in state.items():
            if k not in skip:
                v.load_state_dict(ck[k])
        if "rng" not in skip:
            torch.set_rng_state(ck["rng"])

    return dict(zip(("save", "load"), (save, load)))


class CheckResume(unittest.TestCase):
    def failed_after_load(self, report, entry):
        self.assertFalse(report.ok, str(report))
        self.assertEqual(report.first_step, 4, str(report))
        self.assertTrue(report.after_load, str(report))
        self.assertEqual(report.entry, entry, str(report))
        text = str(report)
        self.assertIn("right after the load, before step 4", text)
        self.assertIn(f"'{entry}' differs", text)
        self.assertNotIn("\n", text)  # one paragraph

    def test_correct_loop_passes_through_file_and_manager(self):
        report = ckpt.check_resume(make_state, train_step, steps=8)
        self.assertTrue(report.ok, str(report))
        self.assertTrue(report)
        self.assertEqual(report.first_step, -1)
        self.assertEqual(report.passed, ["file", "run manager"])
        self.assertIn("Resume check passed", str(report))

    def test_correct_own_save_load_passes_through_a_real_file(self):
        with tempfile.TemporaryDirectory() as d:
            report = ckpt.check_resume(make_state, train_step, steps=8, work_dir=d, **own_save_load())
            self.assertTrue(report.ok, str(report))
            self.assertEqual(report.passed, ["save/load"])
            self.assertIsInstance(torch.load(os.path.join(d, "check-resume.pt")), dict)

    def test_catches_save_load_that_forgets_the_rng(self):
        report = ckpt.check_resume(make_state, train_step, steps=8, **own_save_load(skip=("rng",)))
        self.failed_after_load(report, "rng_state")
        self.assertEqual(report.via, "save/load")
        self.assertEqual(report.entries, ["rng_state"])
        self.assertGreater(report.max_abs_diff, 0)
        self.assertIn("RNG was not saved", report.cause)

    def test_catches_save_load_that_forgets_the_scheduler(self):
        report = ckpt.check_resume(make_state, train_step, steps=8, **own_save_load(skip=("scheduler",)))
        self.failed_after_load(report, "scheduler/last_epoch")
        self.assertEqual((report.expected, report.actual), ("int 4", "int 0"))
        self.assertEqual(report.max_abs_diff, 4)
        self.assertIn("scheduler 'scheduler' was not restored", report.cause)

    def test_catches_a_sampler_not_restored(self):
        report = ckpt.check_resume(make_state, train_step, steps=8, **own_save_load(skip=("sampler",)))
        self.failed_after_load(report, "sampler/pos")
        self.assertEqual(report.expected, "int 32")
        self.assertIn("data position ('sampler') was not restored", report.cause)

    def test_catches_an_optimizer_built_after_the_load(self):
        def save(state, path):
            torch.save({k: v.state_dict() for k, v in state.items()} | {"rng": torch.get_rng_state()}, path)

        def load(state, path):
            ck = torch.load(path)
            state["model"].load_state_dict(ck["model"])
            state["sampler"].load_state_dict(ck["sampler"])
            state["optimizer"] = torch.optim.Adam(state["model"].parameters(), lr=0.01)  # built after the load
            state["scheduler"] = torch.optim.lr_scheduler.StepLR(state["optimizer"], 2, 0.5)
            state["scheduler"].load_state_dict(ck["scheduler"])
            torch.set_rng_state(ck["rng"])

        report = ckpt.check_resume(make_state, train_step, steps=8, save=save, load=load)
        self.failed_after_load(report, "optimizer/state/0")
        self.assertEqual(report.actual, "")  # only in the straight run
        self.assertIn("has no per-parameter state after the load", report.cause)

    def test_catches_python_random_not_saved(self):
        def noisy_step(state, step):
            train_step(state, step)
            with torch.no_grad():  # a hand-rolled augmentation drawing from Python's random
                state["model"][0].bias.add_(random.gauss(0, 1e-3))

        report = ckpt.check_resume(make_state, noisy_step, steps=8, **own_save_load())
        self.failed_after_load(report, "python_random")
        self.assertIn("random.getstate()", report.cause)
        # ckpt's own save/load keeps Python's generator too
        self.assertTrue(ckpt.check_resume(make_state, noisy_step, steps=8).ok)

    def test_catches_a_loop_that_does_not_repeat_itself(self):
        seeds = iter(range(100))

        def unseeded():
            state = make_state()
            torch.manual_seed(next(seeds))  # a per-process seed, as a time-based one would be
            return state

        report = ckpt.check_resume(unseeded, train_step, steps=8)
        self.assertFalse(report.ok)
        self.assertEqual((report.via, report.first_step, report.after_make_state), ("straight", 0, True))
        self.assertEqual(report.entry, "rng_state")
        self.assertIn("make_state() built different objects", report.cause)

    def test_rejects_unusable_arguments(self):
        with self.assertRaisesRegex(ValueError, "steps is 0"):
            ckpt.check_resume(make_state, train_step, steps=0)
        with self.assertRaisesRegex(ValueError, "both save and load"):
            ckpt.check_resume(make_state, train_step, save=lambda s, p: None)
        with self.assertRaisesRegex(TypeError, "must return a dict"):
            ckpt.check_resume(lambda: make_state()["model"], train_step)


# The means of eight blocks of 2^17 outputs, squared: torch splits each sum across threads, so 2 and
# 1 threads add the floats in another order (SGD's steps are large enough to keep the last bits).
BIG = torch.arange(8 * (1 << 17) * 2, dtype=torch.float32).reshape(8, 1 << 17, 2).mul(0.618).sin()


def make_sum_state():
    torch.manual_seed(0)
    model = nn.Linear(2, 1)
    return {"model": model, "optimizer": torch.optim.SGD(model.parameters(), lr=0.01)}


def sum_step(state, step):
    state["optimizer"].zero_grad()
    out = state["model"](BIG)
    loss = sum(out[k].mean() ** 2 for k in range(8))
    loss.backward()
    state["optimizer"].step()


class CheckResumeThreads(unittest.TestCase):
    def setUp(self):
        self.threads = torch.get_num_threads()
        torch.set_num_threads(2)

    def tearDown(self):
        torch.set_num_threads(self.threads)

    def test_catches_a_resume_with_another_thread_count(self):
        report = ckpt.check_resume(make_sum_state, sum_step, steps=8, resume_threads=1)
        self.assertFalse(report.ok)
        self.assertEqual(report.first_step, 4)
        self.assertFalse(report.after_load)  # the state matched; the first step with 1 thread went otherwise
        self.assertTrue(report.entry.startswith("model/"), report.entry)
        self.assertEqual((report.threads_straight, report.threads_resumed), (2, 1))
        self.assertTrue(0 < report.max_abs_diff < 1e-4, report.max_abs_diff)
        self.assertIn("thread count changed from 2 to 1", report.cause)
        self.assertEqual(torch.get_num_threads(), 2)  # put back

    def test_same_thread_count_resumes_exactly(self):
        self.assertTrue(ckpt.check_resume(make_sum_state, sum_step, steps=8, resume_threads=2).ok)


class CheckResumeCli(unittest.TestCase):
    # 3 steps an epoch: the 6 steps close an epoch (validation, the scheduler's step) on each side
    # of the save before step 3.
    QUICK = ["--train-samples", "96", "--val-samples", "100", "--batch-size", "32", "--threads", "2",
             "--check-steps", "6"]

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="ckpt-check-resume-cli-")
        self.run_dir = os.path.join(self.dir, "run")

    def tearDown(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def check(self, *extra):
        return subprocess.run([TRAIN, "--check-resume", "--run-dir", self.run_dir, *self.QUICK, *extra],
                              capture_output=True, text=True, timeout=600)

    def test_main_job_resumes_exactly(self):
        p = self.check()
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn("Resume check passed", p.stdout)
        self.assertIn("through a file and through the run manager", p.stdout)
        self.assertFalse(os.path.exists(self.run_dir))  # the check writes nothing there

    def test_main_job_with_another_thread_count_is_caught(self):
        p = self.check("--check-threads", "1")  # the CNN's reductions add in another order
        self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
        self.assertIn("Resume check FAILED", p.stdout)
        self.assertIn("after step 3, 'model_state/", p.stdout)
        self.assertIn("thread count changed from 2 to 1", p.stdout)


if __name__ == "__main__":
    unittest.main()
