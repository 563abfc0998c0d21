"""What every Ray Train worker runs: build the job, wrap it in a DeepSpeed engine, train, save.

Everything arrives in `config` (the DeepSpeed settings included); nothing is read from globals. A
job is named by an import path (`"fsv.train.pretrain:build"`) and returns a `TrainJob`, or several
named ones (e.g. one adaptation per held-out task): they train in the same worker, each saved in
its own folder of the one checkpoint, so Ray Train's fixed cost is paid once per trial, not once per
task. Jobs that start from one model and train alike go through one engine together, as a stack
(`fsv.train.stacked`); any other job trains alone in an engine of its own.
"""

from __future__ import annotations

import importlib
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

from fsv.train import precision, resume, stacked


@dataclass
class TrainJob:
    model: object  # a torch.nn.Module (HF model or peft model)
    batches: Iterator[dict]  # this rank's batches, one per step
    steps: int
    save: Callable[[object, str], None] | None  # save(module, directory) on rank 0; None: nothing to keep
    trainable: Callable[[], list] | None = None  # parameters to optimise (default: all requiring grad)
    tokens_per_batch: Callable[[dict], int] = lambda b: int(b["input_ids"].numel())
    lr_schedule: str = "constant"  # "cosine" (decay from the start) or "wsd" (hold, then linear decay)
    warmup: float = 0.0  # share of steps with a linear warm-up, for every schedule
    warmup_steps: int | None = None  # the warm-up in steps instead (a run continued longer keeps its own)
    cooldown: float = 0.2  # share of steps of the linear decay that ends a "wsd" schedule
    # the loss of a step: objective(forward, batch), `forward(**inputs)` running the model being
    # trained (the engine, or a stack's job slice); None: the model's own loss on the batch's labels
    objective: Callable[[Callable, dict], object] | None = None
    name: str = ""  # the job's folder in the checkpoint when a builder returns several jobs
    evaluate: Callable[[object], list[dict]] | None = None  # rows of measures of the module being trained
    eval_at: tuple[int, ...] = ()  # steps after which `evaluate` runs: training lengths read from one run
    tags: dict = field(default_factory=dict)  # what the job is (task, n, seed): copied into each evaluation row
    save_at: tuple[int, ...] = ()  # steps at which `save` also keeps a checkpoint (`checkpoints/step<N>/`)
    # a run that goes on from a saved state (`fsv.train.resume`): its weights are loaded and its first
    # batches drawn; the optimizer's state is loaded into the engine, and steps start+1 .. steps train
    resume: dict | None = None
    keep_state: str | None = None  # where rank 0 saves the job's state after its last step (None: not kept)

    @property
    def start(self) -> int:
        """Steps trained before this run (a saved state's)."""
        return self.resume["steps"] if self.resume else 0

    def so_far(self, curve: list[float], tokens: int) -> tuple[list[float], int]:
        """The whole run's loss curve and tokens: the saved state's, then this run's."""
        return ((self.resume["curve"] + curve, self.resume["tokens"] + tokens) if self.resume else (curve, tokens))


def deepspeed_config(train: dict, micro_batch: int) -> dict:
    return {
        "train_micro_batch_size_per_gpu": micro_batch,
        "gradient_accumulation_steps": 1,
        "zero_optimization": {"stage": train["zero_stage"]},
        "zero_allow_untested_optimizer": True,  # a torch optimizer: no fused-Adam build on CPU
        "gradient_clipping": train["grad_clip"] or 0.0,
        **precision.deepspeed_sections(train["precision"]),
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def _optimizer(params, train: dict, lr: float):
    import torch

    if train["optimizer"] == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9)
    return adamw(params, lr, train["weight_decay"])


def adamw(params, lr: float, weight_decay: float):
    """torch's AdamW with its fused kernel (CPU and CUDA): one pass over every parameter instead of
    a loop of small ops per tensor -- a world-l sft step costs 11.85 ms with the default, 10.04 fused
    (the optimizer alone 3.46 -> 1.40 ms, 1 thread; benchmarks/optimizer_step.py). Same update rule,
    rounding aside."""
    import torch

    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)


def lr_factor(job: TrainJob, step: int) -> float:
    """The learning rate at `step` as a share of the peak: a linear warm-up, then the job's schedule.
    'wsd' (warm-up, stable, decay) holds the peak and decays linearly to 0 over the last `cooldown`
    share of the steps."""
    import math

    warm = job.warmup_steps if job.warmup_steps is not None else warmup_length(job.warmup, job.steps)
    ramp = min(1.0, (step + 1) / warm) if warm else 1.0
    if job.lr_schedule == "cosine":
        return ramp * 0.5 * (1 + math.cos(math.pi * min(step, job.steps) / job.steps))
    if job.lr_schedule == "wsd":
        decay_from = job.steps * (1 - job.cooldown)
        return ramp * min(1.0, max(0.0, (job.steps - step) / (job.steps - decay_from)))
    return ramp


def warmup_length(share: float, steps: int) -> int:
    """Steps of a linear warm-up over `share` of a run of `steps` (at least one where there is one)."""
    return max(1, int(share * steps)) if share else 0


def _schedule(optimizer, job: TrainJob):
    import torch

    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(job, job.start + step))


def train_loop_per_worker(config: dict) -> None:
    import ray.train

    t_start = time.time()
    ctx = ray.train.get_context()
    rank, world_size = ctx.get_world_rank(), ctx.get_world_size()
    if not config["train"]["use_gpu"]:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import torch

    train = precision.resolve(config["train"])  # `auto`: what this worker's device multiplies natively
    torch.set_num_threads(train["cpus_per_worker"])  # Ray sets OMP_NUM_THREADS=1 in workers
    torch.manual_seed(config["seed"])
    t_imported = time.time()
    micro = max(1, config["batch"] // world_size)
    config = {**config, "train": train, "deepspeed": deepspeed_config(train, micro)}  # loaders partition under ZeRO-3
    module, fn = config["job"].split(":")
    built = getattr(importlib.import_module(module), fn)(config, rank, world_size)
    build_s = time.time() - t_imported
    with tempfile.TemporaryDirectory() as out:
        done, building_s = train_jobs(built, config, rank, world_size, out)
        build_s += building_s
        train_s = sum(d["train_s"] for d in done)
        metrics = {
            **done[0]["loaded"], "device": done[0]["device"], "precision": train["precision"], "jobs": len(done),
            "final_train_loss": sum(d["final_loss"] for d in done) / len(done),
            "train_tokens": sum(d["train_tokens"] for d in done), "train_s": train_s,
            "setup_s": time.time() - t_start - train_s, "import_s": t_imported - t_start, "build_s": build_s,
            "engine_s": sum(d["engine_s"] for d in done), "resumed_jobs": sum(d["resumed"] for d in done),
        }
        evals = [row for d in done for row in d["evals"]]
        if evals:  # a selection trial's curves: every job evaluated at each training length
            metrics["evals"] = json.dumps(evals)
        checkpoint = ray.train.Checkpoint.from_directory(out) if rank == 0 else None
        ray.train.report(metrics, checkpoint=checkpoint)


def train_jobs(built, config: dict, rank: int, world_size: int, out: str) -> tuple[list[dict], float]:
    """Every job a builder returned, each saved under `out/<its name>`, in groups: a stack
    (`fsv.train.stacked`) or one job alone. (What `_train_one` returns for each job, the seconds
    spent building them: a builder yields its jobs lazily, so one group's models are in memory.)"""
    groups = stacked.groups(iter([built] if isinstance(built, TrainJob) else built), config)
    done, build_s = [], 0.0
    while True:
        t_build = time.time()
        group = next(groups, None)
        build_s += time.time() - t_build
        if group is None:
            return done, build_s
        if len(group) == 1:
            done.append(_train_one(group[0], config, rank, world_size, os.path.join(out, group[0].name)))
        else:
            done += stacked.train_stack(group, config, rank, world_size, [os.path.join(out, j.name) for j in group])
        del group
        release_memory()


def release_memory() -> None:
    """What a finished group held, freed before the next is built: a DeepSpeed engine and its module
    hold each other, so without a collection now a world-l stack's weights, gradients and Adam
    moments (~0.5 GB) lived on beside the next stack's; and glibc keeps freed heap for reuse, so it
    is handed back (`malloc_trim`), or a training server would hold its largest trial's peak for
    its whole life (a world-l sft trial: 1.8 GB resident after it, 0.54 GB trimmed)."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to hand back this way
        pass


def _train_one(job: TrainJob, config: dict, rank: int, world_size: int, out: str) -> dict:
    """One job: its engine and steps; its weights and loss curve saved under `out` on rank 0.
    Returns what the trial's metrics sum or average over its jobs."""
    import deepspeed

    from fsv.models.load import partition_stats

    t_built = time.time()
    loaded = {**partition_stats(job.model), "build_rss_mb": _peak_rss_mb()}
    params = job.trainable() if job.trainable else [p for p in job.model.parameters() if p.requires_grad]
    optimizer = _optimizer(params, config["train"], config["lr"])
    engine, _, _, scheduler = deepspeed.initialize(
        model=job.model, optimizer=optimizer, lr_scheduler=_schedule(optimizer, job),
        config=config["deepspeed"], dist_init_required=False,
    )
    skip_lone_allreduce(engine, config, world_size)
    named = [(name, p) for name, p in job.model.named_parameters() if p.requires_grad]
    if job.resume:
        for name, p in named:
            optimizer.state[p] = resume.optimizer_state(job.resume, name, p)
    t_first = time.time()
    snapshot = lambda step: _save(engine.module, job, config, rank, os.path.join(out, "checkpoints", f"step{step}"))  # noqa: E731
    curve, tokens, evals = _run_steps(engine, job, config, snapshot, rank)
    for row in evals:
        row["tokens"] *= world_size  # tokens of the whole run up to that length, all ranks
    train_s = time.time() - t_first - sum(e["eval_s"] for e in evals)
    if job.keep_state and rank == 0:
        resume.save(resume.job_state([n for n, _ in named], [p for _, p in named],
                                     [resume.per_weight(optimizer, p) for _, p in named], *job.so_far(curve, tokens)),
                    job.keep_state)
    _save(engine.module, job, config, rank, out, {"loss": curve, "train_s": train_s, "train_tokens": tokens * world_size, **loaded})
    return {"train_s": train_s, "engine_s": t_first - t_built, "train_tokens": tokens * world_size,
            "final_loss": curve[-1] if curve else float("nan"), "loaded": loaded, "device": str(engine.device),
            "evals": evals, "resumed": job.start > 0}


def skip_lone_allreduce(engine, config: dict, world_size: int) -> None:
    """One rank under ZeRO-0: DeepSpeed would still flatten every gradient into buckets, all-reduce
    them over that one rank and copy them back after each backward (a quarter of a stacked world-l
    step); averaging over one rank changes nothing, so it is skipped."""
    if world_size == 1 and config["train"]["zero_stage"] == 0:
        engine.enable_backward_allreduce = False


def _save(module, job: TrainJob, config: dict, rank: int, out: str, curve: dict | None = None) -> None:
    """Rank 0 saves the job's weights (gathered from every rank under ZeRO-3) and its loss curve."""
    import deepspeed

    stage3 = config["train"]["zero_stage"] == 3
    with deepspeed.zero.GatheredParameters(list(module.parameters()), enabled=stage3):  # every rank joins
        if rank == 0 and job.save is not None:
            os.makedirs(out, exist_ok=True)
            job.save(module, out)
            if curve is not None:
                with open(os.path.join(out, "train_curve.json"), "w") as f:
                    json.dump(curve, f)


def _peak_rss_mb() -> float:
    """This worker's peak resident host memory so far (Linux reports KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _run_steps(engine, job: TrainJob, config: dict, snapshot=None, rank: int = 0) -> tuple[list[float], int, list[dict]]:
    import torch

    from fsv.train.steps import reporter

    device, tick = engine.device, reporter(config, rank, job.steps)
    curve, tokens, evals = [], 0, []
    for step, batch in zip(range(job.start + 1, job.steps + 1), job.batches):
        batch = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
        loss = job.objective(engine, batch) if job.objective else engine(**batch).loss
        engine.backward(loss)
        engine.step()
        curve.append(_mean_over_ranks(loss.detach()))
        tokens += job.tokens_per_batch(batch)
        if step in job.save_at and snapshot is not None:
            snapshot(step)
        if step in job.eval_at and job.evaluate is not None:
            evals += _evaluate(engine.module, job, step, *job.so_far(curve, tokens))
        tick(step)
    return curve, tokens, evals


def _evaluate(module, job: TrainJob, step: int, curve: list[float], tokens: int) -> list[dict]:
    """The job's measures after `step` steps: a run of that length, read without a second run. Every
    rank evaluates (under ZeRO-3 each forward needs them all); rank 0's rows are the ones kept."""
    import torch

    t0 = time.time()
    module.eval()
    with torch.no_grad():
        rows = job.evaluate(module)
    module.train()
    recent = curve[-max(1, len(curve) // 10):]  # the loss over the last tenth of the steps: less noisy than one batch
    spent = time.time() - t0
    return [{**job.tags, **row, "steps": step, "train_loss": sum(recent) / len(recent), "tokens": tokens,
             "eval_s": spent / max(1, len(rows))} for row in rows]


def _mean_over_ranks(loss, each: bool = False):
    """The loss averaged over ranks: a float, or a list of floats for a tensor of losses (`each`)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        loss = loss.clone()
        dist.all_reduce(loss)
        loss /= dist.get_world_size()
    return loss.tolist() if each else float(loss)
