"""prompt_tuning: the base stays frozen; a soft prompt of m virtual tokens -- the description the
model itself understands best -- learns from n examples of the target task (peft
`PromptTuningConfig`, trained under the same Ray Train + DeepSpeed path)."""

from __future__ import annotations

import time

import numpy as np

from fsv.regimes.training import draw_examples, sequences, target_task, train_cell, training_fields
from fsv.train.worker import TrainJob


def build_job(config: dict, rank: int, world_size: int) -> TrainJob:
    import torch
    from peft import PromptTuningConfig, TaskType, get_peft_model

    from fsv.models.load import load_model
    from fsv.world import World, WorldConfig

    world = World(WorldConfig(**config["world"]))
    task = target_task(world, config["seed"])
    symbols = draw_examples(world, task, config["n"], config["seed"])
    base = load_model(config["model_path"])
    peft_config = PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=config["prompt_tokens"])
    model = get_peft_model(base, peft_config)
    rng = np.random.default_rng([config["seed"], rank, 3])
    per_rank = max(1, config["batch"] // world_size)

    def batches():
        while True:
            ids, labels = sequences(world, task, symbols, "single", "none", rng, per_rank)
            yield {"input_ids": torch.from_numpy(ids), "labels": torch.from_numpy(labels)}

    return TrainJob(model=model, batches=batches(), steps=config["steps"],
                    save=lambda module, out: module.save_pretrained(out))


def run(cell: dict, ctx) -> dict:
    from peft import PeftModel

    from fsv.evaluate import evaluate_world
    from fsv.models.load import param_count

    path, metrics = train_cell(cell, ctx, "fsv.regimes.prompt_tuning:build_job", prompt_tokens=cell["prompt_tokens"])
    t0 = time.time()
    base = ctx.load_base()
    params = param_count(base)
    model = PeftModel.from_pretrained(base, path)
    task = target_task(ctx.world, cell["seed"])
    res = evaluate_world(model, ctx.world, [task], k=0, variant="none", seed=cell["seed"])
    return {
        "accuracy": res.accuracy, "n_eval": res.n_eval, "chance": res.chance, "acc_none": res.accuracy,
        **training_fields(cell, params, metrics, time.time() - t0),
    }
