"""Helpers shared by the benchmark drivers: running a command, and replacing one marked section
of bench/RESULTS.md (so each driver rewrites only its own section)."""
import os
import re
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sh(*cmd, env=None, timeout=3600):
    r = subprocess.run(list(map(str, cmd)), capture_output=True, text=True, timeout=timeout, env=env)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed:\n{r.stdout}\n{r.stderr}")
    return r.stdout


def replace_section(begin, end, section):
    """Puts `section` (which starts with `begin` and ends with `end`) into bench/RESULTS.md, in place
    of the old one or at the end."""
    path = os.path.join(ROOT, "bench", "RESULTS.md")
    text = open(path).read()
    if begin in text:
        text = re.sub(re.escape(begin) + ".*?" + re.escape(end) + "\n?", lambda _: section, text, flags=re.S)
    else:
        text = text.rstrip("\n") + "\n\n\n" + section
    with open(path, "w") as f:
        f.write(text)


# The "Targets" table at the top of RESULTS.md is bench/run_bench.py's; drivers that measure on
# their own (bench/run_s3_bench.py) add rows to it whose workload cell starts with their own tag.
# Each such driver also saves its rows in its RESULTS-*.json ("targets"), from which run_bench.py
# puts them back whenever it rewrites the table, so the two never disagree.
TARGETS_HEAD = "## Targets\n\n| workload | target | met | measured |\n|---|---|---|---|\n"
TARGET_ROW_SOURCES = ("RESULTS-s3.json",)


def target_line(workload, target, met, measured):
    return f"| {workload} | {target} | {'yes' if met else '**no**'} | {measured} |"


def put_target_rows(tag, rows):
    """Replaces the rows of RESULTS.md's Targets table whose workload cell starts with `tag` by
    `rows` ((workload, target, met, measured), each workload starting with `tag`). Returns False,
    changing nothing, when RESULTS.md has no Targets table yet (run_bench.py adds the rows)."""
    path = os.path.join(ROOT, "bench", "RESULTS.md")
    text = open(path).read() if os.path.exists(path) else ""
    start = text.find(TARGETS_HEAD)
    if start < 0:
        return False
    start += len(TARGETS_HEAD)
    end = start
    while text.startswith("|", end):
        end = text.index("\n", end) + 1
    kept = [l for l in text[start:end].splitlines() if not l.startswith(f"| {tag}")]
    table = "".join(l + "\n" for l in kept + [target_line(*r) for r in rows])
    with open(path, "w") as f:
        f.write(text[:start] + table + text[end:])
    return True


def saved_target_rows():
    """The other drivers' rows of the Targets table, as their last runs saved them."""
    import json
    rows = []
    for name in TARGET_ROW_SOURCES:
        path = os.path.join(ROOT, "bench", name)
        if os.path.exists(path):
            with open(path) as f:
                rows += [tuple(r) for r in json.load(f).get("targets", [])]
    return rows
