"""The ladder on a harder world, on one GPU: does size still separate in-context learning there?

Each (size, pretraining seed) pretrains exactly as in a study -- the job `fsv.train.pretrain.build`
makes (same model, corpus and weighted label loss), the size's own peak rate and the study's
warm-up / stable / decay schedule (`fsv.train.worker.lr_factor`) -- but in a plain PyTorch loop with
bf16 autocast, each in a process of its own, all at once on the one GPU (a tiny model leaves most of
a GPU idle; the lent GPU machine has no Ray, whose wheel does not travel there). Then every model is
scored with the study's scorer (`fsv.evaluate.evaluate_world`) on the held-out tasks at each k,
against the Bayes-optimal accuracy of the same world.

    python benchmarks/gpu_ladder.py --preset hard --steps 3000 --batch 128 --seeds 0 1 --out ladder.jsonl

Prints one JSON line per (size, seed) and a table of the mean over seeds; runs on CPU too (slowly).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

KS = (1, 2, 4, 8, 16, 32)


def pretrain_and_score(name: str, seed: int, args: argparse.Namespace) -> dict:
    import torch

    from fsv.config import PretrainSection
    from fsv.models.load import pretrain_config
    from fsv.train.pretrain import build, weighted_label_loss
    from fsv.train.worker import adamw, lr_factor

    device = "cuda" if torch.cuda.is_available() else "cpu"
    world = _world(args)
    pretrain = PretrainSection(steps=args.steps, batch=args.batch).model_dump(exclude={"seeds"})
    config = pretrain_config(name, world.config.model_dump(), pretrain, seed)
    job = build(config, 0, 1)
    model = job.model.to(device)
    opt = adamw(model.parameters(), config["lr"], config["train"]["weight_decay"])
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(job, step))
    curve, t0 = [], time.time()
    for step, batch in zip(range(job.steps), job.batches):
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
            loss = weighted_label_loss(model, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config["train"]["grad_clip"])
        opt.step()
        schedule.step()
        opt.zero_grad(set_to_none=True)
        if (step + 1) % 250 == 0:
            curve.append(round(float(loss.detach()), 4))
    train_s, t1 = time.time() - t0, time.time()
    scores = _scores(model.eval(), world)
    return {"model": name, "seed": seed, "params": sum(p.numel() for p in model.parameters()), "lr": config["lr"],
            "train_s": round(train_s, 1), "eval_s": round(time.time() - t1, 1),
            "device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "loss_every_250": curve, **scores}


def _world(args: argparse.Namespace):
    from fsv.world import World, preset

    return World(preset(args.preset, seed=args.world_seed))


def _scores(model, world) -> dict:
    import torch

    from fsv.evaluate import evaluate_world

    tasks = world.heldout_tasks
    with torch.no_grad():
        acc = {f"k{k}": evaluate_world(model, world, tasks, k, "none").accuracy for k in (0, *KS)}
        zero = {f"zero_shot_{v}": evaluate_world(model, world, tasks, 0, v).accuracy for v in ("model", "human")}
    return {**acc, **zero}


def _bayes(world) -> dict:
    from fsv.world.bayes import bayes_accuracy

    t0 = time.time()
    bayes = {k: float(bayes_accuracy(world, k)[0]) for k in KS}
    print(f"Bayes accuracy in {time.time() - t0:.0f} s", file=sys.stderr)
    return bayes


def _run(job: tuple) -> dict:
    return pretrain_and_score(*job)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="hard")
    parser.add_argument("--world-seed", type=int, default=0)
    parser.add_argument("--models", nargs="+", default=["world-xs", "world-s", "world-m", "world-l", "world-xl", "world-xxl"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--out", default=None, help="also write the JSON lines here, each as its model finishes")
    parser.add_argument("--no-bayes", action="store_true", help="skip the Bayes-optimal reference (minutes of CPU "
                        "on the larger worlds); efficiency is then left out")
    args = parser.parse_args()
    jobs = [(name, seed, args) for name in args.models for seed in args.seeds]
    t0 = time.time()
    out = open(args.out, "w") if args.out else None
    world = _world(args)
    with multiprocessing.get_context("spawn").Pool(len(jobs)) as pool:
        pending = pool.imap_unordered(_run, jobs)
        bayes = {} if args.no_bayes else _bayes(world)  # on the CPU while the models train
        rows = []
        for row in pending:
            _efficiency(row, bayes, chance=1 / world.config.n_values)
            rows.append(row)
            print(json.dumps(row), flush=True)
            if out:
                out.write(json.dumps(row) + "\n")
                out.flush()
    summary = json.dumps({"bayes": bayes, "wall_s": round(time.time() - t0)})
    print(summary)
    if out:
        out.write(summary + "\n")
        out.close()
    _table(rows, bayes, args)


def _efficiency(row: dict, bayes: dict, chance: float) -> None:
    """ICL efficiency at the largest k: accuracy gain over chance / Bayes-optimal gain over chance."""
    kmax = max(KS)
    if bayes:
        row["icl_efficiency"] = round((row[f"k{kmax}"] - chance) / (bayes[kmax] - chance), 3)


def _table(rows: list[dict], bayes: dict, args: argparse.Namespace) -> None:
    import pandas as pd

    frame = pd.DataFrame(rows)
    cols = ["params", *(f"k{k}" for k in (0, *KS)), "icl_efficiency", "zero_shot_model", "zero_shot_human", "train_s"]
    table = frame.groupby("model")[[c for c in cols if c in frame]].mean().round(3).sort_values("params")
    print(f"\n{args.preset} world, {args.steps} steps x {args.batch} documents, mean over seeds {args.seeds}; "
          "Bayes: " + (", ".join(f"k={k} {v:.3f}" for k, v in bayes.items()) or "not computed"))
    print(table.to_string())


if __name__ == "__main__":
    main()
