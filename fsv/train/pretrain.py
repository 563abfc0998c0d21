"""Pretraining a ladder model on the world's corpus (a `TrainJob` for the shared training path)."""

from __future__ import annotations

import numpy as np

from fsv.train.worker import TrainJob


def build(config: dict, rank: int, world_size: int) -> TrainJob:
    import torch
    from transformers import LlamaForCausalLM

    from fsv.models.ladder import LADDER, llama_config
    from fsv.world import World, WorldConfig

    world = World(WorldConfig(**config["world"]))
    size = LADDER[config["model"]]
    torch.manual_seed(config["seed"])  # same initial weights on every rank
    model = LlamaForCausalLM(
        llama_config(size, len(world.vocab), world.config.context, world.ids["<pad>"], world.ids["<bos>"])
    )
    rng = np.random.default_rng([config["seed"], 104729])

    def batches():
        # every rank draws the same global batch and keeps its own rows, so a step sees the same
        # documents whatever the number of workers
        while True:
            ids, labels = world.pretraining_batch(rng, config["batch"])
            yield {"input_ids": torch.from_numpy(ids[rank::world_size]),
                   "labels": torch.from_numpy(labels[rank::world_size])}

    return TrainJob(
        model=model,
        batches=batches(),
        steps=config["steps"],
        save=lambda module, out: module.save_pretrained(out, safe_serialization=True),
        lr_schedule="cosine",
        warmup=config["warmup"],
        tokens_per_batch=lambda b: int(b["input_ids"].numel()),
    )
