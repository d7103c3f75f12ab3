#!/usr/bin/env python3
"""The Python package's speed against torch.save / torch.load, in the same run: writes the
"Python" section of bench/RESULTS.md.

    bench/run_py_bench.py              # GPT-2-small + Adam (1.5 GB), medians of 5: ~6 minutes
    bench/run_py_bench.py --reps 3

Each figure is the median of --reps runs, each in a fresh /usr/bin/python3 process, the runs of
all figures interleaved round-robin. Durable saves: until fsync returned (ckpt.save also fsyncs
the directory). Warm loads follow a full read of the file; cold ones posix_fadvise(DONTNEED).
extra RSS: the peak resident memory during the call minus the resident memory just before it.
"""
import argparse
import datetime
import json
import os
import statistics

from bench_common import ROOT, replace_section, sh
PY = "/usr/bin/python3"
BEGIN, END = "<!-- python:begin -->", "<!-- python:end -->"
MiB = 1 << 20




def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--dir", default=os.path.join(ROOT, "bench", "out", "python"))
    args = ap.parse_args()
    sh("cmake", "-S", ROOT, "-B", os.path.join(ROOT, "build"), "-G", "Ninja", "-DCMAKE_BUILD_TYPE=RelWithDebInfo")
    sh("cmake", "--build", os.path.join(ROOT, "build"), "--target", "_ckpt", "ckpt_bench")
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "build", "python"))
    os.makedirs(args.dir, exist_ok=True)
    ours, theirs = os.path.join(args.dir, "ckpt.pt"), os.path.join(args.dir, "torch.pt")
    bench = os.path.join(ROOT, "bench", "py_bench.py")

    def one(op, path, *flags):
        return json.loads(sh(PY, bench, op, "gpt2", path, *flags, env=env).strip().splitlines()[-1])

    cpp = os.path.join(ROOT, "build", "ckpt_bench")  # the disk's own speed, for context

    def disk(op, path):
        r = json.loads(sh(cpp, op, "gpt2", path).strip().splitlines()[-1])
        r.setdefault("extra_rss_mb", 0)
        return r

    figures = {
        "ckpt.save (durable)": lambda: one("ckpt_save", ours),
        "torch.save + fsync": lambda: one("save", theirs),
        "ckpt.load, warm": lambda: one("ckpt_load", ours),
        "torch.load, warm": lambda: one("load", theirs),
        "ckpt.load, cold": lambda: one("ckpt_load", ours, "--cold"),
        "torch.load, cold": lambda: one("load", theirs, "--cold"),
        "ckpt.load(mmap=True), cold: tensors ready": lambda: one("ckpt_mmap", ours, "--cold"),
        "disk: O_DIRECT write + fsync of the same bytes": lambda: disk("raw_write_direct", os.path.join(args.dir, "raw.bin")),
        "disk: read() into new memory, warm": lambda: disk("raw_read", os.path.join(args.dir, "raw.bin")),
    }
    one("ckpt_save", ours)
    one("save", theirs)
    runs = {k: [] for k in figures}
    for rep in range(args.reps):
        for name, fn in figures.items():
            r = fn()
            runs[name].append(r)
            print(f"round {rep + 1}: {name:42s} {r['seconds']:.3f} s  +{r['extra_rss_mb']:.0f} MB", flush=True)
    cycles = json.loads(sh(PY, bench, "ckpt_cycles", "small", os.path.join(args.dir, "cycle.pt"), env=env)
                        .strip().splitlines()[-1])
    med = {k: statistics.median(r["seconds"] for r in v) for k, v in runs.items()}
    rss = {k: statistics.median(r["extra_rss_mb"] for r in v) for k, v in runs.items()}
    state_mb = runs["ckpt.save (durable)"][0]["bytes"] / MiB
    size_gb = runs["ckpt.save (durable)"][0]["bytes"] / 1e9

    save_x = med["torch.save + fsync"] / med["ckpt.save (durable)"]
    warm_x = med["torch.load, warm"] / med["ckpt.load, warm"]
    cold_x = med["torch.load, cold"] / med["ckpt.load, cold"]
    mmap_ms = med["ckpt.load(mmap=True), cold: tensors ready"] * 1000
    growth = cycles["rss_after_1000_mb"] - cycles["rss_after_10_mb"]
    raw_w = med["disk: O_DIRECT write + fsync of the same bytes"]
    targets = [
        ("ckpt.save (durable) ≥ 4x faster than torch.save + fsync", save_x >= 4,
         f"{save_x:.2f}x; ckpt.save runs at {100 * raw_w / med['ckpt.save (durable)']:.0f}% of the disk's raw "
         f"O_DIRECT write speed, so torch.save + fsync would have to be slower than {raw_w * 4:.2f} s for 4x"),
        ("ckpt.load ≥ 2x faster than torch.load, warm", warm_x >= 2, f"{warm_x:.2f}x (cold: {cold_x:.2f}x)"),
        ("ckpt.load(mmap=True) ready in < 50 ms", mmap_ms < 50, f"{mmap_ms:.1f} ms (cold)"),
        ("ckpt.save peak memory within 64 MiB of the state", rss["ckpt.save (durable)"] <= 64,
         f"+{rss['ckpt.save (durable)']:.0f} MB"),
        ("ckpt.load peak memory within 64 MiB of the state", rss["ckpt.load, warm"] <= state_mb + 64,
         f"+{rss['ckpt.load, warm']:.0f} MB for a {state_mb:.0f} MiB state"),
        ("1000 save/load cycles of a small state: resident memory flat", growth < 8,
         f"{cycles['rss_after_10_mb']:.0f} MB after 10, {cycles['rss_after_1000_mb']:.0f} MB after 1000"),
    ]
    lines = [BEGIN, "## Python: the `ckpt` package against torch.save / torch.load", "",
             f"Produced by `bench/run_py_bench.py` on {datetime.date.today()} with /usr/bin/python3 and torch "
             f"1.13: GPT-2-small + Adam ({size_gb:.2f} GB), medians of {args.reps} fresh-process runs, all figures "
             "interleaved; every ratio compares figures from this same run.", "",
             "| target | met | measured |", "|---|---|---|"]
    lines += [f"| {t} | {'yes' if ok else '**no**'} | {m} |" for t, ok, m in targets]
    lines += ["", "| figure | time | bandwidth | extra RSS |", "|---|---|---|---|"]
    for k in figures:
        lines.append(f"| {k} | {med[k]:.3f} s | {size_gb / med[k]:.2f} GB/s | {rss[k]:.0f} MB |")
    lines.append(END)
    section = "\n".join(lines) + "\n"
    replace_section(BEGIN, END, section)
    with open(os.path.join(ROOT, "bench", "RESULTS-python.json"), "w") as f:
        json.dump({"runs": runs, "cycles": cycles}, f, indent=1)
    print(section)


if __name__ == "__main__":
    main()
