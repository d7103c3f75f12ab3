"""ckpt-train data parallel under torchrun (issue 17), checked from outside: real torchrun, real
ranks on free ports, the real Python torch.

TrainDistributed:
- a rank SIGKILLed mid-run, the group restarted by torchrun (--max_restarts), ends bit-identical
  to an uninterrupted run with the same number of ranks (final checkpoint, best_model.pt,
  metrics.jsonl);
- a run directory moves between world sizes (2 ranks -> 1 process -> 3 ranks, mid-epoch): every
  epoch sees each training sample exactly once, the RNG notice is printed, the accuracy stays in
  the normal spread of an unresized run, and Python scores the consolidated best_model.pt;
- SIGTERM to torchrun: every rank saves the same step and the run continues exactly;
- --shard-optimizer (ZeRO-1): bit-identical to plain data parallel (Adam is elementwise), killed
  and restarted exactly, each rank's file holding about half of the optimizer state, and the
  consolidated optimizer state an Adam.state_dict() that Python's Adam loads and trains on.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../tools/ckpt-train"))
from fashion_cnn import Net  # noqa: E402  doc/train.md's Python twin of ckpt-train's CNN

TRAIN = os.environ.get("CKPT_TRAIN_BIN", "../../build/ckpt-train")
CKPT = os.environ.get("CKPT_BIN", "../../build/ckpt")
# 2000 training images, global batches of 64: 32 steps an epoch; a checkpoint every 10 steps.
SMALL = ["--train-samples", 2000, "--val-samples", 500, "--save-every-steps", 10, "--threads", 1]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun_cmd(n, run_dir, *flags, restarts=0):
    # Debian's torchrun on Python 3.11 needs the --redirects/--tee pair.
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", str(n),
            "--master_addr", "127.0.0.1", "--master_port", str(free_port()), "--redirects", "2", "--tee", "2",
            "--max_restarts", str(restarts), "--monitor_interval", "1", "--no_python", TRAIN,
            "--run-dir", run_dir, *map(str, SMALL), *map(str, flags)]


def torchrun(n, run_dir, *flags, restarts=0, env=None):
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run(torchrun_cmd(n, run_dir, *flags, restarts=restarts), capture_output=True, text=True,
                          timeout=600, env=e)


def read(path):
    with open(path) as f:
        return f.read()


def metrics(run_dir):
    out = []
    for line in read(os.path.join(run_dir, "metrics.jsonl")).splitlines():
        rec = json.loads(line)
        rec.pop("elapsed_s", None)
        out.append(rec)
    return out


def committed(run_dir):
    try:
        with open(os.path.join(run_dir, "index.json")) as f:
            return bool(json.load(f).get("checkpoints"))
    except (OSError, ValueError):
        return False


class TrainDistributed(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="ckpt-train-dist-")
        cls.straight = os.path.join(cls.tmp, "straight")
        r = torchrun(2, cls.straight, "--epochs", 2)
        if r.returncode != 0:
            raise AssertionError(f"an uninterrupted 2-rank run failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
        cls.straight_out = r.stdout

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def assert_same_run(self, a, b):
        d = subprocess.run([CKPT, "diff", a + "@latest", b + "@latest"], capture_output=True, text=True, timeout=120)
        self.assertEqual(d.returncode, 0, d.stdout + d.stderr)  # rtol 0, atol 0: bit-identical
        with open(os.path.join(a, "best_model.pt"), "rb") as fa, open(os.path.join(b, "best_model.pt"), "rb") as fb:
            self.assertEqual(fa.read(), fb.read(), "best_model.pt differs")
        self.assertEqual(metrics(a), metrics(b))

    def test_the_uninterrupted_run_is_data_parallel_and_checkpoints_per_rank(self):
        self.assertIn("data parallel on 2 ranks", self.straight_out)
        latest = read(os.path.join(self.straight, "latest")).strip()
        names = sorted(os.listdir(os.path.join(self.straight, latest)))
        self.assertEqual(names, ["metadata.json", "rank-00000.pt", "rank-00001.pt"])
        v = subprocess.run([CKPT, "verify", self.straight], capture_output=True, text=True, timeout=120)
        self.assertEqual(v.returncode, 0, v.stdout + v.stderr)
        self.assertEqual([m["step"] for m in metrics(self.straight)], [32, 64])

    def test_a_killed_rank_is_restarted_by_torchrun_and_the_run_ends_bit_identical(self):
        for kill in ("23:1", "37:0"):  # rank 1 mid-epoch 1; rank 0 (the coordinator) mid-epoch 2
            with self.subTest(kill=kill):
                run_dir = os.path.join(self.tmp, "killed-" + kill.replace(":", "-"))
                r = torchrun(2, run_dir, "--epochs", 2, restarts=3, env={"CKPT_TRAIN_KILL_AT": kill})
                self.assertEqual(r.returncode, 0, r.stdout[-3000:] + r.stderr[-3000:])
                self.assertIn("torchrun restart 1", r.stdout)
                self.assertIn("resumed from", r.stdout)
                self.assert_same_run(self.straight, run_dir)

    def test_three_restarts_in_one_run_still_end_bit_identical(self):
        run_dir = os.path.join(self.tmp, "three-kills")
        # Attempt 0 loses rank 1 at step 15, attempt 1 rank 0 at step 33, attempt 2 rank 1 at 52.
        r = torchrun(2, run_dir, "--epochs", 2, restarts=3, env={"CKPT_TRAIN_KILL_AT": "15:1,33:0,52:1"})
        self.assertEqual(r.returncode, 0, r.stdout[-3000:] + r.stderr[-3000:])
        self.assertIn("torchrun restart 3", r.stdout)
        self.assert_same_run(self.straight, run_dir)

    def test_a_second_job_on_the_run_directory_fails_at_once_naming_the_holder(self):
        run_dir = os.path.join(self.tmp, "busy")
        p = subprocess.Popen(torchrun_cmd(2, run_dir, "--epochs", 2), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.time() + 120
            while time.time() < deadline and not os.path.exists(os.path.join(run_dir, "index.json")):
                time.sleep(0.05)
            second = subprocess.run([TRAIN, "--run-dir", run_dir, *map(str, SMALL), "--epochs", "2"],
                                    capture_output=True, text=True, timeout=60)
            self.assertEqual(second.returncode, 1, second.stdout + second.stderr)
            self.assertIn("is in use", second.stderr)
            self.assertIn("pid", second.stderr)
            p.communicate(timeout=300)
        finally:
            if p.poll() is None:
                p.kill()
        self.assertEqual(p.returncode, 0)

    def test_sigterm_saves_the_same_step_on_every_rank_and_the_run_continues_exactly(self):
        run_dir = os.path.join(self.tmp, "preempted")
        p = subprocess.Popen(torchrun_cmd(2, run_dir, "--epochs", 2), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
        try:
            # After the first commit every rank is training with its handlers in place. (Rank 0
            # writes `latest` already when it opens a fresh run, when another rank may still be
            # starting up, before it has any handler: a SIGTERM there ends it, with nothing lost.)
            deadline = time.time() + 120
            while time.time() < deadline and not committed(run_dir):
                time.sleep(0.05)
            p.send_signal(signal.SIGTERM)  # torchrun passes it to every rank
            out, _ = p.communicate(timeout=120)
        finally:
            if p.poll() is None:
                p.kill()
        self.assertIn("interrupted: checkpoint saved at step", out)
        r = torchrun(2, run_dir, "--epochs", 2)
        self.assertEqual(r.returncode, 0, r.stdout[-3000:] + r.stderr[-3000:])
        self.assert_same_run(self.straight, run_dir)

    def test_shard_optimizer_partitions_adam_and_resumes_exactly(self):
        run_dir = os.path.join(self.tmp, "zero")
        r = torchrun(2, run_dir, "--epochs", 2, "--shard-optimizer", restarts=3, env={"CKPT_TRAIN_KILL_AT": "45:1"})
        self.assertEqual(r.returncode, 0, r.stdout[-3000:] + r.stderr[-3000:])
        self.assertIn("resumed from", r.stdout)
        self.assert_same_run(self.straight, run_dir)  # the same updates as plain data parallel
        latest = os.path.join(run_dir, read(os.path.join(run_dir, "latest")).strip())
        meta = json.loads(read(os.path.join(latest, "metadata.json")))
        per_rank = [0, 0]
        for e in meta["entries"]:
            if e["key"].startswith("optimizer_state/state/"):
                for p in e.get("pieces", []):
                    per_rank[p["rank"]] += p["nbytes"]
        total = sum(per_rank)
        self.assertGreater(total, 0)
        for share in per_rank:
            self.assertLess(abs(share / total - 0.5), 0.1, per_rank)  # about half each, by bytes
        # Consolidated: one Adam.state_dict() that Python's Adam loads and trains on.
        out = os.path.join(self.tmp, "zero-whole.pt")
        c = subprocess.run([CKPT, "consolidate", latest, out], capture_output=True, text=True, timeout=120)
        self.assertEqual(c.returncode, 0, c.stderr)
        ck = torch.load(out)
        net = Net()
        net.load_state_dict(ck["model_state"])
        adam = torch.optim.Adam(net.parameters(), lr=1e-3)
        adam.load_state_dict(ck["optimizer_state"])
        self.assertEqual(len(adam.state), 8)
        loss = net(torch.rand(4, 1, 28, 28)).sum()
        loss.backward()
        adam.step()
        self.assertEqual(float(adam.state[net.fc2.bias]["step"]), 64 + 1)
        # Resized with and without it: one process (plain Adam) trains epoch 3, then 3 ranks
        # with --shard-optimizer epoch 4, each taking the optimizer state of what it holds now.
        one = subprocess.run([TRAIN, "--run-dir", run_dir, *map(str, SMALL), "--epochs", "3"], capture_output=True,
                             text=True, timeout=600)
        self.assertEqual(one.returncode, 0, one.stdout + one.stderr)
        self.assertIn("resumed from", one.stdout)
        r = torchrun(3, run_dir, "--epochs", 4, "--shard-optimizer")
        self.assertEqual(r.returncode, 0, r.stdout[-3000:] + r.stderr[-3000:])
        self.assertIn("resumed from", r.stdout)
        got = metrics(run_dir)
        self.assertEqual([m["step"] for m in got], [32, 64, 96, 128])
        self.assertGreater(got[-1]["val_acc"], got[1]["val_acc"] - 0.05)  # training went on, not back

    def test_a_run_moves_between_world_sizes_without_skipping_or_repeating_a_sample(self):
        run_dir = os.path.join(self.tmp, "resized")
        # 2 ranks, killed (no restart) at step 23: the run stops after its step-20 checkpoint.
        keep = ["--keep-last", 0, "--keep-best", 0]  # every checkpoint stays, to be read below
        r = torchrun(2, run_dir, "--epochs", 2, *keep, env={"CKPT_TRAIN_KILL_AT": "23:1"})
        self.assertNotEqual(r.returncode, 0)
        # One process continues mid-epoch 1 and finishes the epoch ...
        one = subprocess.run([TRAIN, "--run-dir", run_dir, *map(str, SMALL), "--epochs", "1", *map(str, keep)],
                             capture_output=True, text=True, timeout=600)
        self.assertEqual(one.returncode, 0, one.stdout + one.stderr)
        self.assertIn("resumed from", one.stdout)
        self.assertIn("RNG", one.stdout)
        # ... and 3 ranks train epoch 2.
        r = torchrun(3, run_dir, "--epochs", 2, *keep)
        self.assertEqual(r.returncode, 0, r.stdout[-3000:] + r.stderr[-3000:])
        self.assertIn("re-derived", r.stdout)
        got, ref = metrics(run_dir), metrics(self.straight)
        self.assertEqual([m["step"] for m in got], [32, 64])  # the data position carried by sample count
        # Both epoch-end checkpoints (epoch 1: 2 ranks, then one process; epoch 2: 3 ranks) counted
        # each of the 2000 training samples once.
        import ckpt  # the package under test (PYTHONPATH)
        index = json.loads(read(os.path.join(run_dir, "index.json")))
        by_step = {c["step"]: c["file"] for c in index["checkpoints"]}
        for step in (32, 64):
            ck = ckpt.load(os.path.join(run_dir, by_step[step]))
            self.assertEqual(ck["step"], step)
            self.assertEqual(ck["metrics"]["running"]["seen"], 2000.0, f"step {step}")
        self.assertTrue(by_step[32].endswith(".pt"))  # written by the one process
        self.assertFalse(by_step[64].endswith(".pt"))  # a directory, written by 3 ranks
        # Resized or not, the accuracy is in the normal spread of such a short run.
        self.assertLess(abs(got[-1]["val_acc"] - ref[-1]["val_acc"]), 0.06, (got[-1], ref[-1]))
        # Python scores the consolidated best_model.pt with its own model.
        from test_train import idx
        net = Net()
        net.load_state_dict(torch.load(os.path.join(run_dir, "best_model.pt")))
        net.eval()
        images = torch.from_numpy(idx("t10k-images-idx3-ubyte.gz")[:1000].copy()).float().div(255).unsqueeze(1)
        labels = torch.from_numpy(idx("t10k-labels-idx1-ubyte.gz")[:1000].astype("int64"))
        with torch.no_grad():
            acc = (net(images).argmax(1) == labels).float().mean().item()
        self.assertGreater(acc, 0.6)
        ls = subprocess.run([CKPT, "ls", run_dir], capture_output=True, text=True, timeout=120)
        self.assertEqual(ls.returncode, 0, ls.stderr)


if __name__ == "__main__":
    unittest.main()
