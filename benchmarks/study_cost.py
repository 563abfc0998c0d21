"""What a study costs a laptop: wall time and peak memory of `fsv run` (the driver, the local Ray
cluster it starts and every worker), cold (an empty model cache) and/or warm (the ladder cached).

Memory is the sum of the resident sets of every process in the run's session (the driver starts the
Ray cluster, so its raylet, GCS and workers are in it), sampled every second; /proc only.

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


def session_rss_mb(sid: int) -> float:
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[3]) != sid:  # field 6: the session id
                continue
            total += int(Path(f"/proc/{entry}/statm").read_text().split()[1]) * PAGE
        except (OSError, ValueError, IndexError):
            continue  # the process ended while we looked
    return total / 2**20


def run(study: str, storage: Path, env: dict) -> dict:
    """One `fsv run`, its output in STORAGE.log (a file, not a pipe a long run could fill)."""
    cmd = [sys.executable, "-m", "fsv.cli", "run", study, "--storage", str(storage)]
    storage.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    with open(f"{storage}.log", "w") as log:
        proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=log, stderr=log)
        peak = 0.0
        while proc.poll() is None:
            peak = max(peak, session_rss_mb(proc.pid))
            time.sleep(1.0)
    lines = Path(f"{storage}.log").read_text().splitlines()
    return {"rc": proc.returncode, "wall_s": round(time.time() - t0, 1), "peak_rss_mb": round(peak),
            "last_lines": lines[-6:]}


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
                      **{k: {m: v[m] for m in ("wall_s", "peak_rss_mb", "rc")} for k, v in rows.items()}}))


if __name__ == "__main__":
    main()
