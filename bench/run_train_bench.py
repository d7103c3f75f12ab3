#!/usr/bin/env python3
"""What checkpointing costs a training loop: writes the "Training loop" section of bench/RESULTS.md.

    bench/run_train_bench.py                  # 3 rounds of 4 modes, ~90 s each: about 20 minutes
    bench/run_train_bench.py --reps 1 --every-seconds 10    # a quick look

A compute-bound loop (bench/train_loop_bench.cc) runs the same steps with no checkpoints, with
the run manager saving the 1.49 GB GPT-2 + Adam state synchronously and asynchronously, and with
LibTorch's torch::save + fsync, once every --every-seconds of training (30 s: the target's
cadence). Each run is a fresh process; the modes are interleaved round-robin; every ratio compares
medians measured in this same run. The overhead of a mode is its loop time over the loop time
without checkpoints, minus one.
"""
import argparse
import datetime
import json
import os
import re
import statistics
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BEGIN, END = "<!-- train-loop:begin -->", "<!-- train-loop:end -->"


def sh(*cmd, timeout=3600):
    r = subprocess.run(list(map(str, cmd)), capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed:\n{r.stdout}\n{r.stderr}")
    return r.stdout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--every-seconds", type=float, default=30)
    ap.add_argument("--saves", type=int, default=3)
    ap.add_argument("--dir", default=os.path.join(ROOT, "bench", "out", "train-loop"))
    args = ap.parse_args()

    sh("cmake", "-S", ROOT, "-B", os.path.join(ROOT, "build"), "-G", "Ninja", "-DCMAKE_BUILD_TYPE=RelWithDebInfo")
    sh("cmake", "--build", os.path.join(ROOT, "build"), "--target", "train_loop_bench")
    exe = os.path.join(ROOT, "build", "train_loop_bench")
    step_s = statistics.median(json.loads(sh(exe, "calibrate", args.dir))["step_s"] for _ in range(3))
    every = max(1, round(args.every_seconds / step_s))
    steps = every * args.saves
    print(f"one step {step_s * 1000:.1f} ms: {steps} steps, a checkpoint every {every} steps "
          f"(~{every * step_s:.0f} s)", flush=True)

    modes = ["none", "async", "sync", "torch_save"]
    runs = {m: [] for m in modes}
    for rep in range(args.reps):
        for m in modes:
            r = json.loads(sh(exe, m, args.dir, "--steps", steps, "--save-every", every))
            runs[m].append(r)
            print(f"round {rep + 1}: {m:10s} {r['seconds']:8.2f} s, blocked {r['blocked_s']:.2f} s", flush=True)

    med = {m: statistics.median(r["seconds"] for r in runs[m]) for m in modes}
    blocked = {m: statistics.median(r["blocked_s"] for r in runs[m]) for m in modes}
    base = med["none"]
    overhead = {m: med[m] / base - 1 for m in modes}
    names = {"none": "no checkpoints (baseline)", "async": "**ckpt, async** (`ManagerOptions::async`)",
             "sync": "ckpt, sync (durable on the training thread)", "torch_save": "LibTorch `torch::save` + fsync"}
    met = overhead["async"] <= 0.02
    lines = [
        BEGIN,
        "## Training loop: what checkpoints cost",
        "",
        f"Produced by `bench/run_train_bench.py` on {datetime.date.today()}: a compute-bound loop "
        f"(`bench/train_loop_bench.cc`, 2 threads of matrix products, {step_s * 1000:.0f} ms a step) "
        f"runs {steps} steps and saves the 1.49 GB GPT-2-small + Adam state every {every} steps "
        f"(every {every * step_s:.0f} s of training, {args.saves} saves, the last one waited for). "
        f"Medians of {args.reps} fresh-process runs per mode, modes interleaved; the overhead is the "
        "loop's time over the baseline's from this same run, minus one.",
        "",
        "| mode | loop time | overhead vs no checkpoints | training blocked per save |",
        "|---|---|---|---|",
    ]
    for m in modes:
        per_save = blocked[m] / args.saves if m != "none" else 0
        lines.append(f"| {names[m]} | {med[m]:.2f} s | "
                     f"{'—' if m == 'none' else f'{100 * overhead[m]:+.2f}%'} | "
                     f"{'—' if m == 'none' else f'{per_save:.2f} s'} |")
    lines += [
        "",
        f"Target: async checkpointing adds at most 2% to a compute-bound loop that saves a 1.5 GB "
        f"state every 30 s — **{'met' if met else 'not met'}** ({100 * overhead['async']:+.2f}%). "
        f"Sync saves cost {100 * overhead['sync']:+.2f}%, `torch::save` {100 * overhead['torch_save']:+.2f}%. "
        "The async save blocks the loop only for the snapshot copy; the write then shares the two "
        "cores with training, which is what remains of its overhead here.",
        END,
    ]
    section = "\n".join(lines) + "\n"
    path = os.path.join(ROOT, "bench", "RESULTS.md")
    text = open(path).read()
    if BEGIN in text:
        text = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END) + "\n?", section, text, flags=re.S)
    else:
        text = text.rstrip("\n") + "\n\n\n" + section
    open(path, "w").write(text)
    with open(os.path.join(ROOT, "bench", "RESULTS-train-loop.json"), "w") as f:
        json.dump({"step_s": step_s, "steps": steps, "every": every, "runs": runs}, f, indent=1)
    print(section)


if __name__ == "__main__":
    main()
