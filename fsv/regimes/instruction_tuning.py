"""instruction_tuning: all weights learn from T training tasks x n examples each, every example led
by its task's human-view description; evaluated on held-out tasks zero-shot with human-view
descriptions (and with model-view and none, to show what changed).

On the world the T tasks are drawn from the world's training tasks and evaluation covers its
held-out tasks. On text the T tasks are other text tasks by name (`cell["train_tasks"]`, chosen when
the grid expands; the evaluated task is never among them), each read from its own train split, and
evaluation is the cell's task, which training never saw.
"""

from __future__ import annotations

import time

import numpy as np

from fsv.regimes.training import label_rows, padded_batches, saver, train_cell, training_fields
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
    if config["world"] is None:
        return build_text_job(config, rank, world_size)
    import torch

    from fsv.models.load import load_for_training
    from fsv.world import World, WorldConfig

    world = World(WorldConfig(**config["world"]))
    tasks = training_tasks(world, config["tasks_trained"], config["seed"])
    pools = [np.random.default_rng([config["seed"], j, 5]).choice(world.train_symbols, size=config["n"])
             for j in range(len(tasks))]
    model = load_for_training(config)[0]
    rng = np.random.default_rng([config["seed"], rank, 6])
    per_rank = max(1, config["batch"] // world_size)

    def batches():
        while True:
            ids, labels = instruction_batch(world, tasks, pools, rng, per_rank)
            yield {"input_ids": torch.from_numpy(ids), "labels": torch.from_numpy(labels)}

    return TrainJob(model=model, batches=batches(), steps=config["steps"], save=saver())


def text_rows(config: dict, tokenizer) -> list:
    """n training examples of each training task, each as its human-view description, the example
    and its label word (loss on the label word); equal n per task, so drawing rows uniformly
    draws tasks uniformly."""
    from fsv.tasks import draw_train, get_task, load_splits

    rows = []
    for j, (name, source) in enumerate(config["train_tasks"]):
        task = get_task(name)
        examples = draw_train(load_splits(task, source, field=f"task_sources.{name}"), config["n"], config["seed"] + j)
        rows += label_rows(tokenizer, task, examples, "human")
    return rows


def build_text_job(config: dict, rank: int, world_size: int) -> TrainJob:
    from fsv.models.load import load_for_training

    model, tokenizer = load_for_training(config)
    rng = np.random.default_rng([config["seed"], rank, 6])
    batches = padded_batches(text_rows(config, tokenizer), tokenizer, rng, max(1, config["batch"] // world_size))
    return TrainJob(model=model, batches=batches, steps=config["steps"], save=saver(tokenizer),
                    tokens_per_batch=lambda b: int(b["attention_mask"].sum()))


def evaluate_descriptions(model, tokenizer, cell: dict, ctx) -> dict:
    """Zero-shot accuracy on the held-out task(s) with each description variant; `accuracy` is the
    human-view one (the descriptions instruction tuning and rlhf teach)."""
    out = {}
    for variant in ("none", "model", "human"):
        if cell["world"] is None:
            from fsv.hf_eval import evaluate_text

            res = evaluate_text(model, tokenizer, ctx.text_task, ctx.text_splits, k=0, variant=variant,
                                seed=cell["seed"], max_eval=cell.get("max_eval"))
            if variant == "human":
                out["accuracy_norm"] = res.accuracy_norm
        else:
            from fsv.evaluate import evaluate_world

            res = evaluate_world(model, ctx.world, ctx.world.heldout_tasks, k=0, variant=variant, seed=cell["seed"])
        out[f"acc_{variant}"] = res.accuracy
        out["n_eval"], out["chance"] = res.n_eval, res.chance
    out["accuracy"] = out["acc_human"]
    return out


def run(cell: dict, ctx) -> dict:
    from fsv.models.load import param_count

    path, metrics = train_cell(cell, ctx, "fsv.regimes.instruction_tuning:build_job",
                               tasks_trained=cell["tasks_trained"], train_tasks=cell.get("train_tasks"))
    t0 = time.time()
    model, tokenizer = ctx.load(path, tokenizer=cell["world"] is None)
    fields = evaluate_descriptions(model, tokenizer, cell, ctx)
    return {**fields, **training_fields(cell, param_count(model), metrics, time.time() - t0)}
