"""Launch a training job under Ray Train and bring its result back.

`fit(config, storage_path, name, dest)` runs the per-worker loop (`config["loop"]`, by default
`train_loop_per_worker(config)`) on `config["train"]["workers"]` workers, copies the checkpoint it
reported into `dest` and returns its reported metrics. When the driver started a training service
for the config's placement (`fsv.train.service`), the cell goes to that long-lived worker group
(~0.5 s of fixed cost); otherwise -- no service on this cluster (tests, benchmarks, pretraining
before the trials), a loop the service does not serve, or callbacks given --
it gets a `TorchTrainer.fit()` of its own (~20 s). The checkpoint travels through Ray Train's
storage either way, so it works the same on a laptop and on a cluster with `s3://` storage.
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
    from fsv.train import service

    queue = None if callbacks else service.find_queue(config)
    if queue is not None:
        metrics, stored = service.run_cell(queue, name, config)
        _copy_checkpoint(stored, dest)
        return metrics
    return fit_alone(config, storage_path, name, dest, callbacks)


def _copy_checkpoint(checkpoint, dest: Path) -> None:
    dest = Path(dest)
    if dest.exists():
        shutil.rmtree(dest)
    checkpoint.to_directory(str(dest))


def loop_function(name: str):
    """The per-worker loop a config names ("module:function")."""
    module, fn = name.split(":")
    return getattr(importlib.import_module(module), fn)


def fit_alone(config: dict, storage_path: str, name: str, dest: Path, callbacks=None) -> dict:
    """One `TorchTrainer.fit()` for this job alone."""
    from ray.train import RunConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    trainer = TorchTrainer(
        loop_function(config.get("loop", DEFAULT_LOOP)),
        train_loop_config=config,
        scaling_config=scaling_config(config["train"]),
        torch_config=TorchConfig(backend="nccl" if config["train"]["use_gpu"] else "gloo"),
        run_config=RunConfig(name=name, storage_path=storage_path, callbacks=callbacks or []),
    )
    result = trainer.fit()
    if result.error:
        raise result.error
    _copy_checkpoint(result.checkpoint, dest)
    return dict(result.metrics)
