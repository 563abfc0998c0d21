"""Where a training trial runs: the DeepSpeed ZeRO stage and the Ray Train workers (one GPU each on a
GPU cluster) per trial, chosen by the model's parameter count unless the study says otherwise.

The arithmetic behind every row: full fine-tuning with AdamW in bf16 mixed precision holds 16 bytes
per parameter before activations (bf16 weights 2 + bf16 gradients 2 + fp32 master weights, Adam m
and v 4 + 4 + 4). The table keeps that under ~40 GB per GPU, leaving the other half of an 80 GB card
to the activations of a batch of long few-shot prompts. ZeRO-2 shards gradients and optimizer states
(2 + 14 / workers bytes per parameter per GPU); ZeRO-3 shards the weights too (16 / workers), and
under it each worker also loads the model partitioned (`fsv.models.load.zero3_init`), so host memory
holds one copy of the weights per node at most, never one per worker.

Precedence, per model: `train.per_model[model]` > the study's `train.zero_stage` / `train.workers` >
this table. The choice lands in each cell (so in its id) and in each record (`zero_stage`, `workers`).

Small models share a GPU (`GPU_SHARE`): a trial asks Ray for the fraction of one GPU its model
needs, so several run on one card at once. Ray's fractional GPUs are bookkeeping only (nothing caps
a process's memory), so each row leaves a wide margin: its largest model's 16 B/param plus the
activations of a batch of few-shot prompts plus a CUDA context (~0.5 GB per process) stays under
the fraction of a 24 GB card (A10G, L4: the smallest GPU in `clusters/`). Measured on an H100: a
1M-parameter world model used 0.1-1.9 % of the GPU, so eight at once still leave it mostly idle;
more than eight per card would crowd its CPU threads (a GPU node has 4-12 vCPUs per GPU) rather
than the GPU. A trial of several workers always holds whole GPUs (NCCL puts one rank per device).
Precedence as above: `train.per_model[model].gpu_fraction` > `train.gpu_fraction` > `GPU_SHARE`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# (parameters below, ZeRO stage, workers per trial)
SIZE_TABLE: list[tuple[float, int, int]] = [
    # < 1B (Pythia 70m-410m, Qwen2.5-0.5B, SmolLM2 135M/360M, the world ladder): <= 16 GB fits one
    # GPU whole; ZeRO would only add communication.
    (1e9, 0, 1),
    # 1-3B (Pythia 1b-2.8b, Qwen2.5-1.5B, SmolLM2-1.7B): 16-48 GB; ZeRO-2 over 2 GPUs brings it to
    # 2 + 14/2 = 9 B/param <= 27 GB. The weights (6 GB at 3B) still fit every GPU, so ZeRO-3's
    # extra all-gathers are not worth paying.
    (3e9, 2, 2),
    # 3-8B (Qwen2.5-3B/7B, Pythia 6.9b): 48-128 GB; ZeRO-3 over 4 GPUs: 16/4 = 4 B/param <= 32 GB.
    # From here each worker materialising the model in host RAM (4 x 28 GB fp32 at 7B) would crowd
    # the node, which is why ZeRO-3 also means partitioned loading.
    (8e9, 3, 4),
    # 8-20B (Pythia 12b, Qwen2.5-14B): 16 x 20 / 8 = 40 GB per GPU: one node of 8.
    (20e9, 3, 8),
    # 20-40B (Qwen2.5-32B): 16 x 40 / 16 = 40 GB per GPU: two nodes of 8.
    (40e9, 3, 16),
    # >= 40B (Qwen2.5-72B): 16 x 72 / 32 = 36 GB per GPU: four nodes of 8.
    (math.inf, 3, 32),
]


@dataclass(frozen=True)
class Placement:
    zero_stage: int
    workers: int
    source: str  # "size table", "study" or "per_model"


def default_placement(params: int | None) -> Placement:
    """The table's row for a model of `params` parameters. `None` is a world-ladder model: all of
    them are far below 1B (the largest has ~1M), so the first row."""
    size = 0 if params is None else params
    for bound, stage, workers in SIZE_TABLE:
        if size < bound:
            return Placement(stage, workers, "size table")
    raise AssertionError("the table ends at infinity")


def placement(params: int | None, train, model: str) -> Placement:
    """The placement of `model` under a study's `train` section (a `TrainSection`)."""
    row = default_placement(params)
    override = train.per_model.get(model)
    stage, workers, source = row.zero_stage, row.workers, row.source
    if train.zero_stage is not None or train.workers is not None:
        stage = row.zero_stage if train.zero_stage is None else train.zero_stage
        workers = row.workers if train.workers is None else train.workers
        source = "study"
    if override is not None:
        stage = stage if override.zero_stage is None else override.zero_stage
        workers = workers if override.workers is None else override.workers
        source = "per_model"
    return Placement(stage, workers, source)


# (parameters below, fraction of one GPU per single-worker trial)
GPU_SHARE: list[tuple[float, float]] = [
    # the world ladder (<= 25M) and tiny test models: 16 B x 25M = 0.4 GB + activations + context < 3 GB
    (30e6, 0.125),
    # Pythia 70m/160m, SmolLM2-135M: 16 B x 200M = 3.2 GB + activations + context < 6 GB
    (200e6, 0.25),
    # Pythia 410m, SmolLM2-360M, Qwen2.5-0.5B: 16 B x 0.5B = 8 GB + activations < 12 GB
    (1e9, 0.5),
    (math.inf, 1.0),
]


def gpu_fraction(params: int | None, train, model: str) -> float:
    """The share of one GPU a trial of `model` asks for under a study's `train` section. `None`
    params is a world-ladder model (the first row)."""
    if placement(params, train, model).workers > 1:
        return 1.0
    override = train.per_model.get(model)
    if override is not None and override.gpu_fraction is not None:
        return override.gpu_fraction
    if train.gpu_fraction is not None:
        return train.gpu_fraction
    size = 0 if params is None else params
    return next(share for bound, share in GPU_SHARE if size < bound)
