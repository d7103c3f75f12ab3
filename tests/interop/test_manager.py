"""The run manager in a real training loop (tests/tools/train_driver with --run-dir), checked
from outside with the ckpt CLI and the real Python torch.

KillNine: a training process killed with SIGKILL at random moments, at least 30 times
(CKPT_KILLS for more), sync and async saves alternating, always leaves a run directory whose
every listed checkpoint verifies, resumes from it, and ends bit-identical to an uninterrupted
run. A damaged newest checkpoint is skipped with a warning and the run still ends identical.

Signals: SIGTERM saves a checkpoint at the next step and exits 0.

BestModel: best_model.pt is a plain state dict that Python's own model loads strictly.

RunCli: `ckpt ls`, `ckpt verify RUNDIR`, `ckpt prune` on a run directory.
"""
import json
import os
import random
import shutil
import signal
import subprocess
import tempfile
import time
import unittest

import torch
import torch.nn as nn

TRAIN = os.environ.get("CKPT_TRAIN", "../../build/tests/train_driver")
CKPT = os.environ.get("CKPT_BIN", "../../build/ckpt")
KILLS = int(os.environ.get("CKPT_KILLS", "30"))
STEPS = 150


def run(cmd, **kw):
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=300, **kw)


class Workdir(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="ckpt-manager-")

    def tearDown(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def path(self, *parts):
        return os.path.join(self.dir, *parts)

    def ls(self, rundir):
        r = run([CKPT, "ls", rundir, "--json"])
        self.assertEqual(r.returncode, 0, r.stderr)
        return json.loads(r.stdout)

    def assert_run_verifies(self, rundir, context=""):
        if not os.path.exists(os.path.join(rundir, "index.json")):
            return []  # killed before the manager opened the directory
        r = run([CKPT, "verify", rundir])
        self.assertEqual(r.returncode, 0, f"{context}: {r.stdout}{r.stderr}")
        listed = self.ls(rundir)
        if listed:
            self.assertEqual(sum(c["latest"] for c in listed), 1, context)
            self.assertLessEqual(sum(c["best"] for c in listed), 1, context)
        for name in os.listdir(rundir):
            # Temp files may exist right after a kill (the next start removes them), but no
            # partial checkpoint is ever under a final name: every recognised name is listed
            # or verifies.
            if name.endswith(".pt") and not name.startswith(".") and name not in ("best.pt", "best_model.pt"):
                if name not in {c["file"] for c in listed}:
                    v = run([CKPT, "verify", "-q", os.path.join(rundir, name)])
                    self.assertEqual(v.returncode, 0, f"{context}: unlisted {name} is partial: {v.stderr}")
        return listed


def same_bytes(a, b):
    with open(a, "rb") as fa, open(b, "rb") as fb:
        return fa.read() == fb.read()


class KillNine(Workdir):
    common = ["--optimizer", "adam", "--scheduler", "onecycle", "--steps", STEPS, "--save-every", 2,
              "--keep-last", 2, "--pad-mb", 4, "--step-ms", 4]

    def reference(self):
        # The same basename as the runs under test: torch.save names the archive after the file.
        os.makedirs(self.path("ref"))
        ref = self.path("ref", "final.pt")
        began = time.monotonic()
        r = run([TRAIN, *self.common, "--run-dir", self.path("ref", "run"), "--out", ref])
        self.reference_seconds = time.monotonic() - began
        self.assertEqual(r.returncode, 0, r.stderr)
        return ref

    def test_sigkill_at_random_moments_always_resumes_and_ends_bit_identical(self):
        ref = self.reference()
        rng = random.Random(int(os.environ.get("CKPT_SEED", "2024")))
        kills = starts = episodes = widened = 0
        resumed_steps = set()
        # Each start is killed at a random moment within a window as long as a whole run took
        # here. On a loaded machine a start can need longer than that just to load LibTorch and
        # resume; three kills in a row that find no new checkpoint widen the window by half, so
        # every episode still makes progress and ends.
        window = max(1.0, self.reference_seconds)
        # Episodes: a fresh run killed at a random moment of each start until it completes;
        # as many episodes as it takes to reach KILLS kills.
        while kills < KILLS:
            episodes += 1
            os.makedirs(self.path(f"e{episodes}"))
            rundir, out = self.path(f"e{episodes}", "run"), self.path(f"e{episodes}", "final.pt")
            latest, stalled = None, 0
            while True:
                mode = ["--async", starts % 2]  # sync and async saves alternate
                starts += 1
                p = subprocess.Popen([TRAIN, *map(str, self.common), *map(str, mode), "--run-dir", rundir,
                                      "--out", out], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                time.sleep(rng.uniform(0.05, window))
                if p.poll() is None:
                    p.send_signal(signal.SIGKILL)
                    kills += 1
                _, err = p.communicate(timeout=300)
                if p.returncode == 0:
                    break
                self.assertEqual(p.returncode, -signal.SIGKILL, err)
                listed = self.assert_run_verifies(rundir, f"after kill {kills}")
                now = [c["step"] for c in listed if c["latest"]]
                resumed_steps.update(now)
                stalled = stalled + 1 if now == latest or not now else 0
                if stalled == 3:
                    window, widened, stalled = window * 1.5, widened + 1, 0
                latest = now
                self.assertLess(starts, 20 * KILLS, f"the runs never finish (kill window {window:.1f} s)")
            self.assertTrue(same_bytes(ref, out), f"episode {episodes}: the killed-and-resumed run differs "
                                                  "from the uninterrupted one")
            self.assert_run_verifies(rundir, "at the end")
        # The kills landed at many different points of the run: on more distinct resume points
        # than a third of the kills, or, for a long soak (more kills than the run has save points;
        # many kills land while a start is still loading), than a quarter of the save points.
        save_points = STEPS // 2
        self.assertGreater(len(resumed_steps), min(KILLS // 3, save_points // 4), sorted(resumed_steps))
        print(f"\n  {kills} SIGKILLs over {starts} starts in {episodes} runs; every run ended bit-identical; "
              f"resumed from steps {sorted(resumed_steps)}; kill window {window:.2f} s "
              f"(a whole run took {self.reference_seconds:.2f} s; widened {widened} times)")

    def test_a_damaged_newest_checkpoint_is_skipped_and_the_run_still_ends_identical(self):
        ref = self.reference()
        rundir, out = self.path("run"), self.path("final.pt")
        # The same command, stopped cleanly part-way (SIGTERM saves and exits).
        p = subprocess.Popen([TRAIN, *map(str, self.common), "--run-dir", rundir, "--out", out],
                             stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 60
        while time.time() < deadline and len(self.ls(rundir) if os.path.exists(os.path.join(rundir, "index.json"))
                                             else []) < 2:
            time.sleep(0.05)
        time.sleep(0.2)
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=60)
        self.assertEqual(p.returncode, 0, err)
        self.assertFalse(os.path.exists(out), "the run finished before it was stopped")
        newest = [c for c in self.ls(rundir) if c["latest"]][0]
        with open(newest["path"], "r+b") as f:  # flip one byte in the middle of its data
            f.seek(newest["bytes"] // 2)
            b = f.read(1)
            f.seek(newest["bytes"] // 2)
            f.write(bytes([b[0] ^ 0x01]))
        r = run([TRAIN, *self.common, "--run-dir", rundir, "--out", out])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(f"skipping damaged checkpoint {newest['path']}", r.stderr)
        self.assertIn("CRC-32 mismatch", r.stderr)
        self.assertTrue(same_bytes(ref, out), "resumed past a damaged checkpoint but did not end identical")


class Signals(Workdir):
    def test_sigterm_saves_at_the_next_step_and_exits_cleanly(self):
        rundir = self.path("run")
        p = subprocess.Popen([TRAIN, "--steps", "100000", "--step-ms", "5", "--run-dir", rundir, "--out",
                              self.path("out.pt")], stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 60
        while not os.path.exists(os.path.join(rundir, "index.json")) and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=60)
        self.assertEqual(p.returncode, 0, err)
        self.assertIn("preempted; saved step", err)
        step = int(err.split("saved step ")[1].split()[0])
        self.assertGreater(step, 0)
        listed = self.ls(rundir)
        self.assertEqual([c["step"] for c in listed if c["latest"]], [step])
        self.assertEqual(torch.load(listed[-1]["path"])["step"], step)


class BestModel(Workdir):
    def test_best_model_pt_loads_strictly_into_pythons_model(self):
        rundir = self.path("run")
        r = run([TRAIN, "--steps", 40, "--save-every", 5, "--keep-last", 1, "--run-dir", rundir, "--out",
                 self.path("out.pt")])
        self.assertEqual(r.returncode, 0, r.stderr)
        listed = self.ls(rundir)
        best = [c for c in listed if c["best"]]
        self.assertEqual(len(best), 1)
        losses = [c["metrics"]["epoch_loss_sum"] for c in listed]
        self.assertEqual(best[0]["metrics"]["epoch_loss_sum"], min(losses))
        model = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 3))
        sd = torch.load(os.path.join(rundir, "best_model.pt"))
        model.load_state_dict(sd, strict=True)
        full = torch.load(os.path.join(rundir, "best.pt"))
        self.assertEqual(full["step"], best[0]["step"])
        for k, v in full["model_state"].items():
            self.assertTrue(torch.equal(v, sd[k]), k)


class ProgressBar(Workdir):
    def test_a_bar_on_a_terminal_and_nothing_on_a_pipe(self):
        import pty
        big = self.path("big.pt")
        torch.save({"w": torch.ones(40 << 20)}, big)  # 160 MB: long enough for a bar
        piped = run([CKPT, "verify", big])
        self.assertEqual(piped.returncode, 0, piped.stderr)
        self.assertEqual(piped.stderr, "")
        pid, fd = pty.fork()
        if pid == 0:
            os.execv(CKPT, [CKPT, "verify", big])
        out = b""
        while True:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        _, status = os.waitpid(pid, 0)
        self.assertEqual(os.waitstatus_to_exitcode(status), 0, out)
        text = out.decode(errors="replace")
        self.assertIn("verifying [", text)
        self.assertIn("%", text)
        self.assertIn(": OK", text)


class RunCli(Workdir):
    def make_run(self):
        rundir = self.path("run")
        r = run([TRAIN, "--steps", 30, "--save-every", 5, "--run-dir", rundir, "--out", self.path("out.pt")])
        self.assertEqual(r.returncode, 0, r.stderr)
        return rundir

    def test_ls_lists_committed_checkpoints_with_latest_and_best(self):
        rundir = self.make_run()
        listed = self.ls(rundir)
        self.assertEqual([c["step"] for c in listed], [5, 10, 15, 20, 25, 30])
        for c in listed:
            for key in ("path", "epoch", "step", "metrics", "bytes", "latest", "best"):
                self.assertIn(key, c)
            self.assertEqual(os.path.getsize(c["path"]), c["bytes"])
            self.assertEqual(torch.load(c["path"])["step"], c["step"])
        self.assertEqual([c["step"] for c in listed if c["latest"]], [30])
        text = run([CKPT, "ls", rundir])
        self.assertEqual(text.returncode, 0)
        self.assertIn("[latest]", text.stdout)
        self.assertIn("[best]", text.stdout)
        missing = run([CKPT, "ls", self.path("nope")])
        self.assertEqual(missing.returncode, 1)
        self.assertIn("no such run directory", missing.stderr)

    def test_verify_names_the_damaged_checkpoint(self):
        rundir = self.make_run()
        self.assertEqual(run([CKPT, "verify", rundir]).returncode, 0)
        victim = self.ls(rundir)[2]["path"]
        with open(victim, "r+b") as f:
            f.truncate(1000)
        r = run([CKPT, "verify", rundir])
        self.assertEqual(r.returncode, 1)
        self.assertIn(f"DAMAGED {victim}", r.stdout)
        self.assertIn("5 of 6 checkpoints verify, 1 damaged", r.stdout)
        j = json.loads(run([CKPT, "verify", rundir, "--json"]).stdout)
        self.assertEqual([c["ok"] for c in j], [True, True, False, True, True, True])

    def test_prune_dry_run_then_prune(self):
        rundir = self.make_run()
        dry = run([CKPT, "prune", rundir, "--keep-last", 2, "--dry-run"])
        self.assertEqual(dry.returncode, 0, dry.stderr)
        self.assertIn("would delete", dry.stdout)
        self.assertEqual(len(self.ls(rundir)), 6)
        best_step = [c["step"] for c in self.ls(rundir) if c["best"]][0]
        r = run([CKPT, "prune", rundir, "--keep-last", 2])
        self.assertEqual(r.returncode, 0, r.stderr)
        kept = sorted(c["step"] for c in self.ls(rundir))
        self.assertEqual(kept, sorted({25, 30, best_step}))
        self.assertEqual(run([CKPT, "verify", rundir]).returncode, 0)
        self.assertEqual(run([CKPT, "prune", rundir]).returncode, 2)  # no policy given
        self.assertEqual(run([CKPT, "prune", rundir, "--keep-best", 1]).returncode, 2)  # no --monitor


if __name__ == "__main__":
    unittest.main()
