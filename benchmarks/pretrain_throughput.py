"""Ladder pretraining steps/s through fsv's path (a Ray Train worker running the DeepSpeed engine,
as `fsv run` pretrains) against a bare single-process PyTorch loop (same job builder, loss,
AdamW and thread count), one after the other in one command, so the ratio compares like with like.

    python benchmarks/pretrain_throughput.py [--model world-m] [--steps 300] [--batch 32]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def bare_loop(config: dict) -> float:
    """Seconds per step of plain PyTorch on the pretraining job `config` describes."""
    from benchmarks.common import bare_steps
    from fsv.train.pretrain import build, weighted_label_loss

    seconds, _ = bare_steps(build(config, 0, 1), config, config["steps"], loss=weighted_label_loss)
    return seconds / config["steps"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="world-m")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    import ray

    from fsv.config import PretrainSection
    from fsv.models.load import pretrain_config
    from fsv.train.launch import fit
    from fsv.world import preset
    from study.driver import LOCAL_TRAIN_ENV

    tmp = Path(tempfile.mkdtemp(prefix="fsv-bench-"))
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"DS_ACCELERATOR": "cpu", **LOCAL_TRAIN_ENV}})
    pretrain = PretrainSection(steps=args.steps, batch=args.batch).model_dump(exclude={"seeds"})
    config = pretrain_config(args.model, preset("quick").model_dump(), pretrain, 0)
    t0 = time.time()
    metrics = fit(config, str(tmp / "ray"), "pretrain", tmp / "out")
    fit_s = time.time() - t0
    in_ray = metrics["train_s"] / args.steps
    bare = bare_loop(config)
    print(json.dumps({"model": args.model, "steps": args.steps, "batch": args.batch,
                      "ray_deepspeed_ms_per_step": round(1000 * in_ray, 1), "bare_ms_per_step": round(1000 * bare, 1),
                      "ratio_bare_over_ray": round(bare / in_ray, 3), "fit_overhead_s": round(fit_s - metrics["train_s"], 1)}))


if __name__ == "__main__":
    main()
