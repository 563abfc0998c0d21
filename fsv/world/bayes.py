"""The exact Bayes-optimal few-shot accuracy of the world.

The prior is uniform over the world's whole task family (the predictor does not know which tasks
are held out). Demonstrations are k independent uniform draws from the task's training symbols; the
query is uniform over the test symbols. Labels are deterministic, so the posterior depends on the
demonstrations only through the *set* S of distinct symbols drawn, and P(S) depends only on |S|:
P(|S| = m) = C(N, m) * m! * Stirling2(k, m) / N^k. Averaging the Bayes predictor's accuracy over
every subset of the training symbols, weighted so, is exact. Worlds with more than
`EXACT_LIMIT` training symbols fall back to Monte Carlo over demonstration sets (flagged).
"""

from __future__ import annotations

import itertools
import math
from functools import lru_cache

import numpy as np

from fsv.world.world import Task, World

EXACT_LIMIT = 14


@lru_cache(maxsize=None)
def _stirling2(k: int, m: int) -> int:
    if k == m:
        return 1
    if m == 0 or m > k:
        return 0
    return m * _stirling2(k - 1, m) + _stirling2(k - 1, m - 1)


def distinct_count_probs(n_pool: int, k: int) -> np.ndarray:
    """P(|S| = m) for m = 0..n_pool, S the distinct items of k uniform draws from n_pool."""
    probs = [
        math.comb(n_pool, m) * math.factorial(m) * _stirling2(k, m) / n_pool**k if k else float(m == 0)
        for m in range(n_pool + 1)
    ]
    return np.array(probs)


def predictive(world: World, task: Task, seen: np.ndarray, query: int) -> np.ndarray:
    """Bayes posterior predictive over labels for `query`, after seeing `seen` labelled by `task`."""
    V = world.config.n_values
    perms = world.config.maps == "permutations"
    probs = np.zeros(V)
    seen_labels = world.labels(task, seen)
    for f in range(world.config.n_features):
        values = world.features[seen, f]
        mapping: dict[int, int] = {}
        if any(mapping.setdefault(int(v), int(y)) != y for v, y in zip(values, seen_labels)):
            continue  # feature f cannot explain the demonstrations
        m = len(mapping)
        vq = int(world.features[query, f])
        if perms and len(set(mapping.values())) != m:
            continue  # not injective: no permutation does this
        # number of maps consistent with the demonstrations, and with each answer to the query
        if vq in mapping:
            probs[mapping[vq]] += math.factorial(V - m) if perms else V ** (V - m)
        elif perms:
            free = [y for y in range(V) if y not in mapping.values()]
            probs[free] += math.factorial(V - m - 1)
        else:
            probs += V ** (V - m - 1)
    return probs / probs.sum()


def bayes_correct(world: World, task: Task, seen, query: int) -> float:
    """Accuracy of the Bayes predictor (ties broken uniformly) on one query."""
    p = predictive(world, task, np.asarray(seen, dtype=np.int64), query)
    best = np.flatnonzero(np.isclose(p, p.max()))
    truth = int(world.labels(task, [query])[0])
    return 1.0 / len(best) if truth in best else 0.0


def _subset_accuracy(world: World, tasks, seen) -> float:
    return float(
        np.mean([bayes_correct(world, t, seen, int(q)) for t in tasks for q in world.test_symbols])
    )


def bayes_accuracy(world: World, k: int, tasks=None, mc_samples: int = 2000, seed: int = 0):
    """(accuracy, exact) of the Bayes-optimal predictor with k demonstrations on `tasks`
    (default: the held-out tasks)."""
    tasks = tasks or world.heldout_tasks
    pool = world.train_symbols
    if len(pool) <= EXACT_LIMIT:
        by_size = distinct_count_probs(len(pool), k)
        total = 0.0
        for m in range(len(pool) + 1):
            if by_size[m] == 0:
                continue
            subsets = [np.array(c) for c in itertools.combinations(pool, m)]
            total += by_size[m] * np.mean([_subset_accuracy(world, tasks, s) for s in subsets])
        return total, True
    rng = np.random.default_rng(seed)
    draws = [_subset_accuracy(world, tasks, np.unique(rng.choice(pool, size=k))) for _ in range(mc_samples)]
    return float(np.mean(draws)), False
