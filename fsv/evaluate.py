"""In-context evaluation on the world: zero-shot (a description variant, no examples) and few-shot.

An episode is (task, k demonstrations drawn with the cell's seed from the task's training symbols);
every test symbol of the task is a query of that episode, so the demonstrations' prefix is shared
by the queries that use it (the scorer computes it once per episode, `fsv.scoring`) and the query
is never its own demonstration (test and training symbols are disjoint). The demonstrations drawn
are returned so they can be recorded.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fsv.scoring import score_choices
from fsv.world import Task, World


@dataclass
class EvalResult:
    accuracy: float
    n_eval: int
    chance: float
    demos: list = field(default_factory=list)  # per episode: [task name, [symbol, ...]]
    label_logprob: float = float("nan")  # mean log-likelihood of the correct label (summed over its tokens)


def label_logprob(loglik: np.ndarray, truth: np.ndarray) -> float:
    """Mean over queries of the correct label's log-likelihood: a continuous measure beside accuracy."""
    return float(loglik[np.arange(len(truth)), truth].mean()) if len(truth) else float("nan")


def world_prompts(world: World, tasks: list[Task], k: int, variant: str, seed: int, episodes: int):
    rng = np.random.default_rng([seed, k, 7919])
    prompts, truth, demos = [], [], []
    for task in tasks:
        for _ in range(episodes if k else 1):
            shots = rng.choice(world.train_symbols, size=k) if k else np.array([], dtype=int)
            demos.append([task.name, shots.tolist()])
            for q in world.test_symbols:
                prompts.append(world.prompt(task, shots, int(q), variant))
                truth.append(int(world.labels(task, [q])[0]))
    return prompts, np.array(truth), demos


def evaluate_world(model, world: World, tasks: list[Task], k: int = 0, variant: str = "none",
                   seed: int = 0, episodes: int = 4) -> EvalResult:
    """Accuracy of `model` on the test symbols of `tasks` (a prompt-tuned model's soft prompt lives
    inside the model; the scorer reads past it)."""
    prompts, truth, demos = world_prompts(world, tasks, k, variant, seed, episodes)
    choices = [[i] for i in world.label_ids]
    loglik, _ = score_choices(model, prompts, choices, pad_id=world.ids["<pad>"])
    correct = loglik.argmax(axis=1) == truth
    return EvalResult(float(correct.mean()), int(len(truth)), 1.0 / world.config.n_values, demos,
                      label_logprob(loglik, truth))
