#!/usr/bin/env python3
"""ckpt on object storage against boto3, on local S3 servers: writes the "Object storage" section
of bench/RESULTS.md, its rows of the Targets table at the top, and bench/RESULTS-s3.json.

    bench/run_s3_bench.py                       # GPT-2-small + Adam (1.49 GB), medians of 3, moto and
                                                # s3rver: about 1.5 hours, most of it moto's
    bench/run_s3_bench.py --servers s3rver      # about 10 minutes
    bench/run_s3_bench.py --workload gpt2:192 --reps 1   # 0.18 GB, a check: prints, writes nothing (~3 min)

moto's cost per request grows with the object (it copies all of it for every GET, about 4 ms per
MB on this machine), so with the 1.5 GB state boto3's download (178 ranged GETs of 8 MiB) takes
about 15 minutes a round, and `ckpt inspect` (about 150 small GETs; run once) about 13.

Run it with the Python that has boto3 and moto (the pyenv `python3` first on PATH); it builds
nothing: build/python must hold the `ckpt` module and build/ckpt the CLI. The servers come from
tests/s3/s3_servers.py: moto always, s3rver when that file has `S3rverServer` and build/s3rver is
installed. Per server, each round runs, each in a fresh process:
  ckpt.save(state, "s3://…")              /usr/bin/python3 (torch 1.13), the state built before timing
  boto3 upload_file of the torch.save file  this Python, boto3's default TransferConfig; the file is
                                          torch.save of the same state, written once
  curl -T of the same file                one bare PUT by the curl command, which only sends it: the
                                          server's own cost of taking the bytes, the most any client's
                                          save could reach
  ckpt.load("s3://…")                     /usr/bin/python3, every CRC-32 checked
  boto3 download_file, then torch.load    the two timed apart (boto3 has no torch here); their sum is
                                          the baseline load
and, once per server (its bytes do not vary),
  ckpt inspect s3://…                     the CLI through FaultProxy, which counts response bytes
Each other figure is the median of --reps rounds; every ratio compares medians of this same run. extra
RSS: the peak resident memory during the call minus the resident memory just before it.
"""
import argparse
import datetime
import json
import os
import shutil
import statistics
import sys
import time

from bench_common import ROOT, put_target_rows, replace_section, sh, target_line

PY = "/usr/bin/python3"  # torch 1.13 and, with PYTHONPATH=build/python, ckpt
BEGIN, END = "<!-- s3:begin -->", "<!-- s3:end -->"
TAG = "S3"  # the workload cell of this driver's rows in the Targets table starts with it
MiB = 1 << 20
# ckpt's defaults (src/io/s3/config.h); the memory bound follows the environment's overrides.
PART_SIZE, PARTS_IN_FLIGHT = 16 * MiB, 4
# What a save may hold beyond its parts in flight whatever the object's size: two more parts (one
# full and waiting for a free upload slot, one being filled by the writer threads), and the same
# 64 MiB the local save's target allows (the writer's 32 MiB of staged chunks, the pickle, the zip
# directory, libcurl and its connections, thread stacks).
FILLING_PARTS = 2
CONSTANT = 64 * MiB
TEST_KEY_ID, TEST_SECRET = "AKIDCKPTBENCH", "bench-secret"  # for servers that take any key (moto)
# moto answers a GET only after copying the whole object under a per-object lock, so with the
# 1.5 GB state a request queued behind a few others waits tens of seconds for its first byte: both
# clients' no-progress timeouts (ckpt 30 s, boto3 60 s by default) are raised, so that the server
# is measured rather than the clients' retries. Nothing else differs from the defaults.
STALL_TIMEOUT_S = 600
SUBPROCESS_TIMEOUT_S = 4 * 3600  # boto3's download of the 1.5 GB state from moto takes 15 minutes


def peak_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    return 0


def boto3_worker(op, bucket, key, path):
    """One boto3 transfer with its defaults, timed in this fresh process: the client (endpoint,
    credentials and region from AWS_*) is made before timing, as ckpt's state is built before."""
    import boto3
    from botocore.config import Config
    s3 = boto3.client("s3", config=Config(read_timeout=STALL_TIMEOUT_S))
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = peak_kb("VmRSS:")
    t = time.perf_counter()
    if op == "upload":
        s3.upload_file(path, bucket, key)
    else:
        s3.download_file(bucket, key, path)
    seconds = time.perf_counter() - t
    print(json.dumps({"op": "boto3_" + op, "seconds": seconds, "extra_rss_mb": (peak_kb("VmHWM:") - before) / 1024}))


def bare_put(endpoint, key_id, secret, bucket, key, path):
    """The same file as one PUT by the curl command, which does nothing but send it: what the server
    itself costs to take the bytes, the ceiling of any client's save to it."""
    t = time.perf_counter()
    sh("curl", "-sS", "--fail", "-o", "/dev/null", "-H", "Expect:", "-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD",
       "--aws-sigv4", "aws:amz:us-east-1:s3", "-u", f"{key_id}:{secret}", "-T", path, f"{endpoint}/{bucket}/{key}",
       timeout=SUBPROCESS_TIMEOUT_S)
    return {"op": "bare_put", "seconds": time.perf_counter() - t}


def servers(names):
    """{name: constructor} of the servers asked for that can run here, and why the others cannot."""
    sys.path.insert(0, os.path.join(ROOT, "tests", "s3"))
    import s3_servers
    found, missing = {}, {}
    for name in names:
        if name == "moto":
            found[name] = s3_servers.MotoServer
        elif name == "s3rver":
            cls = getattr(s3_servers, "S3rverServer", None)
            if cls is None:
                missing[name] = "tests/s3/s3_servers.py has no S3rverServer"
            elif not os.path.isdir(os.environ.get("S3RVER_DIR") or os.path.join(ROOT, "build", "s3rver")):
                missing[name] = "build/s3rver is not installed (scripts/install-s3rver.sh)"
            else:
                found[name] = cls
        else:
            raise SystemExit(f"unknown server {name!r}: moto or s3rver")
    return found, missing


def bench_server(name, make, args, env_extra):
    """--reps rounds of every figure against one fresh server; returns its runs and facts."""
    import boto3
    from s3_servers import FaultProxy
    out = os.path.join(args.dir, name)
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    torch_file, downloaded = os.path.join(out, "torch.pt"), os.path.join(out, "downloaded.pt")
    server = make()
    proxy = FaultProxy(server.port)
    try:
        key_id, secret = getattr(server, "key_id", TEST_KEY_ID), getattr(server, "secret", TEST_SECRET)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CKPT_S3_"))}
        env.update(AWS_ACCESS_KEY_ID=key_id, AWS_SECRET_ACCESS_KEY=secret, AWS_REGION="us-east-1",
                   AWS_ENDPOINT_URL=server.endpoint, HOME=out, PYTHONPATH=os.path.join(ROOT, "build", "python"),
                   CKPT_S3_STALL_TIMEOUT_S=str(STALL_TIMEOUT_S))
        ckpt_env = {**getattr(server, "ckpt_env", {}), **env_extra}  # a server's own needs, then --env
        env.update(ckpt_env)
        s3 = boto3.client("s3", endpoint_url=server.endpoint, aws_access_key_id=key_id,
                          aws_secret_access_key=secret, region_name="us-east-1")
        bucket = "ckpt-bench"
        s3.create_bucket(Bucket=bucket)
        uri = f"s3://{bucket}/ckpt/state.pt"
        py_bench = os.path.join(ROOT, "bench", "py_bench.py")

        def py(*argv):
            return json.loads(sh(PY, py_bench, *argv, env=env, timeout=SUBPROCESS_TIMEOUT_S).strip().splitlines()[-1])

        def boto(op, key, path):
            return json.loads(sh(sys.executable, os.path.abspath(__file__), "--boto3", op, bucket, key, path,
                                 env=env, timeout=SUBPROCESS_TIMEOUT_S).strip().splitlines()[-1])

        def inspect():
            proxy.clear()
            t = time.perf_counter()
            sh(os.path.join(ROOT, "build", "ckpt"), "inspect", uri, env=dict(env, AWS_ENDPOINT_URL=proxy.endpoint),
               timeout=SUBPROCESS_TIMEOUT_S)
            return {"seconds": time.perf_counter() - t, "bytes": proxy.bytes_out(), "requests": len(proxy.requests)}

        py("save", args.workload, torch_file)  # torch.save of the same state, once: boto3's file
        runs = []
        for rep in range(args.reps):
            r = {}
            s3.delete_object(Bucket=bucket, Key="ckpt/state.pt")
            r["ckpt_save"] = py("ckpt_save", args.workload, uri)
            s3.delete_object(Bucket=bucket, Key="boto3/torch.pt")
            r["boto3_upload"] = boto("upload", "boto3/torch.pt", torch_file)
            s3.delete_object(Bucket=bucket, Key="bare/torch.pt")
            r["bare_put"] = bare_put(server.endpoint, key_id, secret, bucket, "bare/torch.pt", torch_file)
            r["ckpt_load"] = py("ckpt_load", args.workload, uri)
            if os.path.exists(downloaded):
                os.unlink(downloaded)
            r["boto3_download"] = boto("download", "boto3/torch.pt", downloaded)
            r["torch_load"] = py("load", args.workload, downloaded)
            runs.append(r)
            print(f"{name} round {rep + 1}: " + ", ".join(f"{k} {v['seconds']:.3f} s" for k, v in r.items())
                  + f"; save +{r['ckpt_save']['extra_rss_mb']:.0f} MB", flush=True)
        # Once: its bytes are the same every time, and on moto each of its requests costs a copy of
        # the whole object (about 13 minutes for the 1.5 GB state).
        ins = inspect()
        print(f"{name} inspect: {ins['seconds']:.3f} s, {ins['bytes']} bytes in {ins['requests']} requests", flush=True)
        size = s3.head_object(Bucket=bucket, Key="ckpt/state.pt")["ContentLength"]
        return {"runs": runs, "inspect": ins, "object_bytes": size, "torch_bytes": os.path.getsize(torch_file),
                "ckpt_env": ckpt_env}
    finally:
        proxy.stop()
        server.stop()
        shutil.rmtree(out, ignore_errors=True)


def summarize(R):
    """Medians, ratios and the memory bound of one server's runs (in place)."""
    med = {k: statistics.median(r[k]["seconds"] for r in R["runs"]) for k in R["runs"][0]}
    med["boto3_load"] = statistics.median(r["boto3_download"]["seconds"] + r["torch_load"]["seconds"] for r in R["runs"])
    env = R["ckpt_env"]
    part = int(env.get("CKPT_S3_PART_SIZE", PART_SIZE))
    parts = int(env.get("CKPT_S3_PARTS_IN_FLIGHT", PARTS_IN_FLIGHT))
    R.update(median_seconds=med, save_x=med["boto3_upload"] / med["ckpt_save"],
             ceiling_x=med["boto3_upload"] / med["bare_put"], of_ceiling=med["bare_put"] / med["ckpt_save"],
             load_x=med["boto3_load"] / med["ckpt_load"],
             save_rss_mb=statistics.median(r["ckpt_save"]["extra_rss_mb"] for r in R["runs"]),
             upload_rss_mb=statistics.median(r["boto3_upload"]["extra_rss_mb"] for r in R["runs"]),
             part_size=part, parts_in_flight=parts, rss_bound_mb=(part * (parts + FILLING_PARTS) + CONSTANT) / MiB,
             inspect_bytes=R["inspect"]["bytes"])
    R["inspect_pct"] = 100 * R["inspect_bytes"] / R["object_bytes"]


def targets(results):
    """(server, target, met, measured) for each server that ran."""
    rows = []
    for server, R in results.items():
        med = R["median_seconds"]
        rows += [
            (server, "save ≥ 1.5x faster than boto3 upload_file of the torch.save file", R["save_x"] >= 1.5,
             f"{R['save_x']:.2f}x ({med['ckpt_save']:.2f} vs {med['boto3_upload']:.2f} s)"
             + ("" if R["save_x"] >= 1.5 else
                f"; the server's own ceiling, one bare PUT of the file by curl, is {R['ceiling_x']:.2f}x "
                f"({med['bare_put']:.2f} s), and ckpt's save runs at {100 * R['of_ceiling']:.0f}% of it")),
            (server, "load ≥ 1.5x faster than boto3 download_file + torch.load", R["load_x"] >= 1.5,
             f"{R['load_x']:.2f}x ({med['ckpt_load']:.2f} vs {med['boto3_load']:.2f} s)"),
            (server, "save memory ≤ part size × parts in flight + a constant (no whole-object buffer)",
             R["save_rss_mb"] <= R["rss_bound_mb"],
             f"+{R['save_rss_mb']:.0f} MB; bound {R['part_size'] // MiB} MiB × {R['parts_in_flight']} in flight + "
             f"a constant of {FILLING_PARTS} parts being filled + {CONSTANT // MiB} MiB = {R['rss_bound_mb']:.0f} MiB; "
             f"the object is {R['object_bytes'] / MiB:.0f} MiB"),
            (server, "`ckpt inspect s3://…` transfers ≤ 1% of the object", R["inspect_pct"] <= 1,
             f"{R['inspect_pct']:.3f}% ({R['inspect_bytes'] / 1024:.0f} KiB of {R['object_bytes'] / MiB:.0f} MiB)"),
        ]
    return rows


def section(args, results, missing, rows):
    import boto3
    import moto
    any_r = next(iter(results.values()))
    gb = any_r["object_bytes"] / 1e9
    what = "GPT-2-small + Adam" if args.workload == "gpt2" else f"workload {args.workload}"
    envs = "; ".join(f"on {n}, ckpt ran with " + ", ".join(f"`{k}={v}`" for k, v in R["ckpt_env"].items())
                     for n, R in results.items() if R["ckpt_env"])
    rounds = f"medians of {args.reps} rounds" if args.reps > 1 else "one round"
    L = [BEGIN, "## Object storage: ckpt against boto3 on local S3 servers", "",
         f"Produced by `bench/run_s3_bench.py` on {datetime.date.today()}: {what} ({gb:.2f} GB), {rounds}, the "
         "figures interleaved, each in a fresh process; every ratio compares figures of this same run. **These are "
         "figures for this server on this machine** (2 cores shared by server and client, over loopback), not a "
         f"prediction for S3: the local servers' own costs dominate them. moto {moto.__version__} is Python; it keeps "
         "each object whole and copies all of it for every GET, ranged or not, under a per-object lock, so every "
         "request costs time in proportion to the object's size. s3rver is one Node thread over files; its "
         "CompleteMultipartUpload rewrites the whole object, so there one streamed PUT beats parallel parts. ckpt "
         "ran its defaults, which stay options for real S3 (`CKPT_S3_PART_SIZE` 16 MiB, also the size up to which "
         "a save is one PUT; `CKPT_S3_PARTS_IN_FLIGHT` 4; `CKPT_S3_RANGE_SIZE` 8 MiB; `CKPT_S3_RANGES_IN_FLIGHT` 8)"
         + (f"; {envs}" if envs else "") + f". Both clients' no-progress timeouts are raised to {STALL_TIMEOUT_S} s, "
         "since behind moto's lock a queued GET waits long for its first byte. Baseline: boto3 "
         f"{boto3.__version__} `upload_file` / `download_file` with its default TransferConfig (8 MiB parts, 10 "
         "threads) of the `torch.save` file of the same state, in the pyenv Python that has boto3; the downloaded "
         "file's `torch.load` (torch 1.13, /usr/bin/python3, page cache warm as the download left it) is timed "
         "apart and added. ckpt: `ckpt.save(state, \"s3://…\")` and `ckpt.load(\"s3://…\")` (every CRC-32 "
         "checked) in /usr/bin/python3. The bare PUT is the curl command sending the `torch.save` file as one "
         "request (`curl -T`, SigV4 by libcurl): no serialization, no checksum, the server's own cost of taking "
         "the bytes, which no client's save can beat by much. extra RSS: the peak resident memory during the call minus the resident "
         "memory just before it. `ckpt inspect` ran once per server through a proxy that counts response bodies "
         "(`FaultProxy`, tests/s3/s3_servers.py)."
         + (" Not run: " + "; ".join(f"{n} ({why})" for n, why in missing.items()) + "." if missing else ""), "",
         "| server | target | met | measured |", "|---|---|---|---|"]
    L += [target_line(*r) for r in rows]
    names = list(results)
    L += ["", "| figure | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]

    def row(label, cell):
        L.append(f"| {label} | " + " | ".join(cell(results[n]) for n in names) + " |")

    def t(key, size="object_bytes"):
        return lambda R: f"{R['median_seconds'][key]:.3f} s ({R[size] / R['median_seconds'][key] / 1e6:.0f} MB/s)"

    row("**ckpt.save → S3**", t("ckpt_save"))
    row("boto3 upload_file of the torch.save file", t("boto3_upload", "torch_bytes"))
    row("save: ckpt vs boto3", lambda R: f"**{R['save_x']:.2f}x**")
    row("bare PUT of the torch.save file (curl -T, no client work): the server's ceiling", t("bare_put", "torch_bytes"))
    row("bare PUT vs boto3 (the most any client could reach)", lambda R: f"{R['ceiling_x']:.2f}x")
    row("ckpt.save's speed as a share of the bare PUT's", lambda R: f"{100 * R['of_ceiling']:.0f}%")
    row("**ckpt.load ← S3**", t("ckpt_load"))
    row("boto3 download_file", t("boto3_download", "torch_bytes"))
    row("torch.load of the downloaded file", t("torch_load", "torch_bytes"))
    row("boto3 download_file + torch.load", t("boto3_load", "torch_bytes"))
    row("load: ckpt vs boto3 + torch.load", lambda R: f"**{R['load_x']:.2f}x**")
    row("ckpt.save: extra RSS", lambda R: f"{R['save_rss_mb']:.0f} MB (bound {R['rss_bound_mb']:.0f} MiB)")
    row("boto3 upload_file: extra RSS", lambda R: f"{R['upload_rss_mb']:.0f} MB")
    row("ckpt.load: extra RSS", lambda R: f"{statistics.median(r['ckpt_load']['extra_rss_mb'] for r in R['runs']):.0f} MB")
    row("ckpt inspect (once): bytes transferred", lambda R: f"{R['inspect_bytes'] / 1024:.0f} KiB "
        f"({R['inspect_pct']:.3f}%) in {R['inspect']['requests']} requests")
    row("ckpt inspect (once): time", lambda R: f"{R['inspect']['seconds']:.3f} s")
    row("object sizes: ckpt / torch.save", lambda R: f"{R['object_bytes'] / 1e9:.3f} / {R['torch_bytes'] / 1e9:.3f} GB")
    L.append(END)
    return "\n".join(L) + "\n"


def main():
    if len(sys.argv) == 6 and sys.argv[1] == "--boto3":  # a transfer, in a process of its own
        return boto3_worker(*sys.argv[2:])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--workload", default="gpt2", help="gpt2 (1.49 GB), or gpt2:D: GPT-2's layout at width D "
                    "(gpt2:192 is 0.18 GB); only gpt2 writes RESULTS.md unless --write")
    ap.add_argument("--servers", default="moto,s3rver")
    ap.add_argument("--env", action="append", default=[], metavar="[SERVER:]NAME=VALUE",
                    help="an environment variable for ckpt (e.g. CKPT_S3_PART_SIZE=33554432), on every server or one")
    ap.add_argument("--write", action="store_true", help="write RESULTS.md and RESULTS-s3.json for any workload")
    ap.add_argument("--dir", default=os.path.join(ROOT, "bench", "out", "s3"))
    args = ap.parse_args()
    try:
        import boto3  # noqa: F401
        import moto  # noqa: F401
    except ImportError as e:
        raise SystemExit(f"{sys.executable} lacks boto3 or moto ({e}): run this with the pyenv python3")
    for need in (os.path.join(ROOT, "build", "ckpt"), os.path.join(ROOT, "build", "python", "ckpt")):
        if not os.path.exists(need):
            raise SystemExit(f"{need} is missing: build first (this driver builds nothing)")
    found, missing = servers(args.servers.split(","))
    for n, why in missing.items():
        print(f"not running {n}: {why}", flush=True)
    if not found:
        raise SystemExit("no server to run")
    results = {}
    for name, make in found.items():
        extra = {}
        for e in args.env:
            where, _, kv = e.partition(":") if ":" in e.split("=", 1)[0] else ("", "", e)
            if where in ("", name):
                k, _, v = kv.partition("=")
                extra[k] = v
        results[name] = bench_server(name, make, args, extra)
        summarize(results[name])
    rows = targets(results)
    text = section(args, results, missing, rows)
    print(text)
    if args.workload != "gpt2" and not args.write:
        print(f"(workload {args.workload}: RESULTS.md not written; --write to write it)")
        return
    replace_section(BEGIN, END, text)
    top = [(f"{TAG} ({server}): {args.workload}", t, ok, m) for server, t, ok, m in rows]
    with open(os.path.join(ROOT, "bench", "RESULTS-s3.json"), "w") as f:
        json.dump({"workload": args.workload, "reps": args.reps, "date": str(datetime.date.today()),
                   "servers": results, "not_run": missing, "targets": top}, f, indent=1)
    # Only the servers that ran: a row of a server that did not run this time would be stale.
    if not put_target_rows(TAG, top):
        print("RESULTS.md has no Targets table yet: bench/run_bench.py will add these rows from RESULTS-s3.json")


if __name__ == "__main__":
    main()
