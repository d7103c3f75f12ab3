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
