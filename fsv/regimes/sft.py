"""sft: all weights learn from n examples of the target (held-out) task -- "infinitely many shots".

How the n examples are laid out is an axis: `single` (one example per sequence, the usual
fine-tuning format) or `packed` (examples packed into one sequence like a pretraining document, so
fine-tuning can use the model's in-context machinery). The trained model is then evaluated like the
base model: zero-shot on the task's test symbols, which training never shows.
"""

from __future__ import annotations

import time

import numpy as np

from fsv.regimes.training import (draw_examples, evaluate_target, saver, sequences, target_task, train_cell,
                                  training_fields)
from fsv.train.worker import TrainJob


def build_job(config: dict, rank: int, world_size: int) -> TrainJob:
    if config["world"] is None:
        return build_text_job(config, rank, world_size)
    import torch

    from fsv.models.load import load_for_training
    from fsv.world import World, WorldConfig

    world = World(WorldConfig(**config["world"]))
    task = target_task(world, config["seed"])
    symbols = draw_examples(world, task, config["n"], config["seed"])
    model = load_for_training(config)[0]
    rng = np.random.default_rng([config["seed"], rank, 2])
    per_rank = max(1, config["batch"] // world_size)

    def batches():
        while True:
            ids, labels = sequences(world, task, symbols, config["layout"], "none", rng, per_rank)
            yield {"input_ids": torch.from_numpy(ids), "labels": torch.from_numpy(labels)}

    return TrainJob(model=model, batches=batches(), steps=config["steps"], save=saver())


def build_text_job(config: dict, rank: int, world_size: int) -> TrainJob:
    """sft on a text task: n training examples (never test rows), the prompt without
    demonstrations followed by the label word; loss on the label word's tokens."""
    from fsv.models.load import load_for_training
    from fsv.regimes.training import text_batches

    model, tokenizer = load_for_training(config)
    return TrainJob(model=model, batches=text_batches(config, tokenizer, rank, world_size), steps=config["steps"],
                    save=saver(tokenizer), tokens_per_batch=lambda b: int(b["attention_mask"].sum()))


def run(cell: dict, ctx) -> dict:
    from fsv.models.load import param_count

    path, metrics = train_cell(cell, ctx, "fsv.regimes.sft:build_job", layout=cell["layout"],
                               task=cell["task"], task_source=cell.get("task_source"))
    t0 = time.time()
    model, tokenizer = ctx.load(path, tokenizer=cell["world"] is None)
    fields = evaluate_target(model, tokenizer, cell, ctx)
    return {**fields, **training_fields(cell, param_count(model), metrics, time.time() - t0)}
