"""Getting a model: pretrain a ladder model if its cache entry is missing, then load it with
`from_pretrained` exactly as a hub model would be loaded."""

from __future__ import annotations

import json
import math
import time
from contextlib import contextmanager
from pathlib import Path

from fsv.models.cache import MARKER, cache_root, instance_dir, is_cached, ladder_dir, pretrain_lr


def pretrain_config(name: str, world: dict, pretrain: dict, seed: int) -> dict:
    """The Ray Train job of one ladder model: the study's pretraining section, the size's own
    learning rate unless the study sets one (`pretrain_lr`)."""
    train = {
        "workers": pretrain["workers"], "cpus_per_worker": pretrain["cpus_per_worker"],
        "use_gpu": pretrain["use_gpu"], "zero_stage": pretrain["zero_stage"],
        "precision": "bf16" if pretrain["use_gpu"] else "fp32", "optimizer": "adamw",
        "weight_decay": 0.01, "grad_clip": 1.0,
    }
    return {
        "job": "fsv.train.pretrain:build", "model": name, "world": world, "seed": seed,
        "steps": pretrain["steps"], "batch": pretrain["batch"], "lr": pretrain_lr(name, pretrain),
        "warmup": pretrain["warmup"], "schedule": pretrain["schedule"], "cooldown": pretrain["cooldown"],
        "checkpoints": pretrain.get("checkpoints", []), "train": train,
    }


def pretrain_world_model(name: str, world: dict, pretrain: dict, seed: int, tracker=None) -> Path:
    """Pretrain one ladder model under Ray Train + DeepSpeed and store it in the cache."""
    from fsv.models.tokenizer import world_tokenizer
    from fsv.train.launch import fit
    from fsv.world import World, WorldConfig

    dest = ladder_dir(name, world, pretrain, seed)
    checkpoints = pretrain.get("checkpoints", [])
    if is_cached(dest, checkpoints):
        return dest
    started = time.time()
    config = pretrain_config(name, world, pretrain, seed)
    staging = dest.with_name(dest.name + ".partial")
    metrics = fit(config, str(cache_root() / "ray"), f"pretrain-{dest.name}", staging)
    tokenizer = world_tokenizer(World(WorldConfig(**world)))
    for folder in [staging, *(instance_dir(staging, c) for c in checkpoints)]:
        tokenizer.save_pretrained(folder)
    curve = json.loads((staging / "train_curve.json").read_text())["loss"]
    (staging / "loss_curve.json").write_text(json.dumps({"step": list(range(1, len(curve) + 1)), "loss": curve}))
    params = _count_params(staging)
    marker = {"name": name, "seed": seed, "params": params, "lr": config["lr"], "wall_s": time.time() - started,
              "final_loss": curve[-1], "world": world, "pretrain": pretrain, **{k: metrics[k] for k in ("train_s", "train_tokens")}}
    if tracker:
        tracker.log_pretraining(name, seed, curve, marker)
    (staging / MARKER).write_text(json.dumps(marker, indent=1))
    if dest.exists():
        import shutil

        shutil.rmtree(dest)
    staging.rename(dest)
    return dest


def _count_params(path: Path) -> int:
    """Parameters stored in the model's safetensors (tied weights stored once, counted once)."""
    from safetensors import safe_open

    total = 0
    with safe_open(str(path / "model.safetensors"), "pt") as f:
        for key in f.keys():
            shape = f.get_slice(key).get_shape()
            total += math.prod(shape)
    return total


def load_model(path: str | Path, dtype=None, trust_remote_code: bool = False, device: str | None = None):
    """A causal LM by hub id or local dir. `device` places the weights as they load (e.g. "cuda",
    never a full copy in host RAM first); `trust_remote_code` lets a model run code it ships."""
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype or torch.float32, device_map=device,
                                                trust_remote_code=trust_remote_code)


def load_causal_lm(path: str | Path, dtype=None, trust_remote_code: bool = False, device: str | None = None):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    return load_model(path, dtype, trust_remote_code, device), tokenizer


@contextmanager
def zero3_init(ds_config: dict):
    """Under ZeRO-3, `from_pretrained` inside this block builds the model in `deepspeed.zero.Init`
    (transformers' ZeRO-3 integration, switched on by a live `HfDeepSpeedConfig`): each parameter
    is partitioned across the ranks as it is created, and only rank 0 reads the checkpoint (the
    others map it to meta tensors), so no worker ever holds the whole model in host memory. Any
    other stage: a plain load."""
    if ds_config["zero_optimization"]["stage"] != 3:
        yield
        return
    from transformers.integrations import HfDeepSpeedConfig
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    live = HfDeepSpeedConfig(ds_config)  # transformers holds only a weak reference: keep it alive here
    try:
        yield
    finally:
        unset_hf_deepspeed_config()
        del live


def load_for_training(config: dict):
    """(model, tokenizer) in a Ray Train worker: the cell's base model in the precision the engine
    trains in, loaded partitioned under ZeRO-3 (`zero3_init` with the worker's `config["deepspeed"]`)."""
    import torch

    dtype = torch.bfloat16 if config["train"]["precision"] == "bf16" else torch.float32
    with zero3_init(config["deepspeed"]):
        return load_causal_lm(config["model_path"], dtype, config.get("trust_remote_code", False))


def partition_stats(model) -> dict:
    """Parameters of the whole model and those this rank holds (ZeRO-3 keeps 1/world of each)."""
    total = sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters())
    local = sum(p.ds_tensor.numel() if hasattr(p, "ds_tensor") else p.numel() for p in model.parameters())
    return {"params_total": total, "params_local": local}


def param_count(model) -> int:
    return sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters())
