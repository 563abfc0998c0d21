"""A selection trial's stacked training step (`fsv.train.stacked`: forward and backward of the jobs'
vmapped model, per-job clipping, the fused AdamW) eager against the same step with the stack's
forward under `torch.compile` (inductor, CPU), in one process, on the same model, batches and thread
count: milliseconds a step for each (median after warm-up), their ratio, the seconds the first
compiled step took, and the largest difference between the two paths' losses over the run.

The question it answers: whether compiling fuses away enough of a step's elementwise work (the
part of a world-l step that is not batched matmuls) to matter for the default study's wall time.

    python benchmarks/compiled_step.py [--models world-s world-l] [--regimes sft instruction_tuning] [--steps 30]
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def stacked_run(regime: str, config: dict, compiled: bool, steps: int) -> dict:
    """Milliseconds a step (forward + backward, then clipping + optimizer) of one stack of `regime`'s
    first selection trial, the first step's seconds and the losses of every step."""
    import importlib

    import torch

    from fsv.train.stacked import clip_per_job, stack_batches, stack_size, stacked_module
    from fsv.train.worker import _optimizer, deepspeed_config

    config = {**config, "deepspeed": deepspeed_config(config["train"], config["batch"])}
    jobs = importlib.import_module(f"fsv.regimes.{regime}").build_job(config, 0, 1)
    first = next(jobs)
    jobs = [first, *itertools.islice(jobs, stack_size(first, config) - 1)]
    module = stacked_module([job.model for job in jobs], jobs[0].objective)
    optimizer = _optimizer(list(module.weights), config["train"], config["lr"])
    forward = torch.compile(module) if compiled else module
    batches = [stack_batches([next(job.batches) for job in jobs]) for _ in range(steps)]
    times, losses = [], []
    for batch in batches:
        t0 = time.perf_counter()
        loss = forward(**batch).sum()
        loss.backward()
        clip_per_job(module.weights, config["train"]["grad_clip"])
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - t0)
        losses.append(float(loss.detach()))
    warm = sorted(times[5:])
    return {"jobs": len(jobs), "step_ms": 1000 * warm[len(warm) // 2], "first_step_s": times[0], "losses": losses}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--study", default="study/quick.yaml")
    parser.add_argument("--models", nargs="+", default=["world-s", "world-l"])
    parser.add_argument("--regimes", nargs="+", default=["sft", "instruction_tuning"])
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    import torch

    from benchmarks.stacked_trial import trial_configs

    torch.set_num_threads(1)  # a trial's worker: one core
    for name, regime, config in trial_configs(args.study, args.models, args.regimes):
        eager = stacked_run(regime, config, False, args.steps)
        compiled = stacked_run(regime, config, True, args.steps)
        diff = max(abs(a - b) / abs(a) for a, b in zip(eager["losses"], compiled["losses"]))
        print(json.dumps({"model": name, "regime": regime, "jobs": eager["jobs"],
                          "eager_step_ms": round(eager["step_ms"], 1), "compiled_step_ms": round(compiled["step_ms"], 1),
                          "speedup": round(eager["step_ms"] / compiled["step_ms"], 2),
                          "first_compiled_step_s": round(compiled["first_step_s"], 1),
                          "max_rel_loss_diff": float(f"{diff:.2g}")}), flush=True)


if __name__ == "__main__":
    main()
