"""What bf16 matmuls save a selection trial: one trial of the default study trained with
`train.precision: fp32` against the same trial with `bf16-mixed` (DeepSpeed's `torch_autocast`:
bf16 matmuls, fp32 weights, gradients and AdamW state; the evaluations stay fp32), in ONE process,
twice each, alternating. Reports training and evaluation seconds and how far the two runs' rows lie
apart at the longest length. Worth it only where the CPU multiplies bf16 natively (AVX512-BF16 or
AMX; `train.precision: auto` checks): elsewhere bf16 matmuls have no hardware path.

    python benchmarks/autocast_trial.py world-l instruction_tuning   # regimes: sft prompt_tuning instruction_tuning
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(name: str, regime: str) -> None:
    import numpy as np

    from benchmarks.stacked_trial import one_rank, run_trial, trial_config, unpretrained_model
    from fsv.config import load_study
    from fsv.train.precision import native_bf16
    from fsv.world import preset

    one_rank(29544)
    study = load_study("study/quick.yaml")
    world = preset(study.world.preset, seed=study.world.seed).model_dump()
    path = unpretrained_model(study, name, world)
    config = trial_config(study, regime, path, world)
    print(f"this CPU multiplies bf16 natively: {native_bf16(False)}")
    rows = {}
    for mode in ["fp32", "bf16-mixed"] * 2:
        t0 = time.perf_counter()
        train_s, _, rows[mode] = run_trial(regime, {**config, "train": {**config["train"], "precision": mode}}, stack=None)
        print(f"{name} {regime} {mode}: train {train_s:.1f} s, eval {sum(r['eval_s'] for r in rows[mode]):.1f} s, "
              f"whole {time.perf_counter() - t0:.1f} s", flush=True)
    last = max(r["steps"] for r in rows["fp32"])
    for key in ["train_loss", "accuracy", "label_logprob"]:
        a, b = (np.array([r[key] for r in rows[m] if r["steps"] == last]) for m in ["fp32", "bf16-mixed"])
        print(f"{key} at {last} steps: fp32 mean {a.mean():.4f}, bf16-mixed mean {b.mean():.4f}, "
              f"largest difference {np.abs(a - b).max():.4f}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
