"""Python measurements: py_bench.py OP WORKLOAD PATH [--cold].

Builds the same workloads as ckpt_bench.cc with torch 1.13 (plus gpt2:D, GPT-2-small's layout at
width D instead of 768, for quick checks: gpt2:192 is 0.18 GB) and times, in this process:
  save / load                  torch.save (until os.fsync returns) / torch.load — the baselines
                               for bench/run_bench.py and bench/run_py_bench.py
  ckpt_save / ckpt_load        the Python package: ckpt.save (durable) / ckpt.load; PATH may be an
                               s3://bucket/key (credentials and endpoint from AWS_*: see
                               bench/run_s3_bench.py), then "bytes" is null
  ckpt_mmap                    ckpt.load(mmap=True): until the tensors are ready
  ckpt_cycles                  1000 ckpt.save + ckpt.load cycles of a small state: resident memory
                               after the first 10 and after all 1000
Prints one JSON line like ckpt_bench.
"""
import collections
import json
import os
import sys
import time

import torch


def status_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    return 0


class Rss:
    def __init__(self):
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        self.before = status_kb("VmRSS:")

    def extra_mb(self):
        return (status_kb("VmHWM:") - self.before) / 1024.0


def gpt2(d=768):
    shapes = [("wte.weight", (50257, d)), ("wpe.weight", (1024, d))]
    for l in range(12):
        h = f"h.{l}."
        shapes += [(h + "ln_1.weight", (d,)), (h + "ln_1.bias", (d,)), (h + "attn.c_attn.weight", (d, 3 * d)),
                   (h + "attn.c_attn.bias", (3 * d,)), (h + "attn.c_proj.weight", (d, d)), (h + "attn.c_proj.bias", (d,)),
                   (h + "ln_2.weight", (d,)), (h + "ln_2.bias", (d,)), (h + "mlp.c_fc.weight", (d, 4 * d)),
                   (h + "mlp.c_fc.bias", (4 * d,)), (h + "mlp.c_proj.weight", (4 * d, d)), (h + "mlp.c_proj.bias", (d,))]
    shapes += [("ln_f.weight", (d,)), ("ln_f.bias", (d,))]
    model = collections.OrderedDict()
    state = {}
    for i, (name, shape) in enumerate(shapes):
        t = torch.empty(shape).fill_(0.001 * (i + 1))
        model[name] = t
        state[i] = {"step": torch.tensor(1000.0), "exp_avg": torch.empty(shape).fill_(0.5),
                    "exp_avg_sq": torch.empty(shape).fill_(0.25)}
    opt = {"state": state, "param_groups": [{"lr": 6e-4, "betas": (0.9, 0.95), "params": list(range(len(shapes)))}]}
    return {"model_state": model, "optimizer_state": opt, "step": 1000}


def small():
    return {f"t{i}": torch.empty(1024 * (1 + (i * 37) % 64) // 4).fill_(float(i)) for i in range(20000)}


def huge():
    return {"big": torch.empty(2 ** 32 + (200 << 20), dtype=torch.uint8).fill_(7), "small": torch.ones(3)}


def build(workload):
    """The state a workload names: gpt2, small, huge, or gpt2:D (GPT-2-small's layout at width D)."""
    if workload.startswith("gpt2:"):
        return gpt2(int(workload[5:]))
    return {"gpt2": gpt2, "small": small, "huge": huge}[workload]()


def drop_or_warm(path, cold):
    fd = os.open(path, os.O_RDONLY)
    if cold:
        os.fdatasync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    else:
        while os.read(fd, 8 << 20):
            pass
    os.close(fd)


def main():
    op, workload, path = sys.argv[1:4]
    cold = "--cold" in sys.argv
    s3 = path.startswith("s3://")
    torch.set_num_threads(2)
    size = 0
    extra = {}
    if op.startswith("ckpt_"):
        import ckpt
    if op == "ckpt_save":
        obj = build(workload)
        if not s3 and os.path.exists(path):
            os.unlink(path)
        rss = Rss()
        t = time.perf_counter()
        ckpt.save(obj, path)  # durable: returns after fsync of the file and its directory (S3: the upload completed)
        seconds = time.perf_counter() - t
        size = None if s3 else os.path.getsize(path)
    elif op in ("ckpt_load", "ckpt_mmap"):
        size = None if s3 else os.path.getsize(path)
        if not s3:
            drop_or_warm(path, cold)
        rss = Rss()
        t = time.perf_counter()
        obj = ckpt.load(path, mmap=op == "ckpt_mmap", verify=op == "ckpt_load")
        seconds = time.perf_counter() - t
    elif op == "ckpt_cycles":
        state = {"w": torch.randn(256, 256), "opt": {"state": {0: {"m": torch.randn(256, 256)}}, "lr": 0.1}}
        rss = Rss()
        t = time.perf_counter()
        for i in range(1000):
            ckpt.save(state, path, durable=False)
            back = ckpt.load(path)
            if i == 9:
                extra["rss_after_10_mb"] = status_kb("VmRSS:") / 1024.0
        seconds = time.perf_counter() - t
        extra["rss_after_1000_mb"] = status_kb("VmRSS:") / 1024.0
        size = os.path.getsize(path)
    elif op == "save":
        obj = build(workload)
        if os.path.exists(path):
            os.unlink(path)
        rss = Rss()
        t = time.perf_counter()
        with open(path, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        seconds = time.perf_counter() - t
        size = os.path.getsize(path)
    elif op == "load":
        size = os.path.getsize(path)
        drop_or_warm(path, cold)
        rss = Rss()
        t = time.perf_counter()
        obj = torch.load(path)
        seconds = time.perf_counter() - t
    else:
        raise SystemExit(f"unknown op {op}")
    print(json.dumps({"op": op if op.startswith("ckpt_") else "py_" + op, "seconds": seconds,
                      "extra_rss_mb": rss.extra_mb(), "bytes": size, **extra}))


if __name__ == "__main__":
    main()
