"""Run directories on object storage: ckpt-train, the run manager and the CLI against moto.

Run by ctest as interop.S3Run*, with the pyenv Python that has moto and boto3 (CKPT_BIN = the
CLI, CKPT_TRAIN_BIN = ckpt-train). The Python module's manager is driven through /usr/bin/python3,
the Python that has torch (PYTHONPATH = the built module).

S3Run       an s3:// run ends bit-identical to a local one; ls/verify/plot/prune/consolidate on it;
            one writer: a second is refused naming the first, a SIGKILLed one is taken over at
            once, a live foreign lease is waited out, a writer paused past its lease cannot commit;
            abandoned uploads are aborted and uncommitted objects removed at the next start.
S3RunKills  ckpt-train SIGKILLed at random moments (>= 20): after every kill each listed
            checkpoint verifies; every finished run is bit-identical to an uninterrupted one.
S3PyManager ckpt.CheckpointManager("s3://...") and ckpt.save/load on s3:// from Python.
"""
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import unittest

from test_s3 import S3Base

TRAIN = os.environ.get("CKPT_TRAIN_BIN", "ckpt-train")
CKPT = os.environ.get("CKPT_BIN", "ckpt")
# 12 steps an epoch, a checkpoint every 2 steps: a run is a few seconds and a dozen commits.
QUICK = ["--train-samples", "600", "--val-samples", "200", "--batch-size", "50", "--threads", "2",
         "--save-every-steps", "2", "--keep-last", "2"]


def strip_metrics(text):
    return [{k: v for k, v in json.loads(l).items() if k != "elapsed_s"} for l in text.splitlines() if l]


class S3RunBase(S3Base):
    def train(self, rundir, *args, ok=True, timeout=300, **env):
        r = subprocess.run([TRAIN, *QUICK, "--run-dir", rundir, *map(str, args)], capture_output=True, text=True,
                           env=self.env(**env), timeout=timeout, cwd=self.tmp)
        if ok:
            self.assertEqual(r.returncode, 0, r.stdout[-2000:] + r.stderr[-2000:])
        return r

    def start(self, rundir, *args, **env):
        return subprocess.Popen([TRAIN, *QUICK, "--run-dir", rundir, *map(str, args)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=self.env(**env), cwd=self.tmp)

    def index(self, prefix):
        try:
            return json.loads(self.get_bytes(prefix + "/index.json"))
        except self.s3.exceptions.NoSuchKey:
            return None

    def wait_for_commit(self, prefix, proc, at_least_step=0, timeout=120):
        deadline = time.time() + timeout
        while time.time() < deadline:
            ix = self.index(prefix)
            if ix and ix.get("latest") and max(c["step"] for c in ix["checkpoints"]) >= at_least_step:
                return ix
            if proc.poll() is not None:
                self.fail(f"ckpt-train exited ({proc.returncode}) before a commit: {proc.stderr.read()[-2000:]}")
            time.sleep(0.05)
        self.fail(f"no commit under {prefix} within {timeout} s")

    def stop(self, proc):
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=60)

    def reference(self, *args):
        """An uninterrupted local run of the same job: the bytes every s3 run must end with."""
        ref = os.path.join(self.tmp, "ref-" + "-".join(map(str, args)))
        if not os.path.exists(os.path.join(ref, "index.json")):
            self.train(ref, *args)
        with open(os.path.join(ref, "index.json")) as f:
            latest = json.load(f)["latest"]
        def read(name):
            with open(os.path.join(ref, name), "rb") as f:
                return f.read()
        return {"dir": ref, "latest": latest, "checkpoint": read(latest), "best_model": read("best_model.pt"),
                "metrics": strip_metrics(read("metrics.jsonl").decode())}

    def assert_same_as(self, ref, prefix, metrics=True):
        """`metrics`: False for a run finished and then given more epochs (its log has the test
        accuracy of the first end, which an uninterrupted run never had)."""
        ix = self.index(prefix)
        self.assertEqual(ix["latest"], ref["latest"])
        self.assertEqual(self.get_bytes(f"{prefix}/{ix['latest']}"), ref["checkpoint"], "final checkpoints differ")
        self.assertEqual(self.get_bytes(f"{prefix}/best_model.pt"), ref["best_model"], "best_model.pt differs")
        if metrics:
            self.assertEqual(strip_metrics(self.get_bytes(f"{prefix}/metrics.jsonl").decode()), ref["metrics"])

    def assert_finished_run_objects(self, uri, prefix):
        """A finished run leaves no lease, no object its index does not name, best.pt holding the
        best checkpoint's bytes (a server-side copy), and `ckpt ls` / `verify` agreeing with it."""
        keys = self.keys(prefix)
        self.assertNotIn(".lock", keys, "the lease outlived its writer")
        ix = self.index(prefix)
        self.assertEqual(sorted(c["file"] for c in ix["checkpoints"]),
                         sorted(k for k in keys if k.startswith("epoch=")), "objects the index does not name")
        self.assertEqual(self.get_bytes(f"{prefix}/best.pt"), self.get_bytes(f"{prefix}/" + ix["best"]))
        ls = json.loads(self.ckpt("ls", uri, "--json").stdout)
        self.assertEqual([c["file"] for c in ls], [c["file"] for c in ix["checkpoints"]])
        n = len(ix["checkpoints"])
        self.assertIn(f"{n} of {n} checkpoints verify", self.ckpt("verify", uri).stdout)
        return ix

    def keys(self, prefix):
        out = self.s3.list_objects_v2(Bucket=self.bucket, Prefix=prefix + "/").get("Contents", [])
        return sorted(o["Key"][len(prefix) + 1:] for o in out)

    def put_lease(self, prefix, owner, expires_in):
        body = f"ckpt-lease/1\nowner: {owner}\ntoken: feedfeedfeedfeed\nexpires_unix: {time.time() + expires_in:.3f}\n"
        self.s3.put_object(Bucket=self.bucket, Key=prefix + "/.lock", Body=body.encode())


class S3Run(S3RunBase):
    def test_an_s3_run_ends_as_a_local_run_and_the_cli_works_on_it(self):
        ref = self.reference("--epochs", 2)
        uri = f"s3://{self.bucket}/runs/a"
        r = self.train(uri, "--epochs", 2)
        # moto honours conditional writes: no warning that the lease is weaker (s3rver's suite
        # checks there is one there).
        self.assertNotIn("conditional writes", r.stdout + r.stderr)
        self.assert_same_as(ref, "runs/a")
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "s3:")), "a local directory named s3: was made")
        ix = self.assert_finished_run_objects(uri, "runs/a")
        out = self.ckpt("plot", uri).stdout
        self.assertIn("2 epochs", out)
        self.assertIn(b"<svg", self.get_bytes("runs/a/curves.svg"))
        self.ckpt("prune", uri, "--keep-last", "1")
        kept = sorted({ix["latest"], ix["best"]})  # the best is never pruned
        self.assertEqual(sorted(c["file"] for c in json.loads(self.ckpt("ls", uri, "--json").stdout)), kept)
        self.assertEqual([k for k in self.keys("runs/a") if k.startswith("epoch=")], kept)
        # A local checkpoint converts into an object, and diff finds both the same.
        ref_path = os.path.join(ref["dir"], ref["latest"])
        self.ckpt("convert", ref_path, f"s3://{self.bucket}/copies/latest.pt")
        self.assertIn("A and B are equal", self.ckpt("diff", ref_path, f"s3://{self.bucket}/copies/latest.pt").stdout)
        # A second run of a finished job does nothing, and more epochs continue it exactly.
        self.assertIn("has already trained", self.train(uri, "--epochs", 2).stdout)
        ref3 = self.reference("--epochs", 3)
        self.assertIn("resumed from", self.train(uri, "--epochs", 3).stdout)
        self.assert_same_as(ref3, "runs/a", metrics=False)

    def test_a_second_writer_is_refused_and_a_killed_one_is_taken_over_at_once(self):
        uri = f"s3://{self.bucket}/runs/b"
        first = self.start(uri, "--epochs", 6)
        try:
            self.wait_for_commit("runs/b", first)
            second = self.train(uri, "--epochs", 6, ok=False, timeout=120)
            self.assertNotEqual(second.returncode, 0)
            self.assertIn("leased by another writer (pid %d on " % first.pid, second.stderr)
            self.assertEqual(len(second.stderr.strip().splitlines()), 1, second.stderr)
        finally:
            self.stop(first)
        # Its lease is still there, but its owner is a dead process of this host: no wait.
        self.assertIn(".lock", self.keys("runs/b"))
        t0 = time.time()
        p = self.start(uri, "--epochs", 1)
        out, err = p.communicate(timeout=300)
        self.assertEqual(p.returncode, 0, err)
        self.assertIn("resumed from", out)
        self.assertLess(time.time() - t0, 50, "the dead writer's 60 s lease was waited out")

    def test_a_live_foreign_lease_is_waited_out_not_broken(self):
        uri = f"s3://{self.bucket}/runs/c"
        self.put_lease("runs/c", "pid 1 on another-host", expires_in=4)
        r = self.train(uri, "--epochs", 1, ok=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("leased by another writer (pid 1 on another-host; the lease expires in", r.stderr)
        self.assertIsNone(self.index("runs/c"), "the refused writer wrote an index")
        time.sleep(4.5)
        self.train(uri, "--epochs", 1)
        self.assertIsNotNone(self.index("runs/c"))

    def test_a_writer_paused_past_its_lease_cannot_commit_over_the_new_owner(self):
        uri = f"s3://{self.bucket}/runs/d"
        a = self.start(uri, "--epochs", 2, CKPT_S3_LEASE_S=2)
        try:
            self.wait_for_commit("runs/d", a)
            a.send_signal(signal.SIGSTOP)
            time.sleep(2.5)  # past A's expiry: A is alive, but its lease has lapsed
            ref = self.reference("--epochs", 2)
            self.train(uri, "--epochs", 2, CKPT_S3_LEASE_S=2)  # B takes the run over and finishes it
            self.assert_same_as(ref, "runs/d")
            b_index = self.get_bytes("runs/d/index.json")
            a.send_signal(signal.SIGCONT)
            out, err = a.communicate(timeout=120)
            self.assertNotEqual(a.returncode, 0, "a writer that lost its lease went on")
            self.assertRegex(err, r"lease (expired|.*lost)|lost the run's lease")
            self.assertEqual(self.get_bytes("runs/d/index.json"), b_index, "the paused writer committed")
            self.assert_same_as(ref, "runs/d")
            n = len(self.index("runs/d")["checkpoints"])
            self.assertIn(f"{n} of {n} checkpoints verify", self.ckpt("verify", uri).stdout)
        finally:
            if a.poll() is None:
                a.send_signal(signal.SIGCONT)
                self.stop(a)

    def test_abandoned_uploads_are_aborted_and_uncommitted_objects_never_loaded(self):
        uri = f"s3://{self.bucket}/runs/e"
        self.train(uri, "--epochs", 1)
        ix = self.index("runs/e")
        # A dead writer's leftovers: an unfinished multipart upload, and a complete object under a
        # checkpoint name that no index lists (its commit never happened) — with garbage inside.
        up = self.s3.create_multipart_upload(Bucket=self.bucket, Key="runs/e/epoch=001-step=000014.pt")
        self.s3.upload_part(Bucket=self.bucket, Key="runs/e/epoch=001-step=000014.pt", PartNumber=1,
                            UploadId=up["UploadId"], Body=b"x" * (5 << 20))
        self.s3.put_object(Bucket=self.bucket, Key="runs/e/epoch=001-step=000016.pt", Body=b"not a checkpoint")
        other = self.s3.create_multipart_upload(Bucket=self.bucket, Key="elsewhere/x.pt")
        r = self.train(uri, "--epochs", 2)
        self.assertIn(f"resumed from s3://{self.bucket}/runs/e/{ix['latest']}", r.stdout)
        self.assertIn("aborted 1 unfinished upload", r.stdout + r.stderr)
        self.assertIn("epoch=001-step=000016.pt: not in the run index", r.stdout + r.stderr)
        self.assertEqual([u["UploadId"] for u in self.uploads_left()], [other["UploadId"]],
                         "only the run's own uploads are aborted")
        self.assert_same_as(self.reference("--epochs", 2), "runs/e", metrics=False)


class S3RunKills(S3RunBase):
    KILLS = int(os.environ.get("CKPT_S3_KILLS", "20"))
    # Kills land in the first WINDOW of a whole run's time. Below 1, a fresh run is almost always
    # killed and runs finish by resuming: fewer whole runs, the same number of kills.
    WINDOW = 1.0

    def test_sigkill_at_random_moments_always_resumes_and_ends_bit_identical(self):
        ref = self.reference("--epochs", 2)
        rng = random.Random(int(os.environ.get("CKPT_S3_KILL_SEED", "18")))
        t0 = time.time()
        self.train(f"s3://{self.bucket}/runs/timing", "--epochs", 2)
        window = max(1.0, (time.time() - t0) * self.WINDOW)  # at 1, a kill lands anywhere in a whole run
        kills, runs, run_id = 0, 0, 0
        prefix = "runs/k0"
        # A bound on the loop, not a timing: with another heavy suite beside it on 2 cores a
        # whole run takes twice as long, and so does every kill's round.
        deadline = time.time() + 840
        while kills < self.KILLS:
            self.assertLess(time.time(), deadline, f"only {kills} kills landed in 840 s")
            p = self.start(f"s3://{self.bucket}/{prefix}", "--epochs", 2)
            delay = rng.uniform(0.05, window)
            try:
                p.wait(delay)
            except subprocess.TimeoutExpired:
                p.kill()
                kills += 1
            out, err = p.communicate(timeout=60)
            if p.returncode == -signal.SIGKILL:
                # Whatever the moment: every checkpoint the index lists is whole and verifies.
                if self.index(prefix):
                    v = self.ckpt("verify", f"s3://{self.bucket}/{prefix}", ok=False)
                    self.assertEqual(v.returncode, 0, v.stdout + v.stderr)
                continue
            self.assertEqual(p.returncode, 0, err[-2000:])
            self.assert_same_as(ref, prefix)
            runs += 1
            run_id += 1
            prefix = f"runs/k{run_id}"
        # Finish the run in progress without a kill: it too ends bit-identical.
        self.train(f"s3://{self.bucket}/{prefix}", "--epochs", 2)
        self.assert_same_as(ref, prefix)
        print(f"{kills} SIGKILLs within a {window:.1f} s window; {runs + 1} runs finished, each bit-identical",
              file=sys.stderr)


PY = "/usr/bin/python3"
PY_MANAGER = r'''
import sys, torch, ckpt
uri = sys.argv[1]
torch.manual_seed(0)
model = torch.nn.Linear(4, 3)
opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
with ckpt.CheckpointManager(uri, keep_last=2, keep_best=1, monitor="loss", mode="min") as mgr:
    assert mgr.restore() is None
    for step in range(1, 6):
        loss = model(torch.ones(2, 4)).pow(2).sum()
        opt.zero_grad(); loss.backward(); opt.step()
        mgr.save(step, {"model_state": model.state_dict(), "optimizer_state": opt.state_dict(), "epoch": 0},
                 metrics={"loss": float(loss) if step != 2 else -1.0})
    files = [c["file"] for c in mgr.checkpoints()]
    print("files", files)
    assert mgr.best["step"] == 2, mgr.best
with ckpt.CheckpointManager(uri, keep_last=2, keep_best=1, monitor="loss", mode="min") as mgr:
    state = mgr.restore()
    assert mgr.last_restored["step"] == 5
    for k, v in model.state_dict().items():
        assert torch.equal(state["model_state"][k], v), k
    best = mgr.restore("best")
    assert mgr.last_restored["step"] == 2
ckpt.save({"w": torch.arange(6.)}, uri + "/extra.pt")
assert torch.equal(ckpt.load(uri + "/extra.pt")["w"], torch.arange(6.))
assert torch.equal(ckpt.load(uri + "/best_model.pt")["weight"], best["model_state"]["weight"])
print("ok")
'''


class S3PyManager(S3RunBase):
    def test_the_python_manager_and_save_load_on_s3(self):
        env = self.env()
        r = subprocess.run([PY, "-c", PY_MANAGER, f"s3://{self.bucket}/py"], capture_output=True, text=True, env=env,
                           timeout=300)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("ok", r.stdout)
        keys = self.keys("py")
        # keep_last=2 plus the best (step 2) kept apart.
        self.assertEqual(sorted(k for k in keys if k.startswith("epoch=")),
                         ["epoch=000-step=000002.pt", "epoch=000-step=000004.pt", "epoch=000-step=000005.pt"])
        for k in ("index.json", "latest", "best.pt", "best_model.pt", "extra.pt"):
            self.assertIn(k, keys)
        self.assertIn("3 of 3 checkpoints verify", self.ckpt("verify", f"s3://{self.bucket}/py").stdout)


if __name__ == "__main__":
    unittest.main()
