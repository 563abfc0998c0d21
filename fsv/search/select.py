"""Selection: a training group's search trials become its scored cells, choosing on validation only.

A selection trial (phase "select") records, for one configuration of hyperparameters, every
adaptation's measures at every training length (`curves`: rows of task, n, seed, steps, split,
fold, accuracy, ...). A scored cell (phase "measure": one n, one training seed, one fold) takes the
configuration *and* length whose mean validation accuracy at its n is best, and reports its own
rows at that configuration and length. Validation never includes a scored row:
- world: cross-fitting. A scored cell of fold f (the held-out tasks reading feature f) is chosen
  by the held-out tasks of the other features, and back;
- text: a dev split carved from the train split chooses; the test split is scored.
Ties go to the smaller learning rate, then the shorter run (a stable order, never the test rows).
Every function here is pure: the same records always give the same scored records.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from fsv.config import Range
from fsv.search.space import edges, grid_points


@dataclass
class Trial:
    cell_id: str
    hparams: dict
    rows: list[dict]


def is_validation(row: dict, fold: str | None) -> bool:
    return row.get("fold") != fold if fold is not None else row.get("split") == "dev"


def is_scored(row: dict, fold: str | None) -> bool:
    return row.get("fold") == fold if fold is not None else row.get("split") == "test"


def choose(trials: list[Trial], n: int, fold: str | None) -> tuple[Trial, int, float]:
    """(trial, length, validation accuracy) with the best validation accuracy at n, averaged over
    the validation tasks and training seeds; reads validation rows only."""
    best = None
    for trial in trials:
        for length, acc in validation_means(trial.rows, fold).get(n, {}).items():
            key = (acc, -trial.hparams.get("lr", 0.0), -length, trial.cell_id)
            if best is None or key > best[0]:
                best = (key, trial, length)
    if best is None:
        raise ValueError(f"no validation rows at n={n} (fold {fold})")
    return best[1], best[2], best[0][0]


def scored_fields(cell: dict, trial: Trial, length: int, val_acc: float, spaces: dict, lengths: list[int],
                  trials: list[Trial]) -> dict:
    """The scored record's measured fields: its own rows at the chosen configuration and length."""
    rows = [r for r in trial.rows if r["n"] == cell["n"] and r["seed"] == cell["seed"] and r["steps"] == length
            and is_scored(r, cell["fold"])]
    if not rows:
        raise ValueError(f"trial {trial.cell_id} has no scored rows for n={cell['n']} seed={cell['seed']}")
    mean = lambda key: float(np.mean([r[key] for r in rows])) if all(r.get(key) is not None for r in rows) else None  # noqa: E731
    validation = sorted({r["task"] if cell["fold"] is not None else f"{r['task']}:dev"
                         for r in trial.rows if is_validation(r, cell["fold"])})
    searched = {k: spaces[k] if isinstance(spaces.get(k), Range) else v for k, v in explored(trials).items()}
    on_edge = edges(searched, trial.hparams) + (["steps"] if len(lengths) > 1 and length in (min(lengths), max(lengths)) else [])
    selection = {"val_accuracy": val_acc, "on_edge": on_edge, "trial": trial.cell_id, "candidates": len(trials),
                 "explored": explored(trials), "lengths": lengths}
    tokens = mean("tokens")  # null where a row set has no token counts
    fields = {
        "accuracy": mean("accuracy"), "n_eval": int(sum(r["n_eval"] for r in rows)),
        "task_accuracy": json.dumps({r["task"]: r["accuracy"] for r in rows}),
        "label_logprob": mean("label_logprob"), "accuracy_norm": mean("accuracy_norm"),
        "acc_none": mean("acc_none"), "acc_model": mean("acc_model"), "acc_human": mean("acc_human"),
        "hparams": json.dumps({**trial.hparams, "steps": length}, sort_keys=True),
        "selected_on": json.dumps(validation), "selection": json.dumps(selection, sort_keys=True),
        "final_train_loss": mean("train_loss"), "n_distinct": int(round(mean("n_distinct"))),
        "train_tokens": None if tokens is None else int(tokens), "reward_margin": mean("reward_margin"),
    }
    return fields


def explored(trials: list[Trial]) -> dict[str, list]:
    """Every value each hyperparameter took among the group's trials (widened values included)."""
    names = sorted({k for t in trials for k in t.hparams})
    return {k: sorted({t.hparams[k] for t in trials if k in t.hparams}) for k in names}


def trials_by_group(records) -> dict[str, list[tuple[dict, Trial]]]:
    """The finished selection trials of every group, as (cell, Trial), in a stable order."""
    frame = records[(records["phase"] == "select") & (records["status"] == "ok")]
    groups: dict[str, list[tuple[dict, Trial]]] = {}
    for row in frame.itertuples():
        cell = json.loads(row.config)
        groups.setdefault(cell["group"], []).append((cell, Trial(row.cell_id, json.loads(row.hparams), json.loads(row.curves))))
    return {g: sorted(v, key=lambda ct: ct[1].cell_id) for g, v in groups.items()}


def for_fold(trials: list[tuple[dict, Trial]], fold: str | None) -> list[Trial]:
    """The trials that may choose for a scored fold: every trial of a grid (its cell has no fold), or
    the adaptive search run for that fold."""
    return [t for cell, t in trials if cell.get("fold") in (None, fold)]


def widened_points(spaces: dict, trials: list[Trial], chosen: list[dict], rounds_left: int) -> list[dict]:
    """Grid search only: where a chosen learning rate sits on the edge of those explored, the next
    value beyond it (x3 or /3), with every value of the other hyperparameters; at most
    `rounds_left` more values beyond the study's own list on either side."""
    lrs = explored(trials).get("lr", [])
    if len(lrs) < 2 or rounds_left <= 0:
        return []
    listed = spaces["lr"]
    beyond = {"low": sum(v < min(listed) for v in lrs), "high": sum(v > max(listed) for v in lrs)}
    new = set()
    for point in chosen:
        if point["lr"] == min(lrs) and beyond["low"] < rounds_left:
            new.add(min(lrs) / 3)
        if point["lr"] == max(lrs) and beyond["high"] < rounds_left:
            new.add(max(lrs) * 3)
    return [p for lr in sorted(new) for p in grid_points({**spaces, "lr": [float(f"{lr:.3g}")]})]


def longer_runs(done: list[tuple[dict, Trial]], choices: list[tuple[Trial, int, int]], listed: list[int],
                rounds_left: int) -> list[dict]:
    """Grid search only: where a choice (trial, length, n) of a scored cell is the longest length its
    trial ran, that trial's run continued to twice its length, for the n levels whose choice sat
    there only: an adaptation's data, batches and seed do not depend on the levels trained beside
    it, so a level trains alone as it would among all, and the levels whose best lay inside are not
    trained again. The longer run keeps its trial's warm-up in steps (`warmup_steps`), so its first
    steps are the trial's own: it goes on from the trial's saved state (`continues`: the trial and
    the step; `fsv.train.resume`) and adds the rows of its new length. At most `rounds_left`
    doublings beyond the study's own lengths (`listed`); a run that may be doubled again keeps its
    state too (`keep_state`). New cells keep their group; their ids differ by their lengths and
    levels. A level whose longer run exists already keeps the choice between the two."""
    from fsv.grid import cell_id

    cells = {t.cell_id: c for c, t in done}
    at_end: dict[str, set[int]] = {}
    for trial, length, n in choices:
        lengths = sorted(cells[trial.cell_id]["settings"]["steps"])
        if length == lengths[-1] and doublings(lengths, listed) < rounds_left:
            at_end.setdefault(trial.cell_id, set()).add(n)
    ran = {}  # (the run as configured, without its levels) -> the levels it ran
    for cell in cells.values():
        ran.setdefault(_run_key(cell), set()).update(cell["n_levels"])
    new = []
    for trial_id, levels in sorted(at_end.items()):
        cell = cells[trial_id]
        lengths = sorted(cell["settings"]["steps"])
        longer = {k: v for k, v in cell.items() if k not in ("cell_id", "keep_state")}
        longer["settings"] = {**cell["settings"], "steps": lengths + [2 * lengths[-1]],
                              "warmup_steps": warmup_steps(cell["settings"])}
        longer["continues"] = {"trial": trial_id, "steps": lengths[-1]}
        if doublings(longer["settings"]["steps"], listed) < rounds_left:
            longer["keep_state"] = True
        levels -= ran.get(_run_key(longer), set())
        if levels:
            longer["n_levels"] = [n for n in cell["n_levels"] if n in levels]
            longer["cell_id"] = cell_id(longer)
            new.append(longer)
    return new


def may_go_on(rows: list[dict]) -> set[int]:
    """The n levels of one trial's rows whose longest length is its best on some validation set (a
    fold's, or the dev split): only those can be chosen at the longest length, so only they may be
    run longer (`longer_runs`). Ties go to the shorter length, as `choose` breaks them."""
    longest = max(r["steps"] for r in rows)
    out = set()
    for fold in {r.get("fold") for r in rows}:  # the world's folds, or None: text's dev split
        for n, means in validation_means(rows, fold).items():
            shorter = [acc for length, acc in means.items() if length != longest]
            if longest in means and all(means[longest] > acc for acc in shorter):
                out.add(n)
    return out


def validation_means(rows: list[dict], fold: str | None) -> dict[int, dict[int, float]]:
    """{n: {length: mean validation accuracy}} of one trial's rows, for a scored fold (or text's dev split)."""
    by_n: dict[int, dict[int, list[float]]] = {}
    for r in rows:
        if is_validation(r, fold):
            by_n.setdefault(r["n"], {}).setdefault(r["steps"], []).append(r["accuracy"])
    return {n: {length: float(np.mean(accs)) for length, accs in by_len.items()} for n, by_len in by_n.items()}


def doublings(lengths: list[int], listed: list[int]) -> int:
    """How many times a run's length was doubled beyond the study's own lengths."""
    return sum(L > max(listed) for L in lengths)


def warmup_steps(settings: dict) -> int:
    """A run's warm-up in steps: set (a longer run keeps its shorter run's), else its share of the
    longest length (`fsv.train.worker.lr_factor`'s rule)."""
    from fsv.train.worker import warmup_length

    if settings.get("warmup_steps") is not None:
        return int(settings["warmup_steps"])
    return warmup_length(settings.get("warmup", 0.0), max(settings["steps"]))


def _run_key(cell: dict) -> str:
    """What a run measures: its cell without its levels, or whether it keeps its state for another."""
    return json.dumps({k: v for k, v in cell.items() if k not in ("cell_id", "n_levels", "keep_state")}, sort_keys=True,
                      default=str)
