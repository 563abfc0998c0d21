"""instruction_tuning: all weights learn from T training tasks x n examples each, every example led
by its task's human-view description; evaluated on held-out tasks zero-shot with human-view
descriptions (and with model-view and none, to show what changed).

On the world the T tasks are drawn from the world's training tasks and evaluation covers its
held-out tasks. On text the T tasks are other text tasks by name (`cell["train_tasks"]`, chosen when
the grid expands; the evaluated task is never among them), each read from its own train split, and
evaluation is the cell's task, which training never saw.
"""

from __future__ import annotations


import numpy as np

from fsv.regimes.training import label_rows, padded_batches, saver, train_cell
from fsv.train.worker import TrainJob


def training_tasks(world, count: int, seed: int):
    rng = np.random.default_rng([seed, count, 4])
    order = rng.permutation(len(world.train_tasks))[: min(count, len(world.train_tasks))]
    return [world.train_tasks[i] for i in order]


def instruction_batch(world, tasks, pools, rng, count: int, description: str = "human"):
    """`count` sequences, each: <bos> description(task) x = y, for a random (task, example)."""
    from fsv.regimes.training import sequences

    ids, labels = [], []
    for _ in range(count):
        t = int(rng.integers(len(tasks)))
        i, lab = sequences(world, tasks[t], pools[t], "single", description, rng, 1)
        ids.append(i[0])
        labels.append(lab[0])
    return np.stack(ids), np.stack(labels)


def build_job(config: dict, rank: int, world_size: int):
    """One instruction-tuned model per (n, seed) of the trial, each evaluated zero-shot on the
    held-out tasks (world) or the held-out text task's dev and test splits, at each length."""
    import torch

    from fsv.models.load import load_for_training, load_tokenizer
    from fsv.regimes.training import adaptations, fresh_models

    base = fresh_models(config, lambda: load_for_training(config)[0])
    per_rank = max(1, config["batch"] // world_size)
    if config["world"] is None:
        tokenizer = load_tokenizer(config["model_path"], config.get("trust_remote_code", False))
        return text_adaptations(config, base, tokenizer, rank, per_rank)
    from fsv.regimes.training import draw_examples, world_measures
    from fsv.world import World, WorldConfig

    world = World(WorldConfig(**config["world"]))

    def make_job(_, n, seed):
        tasks = training_tasks(world, config["tasks_trained"], seed)  # the T training tasks: seeded like the data
        pools = [draw_examples(world, t, n, seed) for t in tasks]
        rng = np.random.default_rng([seed, rank, 6])
        torch.manual_seed(seed)

        def batches():
            while True:
                ids, labels = instruction_batch(world, tasks, pools, rng, per_rank)
                yield {"input_ids": torch.from_numpy(ids), "labels": torch.from_numpy(labels)}

        return TrainJob(model=base(), batches=batches(), steps=0, save=saver(),
                        tags={"n_distinct": int(np.mean([len(set(p.tolist())) for p in pools]))})

    def measures(_):
        def rows(model):
            out = world_measures(model, world, world.heldout_tasks, VARIANTS)
            return [{**r, "fold": f"f{world.task(r['task']).feature}"} for r in out]
        return rows

    return adaptations(config, ["heldout"], make_job, measures)


VARIANTS = ("human", "none", "model")  # the first is the main one: the descriptions the regime teaches


def text_rows(config: dict, tokenizer, n: int, seed: int) -> list:
    """n training examples of each training task (nested in n), each as its human-view description,
    the example and its label word (loss on the label word); equal n per task, so drawing rows
    uniformly draws tasks uniformly."""
    from fsv.regimes.training import dev_split, nested_draw
    from fsv.tasks import get_task, load_splits

    rows = []
    for j, (name, source) in enumerate(config["train_tasks"]):
        task = get_task(name)
        pool, _ = dev_split(load_splits(task, source, field=f"task_sources.{name}"))
        rows += label_rows(tokenizer, task, nested_draw(pool, n, seed + 1000 * j), "human")
    return rows


def text_adaptations(config: dict, base, tokenizer, rank: int, per_rank: int):
    from fsv.regimes.training import adaptations, dev_split, text_measures
    from fsv.tasks import get_task, load_splits

    target = get_task(config["task"])
    pool, dev = dev_split(load_splits(target, config.get("task_source")))

    def make_job(_, n, seed):
        rng = np.random.default_rng([seed, rank, 6])
        batches = padded_batches(text_rows(config, tokenizer, n, seed), tokenizer, rng, per_rank)
        return TrainJob(model=base(), batches=batches, steps=0, save=saver(tokenizer),
                        tokens_per_batch=lambda b: int(b["attention_mask"].sum()), tags={"n_distinct": n})

    measures = lambda _: lambda m: text_measures(m, tokenizer, target, pool, dev, config.get("max_eval"), VARIANTS)  # noqa: E731
    return adaptations(config, [target.name], make_job, measures)


def run(cell: dict, ctx) -> dict:
    from fsv.regimes.training import label_chance, selection_fields

    metrics = train_cell(cell, ctx, "fsv.regimes.instruction_tuning:build_job", tasks_trained=cell["tasks_trained"],
                         train_tasks=cell.get("train_tasks"))
    return {**selection_fields(cell, metrics, label_chance(cell, ctx)), "method": "full"}
