"""WeightsOnly: every file ckpt writes loads under torch >= 2.6's default torch.load.

Checked from Python, apart from ckpt's own auditor: weights_only.py walks data.pkl with
pickletools and compares each opcode and global with torch 2.6's weights_only allowlist. The
files: `ckpt convert` of the interop corpus as torch.save writes it with protocols 2, 4 and 5, of
the torch 1.13 files in tests/data that ckpt reads, and ckpt.save of the corpus from the Python
module. (ctest also sets CKPT_AUDIT_WEIGHTS_ONLY=1, so ckpt itself refuses to write a violation.)
"""
import os
import shutil
import tempfile
import unittest

import torch

from test_interop import CKPT, DATA, WRITERS, make_cases, run
from weights_only import file_violations

try:
    import ckpt
    HAVE_MODULE = hasattr(ckpt, "save")
except ImportError:
    HAVE_MODULE = False


class WeightsOnly(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp()
        self.cases = make_cases()

    def tearDown(self):
        shutil.rmtree(self.dir)

    def path(self, name):
        return os.path.join(self.dir, name)

    def assertLoadsByDefault(self, path):
        self.assertEqual(file_violations(path), [], path)

    def test_the_check_is_not_vacuous(self):
        torch.save({"t": torch.ones(1)}, self.path("p4.pt"), pickle_protocol=4)
        self.assertTrue(any("opcode" in v for v in file_violations(self.path("p4.pt"))))
        self.assertEqual(file_violations(os.path.join(DATA, "torch-1.13", "onecycle_sd.pt"))[0][:23],
                         "global builtins.getattr")
        torch.save({"t": torch.ones(1)}, self.path("p2.pt"))
        self.assertLoadsByDefault(self.path("p2.pt"))

    def test_convert_writes_only_allowed_globals_and_opcodes(self):
        for writer, kwargs in WRITERS.items():
            for name, obj in self.cases.items():
                with self.subTest(writer=writer, case=name):
                    src, out = self.path(f"{name}.{writer}.pt"), self.path(f"{name}.{writer}.out.pt")
                    torch.save(obj, src, **kwargs)
                    r = run(CKPT, "convert", src, out)
                    self.assertEqual(r.returncode, 0, r.stderr)
                    self.assertLoadsByDefault(out)
                    os.remove(src)
                    os.remove(out)

    def test_convert_of_pytorchs_own_files(self):
        src_dir = os.path.join(DATA, "torch-1.13")
        converted = 0
        for f in sorted(os.listdir(src_dir)):
            if not f.endswith(".pt"):
                continue
            out = self.path(f)
            if run(CKPT, "convert", os.path.join(src_dir, f), out).returncode != 0:
                continue  # a file ckpt refuses (sparse, quantized, OneCycleLR's bound method)
            with self.subTest(file=f):
                self.assertLoadsByDefault(out)
                converted += 1
        self.assertGreater(converted, 8)

    @unittest.skipUnless(HAVE_MODULE, "the ckpt Python module is not built")
    def test_ckpt_save_writes_only_allowed_globals_and_opcodes(self):
        for name, obj in self.cases.items():
            with self.subTest(case=name):
                ckpt.save(obj, self.path(f"{name}.pt"))
                self.assertLoadsByDefault(self.path(f"{name}.pt"))


if __name__ == "__main__":
    unittest.main()
