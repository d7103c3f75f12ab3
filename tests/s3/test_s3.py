"""ckpt against a real S3 server (moto, started here on 127.0.0.1) and a fault-injecting proxy.

Run by ctest as interop.S3* with the pyenv Python that has moto and boto3 (CKPT_BIN = the CLI).
boto3 is the independent client: what ckpt writes must be the bytes a local save writes, and
ckpt must read what boto3 uploaded. Nothing is skipped: a moto that cannot start fails the suite.
"""
import base64
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import unittest
import zlib

import boto3
from botocore.config import Config as BotoConfig

from s3_servers import FaultProxy, MotoServer

CKPT = os.environ.get("CKPT_BIN", "ckpt")
DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "pytorch", "torch-1.13")
KEY_ID, SECRET = MotoServer.key_id, MotoServer.secret


def boto(endpoint, key_id=KEY_ID, secret=SECRET):
    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=key_id, aws_secret_access_key=secret,
                        region_name="us-east-1", config=BotoConfig(retries={"max_attempts": 1}))


def make_safetensors(path, mib):
    """A safetensors file of about `mib` MiB (one float32 tensor plus two small ones), written by
    hand: ckpt converts it to a torch.save archive, so no torch is needed here."""
    n = mib * (1 << 20) // 4
    pattern = bytes((i * 7919) & 0x7F for i in range(1 << 16))
    blob = (pattern * (n * 4 // len(pattern) + 1))[:n * 4]
    small = bytes(range(64))
    header = {"w": {"dtype": "F32", "shape": [n], "data_offsets": [0, n * 4]},
              "b": {"dtype": "F32", "shape": [16], "data_offsets": [n * 4, n * 4 + 64]},
              "c": {"dtype": "U8", "shape": [64], "data_offsets": [n * 4 + 64, n * 4 + 128]}}
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(len(h).to_bytes(8, "little") + h + blob + small + small)


class S3Base(unittest.TestCase):
    """One server per class (`server_class`: moto unless a subclass says otherwise, see
    test_s3rver.py), with its credentials; each test gets its own bucket."""
    proxy = False
    server_class = MotoServer

    @classmethod
    def setUpClass(cls):
        cls.server = cls.server_class()
        cls.key_id = getattr(cls.server, "key_id", KEY_ID)
        cls.secret = getattr(cls.server, "secret", SECRET)
        cls.fault = FaultProxy(cls.server.port) if cls.proxy else None
        cls.tmp = tempfile.mkdtemp(prefix="ckpt-s3-")

    @classmethod
    def tearDownClass(cls):
        if cls.fault:
            cls.fault.stop()
        cls.server.stop()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def setUp(self):
        self.s3 = boto(self.server.endpoint, self.key_id, self.secret)
        self.bucket = "ckpt-" + self.id().split(".")[-1].replace("_", "-").lower()[:40].rstrip("-")
        self.s3.create_bucket(Bucket=self.bucket)
        if self.fault:
            self.fault.clear()

    def env(self, **extra):
        e = dict(os.environ)
        for k in list(e):
            if k.startswith("AWS_") or k.startswith("CKPT_S3_"):
                del e[k]
        e.update(AWS_ACCESS_KEY_ID=self.key_id, AWS_SECRET_ACCESS_KEY=self.secret, AWS_REGION="us-east-1",
                 AWS_ENDPOINT_URL=(self.fault or self.server).endpoint, HOME=self.tmp,
                 CKPT_S3_RETRY_BASE_MS="10", CKPT_S3_CONNECT_TIMEOUT_MS="2000", CKPT_S3_STALL_TIMEOUT_S="5")
        e.update({k: str(v) for k, v in extra.items()})
        return e

    def ckpt(self, *args, ok=True, timeout=120, **env):
        r = subprocess.run([CKPT, *args], capture_output=True, text=True, env=self.env(**env), timeout=timeout)
        if ok and r.returncode != 0:
            self.fail(f"ckpt {' '.join(args)} failed ({r.returncode}): {r.stderr}")
        return r

    def make_checkpoint(self, path, mib):
        make_safetensors(path + ".safetensors", mib)
        self.ckpt("convert", path + ".safetensors", path)

    def local(self, name):
        return os.path.join(self.tmp, name)

    def golden(self, name="dtypes.pt"):
        return os.path.join(DATA, name)

    def get_bytes(self, key):
        return self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def uploads_left(self):
        return self.s3.list_multipart_uploads(Bucket=self.bucket).get("Uploads", [])

    def assert_same_object_both_ways(self, key, local_path):
        """The object holds exactly the bytes of a local save, no upload is left, it verifies, and
        converting it back to a file gives the same archive."""
        with open(local_path, "rb") as f:
            local = f.read()
        self.assertEqual(self.get_bytes(key), local)
        self.assertEqual(self.uploads_left(), [], "an unfinished upload was left")
        self.ckpt("verify", f"s3://{self.bucket}/{key}")
        back = os.path.join(self.local("back"), os.path.basename(key))  # same name: same record prefix
        os.makedirs(os.path.dirname(back), exist_ok=True)
        self.ckpt("convert", f"s3://{self.bucket}/{key}", back)
        with open(back, "rb") as f:
            self.assertEqual(f.read(), local)

    def assert_one_line_error(self, r, *needles):
        self.assertEqual(r.returncode, 1, r.stderr)
        lines = r.stderr.strip().splitlines()
        self.assertEqual(len(lines), 1, r.stderr)
        for n in needles:
            self.assertIn(n, lines[0])
        self.assertNotIn(self.secret, r.stderr)


class S3RoundTrip(S3Base):
    def test_small_save_is_one_put_of_the_local_bytes(self):
        # The same base name makes the same archive prefix, so the bytes must match exactly.
        os.makedirs(self.local("a"), exist_ok=True)
        self.ckpt("convert", self.golden(), self.local("a/x.pt"))
        self.ckpt("convert", self.golden(), f"s3://{self.bucket}/run 1/x.pt")
        head = self.s3.head_object(Bucket=self.bucket, Key="run 1/x.pt")
        self.assertNotIn("-", head["ETag"])  # one PUT, not multipart
        with open(self.local("a/x.pt"), "rb") as f:
            self.assertEqual(self.get_bytes("run 1/x.pt"), f.read())
        r = self.ckpt("verify", f"s3://{self.bucket}/run 1/x.pt")
        self.assertIn("OK", r.stdout)

    def test_large_save_is_multipart_and_identical(self):
        self.make_checkpoint(self.local("big.pt"), 24)
        os.makedirs(self.local("b"), exist_ok=True)
        self.ckpt("convert", self.local("big.pt"), self.local("b/big.pt"))
        self.ckpt("convert", self.local("big.pt"), f"s3://{self.bucket}/big.pt", CKPT_S3_PART_SIZE=5 << 20,
                  CKPT_S3_PARTS_IN_FLIGHT=3)
        etag = self.s3.head_object(Bucket=self.bucket, Key="big.pt")["ETag"]
        self.assertRegex(etag, r"-5\"$")  # 24 MiB + headers in 5 MiB parts
        self.assert_same_object_both_ways("big.pt", self.local("b/big.pt"))

    def test_reads_what_boto3_uploaded(self):
        for name in ("dtypes.pt", "ckpt.pt", "sd_linear.pt", "legacy.pt"):
            # boto3's managed multipart upload with tiny parts, to make it multipart.
            from boto3.s3.transfer import TransferConfig
            self.s3.upload_file(self.golden(name), self.bucket, "boto/" + name,
                                Config=TransferConfig(multipart_threshold=5 << 20, multipart_chunksize=5 << 20))
            remote = json.loads(self.ckpt("inspect", "--json", f"s3://{self.bucket}/boto/{name}").stdout)
            local = json.loads(self.ckpt("inspect", "--json", self.golden(name)).stdout)
            remote.pop("file"), local.pop("file")
            self.assertEqual(remote, local, name)
            self.ckpt("verify", f"s3://{self.bucket}/boto/{name}")
            r = self.ckpt("diff", self.golden(name), f"s3://{self.bucket}/boto/{name}")
            self.assertEqual(r.returncode, 0, r.stdout)

    def test_torch_loads_what_ckpt_wrote(self):
        torch_python = "/usr/bin/python3"
        if subprocess.run([torch_python, "-c", "import torch"], capture_output=True).returncode != 0:
            self.fail("/usr/bin/python3 has no torch (scripts/setup.sh installs python3-torch)")
        self.ckpt("convert", self.golden("ckpt.pt"), f"s3://{self.bucket}/t/ckpt.pt")
        path = self.local("dl-ckpt.pt")
        self.s3.download_file(self.bucket, "t/ckpt.pt", path)
        code = ("import sys, torch; a = torch.load(sys.argv[1]); b = torch.load(sys.argv[2]);"
                "import json; print(json.dumps(sorted(a.keys()) == sorted(b.keys())))")
        r = subprocess.run([torch_python, "-c", code, path, self.golden("ckpt.pt")], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.strip(), "true")


class S3Errors(S3Base):
    def test_missing_bucket_and_key(self):
        r = self.ckpt("inspect", "s3://no-such-bucket/k.pt", ok=False)
        self.assert_one_line_error(r, "s3://no-such-bucket/k.pt", "no such object")  # HEAD has no body
        r = self.ckpt("verify", f"s3://{self.bucket}/missing.pt", ok=False)
        self.assert_one_line_error(r, f"s3://{self.bucket}/missing.pt", "no such object")
        r = self.ckpt("convert", self.golden(), "s3://no-such-bucket/k.pt", ok=False)
        self.assert_one_line_error(r, "s3://no-such-bucket/k.pt", "NoSuchBucket")

    def test_malformed_uris(self):
        for uri, why in (("s3://", "no bucket"), ("s3:///k", "no bucket"), (f"s3://{self.bucket}/../k", "'..'")):
            r = self.ckpt("inspect", uri, ok=False)
            self.assert_one_line_error(r, why)
            r = self.ckpt("convert", self.golden(), uri, ok=False)
            self.assert_one_line_error(r, why)

    def test_server_down_fails_within_the_bound(self):
        t0 = time.time()
        r = self.ckpt("inspect", f"s3://{self.bucket}/x.pt", ok=False, AWS_ENDPOINT_URL="http://127.0.0.1:9",
                      CKPT_S3_MAX_ATTEMPTS=3)
        self.assertLess(time.time() - t0, 10)
        self.assert_one_line_error(r, "cannot reach http://127.0.0.1:9", "after 3 attempts")

    def test_missing_credentials_are_named(self):
        env = {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "", "AWS_PROFILE": "nobody"}
        r = self.ckpt("inspect", f"s3://{self.bucket}/x.pt", ok=False, **env)
        self.assert_one_line_error(r, "AWS_PROFILE='nobody'")


class S3Auth(unittest.TestCase):
    """moto checking signatures: wrong secrets are refused, ckpt's signatures are accepted."""

    @classmethod
    def setUpClass(cls):
        # The first 4 requests go unauthenticated: they create the user, its policy, its key and the bucket.
        cls.moto = MotoServer(env={"INITIAL_NO_AUTH_ACTION_COUNT": "4"})
        iam = boto3.client("iam", endpoint_url=cls.moto.endpoint, aws_access_key_id="x", aws_secret_access_key="x",
                           region_name="us-east-1")
        iam.create_user(UserName="ckpt")
        iam.put_user_policy(UserName="ckpt", PolicyName="all", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
        key = iam.create_access_key(UserName="ckpt")["AccessKey"]
        cls.key_id, cls.secret = key["AccessKeyId"], key["SecretAccessKey"]
        boto3.client("s3", endpoint_url=cls.moto.endpoint, aws_access_key_id=cls.key_id,
                     aws_secret_access_key=cls.secret, region_name="us-east-1").create_bucket(Bucket="authed")
        cls.tmp = tempfile.mkdtemp(prefix="ckpt-s3auth-")

    @classmethod
    def tearDownClass(cls):
        cls.moto.stop()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def run_ckpt(self, secret, *args):
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(AWS_ACCESS_KEY_ID=self.key_id, AWS_SECRET_ACCESS_KEY=secret, AWS_ENDPOINT_URL=self.moto.endpoint,
                   AWS_REGION="us-east-1", HOME=self.tmp, CKPT_S3_RETRY_BASE_MS="10",
                   CKPT_S3_PART_SIZE=str(5 << 20))
        return subprocess.run([CKPT, *args], capture_output=True, text=True, env=env, timeout=120)

    def test_signatures_accepted_and_wrong_secret_refused(self):
        # A plain key: moto 5.2.1's own checker also refuses boto3's valid signatures for keys with
        # a space, '=' or 'é' (notes/object-storage.md §4.1); ckpt_s3_tests checks those signatures
        # against a reference signer instead.
        golden = os.path.join(DATA, "dtypes.pt")
        r = self.run_ckpt(self.secret, "convert", golden, "s3://authed/run-1/step_2.pt")
        self.assertEqual(r.returncode, 0, r.stderr)
        # Multipart and ranged GETs are signed too.
        make_safetensors(os.path.join(self.tmp, "m.safetensors"), 12)
        r = self.run_ckpt(self.secret, "convert", os.path.join(self.tmp, "m.safetensors"), "s3://authed/run-1/m.pt")
        self.assertEqual(r.returncode, 0, r.stderr)
        r = self.run_ckpt(self.secret, "verify", "s3://authed/run-1/m.pt")
        self.assertEqual(r.returncode, 0, r.stderr)
        r = self.run_ckpt(self.secret, "verify", "s3://authed/run-1/step_2.pt")
        self.assertEqual(r.returncode, 0, r.stderr)
        r = self.run_ckpt("wrong-secret", "verify", "s3://authed/run-1/step_2.pt")
        self.assertEqual(r.returncode, 1)
        self.assertEqual(len(r.stderr.strip().splitlines()), 1, r.stderr)
        self.assertIn("403", r.stderr)
        self.assertNotIn("wrong-secret", r.stderr)
        self.assertNotIn(self.secret, r.stderr)


class S3Faults(S3Base):
    proxy = True

    def test_saves_succeed_through_503_500_and_resets(self):
        self.make_checkpoint(self.local("f.pt"), 16)
        self.fault.add("503", path=r"partNumber=2", times=2)
        self.fault.add("500", path=r"partNumber=1", times=1)
        self.fault.add("reset", path=r"partNumber=3", times=1)
        self.fault.add("503", path=r"uploadId=", method="POST", times=1)  # Complete
        self.ckpt("convert", self.local("f.pt"), f"s3://{self.bucket}/f.pt", CKPT_S3_PART_SIZE=5 << 20)
        os.makedirs(self.local("ref"), exist_ok=True)
        self.ckpt("convert", self.local("f.pt"), self.local("ref/f.pt"))
        with open(self.local("ref/f.pt"), "rb") as f:
            self.assertEqual(self.get_bytes("f.pt"), f.read())
        self.assertEqual(self.uploads_left(), [])

    def test_failed_save_leaves_nothing_visible(self):
        self.make_checkpoint(self.local("g.pt"), 12)
        self.fault.add("503", path=r"partNumber=2", times=-1)
        r = self.ckpt("convert", self.local("g.pt"), f"s3://{self.bucket}/g.pt", ok=False, CKPT_S3_PART_SIZE=5 << 20,
                      CKPT_S3_MAX_ATTEMPTS=3)
        self.assert_one_line_error(r, "UploadPart", f"s3://{self.bucket}/g.pt", "503 SlowDown", "after 3 attempts")
        self.fault.clear()
        keys = self.s3.list_objects_v2(Bucket=self.bucket).get("Contents", [])
        self.assertEqual(keys, [])
        self.assertEqual(self.uploads_left(), [])  # the upload was aborted
        # A single PUT failing for good: nothing either.
        self.fault.add("500", method="PUT", times=-1)
        r = self.ckpt("convert", self.golden(), f"s3://{self.bucket}/small.pt", ok=False, CKPT_S3_MAX_ATTEMPTS=2)
        self.assert_one_line_error(r, "PutObject", "500")
        self.fault.clear()
        self.assertEqual(self.s3.list_objects_v2(Bucket=self.bucket).get("KeyCount"), 0)

    def test_loads_retry_cut_short_bodies_and_refuse_altered_bytes(self):
        self.make_checkpoint(self.local("h.pt"), 12)
        self.ckpt("convert", self.local("h.pt"), f"s3://{self.bucket}/h.pt")
        self.fault.add("truncate", method="GET", path=r"/h\.pt", times=3)
        self.ckpt("verify", f"s3://{self.bucket}/h.pt")
        # Every answer cut short: an error, never a short read taken for data.
        self.fault.add("truncate", method="GET", path=r"/h\.pt", times=-1)
        r = self.ckpt("verify", f"s3://{self.bucket}/h.pt", ok=False, CKPT_S3_MAX_ATTEMPTS=2)
        self.assert_one_line_error(r, "GetObject", "after 2 attempts")
        # A flipped byte in the tensor data: the CRC check refuses it.
        self.fault.clear()
        self.fault.add("flip", method="GET", path=r"/h\.pt", times=-1)
        r = self.ckpt("verify", f"s3://{self.bucket}/h.pt", ok=False, CKPT_S3_RANGE_SIZE=32 << 20)
        self.assertEqual(r.returncode, 1, r.stdout)
        self.assertRegex(r.stderr, r"CRC-32 mismatch|not a|corrupt|zip", r.stderr)

    def test_stalled_server_fails_in_the_stall_timeout(self):
        self.ckpt("convert", self.golden(), f"s3://{self.bucket}/s.pt")
        self.fault.add("stall", method="GET", times=-1)
        t0 = time.time()
        r = self.ckpt("verify", f"s3://{self.bucket}/s.pt", ok=False, CKPT_S3_STALL_TIMEOUT_S=1,
                      CKPT_S3_MAX_ATTEMPTS=2)
        self.assertLess(time.time() - t0, 15)
        self.assert_one_line_error(r, "timed out")

    def test_uploads_carry_their_length_and_crc32(self):
        """What AWS would check and the local servers do not: every PUT has Content-Length (never
        chunked) and x-amz-checksum-crc32 of its body; the upload declares CRC32 and Complete lists
        each part's checksum."""
        self.make_checkpoint(self.local("c.pt"), 12)
        self.ckpt("convert", self.local("c.pt"), f"s3://{self.bucket}/c.pt", CKPT_S3_PART_SIZE=5 << 20)
        self.ckpt("convert", self.golden(), f"s3://{self.bucket}/small.pt")

        def header(head, name):
            m = re.search(r"\r\n" + name + r": *([^\r]*)", head, re.I)
            return m.group(1) if m else None

        def crc(body):
            return base64.b64encode(zlib.crc32(body).to_bytes(4, "big")).decode()

        puts = [(h, b) for h, b in self.fault.sent if h.startswith("PUT ")]
        self.assertEqual(len(puts), 4)  # 3 parts of c.pt, one PUT of small.pt
        part_sums = {}
        for head, body in puts:
            self.assertEqual(header(head, "Content-Length"), str(len(body)))
            self.assertIsNone(header(head, "Transfer-Encoding"))
            self.assertEqual(header(head, "x-amz-checksum-crc32"), crc(body), head.splitlines()[0])
            m = re.search(r"partNumber=(\d+)", head)
            if m:
                part_sums[int(m.group(1))] = crc(body)
        self.assertEqual(sorted(part_sums), [1, 2, 3])
        create = [h for h, _ in self.fault.sent if h.startswith("POST ") and "uploads=" in h.splitlines()[0]]
        self.assertEqual([header(h, "x-amz-checksum-algorithm") for h in create], ["CRC32"])
        complete = [b.decode() for h, b in self.fault.sent if h.startswith("POST ") and "uploadId=" in h.splitlines()[0]]
        self.assertEqual(len(complete), 1)
        listed = dict((int(n), c) for c, n in re.findall(
            r"<ChecksumCRC32>([^<]*)</ChecksumCRC32><ETag>[^<]*</ETag><PartNumber>(\d+)</PartNumber>", complete[0]))
        self.assertEqual(listed, part_sums)
        with open(self.local("c.pt"), "rb") as f:
            self.assertEqual(self.get_bytes("c.pt"), f.read())

    def test_a_streamed_put_is_one_request_and_fails_cleanly(self):
        """CKPT_S3_PUT_THRESHOLD: a save whose size is known goes as one streamed PUT (no parts, no
        Complete), byte-identical; it cannot be retried, so a failure is one clean error with
        nothing visible, and the next save succeeds."""
        self.make_checkpoint(self.local("p.pt"), 24)
        self.ckpt("convert", self.local("p.pt"), f"s3://{self.bucket}/p.pt", CKPT_S3_PART_SIZE=5 << 20,
                  CKPT_S3_PUT_THRESHOLD=1 << 30)
        lines = [h.splitlines()[0] for h, _ in self.fault.sent]
        puts = [l for l in lines if l.startswith("PUT ")]
        self.assertEqual(len(puts), 1, lines)
        self.assertNotIn("partNumber", puts[0])
        self.assertEqual([l for l in lines if l.startswith("POST ")], [])
        sent = [b for h, b in self.fault.sent if h.startswith("PUT ")][0]
        with open(self.local("p.pt"), "rb") as f:
            local = f.read()
        self.assertEqual(len(sent), len(local))
        self.assertEqual(self.get_bytes("p.pt"), local)
        # Over the threshold: parts, as by default.
        self.fault.clear()
        self.ckpt("convert", self.local("p.pt"), f"s3://{self.bucket}/p2.pt", CKPT_S3_PART_SIZE=5 << 20,
                  CKPT_S3_PUT_THRESHOLD=10 << 20)
        self.assertEqual(len([h for h, _ in self.fault.sent if "partNumber=" in h.splitlines()[0]]), 5)
        # A failed streamed PUT: not retried, one line, nothing visible.
        self.fault.clear()
        self.fault.add("503", method="PUT", times=1)
        r = self.ckpt("convert", self.local("p.pt"), f"s3://{self.bucket}/q.pt", ok=False, CKPT_S3_PART_SIZE=5 << 20,
                      CKPT_S3_PUT_THRESHOLD=1 << 30)
        self.assert_one_line_error(r, "PutObject", f"s3://{self.bucket}/q.pt", "503")
        keys = [o["Key"] for o in self.s3.list_objects_v2(Bucket=self.bucket).get("Contents", [])]
        self.assertEqual(sorted(keys), ["p.pt", "p2.pt"])
        self.ckpt("convert", self.local("p.pt"), f"s3://{self.bucket}/q.pt", CKPT_S3_PART_SIZE=5 << 20,
                  CKPT_S3_PUT_THRESHOLD=1 << 30)
        self.assertEqual(len(self.get_bytes("q.pt")), len(local))  # its records are named q/…, not p/…
        self.ckpt("verify", f"s3://{self.bucket}/q.pt")

    def test_inspect_transfers_little_of_a_large_object(self):
        self.make_checkpoint(self.local("i.pt"), 40)
        self.ckpt("convert", self.local("i.pt"), f"s3://{self.bucket}/i.pt")
        size = os.path.getsize(self.local("i.pt"))
        self.fault.clear()
        r = self.ckpt("inspect", f"s3://{self.bucket}/i.pt")
        self.assertIn("float32", r.stdout)
        self.assertLess(self.fault.bytes_out(), size // 100, self.fault.requests)


if __name__ == "__main__":
    unittest.main()
