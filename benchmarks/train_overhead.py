"""Where a training trial's fixed cost goes: `fit()` of the sft job on world-xs (one adaptation per
held-out task, `jobs` of them, in one Ray Train job), N times in one
process on a real local Ray cluster, split into Ray Train's machinery (worker group up/down,
checkpoint), the worker's imports, the job build (model load, data), `deepspeed.initialize`, and
the training steps themselves.

    python benchmarks/train_overhead.py [--runs 5] [--steps 10]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    from benchmarks.common import TRAIN, local_cluster_and_model
    from fsv.train.launch import fit

    tmp, world, base = local_cluster_and_model("world-xs", pretrain_steps=20)
    train = TRAIN
    rows = []
    for i in range(args.runs):
        config = {"job": "fsv.regimes.sft:build_job", "model_path": str(base), "world": world, "seed": i,
                  "n": 16, "steps": args.steps, "batch": 8, "lr": 1e-3, "train": train, "layout": "packed"}
        t0 = time.time()
        m = fit(config, str(tmp / "ray"), f"run{i}", tmp / f"out{i}")
        total = time.time() - t0
        row = {"run": i, "jobs": m["jobs"], "fit_s": round(total, 2), "ray_train_s": round(total - m["setup_s"] - m["train_s"], 2),
               **{k: round(m[k], 2) for k in ("import_s", "build_s", "engine_s", "train_s")}}
        rows.append(row)
        print(json.dumps(row), flush=True)
    steady = rows[1:] or rows
    summary = {k: round(statistics.median(r[k] for r in steady), 2)
               for k in ("fit_s", "ray_train_s", "import_s", "build_s", "engine_s", "train_s")}
    summary["overhead_s"] = round(summary["fit_s"] - summary["train_s"], 2)
    print(json.dumps({"median_after_first": summary}))


if __name__ == "__main__":
    main()
