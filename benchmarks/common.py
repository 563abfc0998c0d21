"""What the training benchmarks share: a real local Ray cluster set up like `fsv run` sets up its
own, a freshly pretrained ladder model, and the training settings of a 1-worker CPU trial."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

TRAIN = {"workers": 1, "cpus_per_worker": 1, "use_gpu": False, "zero_stage": 0, "precision": "fp32",
         "optimizer": "adamw", "weight_decay": 0.0, "grad_clip": 1.0}


def bare_steps(job, config: dict, steps: int, loss=lambda model, batch: model(**batch).loss) -> tuple[float, int]:
    """(seconds, tokens) of `steps` plain single-process PyTorch steps on a `TrainJob`: AdamW at the
    config's rate and weight decay, the same gradient clipping and thread count as a trial, no
    Ray and no DeepSpeed -- the baseline the training benchmarks divide by."""
    import torch

    from fsv.train.worker import adamw

    torch.set_num_threads(config["train"]["cpus_per_worker"])
    opt = adamw(job.model.parameters(), config["lr"], config["train"]["weight_decay"])
    batches = [next(job.batches) for _ in range(steps)]
    tokens, t0 = 0, time.perf_counter()
    for batch in batches:
        value = loss(job.model, batch)
        value.backward()
        torch.nn.utils.clip_grad_norm_(job.model.parameters(), config["train"]["grad_clip"])
        opt.step()
        opt.zero_grad()
        float(value)
        tokens += int(batch["input_ids"].numel())
    return time.perf_counter() - t0, tokens


def local_cluster_and_model(model: str, pretrain_steps: int) -> tuple[Path, dict, Path]:
    """(scratch folder, world config, path of `model` pretrained for `pretrain_steps` steps)."""
    import ray

    from fsv.config import PretrainSection
    from fsv.models.load import pretrain_world_model
    from fsv.world import preset
    from study.driver import LOCAL_TRAIN_ENV

    tmp = Path(tempfile.mkdtemp(prefix="fsv-bench-"))
    os.environ.setdefault("FSV_CACHE", str(tmp / "cache"))
    ray.init(num_cpus=os.cpu_count(), resources={"fsv_trial_driver": 100}, include_dashboard=False,
             runtime_env={"env_vars": {"DS_ACCELERATOR": "cpu", **LOCAL_TRAIN_ENV}}, log_to_driver=False)
    world = preset("quick").model_dump()
    pretrain = PretrainSection(steps=pretrain_steps, batch=16, lr=3e-3, warmup=0.1).model_dump(exclude={"seeds"})
    return tmp, world, pretrain_world_model(model, world, pretrain, seed=0)
