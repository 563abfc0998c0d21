"""What the training regimes share: a selection trial's jobs (every n level, seed and task of one
hyperparameter configuration, each evaluated at every training length inside its one run), the
training data, the launch of the cell's `TorchTrainer`, and the fields a selection record holds.

A training regime is measured at its best. One trial = one configuration of its hyperparameters on
one model instance; inside it, one adaptation per (n, seed, task), nested in n (the examples at n
are the first n of the examples at 2n). Each adaptation is evaluated after each training length
(`steps`), on the tasks it can be scored on: on the world, the held-out tasks' test symbols, which
cross-fitting later splits into validation and scored halves (`fsv/search/select.py`); on text, a
dev split carved from the train split (validation) and the test split (scored). The trial records
its curves; which configuration and length count for a scored cell is decided afterwards, on
validation rows only.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import replace
from typing import Callable, Iterator

import numpy as np

from fsv.train.worker import TrainJob
from fsv.world import Task, World, WorldConfig

DEV_SIZE = 64  # text tasks: validation examples carved from the train split, never trained on


def draw_examples(world: World, task: Task, n: int, seed: int) -> np.ndarray:
    """n training examples (symbols) of `task`, from its training symbols only (the test symbols
    stay unseen, so accuracy on them measures generalisation). Nested: the first n of one seeded
    order, which runs through every training symbol once before any repeats, so n examples hold
    min(n, number of training symbols) distinct inputs."""
    rng = np.random.default_rng([seed, 31337, world.tasks.index(task)])
    rounds = -(-n // len(world.train_symbols))
    order = np.concatenate([rng.permutation(world.train_symbols) for _ in range(rounds)])
    return order[:n]


def fold_of(task: Task) -> str:
    """The cross-fitting fold of a held-out world task: the feature it reads. The tasks of one
    feature choose the hyperparameters scored on the other's, and back."""
    return f"f{task.feature}"


def fresh_models(config: dict, load: Callable) -> Callable[[], object]:
    """A fresh copy of the base model for each adaptation: loaded once and copied (ZeRO 0-2), or
    loaded again each time under ZeRO-3, where every rank holds only its partition."""
    import copy

    if config["train"]["zero_stage"] == 3:
        return load
    base = load()
    return lambda: copy.deepcopy(base)


def frozen_base(config: dict, load: Callable) -> Callable[[], object]:
    """The base model itself for every adaptation that leaves it frozen and trains weights of its
    own around it (a soft prompt): loaded once and shared, not copied -- a world-l prompt-tuning
    stack of 120 jobs held 120 copies (0.5 GB) of weights no job changes. Under ZeRO-3 loaded again
    each time, as `fresh_models` does (an engine partitions and frees the module it was given)."""
    if config["train"]["zero_stage"] == 3:
        return load
    base = load()
    return lambda: base


def adaptations(config: dict, tasks: list, make_job: Callable, evaluate: Callable | None) -> Iterator[TrainJob]:
    """One job per (n, seed, task) of the trial, built lazily (one model in memory at a time).
    `make_job(task, n, seed)` builds it; `evaluate(task)` returns its measures function (None: the
    job's own, set by `make_job`)."""
    from fsv.train import resume

    start = config.get("resume_at", 0)  # a longer run's first steps are a shorter run's: evaluated there already
    for n in config["n_levels"]:
        for seed in config["seeds"]:
            for task in tasks:
                job = make_job(task, n, seed)
                job.steps, job.eval_at = max(config["lengths"]), tuple(L for L in config["lengths"] if L > start)
                job.evaluate = evaluate(task) if evaluate is not None else job.evaluate
                job.lr_schedule, job.warmup = "constant", config.get("warmup", 0.0)
                job.warmup_steps = config.get("warmup_steps")
                job.save = job.save if config.get("keep_models") else None
                job.name = f"n{n}-s{seed}-{getattr(task, 'name', task)}"
                job.tags = {"task": getattr(task, "name", task), "n": n, "seed": seed, **job.tags}
                if config.get("state_in"):
                    job.resume = resume.go_on(job, config)
                if config.get("state_out") and resume.resumable(job, config):
                    job.keep_state = resume.state_file(config["state_out"], job.name)
                yield job


def world_measures(model, world: World, tasks: list[Task], variants=("none",)) -> list[dict]:
    """Zero-shot accuracy and the correct label's mean log-likelihood on each task's test symbols,
    with each description variant (the first is the main one)."""
    from fsv.evaluate import world_prompts
    from fsv.scoring import score_choices

    rows = []
    for task in tasks:
        row = {"task": task.name, "split": "test"}
        for variant in variants:
            prompts, truth, _ = world_prompts(world, [task], 0, variant, 0, 1)
            loglik, _ = score_choices(model, prompts, [[i] for i in world.label_ids], pad_id=world.ids["<pad>"])
            acc = float((loglik.argmax(axis=1) == truth).mean())
            row[f"acc_{variant}"] = acc
            if variant == variants[0]:
                row.update(accuracy=acc, label_logprob=float(loglik[np.arange(len(truth)), truth].mean()),
                           n_eval=len(truth))
        rows.append(row)
    return rows


def world_jobs(config: dict, make_model: Callable, batch_sequences: Callable, rank: int) -> Iterator[TrainJob]:
    """sft and prompt tuning on the world: one adaptation per held-out task, n and seed, each from
    n nested examples of its task; `batch_sequences(world, task, symbols, rng)` gives (ids, labels)."""
    import torch

    world = World(WorldConfig(**config["world"]))

    def make_job(task, n, seed):
        symbols = draw_examples(world, task, n, seed)
        rng = np.random.default_rng([seed, rank, 2, world.tasks.index(task)])
        torch.manual_seed(seed)  # a soft prompt's or adapter's initial values, the same on every rank

        def batches():
            while True:
                ids, labels = batch_sequences(world, task, symbols, rng)
                yield {"input_ids": torch.from_numpy(ids), "labels": torch.from_numpy(labels)}

        return TrainJob(model=make_model(), batches=batches(), steps=0, save=saver(),
                        tags={"n_distinct": len(set(symbols.tolist())), "fold": fold_of(task)})

    return adaptations(config, world.heldout_tasks, make_job, lambda task: lambda m: world_measures(m, world, [task]))


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


def train_cell(cell: dict, ctx, job: str | None = None, loop: str | None = None, **extra) -> dict:
    """Run the selection trial's training under Ray Train + DeepSpeed -- a `TrainJob` builder
    (`job`) in the shared DeepSpeed engine loop, or a per-worker loop of its own (`loop`, e.g.
    trl's trainers) -- and return the worker's metrics (its evaluation rows under "evals")."""
    from fsv.train.launch import fit

    s = cell["settings"]
    config = {
        "job": job, "model_path": ctx.model_path, "world": ctx.world_config, "seed": 0, "n_levels": cell["n_levels"],
        "seeds": cell["seeds"], "lengths": s["steps"], "batch": s["batch"], "warmup": s["warmup"],
        "hparams": cell["hparams"], "lr": cell["hparams"]["lr"],
        "train": {**cell["train"], "weight_decay": cell["hparams"].get("weight_decay", 0.0)},
        "trust_remote_code": ctx.trust_remote_code, "keep_models": cell["train"].get("keep_models", False),
        "task": cell["task"], "task_source": cell.get("task_source"), "method": cell.get("method"),
        "max_eval": cell.get("max_eval"),  # text tasks: the cap on test (and dev) queries per evaluation
        **continuation(cell, ctx),
        **({"loop": loop} if loop else {}), **extra,
    }
    out = ctx.scratch / "trained"
    t0 = time.time()
    metrics = fit(config, ctx.train_storage, f"{cell['cell_id']}-{ctx.attempt}", out)
    metrics["fit_s"] = time.time() - t0
    metrics["trained_dir"] = str(out)
    if cell.get("keep_state") and metrics.get("evals"):  # only a level whose best lay at the end may go on
        from fsv.search.select import may_go_on
        from fsv.train import resume

        resume.keep_levels(config["state_out"], may_go_on(json.loads(metrics["evals"])))
    return metrics


def continuation(cell: dict, ctx) -> dict:
    """Where the run keeps its jobs' states for a longer run of it (`keep_state`), and where it goes
    on from a shorter run's (`continues`): folders under the study's storage (`fsv.train.resume`)."""
    out = {"warmup_steps": cell["settings"].get("warmup_steps")}
    if cell.get("keep_state"):
        out["state_out"] = state_dir(ctx.study_dir, cell["cell_id"])
    if cell.get("continues"):
        out |= {"state_in": state_dir(ctx.study_dir, cell["continues"]["trial"]), "resume_at": cell["continues"]["steps"]}
    return out


def state_dir(study_dir: str, trial_id: str) -> str:
    return f"{str(study_dir).rstrip('/')}/state/{trial_id}"


def selection_fields(cell: dict, metrics: dict, chance_loss: float) -> dict:
    """The selection record: the configuration, its curves, and what it cost."""
    from fsv.records import training_flops

    rows = json.loads(metrics["evals"])
    tokens = int(metrics["train_tokens"]) // max(1, int(metrics.get("jobs", 1)))  # one adaptation's, as scored records'
    return {
        "phase": "select", "hparams": json.dumps(cell["hparams"], sort_keys=True), **curve_fields(rows, cell),
        "model_params": int(metrics["params_total"]), "train_loss_chance": chance_loss,
        "train_s": float(metrics["train_s"]), "device": metrics["device"], "precision": metrics.get("precision"),
        "train_tokens": tokens, "train_flops": training_flops(int(metrics["params_total"]), tokens),
        "resumed_jobs": int(metrics.get("resumed_jobs", 0)) if cell.get("continues") else None,
    }


def curve_fields(rows: list[dict], cell: dict) -> dict:
    """Every evaluation row (`curves`; their seconds are summed in `eval_s`, so `curves` repeats
    exactly between runs); the validation curve (mean accuracy over the rows a selection may read --
    every held-out task on the world, each fold choosing for the other; the dev split on text -- and
    over seeds, per n and length); its best length's mean over n (`accuracy`); and the training
    loss at the longest length."""
    curve: dict[str, dict[str, list[float]]] = {}
    for row in rows:
        if row.get("split", "test") == ("dev" if cell["world"] is None else "test"):
            curve.setdefault(str(row["n"]), {}).setdefault(str(row["steps"]), []).append(row["accuracy"])
    val_curve = {n: {L: float(np.mean(v)) for L, v in by_len.items()} for n, by_len in curve.items()}
    longest = max(cell["settings"]["steps"])
    timed = sum(r.get("eval_s", 0.0) for r in rows)  # seconds: kept out of `curves`, which repeats exactly
    rows = [{k: v for k, v in r.items() if k != "eval_s"} for r in rows]
    return {"curves": json.dumps(rows), "val_curve": json.dumps(val_curve), "eval_s": timed,
            "accuracy": float(np.mean([max(v.values()) for v in val_curve.values()])),
            "final_train_loss": float(np.mean([r["train_loss"] for r in rows if r["steps"] == longest]))}


def label_chance(cell: dict, ctx) -> float:
    """ln C: the label loss of a model that spreads its belief evenly over the C labels."""
    if cell["world"] is not None:
        return math.log(ctx.world.config.n_values)
    return math.log(len(ctx.text_task.label_words))


def saver(tokenizer=None):
    """save(module, dir) for rank 0: the full weights as safetensors, and the tokenizer if given."""
    def save(module, out: str) -> None:
        module.save_pretrained(out, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(out)

    return save


# --- text tasks ------------------------------------------------------------------------------


def dev_split(splits):
    """(train pool, dev) of a text task: DEV_SIZE examples carved from its train split by a fixed
    order (the same for every seed), the rest left to draw training examples from."""
    order = np.random.default_rng(4049).permutation(len(splits.train))
    dev_size = min(DEV_SIZE, len(splits.train) // 4)
    dev = [splits.train[i] for i in order[:dev_size]]
    return replace(splits, train=[splits.train[i] for i in sorted(order[dev_size:])]), dev


def text_measures(model, tokenizer, task, splits, dev, max_eval: int | None, variants=("none",)) -> list[dict]:
    """Zero-shot accuracy on the dev split (validation) and the test split (scored), with each
    description variant (the first is the main one)."""
    from fsv.hf_eval import evaluate_text

    rows = []
    for split, scored in (("dev", replace(splits, test=dev)), ("test", splits)):
        row = {"task": task.name, "split": split}
        for variant in variants:
            res = evaluate_text(model, tokenizer, task, scored, k=0, variant=variant, max_eval=max_eval)
            row[f"acc_{variant}"] = res.accuracy
            if variant == variants[0]:
                logp = float(res.loglik[np.arange(len(res.labels)), res.labels].mean())
                row.update(accuracy=res.accuracy, accuracy_norm=res.accuracy_norm, label_logprob=logp, n_eval=res.n_eval)
        rows.append(row)
    return rows


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


def text_jobs(config: dict, make_model: Callable, tokenizer, rank: int, world_size: int) -> Iterator[TrainJob]:
    """sft and prompt tuning on a text task: one adaptation per (n, seed), each from the first n of
    one seeded order of the train pool (nested), the prompt without demonstrations then the label
    word; loss on the label word's tokens; evaluated on dev and test."""
    from fsv.tasks import get_task, load_splits

    task = get_task(config["task"])
    pool, dev = dev_split(load_splits(task, config.get("task_source")))

    def make_job(_, n, seed):
        import torch

        examples = nested_draw(pool, n, seed)
        rng = np.random.default_rng([seed, rank, 12])
        torch.manual_seed(seed)
        batches = padded_batches(label_rows(tokenizer, task, examples, "none"), tokenizer, rng,
                                 max(1, config["batch"] // world_size))
        return TrainJob(model=make_model(), batches=batches, steps=0, save=saver(tokenizer),
                        tokens_per_batch=lambda b: int(b["attention_mask"].sum()),
                        tags={"n_distinct": len({ex.key for ex in examples})})

    measures = lambda _: lambda m: text_measures(m, tokenizer, task, pool, dev, config.get("max_eval"))  # noqa: E731
    return adaptations(config, [task.name], make_job, measures)


def nested_draw(splits, n: int, seed: int) -> list:
    """The first n of one seeded order of the train pool: n examples are within 2n's."""
    from fsv.errors import ConfigError

    if n > len(splits.train):
        raise ConfigError("n", n, f"task {splits.task.name} has {len(splits.train)} training examples after "
                                  f"{DEV_SIZE} are kept for validation; accepted: n <= {len(splits.train)}")
    order = np.random.default_rng([seed, 6007]).permutation(len(splits.train))
    return [splits.train[i] for i in order[:n]]
