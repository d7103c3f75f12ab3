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
import statistics

from bench_common import ROOT, replace_section, sh
BEGIN, END = "<!-- train-loop:begin -->", "<!-- train-loop:end -->"




def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--every-seconds", type=float, default=30)
    ap.add_argument("--saves", type=int, default=3)
    ap.add_argument("--dir", default=os.path.join(ROOT, "bench", "out", "train-loop"))
    ap.add_argument("--from-json", help="rewrite the section from a saved RESULTS-train-loop.json, measuring nothing")
    args = ap.parse_args()
    modes = ["none", "async", "sync", "torch_save"]
    if args.from_json:
        saved = json.load(open(args.from_json))
        step_s, steps, every, runs = saved["step_s"], saved["steps"], saved["every"], saved["runs"]
        args.reps, args.saves = len(runs["none"]), runs["async"][0]["saves"]
        return report(args, step_s, steps, every, runs, modes)

    sh("cmake", "-S", ROOT, "-B", os.path.join(ROOT, "build"), "-G", "Ninja", "-DCMAKE_BUILD_TYPE=RelWithDebInfo")
    sh("cmake", "--build", os.path.join(ROOT, "build"), "--target", "train_loop_bench")
    exe = os.path.join(ROOT, "build", "train_loop_bench")
    step_s = statistics.median(json.loads(sh(exe, "calibrate", args.dir))["step_s"] for _ in range(3))
    every = max(1, round(args.every_seconds / step_s))
    steps = every * args.saves
    print(f"one step {step_s * 1000:.1f} ms: {steps} steps, a checkpoint every {every} steps "
          f"(~{every * step_s:.0f} s)", flush=True)

    runs = {m: [] for m in modes}
    for rep in range(args.reps):
        for m in modes:
            r = json.loads(sh(exe, m, args.dir, "--steps", steps, "--save-every", every))
            runs[m].append(r)
            print(f"round {rep + 1}: {m:10s} {r['seconds']:8.2f} s, blocked {r['blocked_s']:.2f} s", flush=True)
    with open(os.path.join(ROOT, "bench", "RESULTS-train-loop.json"), "w") as f:
        json.dump({"step_s": step_s, "steps": steps, "every": every, "runs": runs}, f, indent=1)
    report(args, step_s, steps, every, runs, modes)


def report(args, step_s, steps, every, runs, modes):
    med = {m: statistics.median(r["seconds"] for r in runs[m]) for m in modes}
    blocked = {m: statistics.median(r["blocked_s"] for r in runs[m]) for m in modes}
    base = med["none"]
    overhead = {m: med[m] / base - 1 for m in modes}
    names = {"none": "no checkpoints (baseline)", "async": "**ckpt, async** (`ManagerOptions::async`)",
             "sync": "ckpt, sync (durable on the training thread)", "torch_save": "LibTorch `torch::save` + fsync"}
    # The first async save allocates and first-touches the snapshot arena (slow on this VM); later
    # saves reuse it.
    firsts = [r["blocked_each_s"][0] for r in runs["async"]]
    laters = [x for r in runs["async"] for x in r["blocked_each_s"][1:]]
    first_s, later_s = statistics.median(firsts), statistics.median(laters) if laters else 0.0
    interval = every * step_s
    lo, hi = min(r["seconds"] for r in runs["none"]), max(r["seconds"] for r in runs["none"])
    noise = (hi - lo) / base
    lines = [
        BEGIN,
        "## Training loop: what checkpoints cost",
        "",
        f"Produced by `bench/run_train_bench.py` on {datetime.date.today()}: a compute-bound loop "
        f"(`bench/train_loop_bench.cc`, 2 threads of matrix products, {step_s * 1000:.0f} ms a step) "
        f"runs {steps} steps and saves the 1.49 GB GPT-2-small + Adam state every {every} steps "
        f"(every {interval:.0f} s of training, {args.saves} saves, the last one waited for). "
        f"{args.reps} fresh-process runs per mode, modes interleaved round-robin.",
        "",
        "| mode | loop time, median (min–max) | vs no checkpoints | training blocked per save (median) |",
        "|---|---|---|---|",
    ]
    for m in modes:
        ts = [r["seconds"] for r in runs[m]]
        each = [x for r in runs[m] for x in r.get("blocked_each_s", [])]
        per_save = statistics.median(each) if each else 0
        lines.append(f"| {names[m]} | {med[m]:.1f} s ({min(ts):.1f}–{max(ts):.1f}) | "
                     f"{'—' if m == 'none' else f'{100 * overhead[m]:+.1f}%'} | "
                     f"{'—' if m == 'none' else f'{per_save:.2f} s'} |")
    lines += [
        "",
        f"**Read with care: on this VM the loop's own time varies by {100 * noise:.0f}% from run to run** "
        f"(the baseline took {lo:.1f}–{hi:.1f} s), more than any mode's effect, so the loop-time ratios "
        f"(async {100 * overhead['async']:+.1f}%, sync {100 * overhead['sync']:+.1f}%, `torch::save` "
        f"{100 * overhead['torch_save']:+.1f}% by the medians) do not resolve a 2% target. What does resolve "
        "is the time each save blocks the loop:",
        "",
        f"- async: {later_s:.2f} s per save once the snapshot buffer exists ({100 * later_s / interval:.1f}% of a "
        f"{interval:.0f} s interval); the first save of a process blocks {first_s:.2f} s, allocating and "
        "first-touching the 1.5 GB buffer (slow on this VM), once per process;",
        f"- sync (durable): {statistics.median(x for r in runs['sync'] for x in r['blocked_each_s']):.2f} s per save;",
        f"- LibTorch `torch::save` + fsync: "
        f"{statistics.median(x for r in runs['torch_save'] for x in r['blocked_each_s']):.2f} s per save.",
        "",
        f"Target (async adds at most 2% to a compute-bound loop saving 1.5 GB every 30 s): the blocking "
        f"cost is {100 * later_s / interval:.1f}% in steady state and the median loop time is "
        f"{100 * overhead['async']:+.1f}%, so it is met as far as this machine can measure — but the loop-time "
        "figure is within the noise above. Beyond the blocking, the write itself costs the loop some time "
        "in every mode (sync included, which runs nothing in the background): on this VM, writing 1.5 GB "
        "also slows the vCPUs after the call returns. The background writer runs at nice 10.",
        END,
    ]
    section = "\n".join(lines) + "\n"
    replace_section(BEGIN, END, section)
    print(section)


if __name__ == "__main__":
    main()
