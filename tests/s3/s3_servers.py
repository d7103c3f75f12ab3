"""Test helpers for object storage: a moto S3 server on 127.0.0.1 and a fault-injecting proxy.

MotoServer starts `python -m moto.server` (moto 5.2.1 ships in the machine image's pyenv Python)
on a free port and stops it after; every wait is bounded, and a moto that cannot start is an
error with the reason, never a skip.

S3rverServer does the same with npm's s3rver 3.7.1 (scripts/install-s3rver.sh puts it in
build/s3rver), the pessimistic server: a killed PUT leaves a truncated object, a killed overwrite
destroys the old one, conditional writes are ignored, uploads can be neither listed nor aborted
(doc/object-storage.md, "Testing"). Both have `port`, `endpoint`, `key_id`, `secret`, `name`
and `stop()`.

FaultProxy sits between ckpt and the server on 127.0.0.1 and applies rules to matching requests:
answer 503 or 500 itself, reset the connection, stall, cut a response body short, or flip one
byte of it. It also counts requests and response bytes, so a test can see what went over the wire.
"""
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _wait_for_port(server, proc, what):
    """Until `proc` accepts connections on server.port: 30 s at most, and an error naming `what`."""
    deadline = time.time() + 30
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before answering")
        try:
            socket.create_connection(("127.0.0.1", server.port), timeout=0.5).close()
            return
        except OSError:
            if time.time() > deadline:
                server.stop()
                raise RuntimeError(f"{what} did not answer on port {server.port} within 30 s")
            time.sleep(0.1)


def _stop(proc):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _die_with_parent():
    """In the child before exec: SIGTERM when the test process dies (a suite killed by ctest's
    timeout would otherwise leave a server running)."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class MotoServer:
    name = "moto"
    # moto checks no signature by default (S3Auth turns its checker on): any key pair will do.
    key_id, secret = "AKIDCKPTTEST", "secret/with+chars"

    def __init__(self, env=None):
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        try:
            import moto  # noqa: F401
        except ImportError as e:
            raise RuntimeError(f"moto is not importable by {sys.executable} ({e}): the S3 tests need moto 5.x "
                               "(the machine image's pyenv Python has it)") from e
        self.log = open(os.devnull, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                                     preexec_fn=_die_with_parent)
        _wait_for_port(self, self.proc, "moto_server")

    def stop(self):
        _stop(self.proc)
        self.log.close()


class S3rverServer:
    """s3rver 3.7.1 on Node, its objects in a temporary directory (`data_dir`, removed by stop()).

    Found in $S3RVER_DIR, else <repo>/build/s3rver; started by s3rver/serve.js, which is its
    bin/s3rver.js plus fixes for two bugs outside the pessimistic model: CopyObject from keys with
    '=', and a PUT answered before its bytes are in the file (see there). Node runs with
    --openssl-legacy-provider: s3rver's ListObjectsV2 continuation tokens use DES, which Node 20's
    OpenSSL 3 has only there (without it a paginated listing is a 500). It takes one key id,
    S3RVER, and checks no SigV4 signature."""
    name = "s3rver"
    key_id, secret = "S3RVER", "S3RVER"

    def __init__(self):
        repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        home = os.environ.get("S3RVER_DIR") or os.path.join(repo, "build", "s3rver")
        script = os.path.join(home, "node_modules", "s3rver", "bin", "s3rver.js")
        if not os.path.isfile(script):
            raise RuntimeError(f"s3rver is not installed: no {script} (run scripts/install-s3rver.sh)")
        node = shutil.which("node")
        if node is None:
            raise RuntimeError("no `node` on PATH to run s3rver (scripts/setup.sh installs nodejs)")
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.data_dir = tempfile.mkdtemp(prefix="ckpt-s3rver-")
        self.log = tempfile.TemporaryFile()
        env = {**os.environ, "NODE_OPTIONS": "--openssl-legacy-provider"}
        serve = os.path.join(os.path.dirname(os.path.abspath(__file__)), "s3rver", "serve.js")
        self.proc = subprocess.Popen([node, serve, home, "127.0.0.1", str(self.port), self.data_dir],
                                     stdout=self.log, stderr=subprocess.STDOUT, env=env, preexec_fn=_die_with_parent)
        try:
            _wait_for_port(self, self.proc, "s3rver")
        except RuntimeError as e:
            self.log.seek(0)
            raise RuntimeError(f"{e}: {self.log.read()[-2000:].decode(errors='replace')}") from None

    def uploads_dir(self, bucket):
        """Where s3rver keeps a bucket's unfinished multipart uploads, one folder each (it has no
        ListMultipartUploads: lib/stores/filesystem.js, `._S3rver_uploads/<uploadId>/`)."""
        return os.path.join(self.data_dir, bucket, "._S3rver_uploads")

    def stop(self):
        _stop(self.proc)
        self.log.close()
        shutil.rmtree(self.data_dir, ignore_errors=True)


def _read_message(sock, buf, is_response=False, head_request=False):
    """Reads one HTTP/1.1 message (headers + Content-Length body). Returns (head, body, rest) or None."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(1 << 16)
        if not chunk:
            return None
        buf += chunk
    head, _, buf = buf.partition(b"\r\n\r\n")
    m = re.search(rb"\r\ncontent-length: *(\d+)", head, re.I)
    n = int(m.group(1)) if m else 0
    if is_response and (head_request or re.match(rb"HTTP/1\.\d (1\d\d|204|304)", head)):
        n = 0
    while len(buf) < n:
        chunk = sock.recv(1 << 20)
        if not chunk:
            return None
        buf += chunk
    return head, buf[:n], buf[n:]


class FaultProxy:
    """Rules: dicts with `method` (or None), `path` (a regex searched in the request line), `action`
    ('503', '500', 'reset', 'stall', 'truncate', 'flip') and `times` (how many matching requests it
    applies to; -1 = all)."""

    def __init__(self, upstream_port):
        self.upstream = upstream_port
        self.rules = []
        self.lock = threading.Lock()
        self.requests = []  # (request line, response body bytes)
        self.sent = []  # (request head, request body): what the client sent
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.stopping = False
        threading.Thread(target=self._accept, daemon=True).start()

    def add(self, action, path=".", method=None, times=1):
        with self.lock:
            self.rules.append({"action": action, "path": path, "method": method, "times": times})

    def clear(self):
        with self.lock:
            self.rules = []
            self.requests = []
            self.sent = []

    def bytes_out(self):
        with self.lock:
            return sum(n for _, n in self.requests)

    def stop(self):
        self.stopping = True
        self.sock.close()

    def _rule_for(self, line):
        with self.lock:
            for r in self.rules:
                if r["times"] == 0:
                    continue
                if r["method"] and not line.startswith(r["method"] + " "):
                    continue
                if not re.search(r["path"], line):
                    continue
                if r["times"] > 0:
                    r["times"] -= 1
                return r["action"]
        return None

    def _accept(self):
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        buf = b""
        try:
            while True:
                msg = _read_message(c, buf)
                if msg is None:
                    return
                head, body, buf = msg
                line = head.split(b"\r\n", 1)[0].decode("latin-1")
                with self.lock:
                    self.sent.append((head.decode("latin-1"), body))
                # 100-continue is the proxy's to answer: the body is read whole before forwarding.
                head = re.sub(rb"\r\nexpect: *100-continue", b"", head, flags=re.I)
                action = self._rule_for(line)
                if action in ("503", "500"):
                    code = "SlowDown" if action == "503" else "InternalError"
                    text = b"<Error><Code>" + code.encode() + b"</Code><Message>injected</Message></Error>"
                    c.sendall(f"HTTP/1.1 {action} Injected\r\nContent-Length: {len(text)}\r\n\r\n".encode() + text)
                    with self.lock:
                        self.requests.append((line, 0))
                    continue
                if action == "reset":
                    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    c.close()
                    return
                if action == "stall":
                    time.sleep(3600)
                    return
                up = socket.create_connection(("127.0.0.1", self.upstream), timeout=60)
                up.sendall(head + b"\r\n\r\n" + body)
                resp = _read_message(up, b"", is_response=True, head_request=line.startswith("HEAD "))
                up.close()
                if resp is None:
                    c.close()
                    return
                rhead, rbody, _ = resp
                with self.lock:
                    self.requests.append((line, len(rbody)))
                if action == "truncate" and len(rbody) > 1:
                    c.sendall(rhead + b"\r\n\r\n" + rbody[:len(rbody) // 2])
                    c.close()
                    return
                if action == "flip" and rbody:
                    i = len(rbody) // 2
                    rbody = rbody[:i] + bytes([rbody[i] ^ 0x40]) + rbody[i + 1:]
                c.sendall(rhead + b"\r\n\r\n" + rbody)
        except OSError:
            pass
        finally:
            try:
                c.close()
            except OSError:
                pass
