"""Pretraining a ladder model on the world's corpus (a `TrainJob` for the shared training path)."""

from __future__ import annotations

import numpy as np

from fsv.train.worker import TrainJob

BATCH_KEYS = ("input_ids", "labels", "weights")


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
            arrays = world.pretraining_batch(rng, config["batch"])
            yield {key: torch.from_numpy(a[rank::world_size]) for key, a in zip(BATCH_KEYS, arrays)}

    return TrainJob(
        model=model,
        batches=batches(),
        steps=config["steps"],
        save=lambda module, out: module.save_pretrained(out, safe_serialization=True),
        lr_schedule=config["schedule"],
        warmup=config["warmup"],
        cooldown=config["cooldown"],
        save_at=tuple(config.get("checkpoints", [])),
        tokens_per_batch=lambda b: int(b["input_ids"].numel()),
        objective=weighted_label_loss,
    )


def weighted_label_loss(forward, batch: dict):
    """Cross-entropy on label tokens, weighted per token (copyable repeats count less, see
    `WorldConfig.repeat_weight`), normalised by the total weight."""
    import torch.nn.functional as F

    logits = forward(input_ids=batch["input_ids"]).logits[:, :-1]
    targets, weights = batch["labels"][:, 1:], batch["weights"][:, 1:]
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1).clamp(min=0),
                         reduction="none").view_as(weights)
    return (ce * weights).sum() / weights.sum().clamp(min=1e-8)
