"""One DPO policy of the default study's first rlhf selection trial (study/quick.yaml: 32 pairs,
its longest length, evaluated at each length), trained by trl's `DPOTrainer` in ONE process two
ways from the same model:
- baseline: trl's defaults as fsv used them before -- activations recomputed in backward
  (`gradient_checkpointing`, trl's default), a second (reference) model run forward at every step,
  a metrics line printed every step, and accelerate reading package metadata on every backward;
- fsv: `fsv.regimes.rlhf.one_policy` as the study runs it (no recomputation, the reference's
  log-probabilities computed once before training, no printing, package checks kept).
Reports each path's seconds (median of `--rounds`, the two interleaved), their ratio, and the largest
difference between the two paths' training losses, held-out accuracies and reward margins (the same
DPO objective: they should agree to rounding).

    python benchmarks/dpo_policy.py [--models world-xs world-l] [--rounds 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import TRAIN  # noqa: E402


def trial_config(study, model_path: str, world: dict) -> dict:
    """The worker's config for the study's first DPO selection trial (the middle rate)."""
    section = study.regimes.rlhf
    rate = section.lr[len(section.lr) // 2]
    return {"model_path": model_path, "world": world, "seed": 0, "lengths": list(section.steps), "batch": section.batch,
            "warmup": section.warmup, "hparams": {"lr": rate, "beta": section.beta[0]}, "method": "dpo",
            "noise": section.noise, "start": "base", "train": {**TRAIN, "keep_models": False}, "keep_models": False}


def baseline_policy(config: dict, n: int, seed: int, out: str, micro: int) -> tuple[list[dict], float]:
    """The policy as fsv trained it before: trl's defaults, an explicit reference model."""
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config
    from trl import DPOTrainer

    import accelerate.utils.imports as imports
    from fsv.models.load import load_causal_lm
    from fsv.regimes.rlhf import evaluating_callback, policy_measures, preference_data, trainer_args

    cached = imports._is_package_available
    imports._is_package_available = getattr(cached, "__wrapped__", cached)  # metadata read on every call
    try:
        args = dataclasses.replace(trainer_args(config, out, micro, seed), gradient_checkpointing=True,
                                   precompute_ref_log_probs=False)
        policy, tokenizer = load_causal_lm(config["model_path"])
        reference = load_causal_lm(config["model_path"])[0]
        evaluator = evaluating_callback(set(config["lengths"]), policy_measures(config, tokenizer))
        t0 = time.perf_counter()
        trainer = DPOTrainer(model=policy, ref_model=reference, args=args, processing_class=tokenizer,
                             train_dataset=preference_data(config, n, seed), callbacks=[evaluator],
                             eval_dataset=preference_data(config, 64, seed + 10_000))
        evaluator.trainer = trainer
        trainer.train()
        margin = trainer.evaluate()["eval_rewards/margins"]
        return [{**r, "reward_margin": margin} for r in evaluator.rows], time.perf_counter() - t0
    finally:
        unset_hf_deepspeed_config()
        imports._is_package_available = cached


def fsv_policy(config: dict, n: int, seed: int, out: str, micro: int) -> tuple[list[dict], float]:
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    from fsv.regimes.rlhf import one_policy

    t0 = time.perf_counter()
    try:
        rows = one_policy(config, n, seed, out, micro)[0]
    finally:
        unset_hf_deepspeed_config()
    return rows, time.perf_counter() - t0


def largest_difference(a: list[dict], b: list[dict], key: str) -> float:
    return max(abs(x[key] - y[key]) for x, y in zip(a, b, strict=True))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--study", default="study/quick.yaml")
    parser.add_argument("--models", nargs="+", default=["world-xs", "world-l"])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="29534", RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    import torch
    import torch.distributed as dist

    from fsv.config import load_study
    from fsv.models.load import pretrain_config
    from fsv.models.tokenizer import world_tokenizer
    from fsv.train.pretrain import build
    from fsv.world import World, WorldConfig, preset

    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=0, world_size=1)  # DeepSpeed's engine needs a process group
    study = load_study(args.study)
    world = preset(study.world.preset, seed=study.world.seed).model_dump()
    n = study.regimes.rlhf.n[0]
    for name in args.models:
        path = tempfile.mkdtemp(prefix=f"{name}-")
        pretrain = study.pretrain.model_dump(exclude={"seeds", "checkpoints"})
        build(pretrain_config(name, world, pretrain, 0), 0, 1).model.save_pretrained(path)
        world_tokenizer(World(WorldConfig(**world))).save_pretrained(path)  # an unpretrained model: same cost a step
        config = trial_config(study, path, world)
        micro = config["batch"]
        fsv_policy(config, n, 0, tempfile.mkdtemp(), micro)  # warm-up: first engine, first datasets
        times = {"baseline": [], "fsv": []}
        for _ in range(args.rounds):
            base_rows, base_s = baseline_policy(config, n, 0, tempfile.mkdtemp(), micro)
            rows, fsv_s = fsv_policy(config, n, 0, tempfile.mkdtemp(), micro)
            times["baseline"].append(base_s)
            times["fsv"].append(fsv_s)
        base_s, fsv_s = statistics.median(times["baseline"]), statistics.median(times["fsv"])
        print(json.dumps({
            "model": name, "pairs": n, "steps": max(config["lengths"]), "baseline_s": round(base_s, 2),
            "fsv_s": round(fsv_s, 2), "ratio": round(base_s / fsv_s, 2),
            **{f"max_{key}_diff": float(f"{largest_difference(base_rows, rows, key):.2g}")
               for key in ("train_loss", "accuracy", "reward_margin")}}), flush=True)


if __name__ == "__main__":
    main()
