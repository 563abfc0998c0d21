"""Training tokens/s inside a trial (Ray Train worker, DeepSpeed engine) against a bare
single-process PyTorch loop on the same model, data and thread count, as a ratio from one run.

    python benchmarks/train_throughput.py [--model world-l] [--steps 60] [--layout packed]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def bare_loop(config: dict, steps: int) -> float:
    """tokens/s of plain PyTorch on the same job builder (the first held-out task's job)."""
    from benchmarks.common import bare_steps
    from fsv.regimes.sft import build_job
    from fsv.train.worker import deepspeed_config

    config = {**config, "deepspeed": deepspeed_config(config["train"], config["batch"])}  # as a worker builds it
    seconds, tokens = bare_steps(next(iter(build_job(config, 0, 1))), config, steps)
    return tokens / seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="world-l")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--layout", default="packed")
    args = parser.parse_args()
    from benchmarks.common import TRAIN, local_cluster_and_model
    from fsv.train.launch import fit

    tmp, world, base = local_cluster_and_model(args.model, pretrain_steps=5)
    train = TRAIN
    config = {"job": "fsv.regimes.sft:build_job", "model_path": str(base), "world": world, "seed": 0, "n": 64,
              "steps": args.steps, "batch": 32, "lr": 1e-3, "train": train, "layout": args.layout}
    metrics = fit(config, str(tmp / "ray"), "throughput", tmp / "out")
    in_trial = metrics["train_tokens"] / metrics["train_s"]
    bare = bare_loop(config, args.steps)
    print(json.dumps({"model": args.model, "steps": args.steps, "layout": args.layout,
                      "trial_tokens_per_s": round(in_trial), "bare_tokens_per_s": round(bare),
                      "ratio": round(in_trial / bare, 3)}))


if __name__ == "__main__":
    main()
