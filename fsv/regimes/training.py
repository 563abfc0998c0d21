"""What the training regimes share: the training data of the world, the launch of the cell's
`TorchTrainer`, and the record fields every training trial writes."""

from __future__ import annotations

import json
import time
from typing import Iterator

import numpy as np

from fsv.train.worker import TrainJob
from fsv.world import Task, World, WorldConfig


def draw_examples(world: World, task: Task, n: int, seed: int) -> np.ndarray:
    """n training examples (symbols) of `task`, from its training symbols only: the test symbols
    stay unseen, so accuracy on them measures generalisation, never memory."""
    rng = np.random.default_rng([seed, n, 31337, world.tasks.index(task)])
    return rng.choice(world.train_symbols, size=n)


def per_task_jobs(config: dict, make_job) -> Iterator[TrainJob]:
    """A single-task regime on the world adapts one copy of the model to *each* held-out task,
    from n examples of that task, one after another in the same Ray Train job. Accuracy then
    comes from every held-out task's test symbols (64 queries in the quick world, not one task's
    8), and one trial's fixed cost serves all of them. `make_job(world, task, symbols)` builds one."""
    world = World(WorldConfig(**config["world"]))
    for task in world.heldout_tasks:
        job = make_job(world, task, draw_examples(world, task, config["n"], config["seed"]))
        job.name = task.name
        yield job


def evaluate_per_task(load_trained, cell: dict, ctx) -> dict:
    """Zero-shot accuracy of each per-task model (`load_trained(task)`) on its own task's test
    symbols, pooled over the held-out tasks; the per-task accuracies go into the record too."""
    from fsv.evaluate import evaluate_world

    per_task, correct, total = {}, 0.0, 0
    for task in ctx.world.heldout_tasks:
        res = evaluate_world(load_trained(task), ctx.world, [task], k=0, variant="none", seed=cell["seed"])
        per_task[task.name] = res.accuracy
        correct, total = correct + res.accuracy * res.n_eval, total + res.n_eval
    return {"accuracy": correct / total, "n_eval": total, "chance": res.chance, "acc_none": correct / total,
            "task_accuracy": json.dumps(per_task)}


def sequences(world: World, task: Task, symbols: np.ndarray, layout: str, description: str,
              rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` training sequences: `single` = one example per sequence; `packed` = examples drawn
    from the n, packed to the context length like a pretraining document. Loss on labels only."""
    desc = world.description(task, description)
    width = world.example_width
    per_seq = 1 if layout == "single" else max(1, (world.config.context - 1 - len(desc)) // width)
    length = 1 + len(desc) + width * per_seq
    ids = np.full((count, length), world.ids["<pad>"], dtype=np.int64)
    labels = np.full((count, length), -100, dtype=np.int64)
    start = 1 + len(desc)
    for i in range(count):
        body = world.examples(task, rng.choice(symbols, size=per_seq))
        ids[i, 0], ids[i, 1:start] = world.ids["<bos>"], desc
        ids[i, start:] = body.reshape(-1)
        labels[i, start + width - 1 :: width] = body[:, -1]
    return ids, labels


def train_cell(cell: dict, ctx, job: str | None = None, loop: str | None = None, **extra) -> tuple[str, dict]:
    """Run the cell's training under Ray Train + DeepSpeed -- a `TrainJob` builder (`job`) in the
    shared DeepSpeed engine loop, or a per-worker loop of its own (`loop`, e.g. trl's trainers) --
    and return (model dir, metrics)."""
    from fsv.train.launch import fit

    s = cell["settings"]
    config = {
        "job": job, "model_path": ctx.model_path, "world": ctx.world_config, "seed": cell["seed"],
        "n": cell["n"], "steps": s["steps"], "batch": s["batch"], "lr": s["lr"], "train": cell["train"],
        "trust_remote_code": ctx.trust_remote_code,
        **({"loop": loop} if loop else {}), **extra,
    }
    out = ctx.scratch / "trained"
    t0 = time.time()
    metrics = fit(config, ctx.train_storage, f"{cell['cell_id']}-{ctx.attempt}", out)
    metrics["fit_s"] = time.time() - t0
    return str(out), metrics


def evaluate_text_target(model, tokenizer, cell: dict, ctx) -> dict:
    """Zero-shot accuracy of a model trained on a text task, on that task's test split."""
    from fsv.hf_eval import evaluate_text

    res = evaluate_text(model, tokenizer, ctx.text_task, ctx.text_splits, k=0, variant="none",
                        seed=cell["seed"], max_eval=cell.get("max_eval"))
    return {"accuracy": res.accuracy, "n_eval": res.n_eval, "chance": res.chance, "acc_none": res.accuracy,
            "accuracy_norm": res.accuracy_norm}


def training_fields(cell: dict, params: int, metrics: dict, eval_s: float) -> dict:
    tokens = int(metrics["train_tokens"]) // int(metrics.get("jobs", 1))  # per adaptation (per task)
    return {
        "model_params": params, "train_examples": cell["n"] * (cell.get("tasks_trained") or 1),
        "train_tokens": tokens, "train_flops": 6.0 * params * tokens,
        "final_train_loss": float(metrics["final_train_loss"]), "train_s": float(metrics["train_s"]),
        "eval_s": eval_s, "device": metrics["device"],
    }


def saver(tokenizer=None):
    """save(module, dir) for rank 0: the full weights as safetensors, and the tokenizer if given."""
    def save(module, out: str) -> None:
        module.save_pretrained(out, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(out)

    return save


def label_rows(tokenizer, task, examples, variant: str) -> list[tuple[list[int], list[int]]]:
    """(input ids, labels) per example: the zero-shot prompt (description `variant`, no
    demonstrations) followed by the label word; loss on the label word's tokens only."""
    from fsv.hf_eval import label_token_ids

    words = label_token_ids(tokenizer, task)
    rows = []
    for ex in examples:
        prompt = tokenizer(task.prompt([], ex.fields, variant)).input_ids
        rows.append((prompt + words[ex.label], [-100] * len(prompt) + words[ex.label]))
    return rows


def padded_batches(rows: list, tokenizer, rng: np.random.Generator, size: int):
    """Endless right-padded batches of `size` rows drawn with replacement."""
    import torch

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    while True:
        chosen = [rows[i] for i in rng.integers(len(rows), size=size)]
        width = max(len(ids) for ids, _ in chosen)
        ids = torch.full((size, width), pad, dtype=torch.long)
        labels = torch.full((size, width), -100, dtype=torch.long)
        mask = torch.zeros((size, width), dtype=torch.long)
        for i, (x, y) in enumerate(chosen):
            ids[i, : len(x)], labels[i, : len(y)], mask[i, : len(x)] = torch.tensor(x), torch.tensor(y), 1
        yield {"input_ids": ids, "labels": labels, "attention_mask": mask}


def text_batches(config: dict, tokenizer, rank: int, world_size: int):
    """Batches of a text task's n training examples (never test rows): the prompt without
    demonstrations, then the label word; loss on the label word's tokens; right-padded."""
    from fsv.tasks import draw_train, get_task, load_splits

    task = get_task(config["task"])
    examples = draw_train(load_splits(task, config.get("task_source")), config["n"], config["seed"])
    rng = np.random.default_rng([config["seed"], rank, 12])
    return padded_batches(label_rows(tokenizer, task, examples, "none"), tokenizer, rng,
                          max(1, config["batch"] // world_size))
