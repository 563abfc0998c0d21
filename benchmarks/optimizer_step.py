"""One sft training step (forward, backward, optimizer) on a ladder model with torch's default AdamW
against the fused AdamW training uses (`fsv.train.worker.adamw`), in one process, on the same model,
batch and thread count: milliseconds a step for each and their ratio.

    python benchmarks/optimizer_step.py [--model world-l] [--steps 60] [--threads 1]
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def step_ms(model, batch: dict, optimizer, steps: int) -> tuple[float, float]:
    """(ms per whole step, ms per optimizer step) after 3 warm-up steps."""
    total = opt = 0.0
    for i in range(steps + 3):
        t0 = time.perf_counter()
        model(**batch).loss.backward()
        t1 = time.perf_counter()
        optimizer.step()
        optimizer.zero_grad()
        t2 = time.perf_counter()
        if i >= 3:
            total, opt = total + t2 - t0, opt + t2 - t1
    return 1000 * total / steps, 1000 * opt / steps


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="world-l")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    import numpy as np
    import torch

    from fsv.config import PretrainSection
    from fsv.models.load import pretrain_config
    from fsv.regimes.training import draw_examples, sequences
    from fsv.train.pretrain import build
    from fsv.train.worker import adamw
    from fsv.world import World, preset

    torch.set_num_threads(args.threads)
    world = World(preset("quick", seed=0))
    pretrain = PretrainSection().model_dump(exclude={"seeds"})
    base = build(pretrain_config(args.model, world.config.model_dump(), pretrain, 0), 0, 1).model
    task = world.heldout_tasks[0]
    ids, labels = sequences(world, task, draw_examples(world, task, 8, 0), "single", "none", np.random.default_rng(0), 8)
    batch = {"input_ids": torch.from_numpy(ids), "labels": torch.from_numpy(labels)}  # an sft batch of 8
    default, fused = copy.deepcopy(base), copy.deepcopy(base)
    plain = step_ms(default, batch, torch.optim.AdamW(default.parameters(), lr=1e-4), args.steps)
    new = step_ms(fused, batch, adamw(fused.parameters(), 1e-4, 0.0), args.steps)
    print(json.dumps({"model": args.model, "threads": args.threads, "default_step_ms": round(plain[0], 2),
                      "default_optimizer_ms": round(plain[1], 2), "fused_step_ms": round(new[0], 2),
                      "fused_optimizer_ms": round(new[1], 2), "step_ratio": round(plain[0] / new[0], 3)}))


if __name__ == "__main__":
    main()
