"""Python torch baselines for bench/run_bench.py: py_bench.py OP WORKLOAD PATH [--cold].

Builds the same workloads as ckpt_bench.cc with torch 1.13 and times torch.save (until
os.fsync returns) and torch.load. Prints one JSON line like ckpt_bench.
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


def gpt2():
    shapes = [("wte.weight", (50257, 768)), ("wpe.weight", (1024, 768))]
    for l in range(12):
        h = f"h.{l}."
        shapes += [(h + "ln_1.weight", (768,)), (h + "ln_1.bias", (768,)), (h + "attn.c_attn.weight", (768, 2304)),
                   (h + "attn.c_attn.bias", (2304,)), (h + "attn.c_proj.weight", (768, 768)), (h + "attn.c_proj.bias", (768,)),
                   (h + "ln_2.weight", (768,)), (h + "ln_2.bias", (768,)), (h + "mlp.c_fc.weight", (768, 3072)),
                   (h + "mlp.c_fc.bias", (3072,)), (h + "mlp.c_proj.weight", (3072, 768)), (h + "mlp.c_proj.bias", (768,))]
    shapes += [("ln_f.weight", (768,)), ("ln_f.bias", (768,))]
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


def main():
    op, workload, path = sys.argv[1:4]
    cold = "--cold" in sys.argv
    torch.set_num_threads(2)
    size = 0
    if op == "save":
        obj = {"gpt2": gpt2, "small": small, "huge": huge}[workload]()
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
        fd = os.open(path, os.O_RDONLY)
        if cold:
            os.fdatasync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        else:
            while os.read(fd, 8 << 20):
                pass
        os.close(fd)
        rss = Rss()
        t = time.perf_counter()
        obj = torch.load(path)
        seconds = time.perf_counter() - t
    else:
        raise SystemExit(f"unknown op {op}")
    print(json.dumps({"op": "py_" + op, "seconds": seconds, "extra_rss_mb": rss.extra_mb(), "bytes": size}))


if __name__ == "__main__":
    main()
