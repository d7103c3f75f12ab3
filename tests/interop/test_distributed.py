"""ckpt.distributed in real torch.distributed processes (gloo, started by torchrun on free
ports): save on 2 ranks, load on 2 (exact, per-rank values back), on 3 and on 1 (resharded);
the files readable by torch.load and the C++ CLI; a rank that dies before saving."""
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import unittest

import torch

import ckpt

HERE = os.path.dirname(os.path.abspath(__file__))
CKPT = os.environ.get("CKPT_BIN", "ckpt")
WORKER = os.path.join(HERE, "dist_worker.py")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(n, mode, path, timeout=120):
    # Debian's torchrun on Python 3.11 needs the --redirects/--tee pair.
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", str(n),
           "--master_addr", "127.0.0.1", "--master_port", str(free_port()), "--redirects", "2", "--tee", "2",
           "--max_restarts", "0", WORKER, mode, path]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=dict(os.environ))


class PyDistributed(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="ckpt_pydist_")
        cls.path = os.path.join(cls.tmp, "step-41")
        r = torchrun(2, "save", cls.path)
        if r.returncode != 0:
            raise AssertionError(f"save on 2 ranks failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def results(self, mode, world, ranks=None):
        out = []
        for rank in ranks if ranks is not None else range(world):
            with open(os.path.join(self.tmp, f"{mode}-{world}-{rank}.json")) as f:
                out.append(json.load(f))
        return out

    def test_the_directory_holds_plain_torch_files_and_metadata(self):
        names = sorted(os.listdir(self.path))
        self.assertEqual(names, ["metadata.json", "rank-00000.pt", "rank-00001.pt"])
        for name in names[1:]:
            torch.load(os.path.join(self.path, name))  # each rank file alone, by torch itself
        saved = self.results("save", 2)
        self.assertTrue(all(s["result"]["bytes_this_rank"] > 0 for s in saved))

    def test_same_world_size_loads_exactly_in_place_with_per_rank_values(self):
        r = torchrun(2, "load", self.path)
        self.assertEqual(r.returncode, 0, r.stderr[-3000:])
        for rank, got in enumerate(self.results("load", 2)):
            self.assertTrue(got["emb_exact"] and got["emb_in_place"], got)
            self.assertTrue(got["model_exact"] and got["model_in_place"], got)
            self.assertEqual(got["step"], 41)
            self.assertEqual(got["notes"], {"lr": 0.125, "tags": ["a", "b"]})
            self.assertEqual(got["saved_world_size"], 2)
            self.assertEqual(got["rng"], [100.0 + rank] * 3)
            self.assertEqual(got["per_rank"], {})

    def test_other_world_sizes_reshard_and_hand_back_every_ranks_values(self):
        for world in (3, 1):
            with self.subTest(world=world):
                r = torchrun(world, "load", self.path)
                self.assertEqual(r.returncode, 0, r.stderr[-3000:])
                for got in self.results("load", world):
                    self.assertTrue(got["emb_exact"] and got["model_exact"], got)
                    self.assertEqual(got["saved_world_size"], 2)
                    self.assertEqual(got["per_rank"], {"rng": [[100.0] * 3, [101.0] * 3]})

    def test_a_plain_process_and_the_cli_read_the_whole_state(self):
        whole = ckpt.load(self.path)
        self.assertEqual(whole["step"], 41)
        self.assertEqual(tuple(whole["emb"].shape), (12, 5))
        self.assertTrue(torch.equal(whole["emb"], torch.arange(60, dtype=torch.float64).view(12, 5) / 7))
        self.assertEqual([t.tolist() for t in whole["rng"]], [[100.0] * 3, [101.0] * 3])
        v = subprocess.run([CKPT, "verify", self.path], capture_output=True, text=True, timeout=60)
        self.assertEqual(v.returncode, 0, v.stderr)
        out = os.path.join(self.tmp, "whole.pt")
        c = subprocess.run([CKPT, "consolidate", self.path, out], capture_output=True, text=True, timeout=60)
        self.assertEqual(c.returncode, 0, c.stderr)
        self.assertTrue(torch.equal(torch.load(out)["emb"], whole["emb"]))

    def test_a_rank_that_dies_before_saving_publishes_nothing_and_is_reported(self):
        path = os.path.join(self.tmp, "never")
        r = torchrun(2, "die", path)
        self.assertNotEqual(r.returncode, 0)  # torchrun reports the dead rank
        got = self.results("die", 2, ranks=[0])[0]  # rank 1 is dead
        self.assertIsNotNone(got["error"])
        self.assertIn("ckpt::dist", got["error"])
        self.assertFalse(os.path.exists(path))


if __name__ == "__main__":
    unittest.main()
