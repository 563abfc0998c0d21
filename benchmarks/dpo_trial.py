"""The default study's first DPO selection trial (study/quick.yaml: every seed's policy on its 32
pairs, its longest length, evaluated at each length) trained in ONE process three ways from the
same model, under the same DeepSpeed engine settings:
- trl: one `DPOTrainer` a policy, as `fsv.regimes.rlhf.train_loop_per_worker` runs them;
- one at a time: the shared loop with trl's loss (`fsv.regimes.dpo`), a policy at a time;
- stacked: the same jobs as one stack (`fsv.train.stacked`), as the study runs them.
Reports each path's seconds for the whole trial (evaluations included), the ratios to trl, and the
trained policies' final losses and reward margins per path (the shared loop draws its batches in its
own order, so its losses match trl's in distribution, not step by step; tests/test_dpo.py checks
equality where the orders agree).

    python benchmarks/dpo_trial.py [--models world-xs world-l]
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

from benchmarks.dpo_policy import trial_config as policy_config  # noqa: E402
from benchmarks.stacked_trial import run_trial  # noqa: E402


def trial_config(study, model_path: str, world: dict) -> dict:
    section = study.regimes.rlhf
    config = policy_config(study, model_path, world)
    return {**config, "n_levels": list(section.n), "seeds": list(study.seeds), "lr": config["hparams"]["lr"],
            "task": "world", "max_eval": None}


def trl_trial(config: dict) -> tuple[float, list[dict]]:
    """(seconds, rows) of the trial's policies, one trl `DPOTrainer` each."""
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    from fsv.regimes.rlhf import one_policy

    rows, t0 = [], time.perf_counter()
    for n in config["n_levels"]:
        for seed in config["seeds"]:
            try:
                rows += one_policy(config, n, seed, tempfile.mkdtemp(), config["batch"])[0]
            finally:
                unset_hf_deepspeed_config()
    return time.perf_counter() - t0, rows


def summary(rows: list[dict], longest: int) -> dict:
    last = [r for r in rows if r["steps"] == longest]
    margins = [r["reward_margin"] for r in last if r.get("reward_margin") is not None]
    return {"final_train_loss": round(sum(r["train_loss"] for r in last) / len(last), 4),
            "reward_margin": round(sum(margins) / len(margins), 4)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--study", default="study/quick.yaml")
    parser.add_argument("--models", nargs="+", default=["world-xs", "world-l"])
    args = parser.parse_args()
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="29535", RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    import torch
    import torch.distributed as dist

    from fsv.config import load_study
    from fsv.models.load import pretrain_config
    from fsv.models.tokenizer import world_tokenizer
    from fsv.regimes.rlhf import cache_package_checks
    from fsv.train.pretrain import build
    from fsv.world import World, WorldConfig, preset

    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=0, world_size=1)  # DeepSpeed's engine needs a process group
    cache_package_checks()
    study = load_study(args.study)
    world = preset(study.world.preset, seed=study.world.seed).model_dump()
    for name in args.models:
        path = tempfile.mkdtemp(prefix=f"{name}-")
        pretrain = study.pretrain.model_dump(exclude={"seeds", "checkpoints"})
        build(pretrain_config(name, world, pretrain, 0), 0, 1).model.save_pretrained(path)
        world_tokenizer(World(WorldConfig(**world))).save_pretrained(path)  # an unpretrained model: same cost a step
        config = trial_config(study, path, world)
        longest = max(config["lengths"])
        run_trial("dpo", {**config, "seeds": config["seeds"][:1]}, stack=1)  # warm-up: first engine
        trl_s, trl_rows = trl_trial(config)
        _, one_s, one_rows = run_trial("dpo", config, stack=1)
        _, stack_s, stack_rows = run_trial("dpo", config, stack=None)
        print(json.dumps({
            "model": name, "policies": len(config["n_levels"]) * len(config["seeds"]), "steps": longest,
            "trl_trial_s": round(trl_s, 2), "one_at_a_time_trial_s": round(one_s, 2), "stacked_trial_s": round(stack_s, 2),
            "one_at_a_time_ratio": round(trl_s / one_s, 2), "stacked_ratio": round(trl_s / stack_s, 2),
            "trl": summary(trl_rows, longest), "one_at_a_time": summary(one_rows, longest),
            "stacked": summary(stack_rows, longest)}), flush=True)


if __name__ == "__main__":
    main()
