"""Training tokens/s inside a trial (Ray Train worker, DeepSpeed engine) against a bare
single-process PyTorch loop on the same model, data and thread count, as a ratio from one run.

    python benchmarks/train_throughput.py [--model world-l] [--steps 60] [--layout packed]
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


def bare_loop(config: dict, steps: int) -> float:
    """tokens/s of plain PyTorch: the same job builder, AdamW, forward/backward/step."""
    import torch

    from fsv.regimes.sft import build_job

    torch.set_num_threads(config["train"]["cpus_per_worker"])
    job = build_job(config, 0, 1)
    opt = torch.optim.AdamW(job.model.parameters(), lr=config["lr"])
    batches = [next(job.batches) for _ in range(steps)]
    tokens, t0 = 0, time.perf_counter()
    for batch in batches:
        loss = job.model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(job.model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        tokens += int(batch["input_ids"].numel())
    return tokens / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="world-l")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--layout", default="packed")
    args = parser.parse_args()
    import ray

    from fsv.models.load import pretrain_world_model
    from fsv.train.launch import fit
    from fsv.world import preset
    from study.driver import LOCAL_TRAIN_ENV

    tmp = Path(tempfile.mkdtemp(prefix="fsv-bench-"))
    os.environ.setdefault("FSV_CACHE", str(tmp / "cache"))
    ray.init(num_cpus=os.cpu_count(), resources={"fsv_trial_driver": 100}, include_dashboard=False,
             runtime_env={"env_vars": {"DS_ACCELERATOR": "cpu", **LOCAL_TRAIN_ENV}}, log_to_driver=False)
    world = preset("quick").model_dump()
    pretrain = {"steps": 5, "batch": 16, "lr": 3e-3, "warmup": 0.1, "workers": 1, "cpus_per_worker": 1,
                "zero_stage": 0, "use_gpu": False}
    base = pretrain_world_model(args.model, world, pretrain, seed=0)
    train = {"workers": 1, "cpus_per_worker": 1, "use_gpu": False, "zero_stage": 0, "precision": "fp32",
             "optimizer": "adamw", "weight_decay": 0.0, "grad_clip": 1.0}
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
