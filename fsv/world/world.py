"""The world: symbols on a grid of features, tasks that read one feature through a map to the labels.

A symbol is a point of the grid `n_values ** n_features` (its name says nothing of its features).
A task is (feature f, map pi from values to labels): the label of symbol x is pi[feature_f(x)]; pi
is any function (`maps: functions`, the default) or a permutation.
Half the symbols (coordinate-sum parity) are the test inputs of every task; demonstrations and
fine-tuning examples come only from the other half, so accuracy on the test inputs cannot be bought
by memorising them. Per feature, a Latin square of permutations is held out: never in pretraining or
instruction tuning, and every (value, label) pair is equally frequent among the remaining tasks, so
a model that knows nothing of the task is at chance, not below it.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from fsv.world.config import WorldConfig

SPECIALS = ["<pad>", "<bos>", "<unk>", "<eos>", "=", "<d>", "</d>", "<h>", "</h>"]
FORMAT = 4  # bump when the vocabulary or the document format changes: it keys the model cache
DESCRIPTIONS = ("none", "model", "human")


@dataclass(frozen=True)
class Task:
    feature: int
    perm: tuple[int, ...]

    @property
    def name(self) -> str:
        return f"f{self.feature}-" + "".join(map(str, self.perm))


class World:
    def __init__(self, config: WorldConfig):
        self.config = config
        cfg = config
        rng = np.random.default_rng(cfg.seed)
        grid = np.array(list(itertools.product(range(cfg.n_values), repeat=cfg.n_features)))
        order = rng.permutation(len(grid))
        self.features = grid[order]  # [symbol, feature] -> value
        is_test = self.features.sum(axis=1) % 2 == 0
        self.test_symbols = np.flatnonzero(is_test)
        self.train_symbols = np.flatnonzero(~is_test)
        maps = (
            itertools.permutations(range(cfg.n_values))
            if cfg.maps == "permutations"
            else itertools.product(range(cfg.n_values), repeat=cfg.n_values)
        )
        maps = list(maps)
        self.tasks = [Task(f, m) for f in range(cfg.n_features) for m in maps]
        heldout = set()
        for f in range(cfg.n_features):
            sigma, tau = rng.permutation(cfg.n_values), rng.permutation(cfg.n_values)
            for j in range(cfg.n_values):
                perm = tuple(int(tau[(sigma[v] + j) % cfg.n_values]) for v in range(cfg.n_values))
                heldout.add(Task(f, perm))
        self.heldout_tasks = [t for t in self.tasks if t in heldout]
        self.train_tasks = [t for t in self.tasks if t not in heldout]

    # --- vocabulary -------------------------------------------------------------------------
    @cached_property
    def vocab(self) -> list[str]:
        cfg = self.config
        return (
            SPECIALS
            + [f"s{i}" for i in range(cfg.n_symbols)]
            + [f"L{i}" for i in range(cfg.n_values)]
            + [f"F{i}" for i in range(cfg.n_features)]
            + [f"G{i}" for i in range(cfg.n_features)]
            + [f"H{i}" for i in range(cfg.n_values)]
        )

    @cached_property
    def ids(self) -> dict[str, int]:
        return {tok: i for i, tok in enumerate(self.vocab)}

    @property
    def example_width(self) -> int:
        return 2 + int(self.config.separator)

    def symbol_tokens(self, s) -> np.ndarray:
        """[len(s), 1] token ids of symbols: one opaque token each (the name says nothing of the
        symbol's features: a model must learn them from pretraining)."""
        s = np.asarray(s, dtype=np.int64).reshape(-1)
        return (self.ids["s0"] + s)[:, None]

    def label_id(self, y):
        return self.ids["L0"] + np.asarray(y)

    @property
    def label_ids(self) -> list[int]:
        return [self.ids[f"L{i}"] for i in range(self.config.n_values)]

    def task(self, name: str) -> Task:
        for t in self.tasks:
            if t.name == name:
                return t
        raise KeyError(f"task {name!r} is not in this world")

    # --- labels and descriptions ------------------------------------------------------------
    def labels(self, task: Task, symbols) -> np.ndarray:
        return np.asarray(task.perm)[self.features[np.asarray(symbols, dtype=np.int64), task.feature]]

    def description(self, task: Task, variant: str) -> list[int]:
        """Token ids of a task description. `model`: the form pretraining shows; `human`: the same
        meaning in other tokens and another order, which pretraining never shows."""
        ids = self.ids
        if variant == "none":
            return []
        if variant == "model":
            body = [f"F{task.feature}"] + [f"L{y}" for y in task.perm]
            return [ids[t] for t in ["<d>", *body, "</d>"]]
        if variant == "human":
            body = [f"H{y}" for y in reversed(task.perm)] + [f"G{task.feature}"]
            return [ids[t] for t in ["<h>", *body, "</h>"]]
        raise ValueError(f"description variant {variant!r} unknown; accepted: {list(DESCRIPTIONS)}")

    def examples(self, task: Task, symbols) -> np.ndarray:
        """[len(symbols), example_width] token ids: symbol, (separator,) label."""
        symbols = np.asarray(symbols, dtype=np.int64).reshape(-1)
        out = np.empty((len(symbols), self.example_width), dtype=np.int64)
        out[:, :1] = self.symbol_tokens(symbols)
        if self.config.separator:
            out[:, -2] = self.ids["="]
        out[:, -1] = self.label_id(self.labels(task, symbols))
        return out

    def prompt(self, task: Task, demos, query: int, variant: str = "none") -> list[int]:
        """<bos> [description] (x y)*k x   -- the next token is the label."""
        body = self.examples(task, demos).reshape(-1).tolist()
        query_tokens = self.symbol_tokens([query])[0].tolist()
        sep = [self.ids["="]] if self.config.separator else []
        return [self.ids["<bos>"], *self.description(task, variant), *body, *query_tokens, *sep]

    def prompt_length(self, k: int, variant: str = "none") -> int:
        desc = 0 if variant == "none" else self.config.n_values + 3
        return 1 + desc + self.example_width * (k + 1) - 1

    # --- pretraining corpus -----------------------------------------------------------------
    def pretraining_batch(self, rng: np.random.Generator, batch: int, tasks=None):
        """A batch of documents: runs of examples of one training task, with the model-view
        description in front some of the time. Returns (input_ids, labels, weights), each
        [batch, context]: labels are -100 except on label tokens (the loss that made ICL emerge on
        small CPUs); weights are 1 where a symbol first appears in its document and
        `repeat_weight` where it repeats (its label can be copied, not inferred), 0 elsewhere."""
        cfg, tasks = self.config, tasks or self.train_tasks
        ids = np.full((batch, cfg.context), self.ids["<pad>"], dtype=np.int64)
        labels = np.full((batch, cfg.context), -100, dtype=np.int64)
        weights = np.zeros((batch, cfg.context), dtype=np.float32)
        w = self.example_width
        for b in range(batch):
            task = tasks[rng.integers(len(tasks))]
            desc = self.description(task, "model") if rng.random() < cfg.desc_prob else []
            symbols = self._document_symbols(rng, (cfg.context - 1 - len(desc)) // w)
            body = self.examples(task, symbols)
            start = 1 + len(desc)
            ids[b, 0] = self.ids["<bos>"]
            ids[b, 1:start] = desc
            ids[b, start : start + w * len(symbols)] = body.reshape(-1)
            at_labels = slice(start + w - 1, start + w * len(symbols), w)
            labels[b, at_labels] = body[:, -1]
            first = np.zeros(len(symbols), dtype=bool)
            first[np.unique(symbols, return_index=True)[1]] = True
            weights[b, at_labels] = np.where(first, 1.0, cfg.repeat_weight)
        return ids, labels, weights

    def _document_symbols(self, rng: np.random.Generator, n: int) -> np.ndarray:
        cfg = self.config
        if rng.random() < cfg.skew_prob:
            p = rng.dirichlet(np.full(cfg.n_symbols, cfg.skew_alpha))
            return rng.choice(cfg.n_symbols, size=n, p=p)
        return rng.integers(cfg.n_symbols, size=n)
