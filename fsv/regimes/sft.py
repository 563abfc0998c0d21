"""sft: all weights learn from n examples of the target (held-out) task -- "infinitely many shots".

How the n examples are laid out is an axis: `single` (one example per sequence, the usual
fine-tuning format) or `packed` (examples packed into one sequence like a pretraining document, so
fine-tuning can use the model's in-context machinery). The trained model is then evaluated like the
base model: zero-shot on the task's test symbols, which training never shows.
"""

from __future__ import annotations

import time

import numpy as np

from fsv.regimes.training import draw_examples, sequences, target_task, train_cell, training_fields
from fsv.train.worker import TrainJob


def build_job(config: dict, rank: int, world_size: int) -> TrainJob:
    import torch

    from fsv.models.load import load_causal_lm
    from fsv.world import World, WorldConfig

    world = World(WorldConfig(**config["world"]))
    task = target_task(world, config["seed"])
    symbols = draw_examples(world, task, config["n"], config["seed"])
    model, _ = load_causal_lm(config["model_path"])
    rng = np.random.default_rng([config["seed"], rank, 2])
    per_rank = max(1, config["batch"] // world_size)

    def batches():
        while True:
            ids, labels = sequences(world, task, symbols, config["layout"], "none", rng, per_rank)
            yield {"input_ids": torch.from_numpy(ids), "labels": torch.from_numpy(labels)}

    return TrainJob(model=model, batches=batches(), steps=config["steps"],
                    save=lambda module, out: module.save_pretrained(out, safe_serialization=True))


def run(cell: dict, ctx) -> dict:
    from fsv.evaluate import evaluate_world
    from fsv.models.load import load_causal_lm, param_count

    path, metrics = train_cell(cell, ctx, "fsv.regimes.sft:build_job", layout=cell["layout"])
    t0 = time.time()
    model, _ = load_causal_lm(path)
    task = target_task(ctx.world, cell["seed"])
    res = evaluate_world(model, ctx.world, [task], k=0, variant="none", seed=cell["seed"])
    return {
        "accuracy": res.accuracy, "n_eval": res.n_eval, "chance": res.chance, "acc_none": res.accuracy,
        **training_fields(cell, param_count(model), metrics, time.time() - t0),
    }
