"""What a study cost, from its records alone: trial-hours, and the GPU-hours its trials held.

A trial holds its resources for its record's `wall_s`. On a GPU study (`train.use_gpu` in the
study config that `cells.json` keeps) a training trial holds `workers` x its cell's `gpu_fraction`
GPUs and an in-context trial its model's share (`fsv.models.placement.gpu_fraction`); on a CPU
study, none. GPU-hours x the price of a GPU-hour is the trials' bill; the pretraining of ladder
models (once per model, shared by later studies) and idle nodes come on top.
"""

from __future__ import annotations

import json


def gpus_held(record: dict, train, params_of) -> float:
    """GPUs one record's trial held (0 on CPU studies)."""
    from fsv.models.placement import gpu_fraction

    if train is None or not train.use_gpu:
        return 0.0
    cell = json.loads(record["config"]) if record.get("config") else {}
    if cell.get("train"):
        return (record.get("workers") or 1) * cell["train"].get("gpu_fraction", 1.0)
    return gpu_fraction(params_of(record["model"]), train, record["model"])


def study_hours(frame, study_config: dict | None) -> dict:
    """{"trial_hours", "gpu_hours"} of a study's records; `study_config` is cells.json's "config"."""
    from functools import cache

    from fsv.config import TrainSection
    from fsv.models.registry import resolve_model

    train = TrainSection(**study_config["train"]) if study_config and "train" in study_config else None
    params_of = cache(lambda model: resolve_model(model).params)
    wall = frame["wall_s"].fillna(0.0)
    trial_hours = float(wall.sum()) / 3600
    if train is None or not train.use_gpu:
        return {"trial_hours": trial_hours, "gpu_hours": 0.0}
    rows = frame[["model", "config", "workers"]].to_dict("records")
    held = [gpus_held(r, train, params_of) for r in rows]
    return {"trial_hours": trial_hours, "gpu_hours": float((wall * held).sum()) / 3600}
