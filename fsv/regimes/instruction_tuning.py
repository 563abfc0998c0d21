"""instruction_tuning: all weights learn from T training tasks x n examples each, every example led
by its task's human-view description; evaluated on held-out tasks zero-shot with human-view
descriptions (and with model-view and none, to show what changed)."""

from __future__ import annotations

import time

import numpy as np

from fsv.regimes.training import train_cell, training_fields
from fsv.train.worker import TrainJob


def training_tasks(world, count: int, seed: int):
    rng = np.random.default_rng([seed, count, 4])
    order = rng.permutation(len(world.train_tasks))[: min(count, len(world.train_tasks))]
    return [world.train_tasks[i] for i in order]


def instruction_batch(world, tasks, pools, rng, count: int, description: str = "human"):
    """`count` sequences, each: <bos> description(task) x = y, for a random (task, example)."""
    from fsv.regimes.training import sequences

    ids, labels = [], []
    for _ in range(count):
        t = int(rng.integers(len(tasks)))
        i, lab = sequences(world, tasks[t], pools[t], "single", description, rng, 1)
        ids.append(i[0])
        labels.append(lab[0])
    return np.stack(ids), np.stack(labels)


def build_job(config: dict, rank: int, world_size: int) -> TrainJob:
    import torch

    from fsv.models.load import load_model
    from fsv.world import World, WorldConfig

    world = World(WorldConfig(**config["world"]))
    tasks = training_tasks(world, config["tasks_trained"], config["seed"])
    pools = [np.random.default_rng([config["seed"], j, 5]).choice(world.train_symbols, size=config["n"])
             for j in range(len(tasks))]
    model = load_model(config["model_path"])
    rng = np.random.default_rng([config["seed"], rank, 6])
    per_rank = max(1, config["batch"] // world_size)

    def batches():
        while True:
            ids, labels = instruction_batch(world, tasks, pools, rng, per_rank)
            yield {"input_ids": torch.from_numpy(ids), "labels": torch.from_numpy(labels)}

    return TrainJob(model=model, batches=batches(), steps=config["steps"],
                    save=lambda module, out: module.save_pretrained(out, safe_serialization=True))


def evaluate_descriptions(model, ctx, seed: int) -> dict:
    from fsv.evaluate import evaluate_world

    out = {}
    for variant in ("none", "model", "human"):
        res = evaluate_world(model, ctx.world, ctx.world.heldout_tasks, k=0, variant=variant, seed=seed)
        out[f"acc_{variant}"] = res.accuracy
        out["n_eval"], out["chance"] = res.n_eval, res.chance
    out["accuracy"] = out["acc_human"]
    return out


def run(cell: dict, ctx) -> dict:
    from fsv.models.load import load_model, param_count

    path, metrics = train_cell(cell, ctx, "fsv.regimes.instruction_tuning:build_job",
                               tasks_trained=cell["tasks_trained"])
    t0 = time.time()
    model = load_model(path)
    fields = evaluate_descriptions(model, ctx, cell["seed"])
    return {**fields, **training_fields(cell, param_count(model), metrics, time.time() - t0)}
