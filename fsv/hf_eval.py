"""In-context evaluation of a hub-format causal LM on a real text task (`fsv.tasks`).

An episode is k demonstrations drawn (seeded, without replacement) from the task's few-shot pool;
every evaluated test example is a query of every episode, so the demonstrations' prefix is shared by
the queries that use it. Test examples are never demonstrations: the pool is part of the train split
and the loader drops train rows whose text also appears in the test split (and this module checks).

A prompt is the task's description (variant none / model / human), the k demonstrations and the
query, tokenized by the model's own tokenizer. Each label word is tokenized as a continuation
(its leading space kept, no special tokens) and scored with `fsv.scoring.score_choices` (an
episode's shared prefix computed once): the summed log-probability of its tokens picks the
prediction (`accuracy`); the same divided by its token count gives `accuracy_norm`; the correct
label's, averaged over queries, is `label_logprob`. Nothing is truncated: a prompt that, with its
longest label word, does not fit the model's context window raises `PromptTooLongError`, naming k
and the length.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field as dc_field

import numpy as np

from fsv.errors import ConfigError, FsvError
from fsv.evaluate import EvalResult, label_logprob
from fsv.scoring import score_choices
from fsv.tasks import Example, TextSplits, TextTask, get_task


@dataclass
class TextEvalResult(EvalResult):
    accuracy_norm: float = float("nan")  # prediction by length-normalised log-likelihood
    max_tokens: int = 0  # the longest sequence read: prompt + longest label word
    loglik: np.ndarray | None = dc_field(default=None, repr=False)  # [n_eval, n_labels], summed over tokens
    labels: np.ndarray | None = dc_field(default=None, repr=False)  # [n_eval] true class ids


class PromptTooLongError(FsvError):
    def __init__(self, task: str, k: int, variant: str, length: int, label_tokens: int, window: int,
                 example: int | None = None, k_fits: int | None = None):
        self.task, self.k, self.variant, self.length, self.window = task, k, variant, length, window
        self.label_tokens, self.k_fits = label_tokens, k_fits
        which = f" (test row {example})" if example is not None else ""
        hint = f"; every draw fits with k <= {k_fits}" if k_fits is not None and k_fits < k else ""
        super().__init__(
            f"task {task}, k={k}, description {variant!r}: the longest prompt{which} is {length} tokens, "
            f"plus up to {label_tokens} label-word tokens = {length + label_tokens}, beyond the model's context "
            f"window of {window} tokens; prompts are never truncated: lower k{hint}, or use a model with a longer context"
        )


def context_window(model) -> int | None:
    """The model's context window from its config (None when the config does not say)."""
    cfg = getattr(model, "config", None)
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(cfg, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def label_token_ids(tokenizer, task: TextTask) -> list[list[int]]:
    """Each label word tokenized as a continuation of the prompt (leading space, no special tokens)."""
    ids = [list(tokenizer(w, add_special_tokens=False)["input_ids"]) for w in task.label_words]
    if any(not t for t in ids):
        raise ValueError(f"task {task.name}: a label word tokenizes to nothing: {dict(zip(task.label_words, ids))}")
    if len({tuple(t) for t in ids}) != len(ids):
        raise ValueError(f"task {task.name}: two label words tokenize identically: {dict(zip(task.label_words, ids))}")
    return ids


def eval_queries(splits: TextSplits, max_eval: int | None = None) -> list[Example]:
    """The test examples evaluated: all of them, or a fixed (task-seeded, not cell-seeded) subset
    of `max_eval`, so every cell of a study scores the same queries."""
    test = splits.test
    if max_eval is None or max_eval >= len(test):
        return list(test)
    idx = np.random.default_rng([len(test), 104729]).choice(len(test), size=max_eval, replace=False)
    return [test[i] for i in sorted(idx)]


def build_prompts(task: TextTask, splits: TextSplits, k: int, variant: str = "none", seed: int = 0,
                  episodes: int = 4, max_eval: int | None = None):
    """Prompt texts, true labels, and per episode [task name, [few-shot pool row indices]]."""
    task.description(variant)  # refuse an unknown variant before any work
    pool = splits.few_shot
    if k < 0:
        raise ConfigError("k", k, "accepted: k >= 0 demonstrations")
    if k > len(pool):
        raise ConfigError("k", k, f"task {task.name}'s few-shot pool has {len(pool)} examples; accepted: k <= {len(pool)}")
    queries = eval_queries(splits, max_eval)
    test_keys = {q.key for q in splits.test}
    rng = np.random.default_rng([seed, k, 7919])
    texts, truth, demos = [], [], []
    for _ in range(episodes if k else 1):
        shots = [pool[i] for i in rng.choice(len(pool), size=k, replace=False)] if k else []
        if any(s.key in test_keys for s in shots):  # the loader makes this impossible; keep it so
            raise RuntimeError(f"task {task.name}: a test example was drawn as a demonstration")
        demos.append([task.name, [s.index for s in shots]])
        pairs = [(s.fields, s.label) for s in shots]
        for q in queries:
            texts.append(task.prompt(pairs, q.fields, variant))
            truth.append(q.label)
    return texts, np.array(truth, dtype=int), demos


def tokenize_prompts(tokenizer, texts: list[str]) -> list[list[int]]:
    """Prompt texts to token ids with the model's tokenizer (its own special tokens, e.g. a BOS;
    never truncated)."""
    if not texts:
        return []
    return [list(t) for t in tokenizer(texts, add_special_tokens=True, truncation=False, verbose=False)["input_ids"]]


def _pad_id(tokenizer) -> int:
    for value in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if value is not None:
            return int(value)
    return 0


def evaluate_text(model, tokenizer, task: TextTask | str, splits: TextSplits, k: int = 0, variant: str = "none",
                  seed: int = 0, episodes: int = 4, max_eval: int | None = None, batch_size: int | None = None,
                  context: int | None = None, scorer=score_choices) -> TextEvalResult:
    """Accuracy of `model` on the task's test examples with k demonstrations in context.
    `context` overrides the window read from the model's config; `batch_size` caps the queries a
    forward scores (default: sized for the device); `scorer` is `score_choices`'s signature (tests
    pass the naive reference)."""
    task = get_task(task) if isinstance(task, str) else task
    texts, truth, demos = build_prompts(task, splits, k, variant, seed, episodes, max_eval)
    prompts = tokenize_prompts(tokenizer, texts)
    choices = label_token_ids(tokenizer, task)
    longest_label = max(len(c) for c in choices)
    window = context or context_window(model)
    longest = int(np.argmax([len(p) for p in prompts]))
    if window is not None and len(prompts[longest]) + longest_label > window:
        queries = eval_queries(splits, max_eval)
        raise PromptTooLongError(task.name, k, variant, len(prompts[longest]), longest_label, window,
                                 queries[longest % len(queries)].index,
                                 max_k(tokenizer, task, splits, variant, window, max_eval))
    loglik, loglik_norm = scorer(model, prompts, choices, batch_size=batch_size, pad_id=_pad_id(tokenizer))
    return TextEvalResult(
        accuracy=float((loglik.argmax(axis=1) == truth).mean()),
        n_eval=int(len(truth)),
        chance=task.chance,
        demos=demos,
        label_logprob=label_logprob(loglik, truth),
        accuracy_norm=float((loglik_norm.argmax(axis=1) == truth).mean()),
        max_tokens=len(prompts[longest]) + longest_label,
        loglik=loglik,
        labels=truth,
    )


# --- checking k against the context window before launch --------------------------------------


class _WorstCase:
    """The longest k-shot prompt any draw could build: the k longest pool examples (by their own
    token count) before the longest query, tokenized for real."""

    def __init__(self, tokenizer, task: TextTask, splits: TextSplits, variant: str, max_eval: int | None):
        task.description(variant)
        self.tokenizer, self.task, self.variant = tokenizer, task, variant
        pool = splits.few_shot
        lengths = [len(t) for t in tokenize_prompts(tokenizer, [task.render(e.fields, e.label) for e in pool])]
        self.pool = [pool[i] for i in np.argsort(lengths, kind="stable")[::-1]]
        queries = eval_queries(splits, max_eval)
        qlen = [len(t) for t in tokenize_prompts(tokenizer, [task.render(q.fields) for q in queries])]
        self.query = queries[int(np.argmax(qlen))]
        self.label = max(len(c) for c in label_token_ids(tokenizer, task))

    def length(self, k: int, with_label: bool = True) -> int:
        if k > len(self.pool):
            raise ConfigError("k", k, f"task {self.task.name}'s few-shot pool has {len(self.pool)} examples; "
                                      f"accepted: k <= {len(self.pool)}")
        demos = [(e.fields, e.label) for e in self.pool[:k]]
        text = self.task.prompt(demos, self.query.fields, self.variant)
        return len(tokenize_prompts(self.tokenizer, [text])[0]) + (self.label if with_label else 0)

    def max_k(self, window: int) -> int:
        """The largest k whose worst-case sequence fits `window` (-1 when not even k=0 fits)."""
        if self.length(0) > window:
            return -1
        lo, hi = 0, len(self.pool)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if self.length(mid) <= window else (lo, mid - 1)
        return lo


def max_prompt_tokens(tokenizer, task: TextTask | str, splits: TextSplits, k: int, variant: str = "none",
                      max_eval: int | None = None, with_label: bool = True) -> int:
    """Tokens of the longest k-shot prompt any seed could draw (the k longest pool examples and the
    longest evaluated query), plus the longest label word when `with_label`: the length the
    context window must hold."""
    task = get_task(task) if isinstance(task, str) else task
    return _WorstCase(tokenizer, task, splits, variant, max_eval).length(k, with_label)


def max_k(tokenizer, task: TextTask | str, splits: TextSplits, variant: str, window: int,
          max_eval: int | None = None) -> int:
    """The largest k for which every draw fits `window` (-1 when not even the zero-shot prompt fits)."""
    task = get_task(task) if isinstance(task, str) else task
    return _WorstCase(tokenizer, task, splits, variant, max_eval).max_k(window)


def check_context(tokenizer, task: TextTask | str, splits: TextSplits, ks: list[int], variant: str, window: int,
                  field: str = "regimes.few_shot.k", max_eval: int | None = None, source: str | None = None) -> None:
    """Refuse, before launch, any k whose worst-case prompt does not fit `window` (ConfigError naming
    `field[i]`, the length and the largest k that fits)."""
    task = get_task(task) if isinstance(task, str) else task
    worst = _WorstCase(tokenizer, task, splits, variant, max_eval)
    for i, k in enumerate(ks):
        length = worst.length(k)
        if length > window:
            kmax = worst.max_k(window)
            accepted = f"accepted: k <= {kmax}" if kmax >= 0 else "no k fits: even the zero-shot prompt is too long"
            raise ConfigError(f"{field}[{i}]", k, f"task {task.name}'s longest {k}-shot prompt (description "
                                                  f"{variant!r}) with its label word is {length} tokens and the "
                                                  f"model's context window is {window}; {accepted}", source)
