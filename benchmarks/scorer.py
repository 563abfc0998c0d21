"""Scorer throughput: scored queries per second of the fast path (batched, one forward scores every
single-token choice) against naive per-choice full-sequence scoring, on the same prompts, as a
ratio from one run.

    python benchmarks/scorer.py [--k 16] [--model world-l] [--queries 128]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--model", default="world-l")
    parser.add_argument("--queries", type=int, default=128)
    args = parser.parse_args()
    import numpy as np
    import torch
    from transformers import LlamaForCausalLM

    from fsv.evaluate import world_prompts
    from fsv.models.ladder import LADDER, llama_config
    from fsv.scoring import score_choices, score_naive
    from fsv.world import World, preset

    torch.manual_seed(0)
    world = World(preset("quick"))
    model = LlamaForCausalLM(llama_config(LADDER[args.model], len(world.vocab), world.config.context, 0, 1)).eval()
    prompts, _, _ = world_prompts(world, world.heldout_tasks, args.k, "none", seed=0, episodes=4)
    prompts = prompts[: args.queries]
    choices = [[i] for i in world.label_ids]
    t0 = time.perf_counter()
    fast, _ = score_choices(model, prompts, choices)
    t_fast = time.perf_counter() - t0
    t0 = time.perf_counter()
    slow, _ = score_naive(model, prompts, choices)
    t_slow = time.perf_counter() - t0
    print(json.dumps({"model": args.model, "k": args.k, "choices": len(choices), "queries": len(prompts),
                      "fast_queries_per_s": round(len(prompts) / t_fast, 1),
                      "naive_queries_per_s": round(len(prompts) / t_slow, 1),
                      "speedup": round(t_slow / t_fast, 1),
                      "max_abs_loglik_diff": float(np.abs(fast - slow).max())}))


if __name__ == "__main__":
    main()
