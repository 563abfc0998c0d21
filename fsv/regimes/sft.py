"""sft: all weights learn from n examples of the target (held-out) task -- "infinitely many shots".

How the n examples are laid out is an axis: `single` (one example per sequence, the usual
fine-tuning format) or `packed` (examples packed into one sequence like a pretraining document, so
fine-tuning can use the model's in-context machinery). The trained model is then evaluated like the
base model: zero-shot on the task's test symbols, which training never shows. On the world, one
trial adapts a copy of the model to each held-out task (`per_task_jobs`) and pools their accuracy.
"""

from __future__ import annotations

import time

import numpy as np

from fsv.regimes.training import (evaluate_per_task, evaluate_text_target, per_task_jobs, saver, sequences,
                                  train_cell, training_fields)
from fsv.train.worker import TrainJob


def build_job(config: dict, rank: int, world_size: int):
    if config["world"] is None:
        return build_text_job(config, rank, world_size)
    import torch

    from fsv.models.load import load_for_training

    per_rank = max(1, config["batch"] // world_size)

    def job(world, task, symbols) -> TrainJob:
        rng = np.random.default_rng([config["seed"], rank, 2, world.tasks.index(task)])

        def batches():
            while True:
                ids, labels = sequences(world, task, symbols, config["layout"], "none", rng, per_rank)
                yield {"input_ids": torch.from_numpy(ids), "labels": torch.from_numpy(labels)}

        return TrainJob(model=load_for_training(config)[0], batches=batches(), steps=config["steps"], save=saver())

    return per_task_jobs(config, job)


def build_text_job(config: dict, rank: int, world_size: int) -> TrainJob:
    """sft on a text task: n training examples (never test rows), the prompt without
    demonstrations followed by the label word; loss on the label word's tokens."""
    from fsv.models.load import load_for_training
    from fsv.regimes.training import text_batches

    model, tokenizer = load_for_training(config)
    return TrainJob(model=model, batches=text_batches(config, tokenizer, rank, world_size), steps=config["steps"],
                    save=saver(tokenizer), tokens_per_batch=lambda b: int(b["attention_mask"].sum()))


def run(cell: dict, ctx) -> dict:
    path, metrics = train_cell(cell, ctx, "fsv.regimes.sft:build_job", layout=cell["layout"],
                               task=cell["task"], task_source=cell.get("task_source"))
    t0 = time.time()
    if cell["world"] is None:
        fields = evaluate_text_target(*ctx.load(path), cell, ctx)
    else:
        fields = evaluate_per_task(lambda task: ctx.load(f"{path}/{task.name}", tokenizer=False)[0], cell, ctx)
    # the worker counted the model's parameters as it built the first job (whole under ZeRO-3 too)
    return {**fields, **training_fields(cell, int(metrics["params_total"]), metrics, time.time() - t0)}
