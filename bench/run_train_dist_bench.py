#!/usr/bin/env python3
"""ckpt-train under torchrun: writes the "Training on several ranks" section of bench/RESULTS.md.

    bench/run_train_dist_bench.py            # 3 rounds of 4 modes on a Fashion-MNIST subset: ~6 minutes

Modes: one process; 2 ranks; 2 ranks with --shard-optimizer (ZeRO-1); each with async saves, and
2 ranks with sync saves. Each run trains 2 epochs of 8,000 images (250 steps of 64) with a
checkpoint every 25 steps, 1 thread per rank. From ckpt-train's own output: the training time
checkpoints blocked per save (median over a run's saves) and in all, and from the last
checkpoint's metadata.json the bytes of optimizer state each rank wrote. Every ratio compares
medians of this same run. The two ranks share this machine's two cores and one disk.
"""
import argparse
import datetime
import json
import os
import re
import shutil
import socket
import statistics

from bench_common import ROOT, replace_section, sh

BEGIN, END = "<!-- train-dist:begin -->", "<!-- train-dist:end -->"
TRAIN = os.path.join(ROOT, "build", "ckpt-train")
def flags_for(epochs):
    return ["--train-samples", "8000", "--val-samples", "1000", "--epochs", str(epochs), "--save-every-steps", "25",
            "--threads", "1", "--keep-last", "2"]


FLAGS = flags_for(2)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(n, run_dir, flags):
    return ["/usr/bin/python3", "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", str(n),
            "--master_addr", "127.0.0.1", "--master_port", str(free_port()), "--redirects", "2", "--tee", "2",
            "--no_python", TRAIN, "--run-dir", run_dir, *flags]


def run_mode(mode, run_dir):
    shutil.rmtree(run_dir, ignore_errors=True)
    if mode == "resized: 2 ranks, then 1 process":
        # Epoch 1 on 2 ranks, epoch 2 in one process (the same run directory).
        sh(*torchrun(2, run_dir, flags_for(1) + ["--async"]), timeout=1800)
        out = sh(TRAIN, "--run-dir", run_dir, *FLAGS, "--async", timeout=1800)
        total = re.search(r"test accuracy ([0-9.]+)%", out)
        return {"stall_median_s": 0.0, "saves": 0, "blocked_s": 0.0, "blocked_pct": 0.0,
                "test_acc": float(total.group(1)), "optimizer_bytes_by_rank": []}
    flags = FLAGS + ([] if mode == "2 ranks, sync" else ["--async"])
    if mode == "2 ranks, --shard-optimizer":
        flags.append("--shard-optimizer")
    if mode == "1 process":
        cmd = [TRAIN, "--run-dir", run_dir, *flags]
    else:
        cmd = torchrun(2, run_dir, flags)
    out = sh(*cmd, timeout=1800)
    stalls = [float(m) / 1000 for m in re.findall(r"training blocked (\d+) ms", out)]
    total = re.search(r"done in [0-9:]+: test accuracy ([0-9.]+)%; checkpoints blocked training for ([0-9.]+) s "
                      r"\(([0-9.]+)% of the run\)", out)
    latest = os.path.join(run_dir, open(os.path.join(run_dir, "latest")).read().strip())
    opt_bytes = []
    if os.path.isdir(latest):
        meta = json.load(open(os.path.join(latest, "metadata.json")))
        per_rank = {}
        for e in meta["entries"]:
            if e["key"].startswith("optimizer_state/state/"):
                if e["kind"] in ("replicated", "sharded"):
                    for p in e.get("pieces", []):
                        per_rank[p["rank"]] = per_rank.get(p["rank"], 0) + p["nbytes"]
        opt_bytes = [per_rank.get(r, 0) for r in range(meta["world_size"])]
    return {"stall_median_s": statistics.median(stalls) if stalls else 0.0, "saves": len(stalls),
            "blocked_s": float(total.group(2)), "blocked_pct": float(total.group(3)),
            "test_acc": float(total.group(1)), "optimizer_bytes_by_rank": opt_bytes}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--dir", default=os.path.join(ROOT, "bench", "out", "train-dist"))
    ap.add_argument("--from-json")
    ap.add_argument("--only", help="measure only this mode, into the saved RESULTS-train-dist.json")
    args = ap.parse_args()
    modes = ["1 process", "2 ranks", "2 ranks, --shard-optimizer", "2 ranks, sync", "resized: 2 ranks, then 1 process"]
    if args.from_json:
        data = json.load(open(args.from_json))
    elif args.only:
        data = json.load(open(os.path.join(ROOT, "bench", "RESULTS-train-dist.json")))
        data["runs"][args.only] = [run_mode(args.only, os.path.join(args.dir, "only")) for _ in range(args.reps)]
        with open(os.path.join(ROOT, "bench", "RESULTS-train-dist.json"), "w") as f:
            json.dump(data, f, indent=1)
    else:
        sh("cmake", "--build", os.path.join(ROOT, "build"), "--target", "ckpt-train")
        runs = {m: [] for m in modes}
        for rep in range(args.reps):
            for m in modes:
                r = run_mode(m, os.path.join(args.dir, re.sub(r"[^a-z0-9]+", "-", m)))
                runs[m].append(r)
                print(f"round {rep + 1}: {m:28s} stall {1000 * r['stall_median_s']:6.1f} ms, "
                      f"blocked {r['blocked_pct']:.1f}% of the run, optimizer bytes {r['optimizer_bytes_by_rank']}",
                      flush=True)
        data = {"date": datetime.date.today().isoformat(), "runs": runs}
        with open(os.path.join(ROOT, "bench", "RESULTS-train-dist.json"), "w") as f:
            json.dump(data, f, indent=1)
    report(data, modes)


def report(data, modes):
    runs = data["runs"]
    med = {m: {k: statistics.median(r[k] for r in runs[m]) for k in ("stall_median_s", "blocked_pct", "test_acc")}
           for m in modes}
    # One process holds the whole optimizer state: what the plain 2-rank run wrote once in total.
    one_opt = sum(runs["2 ranks"][-1]["optimizer_bytes_by_rank"])
    zero_opt = runs["2 ranks, --shard-optimizer"][-1]["optimizer_bytes_by_rank"]
    plain_opt = runs["2 ranks"][-1]["optimizer_bytes_by_rank"]
    stall_ratio = med["2 ranks, --shard-optimizer"]["stall_median_s"] / med["1 process"]["stall_median_s"]
    lines = [BEGIN, "## Training on several ranks: ckpt-train under torchrun", "",
             f"Produced by `bench/run_train_dist_bench.py` on {data['date']}: ckpt-train on 8,000 Fashion-MNIST images, "
             "2 epochs of 125 global batches of 64, a checkpoint every 25 steps, 1 thread per rank; "
             f"{len(runs['1 process'])} rounds of the modes interleaved; medians. The two ranks share the machine's two "
             "cores and one disk.", "",
             "| target | met | measured |", "|---|---|---|",
             f"| --shard-optimizer on 2 ranks: each rank's share of the optimizer state ≈ half of one process's | "
             f"{'yes' if max(zero_opt) <= 0.6 * one_opt else '**no**'} | {zero_opt[0] / 1e6:.2f} and "
             f"{zero_opt[1] / 1e6:.2f} MB of {one_opt / 1e6:.2f} MB (without it: {plain_opt[0] / 1e6:.2f} and "
             f"{plain_opt[1] / 1e6:.2f} MB, the replicated state spread by bytes) |",
             f"| per-save training stall on each rank ≤ 1.2x one process's | "
             f"{'yes' if stall_ratio <= 1.2 else '**no**'} | "
             f"{1000 * med['2 ranks, --shard-optimizer']['stall_median_s']:.0f} vs "
             f"{1000 * med['1 process']['stall_median_s']:.0f} ms (async; ckpt-train reports whole milliseconds, "
             f"and this model's 5 MB state copies in about one) |", "",
             "| mode (async saves unless sync) | per-save stall, median | checkpoints' share of the run | test accuracy |",
             "|---|---|---|---|"]
    for m in modes:
        if m.startswith("resized"):
            n = len(runs[m])
            lines.append(f"| {m} ({n} run{'s' if n > 1 else ''}) | | | {med[m]['test_acc']:.2f}% |")
            continue
        lines.append(f"| {m} | {1000 * med[m]['stall_median_s']:.0f} ms | {med[m]['blocked_pct']:.1f}% | "
                     f"{med[m]['test_acc']:.2f}% |")
    lines += ["", "The stall is what the rank's training thread waits for per save, as ckpt-train reports it (the "
              "snapshot of the state for async saves; the whole write and commit for sync ones); the share of the "
              "run is the sum of those stalls over the run's wall time. The resized run trains epoch 1 on 2 ranks and "
              "epoch 2 in one process from the same run directory (RNG re-derived, data position carried over): its "
              "accuracy against the unresized runs' is the run-to-run spread of such a short run.", END]
    replace_section(BEGIN, END, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
