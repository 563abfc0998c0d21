"""Launch a training job as a Ray Train `TorchTrainer` and bring its result back.

`fit(config, run_dir, name)` runs `train_loop_per_worker(config)` on `config["train"]["workers"]`
workers and returns (metrics, checkpoint directory on this node). The checkpoint travels through
Ray Train's storage, so it works the same on a laptop and on a cluster with `s3://` storage.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import importlib

DEFAULT_LOOP = "fsv.train.worker:train_loop_per_worker"


def scaling_config(train: dict):
    from ray.train import ScalingConfig

    resources = {"CPU": train["cpus_per_worker"]}
    if train["use_gpu"]:
        resources["GPU"] = train.get("gpu_fraction", 1)  # a small model's trial shares its GPU
    return ScalingConfig(num_workers=train["workers"], use_gpu=train["use_gpu"], resources_per_worker=resources)


def fit(config: dict, storage_path: str, name: str, dest: Path, callbacks=None) -> dict:
    """Train; copy the saved model into `dest`; return the reported metrics."""
    from ray.train import RunConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    module, fn = config.get("loop", DEFAULT_LOOP).split(":")
    trainer = TorchTrainer(
        getattr(importlib.import_module(module), fn),
        train_loop_config=config,
        scaling_config=scaling_config(config["train"]),
        torch_config=TorchConfig(backend="nccl" if config["train"]["use_gpu"] else "gloo"),
        run_config=RunConfig(name=name, storage_path=storage_path, callbacks=callbacks or []),
    )
    result = trainer.fit()
    if result.error:
        raise result.error
    dest = Path(dest)
    if dest.exists():
        shutil.rmtree(dest)
    result.checkpoint.to_directory(str(dest))
    return dict(result.metrics)
