"""A selection trial's adaptations trained one at a time against the same adaptations trained as one
stack (`fsv.train.stacked`), in ONE process, under the same DeepSpeed engine settings, from the same
model, on a trial as the default study runs it (study/quick.yaml: its n levels, seeds, held-out
tasks and longest length). Reports the training seconds of each path, their ratio, the seconds of
the whole trial (evaluations included) and the largest difference between the two paths' training
losses and label log-likelihoods at the shortest and the longest length (two float orderings of one
run agree to rounding at first and can drift apart over a long run at a high rate, as a change of
thread count would make them).

    python benchmarks/stacked_trial.py [--models world-xs world-l] [--regimes sft prompt_tuning]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import TRAIN  # noqa: E402


def one_rank(port: int) -> None:
    """This process as the one rank of a gloo process group (DeepSpeed's engine needs one), torch on
    one thread as a trial's worker runs."""
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=0, world_size=1)


def unpretrained_model(study, name: str, world: dict) -> str:
    """A folder holding ladder model `name` as the study builds it, unpretrained (the same cost a
    step as a pretrained one), with the world's tokenizer."""
    from fsv.models.load import pretrain_config
    from fsv.models.tokenizer import world_tokenizer
    from fsv.train.pretrain import build
    from fsv.world import World, WorldConfig

    path = tempfile.mkdtemp(prefix=f"{name}-")
    pretrain = study.pretrain.model_dump(exclude={"seeds", "checkpoints"})
    build(pretrain_config(name, world, pretrain, 0), 0, 1).model.save_pretrained(path)
    world_tokenizer(World(WorldConfig(**world))).save_pretrained(path)
    return path


def trial_config(study, regime: str, model_path: str, world: dict) -> dict:
    """The config `fsv.regimes.training.train_cell` gives the worker for `regime`'s first selection
    trial in `study` (its settings; the rate is the middle of its list)."""
    section = getattr(study.regimes, regime)
    rates = section.lr
    return {"model_path": model_path, "world": world, "seed": 0, "n_levels": list(section.n),
            "seeds": list(study.seeds), "lengths": list(section.steps), "batch": section.batch,
            "warmup": section.warmup, "hparams": {"lr": rates[len(rates) // 2]}, "lr": rates[len(rates) // 2],
            "train": {**TRAIN, "keep_models": False}, "keep_models": False, "task": "world", "method": "full",
            "layout": "single", "prompt_tokens": 4, "tasks_trained": 32, "max_eval": None}


def trial_configs(study_path: str, models: list[str], regimes: list[str]):
    """(model, regime, config) of each regime's first selection trial on each unpretrained model."""
    from fsv.config import load_study
    from fsv.world import preset

    study = load_study(study_path)
    world = preset(study.world.preset, seed=study.world.seed).model_dump()
    for name in models:
        path = unpretrained_model(study, name, world)
        for regime in regimes:
            yield name, regime, trial_config(study, regime, path, world)


def run_trial(regime: str, config: dict, stack: int | None) -> tuple[float, float, list[dict]]:
    """(training seconds, whole seconds, evaluation rows) of the trial's jobs through the worker's
    own grouping: `stack` 1 trains them one at a time, None in stacks of the default size."""
    import importlib

    from fsv.train.worker import deepspeed_config, train_jobs

    config = {**config, "train": {**config["train"], "stack": stack}}
    config["deepspeed"] = deepspeed_config(config["train"], config["batch"])
    jobs = importlib.import_module(f"fsv.regimes.{regime}").build_job(config, 0, 1)
    t0 = time.perf_counter()
    done, _ = train_jobs(jobs, config, 0, 1, tempfile.mkdtemp())
    return sum(d["train_s"] for d in done), time.perf_counter() - t0, [r for d in done for r in d["evals"]]


def largest_difference(a: list[dict], b: list[dict], key: str, relative: bool, steps: int) -> float:
    """The largest difference in `key` between the two paths' rows after `steps` steps."""
    pairs = [(x, y) for x, y in zip(a, b, strict=True) if x["steps"] == steps]
    return max(abs(x[key] - y[key]) / (abs(x[key]) if relative else 1.0) for x, y in pairs)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--study", default="study/quick.yaml")
    parser.add_argument("--models", nargs="+", default=["world-xs", "world-s", "world-m", "world-l"])
    parser.add_argument("--regimes", nargs="+", default=["sft", "prompt_tuning", "instruction_tuning"])
    args = parser.parse_args()
    one_rank(29533)
    for name, regime, config in trial_configs(args.study, args.models, args.regimes):
        one_s, one_wall, one = run_trial(regime, config, stack=1)
        stack_s, stack_wall, rows = run_trial(regime, config, stack=None)
        print(json.dumps({
            "model": name, "regime": regime, "jobs": len({(r["n"], r["seed"], r["task"]) for r in rows}),
            "steps": max(config["lengths"]), "one_at_a_time_train_s": round(one_s, 2), "stacked_train_s": round(stack_s, 2),
            "train_ratio": round(one_s / stack_s, 2), "one_at_a_time_trial_s": round(one_wall, 2),
            "stacked_trial_s": round(stack_wall, 2), "trial_ratio": round(one_wall / stack_wall, 2),
            **{f"max_{name}_diff_at_{steps}": float(f"{largest_difference(one, rows, key, rel, steps):.2g}")
               for steps in (min(config["lengths"]), max(config["lengths"]))
               for name, key, rel in (("rel_loss", "train_loss", True), ("logprob", "label_logprob", False))}}),
              flush=True)


if __name__ == "__main__":
    main()
