"""prompt_tuning: the base stays frozen; a soft prompt of m virtual tokens -- the description the
model itself understands best -- learns from n examples of the target task (peft
`PromptTuningConfig`, trained under the same Ray Train + DeepSpeed path)."""

from __future__ import annotations

import time

import numpy as np

from fsv.regimes.training import (evaluate_per_task, evaluate_text_target, per_task_jobs, sequences, train_cell,
                                  training_fields)
from fsv.train.worker import TrainJob


def build_job(config: dict, rank: int, world_size: int):
    import torch
    from peft import PromptTuningConfig, TaskType, get_peft_model

    from fsv.models.load import load_for_training
    from fsv.regimes.training import text_batches

    peft_config = PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=config["prompt_tokens"])
    save = lambda module, out: module.save_pretrained(out)  # noqa: E731 - the adapter only
    if config["world"] is None:
        base, tokenizer = load_for_training(config)
        return TrainJob(model=get_peft_model(base, peft_config), steps=config["steps"], save=save,
                        batches=text_batches(config, tokenizer, rank, world_size),
                        tokens_per_batch=lambda b: int(b["attention_mask"].sum()))
    per_rank = max(1, config["batch"] // world_size)

    def job(world, task, symbols) -> TrainJob:
        rng = np.random.default_rng([config["seed"], rank, 3, world.tasks.index(task)])

        def batches():
            while True:
                ids, labels = sequences(world, task, symbols, "single", "none", rng, per_rank)
                yield {"input_ids": torch.from_numpy(ids), "labels": torch.from_numpy(labels)}

        model = get_peft_model(load_for_training(config)[0], peft_config)
        return TrainJob(model=model, batches=batches(), steps=config["steps"], save=save)

    return per_task_jobs(config, job)


def run(cell: dict, ctx) -> dict:
    from peft import PeftModel

    from fsv.models.load import param_count

    path, metrics = train_cell(cell, ctx, "fsv.regimes.prompt_tuning:build_job", prompt_tokens=cell["prompt_tokens"],
                               task=cell["task"], task_source=cell.get("task_source"))
    t0 = time.time()
    base, tokenizer = ctx.load_base_with_tokenizer()
    params = param_count(base)
    if cell["world"] is None:
        fields = evaluate_text_target(PeftModel.from_pretrained(base, path), tokenizer, cell, ctx)
    else:  # a fresh base per task: each soft prompt is read onto unmodified weights
        fields = evaluate_per_task(lambda task: PeftModel.from_pretrained(ctx.load_base(), f"{path}/{task.name}"),
                                   cell, ctx)
    return {**fields, **training_fields(cell, params, metrics, time.time() - t0)}
