"""What a study costs a laptop: wall time and peak memory of `fsv run` (the driver, the local Ray
cluster it starts and every worker), cold (an empty model cache) and/or warm (the ladder cached).

Memory, sampled every second over every process in the run's session (the driver starts the Ray
cluster, so its raylet, GCS and workers are in it), /proc only: the sum of resident sets (RSS, which
counts a page shared by many workers -- torch's libraries, Ray's object store -- once per process:
an upper bound) and the sum of proportional sets (PSS, each shared page split among its sharers:
what the run takes from the machine).

    python benchmarks/study_cost.py study/quick.yaml [--cache DIR] [--warm-only] [--out results/cost]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PAGE = os.sysconf("SC_PAGE_SIZE")


def session_memory_mb(sid: int) -> tuple[float, float, dict[str, float]]:
    """(sum of RSS, sum of PSS, PSS by process name) in MB over the processes of session `sid`; a
    process's name is its title (Ray titles its workers by what they run: `ray::IDLE`, an actor's
    class) or its program."""
    rss = pss = 0
    named: dict[str, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[3]) != sid:  # field 6: the session id
                continue
            rss += int(Path(f"/proc/{entry}/statm").read_text().split()[1]) * PAGE
            rollup = Path(f"/proc/{entry}/smaps_rollup").read_text().splitlines()
            own = next(int(line.split()[1]) for line in rollup if line.startswith("Pss:")) * 1024
            pss += own
            name = process_name(Path(f"/proc/{entry}/cmdline").read_bytes())
            named[name] = named.get(name, 0.0) + own / 2**20
        except (OSError, ValueError, IndexError, StopIteration):
            continue  # the process ended while we looked
    return rss / 2**20, pss / 2**20, named


def process_name(cmdline: bytes) -> str:
    """A process's title, short: Ray's `ray::Name.method` as `ray::Name`, a program by its file and
    module (`python -m fsv.cli`, `raylet`)."""
    words = [w for w in cmdline.decode(errors="replace").split("\0") if w]
    if not words:
        return "?"
    if words[0].startswith("ray::"):
        return words[0].split()[0].split(".")[0]
    program = Path(words[0]).name
    if not program.startswith("python") or len(words) < 2:
        return program
    return f"{program} {words[words.index('-m') + 1] if '-m' in words[:-1] else Path(words[1]).name}"


def run(study: str, storage: Path, env: dict) -> dict:
    """One `fsv run`, its output in STORAGE.log (a file, not a pipe a long run could fill), with the
    processes' PSS at the moment of the peak (by name, count of processes aside)."""
    cmd = [sys.executable, "-m", "fsv.cli", "run", study, "--storage", str(storage)]
    storage.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    with open(f"{storage}.log", "w") as log:
        proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=log, stderr=log)
        peak_rss = peak_pss = 0.0
        at_peak: dict[str, float] = {}
        while proc.poll() is None:
            rss, pss, named = session_memory_mb(proc.pid)
            if pss > peak_pss:
                at_peak, peak_at = named, time.time() - t0
            peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)
            time.sleep(1.0)
    lines = Path(f"{storage}.log").read_text().splitlines()
    biggest = dict(sorted(((k, round(v)) for k, v in at_peak.items()), key=lambda kv: -kv[1])[:12])
    return {"rc": proc.returncode, "wall_s": round(time.time() - t0, 1), "peak_rss_mb": round(peak_rss),
            "peak_pss_mb": round(peak_pss), "peak_at_s": round(peak_at) if at_peak else None,
            "pss_at_peak_mb": biggest, "last_lines": lines[-6:]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("study")
    parser.add_argument("--cache", default=None, help="FSV_CACHE to use (default: a fresh temporary one)")
    parser.add_argument("--warm-only", action="store_true", help="only the run with the ladder already cached")
    parser.add_argument("--out", default=None, help="where the study's records go (default: temporary)")
    args = parser.parse_args()
    cache = Path(args.cache or tempfile.mkdtemp(prefix="fsv-cost-cache-"))
    env = dict(os.environ, FSV_CACHE=str(cache), WANDB_MODE=os.environ.get("WANDB_MODE", "offline"))
    out = Path(args.out or tempfile.mkdtemp(prefix="fsv-cost-"))
    rows = {}
    if not args.warm_only:
        rows["cold"] = run(args.study, out / "cold", env)
        print(json.dumps({"cold": rows["cold"]}), flush=True)
    rows["warm"] = run(args.study, out / "warm", env)  # a fresh study folder, the same model cache
    print(json.dumps({"warm": rows["warm"]}), flush=True)
    print(json.dumps({"study": args.study, "cache": str(cache), "records": str(out),
                      **{k: {m: v[m] for m in ("wall_s", "peak_rss_mb", "peak_pss_mb", "rc")} for k, v in rows.items()}}))


if __name__ == "__main__":
    main()
