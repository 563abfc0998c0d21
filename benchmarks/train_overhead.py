"""A training cell's fixed cost: one `TorchTrainer.fit()` per cell (the per-fit path) against the
training service (`fsv.train.service`: a long-lived Ray Train worker group serving cells from a
queue), in ONE run on a real local Ray cluster. The cell is the sft job on world-xs (one adaptation
per held-out task, `jobs` of them), `--steps` steps each. Fixed cost = the cell's wall time through
`fit()` minus its training steps and the evaluations inside the run. Medians after the first cell of each path (the first pays the
process's imports); the ratio is per-fit / service. Then the same for 2 workers under ZeRO-2 and
ZeRO-3, and the service worker's resident memory after each cell (DeepSpeed issue 7204: an engine
re-initialised in one process leaks a little).

    python benchmarks/train_overhead.py [--runs 5] [--steps 10] [--multi-runs 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def cell(base, world, seed: int, steps: int, train: dict) -> dict:
    """sft as `train_cell` builds it: one adaptation per held-out task at n = 16, kept models."""
    return {"job": "fsv.regimes.sft:build_job", "model_path": str(base), "world": world, "seed": 0,
            "n_levels": [16], "seeds": [seed], "lengths": [steps], "batch": 8, "warmup": 0.0,
            "hparams": {"lr": 1e-3}, "lr": 1e-3, "train": train, "layout": "packed", "method": "full",
            "keep_models": True}


def timed(config: dict, tmp: Path, name: str) -> dict:
    """One cell through `fit` (the service when one runs for its placement): its fixed cost."""
    from fsv.train.launch import fit

    t0 = time.time()
    m = fit(config, str(tmp / "ray"), name, tmp / name)
    wall = time.time() - t0
    eval_s = sum(row["eval_s"] for row in json.loads(m.get("evals", "[]")))  # evaluations inside the run
    return {"wall_s": round(wall, 2), "train_s": round(m["train_s"], 2), "eval_s": round(eval_s, 2),
            "fixed_s": round(wall - m["train_s"] - eval_s, 2), "jobs": m["jobs"]}


def per_fit(base, world, tmp, train, runs, steps, tag) -> list[dict]:
    return [timed(cell(base, world, i, steps, train), tmp, f"{tag}-fit{i}") for i in range(runs)]


def served(base, world, tmp, train, runs, steps, tag) -> tuple[list[dict], list[float], float]:
    """(cells, rank 0's resident MB after each cell, seconds from service start to its first cell)."""
    import psutil
    import ray

    from fsv.train.service import TrainService

    rows, rss = [], []
    t0 = time.time()
    with TrainService([(train, 1)], str(tmp / "ray")) as service:
        for i in range(runs):
            rows.append(timed(cell(base, world, i, steps, train), tmp, f"{tag}-svc{i}"))
            pid = next(iter(ray.get(service.queues[0].state.remote())["pids"].values()))
            rss.append(psutil.Process(pid).memory_info().rss / 2**20)
            if i == 0:
                first = time.time() - t0
    return rows, rss, first


def median_after_first(rows: list[dict]) -> float:
    return round(statistics.median(r["fixed_s"] for r in (rows[1:] or rows)), 2)


def compare(base, world, tmp, train, runs, steps, tag) -> dict:
    fits = per_fit(base, world, tmp, train, runs, steps, tag)
    cells, rss, first = served(base, world, tmp, train, runs, steps, tag)
    for kind, rows in (("per-fit", fits), ("service", cells)):
        for row in rows:
            print(json.dumps({"line": tag, "path": kind, **row}), flush=True)
    old, new = median_after_first(fits), median_after_first(cells)
    return {"line": tag, "workers": train["workers"], "zero_stage": train["zero_stage"], "steps": steps,
            "cells": runs, "per_fit_fixed_s": old, "service_fixed_s": new, "ratio": round(old / new, 1),
            "service_first_cell_s": round(first, 1),
            "rss_mb_per_cell": round((rss[-1] - rss[0]) / max(1, len(rss) - 1), 1), "rss_mb": [round(r) for r in rss]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--multi-runs", type=int, default=3)
    args = parser.parse_args()
    from benchmarks.common import TRAIN, local_cluster_and_model

    tmp, world, base = local_cluster_and_model("world-xs", pretrain_steps=20)
    lines = [compare(base, world, tmp, TRAIN, args.runs, args.steps, "1 worker, ZeRO-0")]
    for stage in (2, 3):
        two = {**TRAIN, "workers": 2, "zero_stage": stage}
        lines.append(compare(base, world, tmp, two, args.multi_runs, args.steps, f"2 workers, ZeRO-{stage}"))
    for line in lines:
        print(json.dumps({"summary": line}), flush=True)


if __name__ == "__main__":
    main()
