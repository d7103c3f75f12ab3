#!/usr/bin/env python3
"""What including each public header costs a user's compile, and how long the libraries take to
build from clean on this machine; writes the "Compile times" section of bench/RESULTS.md.

    bench/run_header_bench.py [--build-dir build] [--include-dir include] [--runs 3] [--no-clean-build]
    bench/run_header_bench.py --include-dir /tmp/old/include --no-write   # an older tree's headers
    bench/run_header_bench.py --baseline /tmp/old/include --baseline-name 59d572f  # both, side by side

Each header is compiled alone in an otherwise empty file (`#include <ckpt/X.h>`) with the exact
command CMake uses for the LibTorch bridge (from build/compile_commands.json, so the same flags,
defines and LibTorch include paths a consumer linking ckpt::torch gets). The baselines, measured
in the same run: an empty file, and <torch/torch.h>, what a LibTorch program includes anyway.
Each figure is the median of --runs compiles. The clean build times ckpt_base and ckpt_torch
from an empty build directory (-j2, this machine's two cores)."""
import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time

from bench_common import ROOT, replace_section, sh

BEGIN = "<!-- compile:begin -->"
END = "<!-- compile:end -->"


def bridge_command(build_dir):
    """The compile command of src/bridge/training.cc, split, with its -o/-c/source removed."""
    with open(os.path.join(build_dir, "compile_commands.json")) as f:
        entries = json.load(f)
    for e in entries:
        if e["file"].endswith("src/bridge/training.cc"):
            args = shlex.split(e["command"])
            out, skip = [], False
            for a in args:
                if skip:
                    skip = False
                    continue
                if a in ("-o", "-c", "-MF", "-MT"):
                    skip = True
                    continue
                if a in ("-MD",) or a.endswith("training.cc"):
                    continue
                if a == f"-I{ROOT}/include":  # the headers under test come from --include-dir
                    continue
                out.append(a)
            return out
    raise SystemExit(f"{build_dir}/compile_commands.json has no entry for src/bridge/training.cc "
                     "(configure with -DCMAKE_EXPORT_COMPILE_COMMANDS=ON)")


def time_compile(cmd, include_dir, text, runs):
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "tu.cc")
        with open(src, "w") as f:
            f.write(text)
        full = cmd + [f"-I{include_dir}", "-c", src, "-o", os.path.join(d, "tu.o")]
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            r = subprocess.run(full, capture_output=True, text=True)
            times.append(time.perf_counter() - t0)
            if r.returncode != 0:
                raise SystemExit(f"compiling {text.strip()!r} failed:\n{r.stderr[-3000:]}")
        return statistics.median(times)


def clean_build_seconds():
    with tempfile.TemporaryDirectory() as d:
        sh("cmake", "-S", ROOT, "-B", d, "-G", "Ninja", "-DCMAKE_BUILD_TYPE=RelWithDebInfo",
           "-DCKPT_BUILD_TOOLS=OFF", "-DCKPT_BUILD_TESTS=OFF", "-DCKPT_BUILD_BENCH=OFF", "-DCKPT_BUILD_PYTHON=OFF")
        t0 = time.perf_counter()
        sh("cmake", "--build", d, "-j2", "--target", "ckpt_base", "ckpt_torch")
        return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build-dir", default=os.path.join(ROOT, "build"))
    ap.add_argument("--include-dir", default=os.path.join(ROOT, "include"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--no-clean-build", action="store_true")
    ap.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    ap.add_argument("--baseline", help="another tree's include dir, measured in the same run for comparison")
    ap.add_argument("--baseline-name", default="baseline")
    a = ap.parse_args()

    cmd = bridge_command(a.build_dir)
    include_dir = os.path.abspath(a.include_dir)
    headers = sorted(h for h in os.listdir(os.path.join(include_dir, "ckpt")) if h.endswith(".h"))
    empty = time_compile(cmd, include_dir, "int main() { return 0; }\n", a.runs)
    torch_h = time_compile(cmd, include_dir, "#include <torch/torch.h>\n", a.runs)
    aten = time_compile(cmd, include_dir, "#include <ATen/core/Tensor.h>\n", a.runs)
    rows = []
    for h in headers:
        t = time_compile(cmd, include_dir, f"#include <ckpt/{h}>\n", a.runs)
        b = None
        if a.baseline and os.path.exists(os.path.join(a.baseline, "ckpt", h)):
            b = time_compile(cmd, os.path.abspath(a.baseline), f"#include <ckpt/{h}>\n", a.runs)
        rows.append((h, t, b))
        print(f"ckpt/{h}: {t:.2f} s" + (f" (baseline {b:.2f} s)" if b is not None else ""), flush=True)
    print(f"empty file: {empty:.2f} s; <torch/torch.h>: {torch_h:.2f} s; <ATen/core/Tensor.h>: {aten:.2f} s")
    build = None if a.no_clean_build else clean_build_seconds()
    if build is not None:
        print(f"clean build of ckpt_base + ckpt_torch, -j2: {build:.0f} s")
    if a.no_write:
        return

    cpus = os.cpu_count()
    lines = [BEGIN, "## Compile times: what including a public header costs", "",
             f"Produced by `bench/run_header_bench.py` on {time.strftime('%Y-%m-%d')}, {cpus} cores. Each header is "
             "compiled alone in an empty file with the flags a `ckpt::torch` consumer gets (the bridge's own "
             f"compile command); median of {a.runs}. Baselines from the same run: an empty file "
             f"**{empty:.2f} s**, `<torch/torch.h>` (what a LibTorch program includes anyway) **{torch_h:.2f} s**, "
             f"and `<ATen/core/Tensor.h>` (at::Tensor alone, which `ckpt/tensor.h` and so the umbrella "
             f"`ckpt/ckpt.h` include) **{aten:.2f} s**.",
             ""]
    base_col = f" before ({a.baseline_name}) |" if a.baseline else ""
    lines += [f"| header | compile time | over an empty file | share of `<torch/torch.h>` |{base_col}",
              "|---|---|---|---|" + ("---|" if a.baseline else "")]
    for h, t, b in rows:
        before = "" if not a.baseline else (f" {b:.2f} s |" if b is not None else " (new) |")
        lines.append(f"| `ckpt/{h}` | {t:.2f} s | {t - empty:+.2f} s | {t / torch_h:.0%} |{before}")
    if build is not None:
        lines += ["", f"Clean build of the two libraries (`ckpt_base` + `ckpt_torch`, RelWithDebInfo, Ninja, -j{cpus}): "
                  f"**{build:.0f} s**."]
    lines.append(END)
    replace_section(BEGIN, END, "\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
