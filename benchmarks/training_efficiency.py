"""How fast a study's selection trials did their training arithmetic, against the rate this CPU
multiplies fp32 matrices at, measured in the same process: per (regime, model), the trials' training
FLOPs (6 x parameters x tokens, summed over each trial's adaptations) over their training seconds,
and the share of one core's GEMM rate that is. With it, the floor of the selection phase's training
on this machine at that rate: what making the trials' overhead free could reach at most, against
what only faster arithmetic (or less of it) can.

6 x parameters x tokens is the usual count of a full step (forward 2, backward 4); prompt tuning
computes no weight gradients (about 4), and DPO adds its reference model's forward, so their shares
are upper and lower bounds of the true ones respectively.

The baseline is `torch.mm` on square fp32 matrices (256 to 1024), one thread, the best of its sizes:
the rate a single-threaded trial worker could at best reach. Run it on the machine that ran the
study, with nothing else running, so both rates come from one CPU.

    python benchmarks/training_efficiency.py RESULTS/quick [--cores 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fsv.records import training_flops  # noqa: E402
from study.progress import adaptations  # noqa: E402


def gemm_rate() -> float:
    """FLOP/s of one thread's best fp32 matrix product over a few square sizes."""
    import torch

    torch.set_num_threads(1)
    best = 0.0
    for size in (256, 512, 1024):
        a, b = torch.randn(size, size), torch.randn(size, size)
        torch.mm(a, b)
        repeats = max(3, int(4e10 / (2 * size**3)))
        start = time.perf_counter()
        for _ in range(repeats):
            torch.mm(a, b)
        best = max(best, 2 * size**3 * repeats / (time.perf_counter() - start))
    return best


def trial_flops(study_dir: str) -> pd.DataFrame:
    frame = pd.read_parquet(Path(study_dir) / "records")
    select = frame[(frame.phase == "select") & (frame.status == "ok")].copy()
    select["adaptations"] = [adaptations(json.loads(cell)) for cell in select.config]  # as the progress line counts them
    select["flops"] = [training_flops(p, t) * a for p, t, a in zip(select.model_params, select.train_tokens, select.adaptations)]
    return select


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("study_dir")
    parser.add_argument("--cores", type=int, default=2, help="training servers the study ran at once")
    args = parser.parse_args()
    select = trial_flops(args.study_dir)
    rate = gemm_rate()
    table = select.groupby(["regime", "model"]).agg(trials=("flops", "size"), adaptations=("adaptations", "first"),
                                                   train_s=("train_s", "sum"), flops=("flops", "sum"))
    table["tflop"] = table.pop("flops") / 1e12
    table["gflop_per_s"] = table.tflop * 1e3 / table.train_s
    table["share_of_gemm"] = table.gflop_per_s * 1e9 / rate
    print(table.round(3).to_string())
    total_flops, total_s = select.flops.sum(), select.train_s.sum()
    print(json.dumps({
        "gemm_gflop_per_s_one_thread": round(rate / 1e9, 1), "selection_trials": len(select),
        "training_tflop": round(total_flops / 1e12, 2), "training_s": round(total_s, 1),
        "achieved_gflop_per_s": round(total_flops / total_s / 1e9, 1),
        "share_of_gemm": round(total_flops / total_s / rate, 3),
        "training_wall_s_on_cores": round(total_s / args.cores, 1),
        "training_wall_s_at_gemm_rate": round(total_flops / rate / args.cores, 1),
    }))


if __name__ == "__main__":
    main()
