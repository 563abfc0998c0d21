"""Study-level summaries built from the per-instance measures: what a description is worth in shots,
the exchange rate per regime, where the variance lives, the hyperparameter search, and whether the
regimes agree.

- `description_worth_table`: per instance and description variant, k* where few-shot accuracy (the
  acc(k) curve, made monotone) equals zero-shot accuracy with that description; censored at the
  smallest and largest k, with an interval from the instance's resamples.
- `exchange_summary`: per series and k, the median over instances of n / k (fine-tuning examples per
  in-context example at matched accuracy); censored matches count as +-inf, which a median survives
  while fewer than half are censored; the interval from instance-weighted medians of the resamples.
- `variance_split`: standard deviation of accuracy at each level of the hierarchy (tasks within a
  seed, seeds within an instance, instances within a size), averaged over the n (or k) levels. Each is
  the raw spread of means at that level, so it includes the noise of the levels below it.
- `selection_table`: phase "select" records as (regime, instance, n, lr, validation accuracy), the
  best over training lengths in `val_curve`, with the lr that the scored records ran with marked.
- `objective_fit_table`: whether each training regime fitted its own objective on each instance: the
  lowest training loss its search reached (at the longest length, over its trials) against the
  objective's chance level. A regime is measured only after it has fit its objective; where it did
  not, its sample need measures a regime that has not trained, and the report says so.
- `search_edge_table`: where each scored cell's chosen configuration lies in what its search ran
  (the `selection` field fsv.search writes: `on_edge`, `explored`, `lengths`): per series, instance,
  hyperparameter and end (lowest / highest; a length's shortest / longest), how many scored cells
  chose that end. A choice at an end says the best may lie beyond the search.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from analysis.bootstrap import build_curve, percentile_interval
from analysis.instances import task_rows, text_of
from analysis.measures import description_worth, level_means
from analysis.monotone import censoring
from analysis.series import DESCRIPTION_VARIANTS, TRAINING_REGIMES, description_of, series_order

HIERARCHY = ("pretraining instance", "training seed", "task")


def description_worth_table(records, measures, resampler, settings) -> pd.DataFrame:
    zero = records[records["regime"] == "zero_shot"]
    zero = zero.assign(description=description_of(zero))
    rows = []
    for instance, icl in measures.icl.items():
        shots = icl.acc.curve.levels[icl.acc.curve.levels >= 1]
        for variant in DESCRIPTION_VARIANTS:
            subset = zero[(zero["instance"] == instance) & (zero["description"] == variant)]
            if variant == measures.icl_description or subset.empty or not len(shots):
                continue
            curve = build_curve(task_rows(subset).assign(_level=0), "_level")
            means = level_means(curve, resampler.weights(instance, curve), settings)
            worth = description_worth(icl, means, settings)
            rows.append({"model": instance, "size": measures.model_of[instance], "description": variant,
                         "zero_shot_accuracy": float(means.mean[0]), "k_star": worth.value,
                         "ci_low": worth.ci_low, "ci_high": worth.ci_high, "censored": censoring(worth.raw),
                         "k_min": float(shots.min()), "k_max": float(shots.max()), "reason": worth.reason})
    return pd.DataFrame(rows)


def weighted_median(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Row-wise weighted median of (B, I) values (NaN ignored, +-inf kept)."""
    missing = np.isnan(values)
    values, weights = np.where(missing, np.inf, values), np.where(missing, 0.0, weights)
    order = np.argsort(values, axis=1, kind="stable")
    sorted_values = np.take_along_axis(values, order, axis=1)
    cumulative = np.cumsum(np.take_along_axis(weights, order, axis=1), axis=1)
    half = cumulative[:, -1:] / 2
    index = np.argmax(cumulative >= half, axis=1)
    out = sorted_values[np.arange(len(values)), index]
    return np.where(cumulative[:, -1] > 0, out, np.nan)


def exchange_summary(measures, resampler, settings) -> pd.DataFrame:
    rows = []
    for series, by_instance in measures.exchange.items():
        ks = sorted({p.k for points in by_instance.values() for p in points})
        for k in ks:
            chosen = {i: p for i, points in by_instance.items() for p in points if p.k == k}
            if not chosen:
                continue
            names = list(chosen)
            point = np.array([[chosen[i].n.raw / k for i in names]])
            samples = np.stack([chosen[i].n_per_shot.samples for i in names], axis=1)
            value = weighted_median(point, np.ones_like(point))[0]
            boot = weighted_median(samples, resampler.instance_weights(names))
            low, high = percentile_interval(boot, settings.confidence)
            rows.append({"series": series, "k": k, "instances": len(names), "n_per_shot": value,
                         "ci_low": float(low), "ci_high": float(high),
                         "censored_above": int(np.isinf(point).sum()), "censored_below": int((point == 0).sum())})
    return pd.DataFrame(rows)


def variance_split(records, training, description, model_of) -> pd.DataFrame:
    groups = {"in-context (k >= 1)": task_rows(records[(records["regime"] == "few_shot") & (records["k"] >= 1)
                                                        & (description_of(records) == description)]).rename(
        columns={"k": "_level"})}
    for series, rows in training.groupby("series", sort=False):
        groups[series] = task_rows(rows).rename(columns={"n": "_level"})
    out = []
    for name, rows in groups.items():
        if rows.empty:
            continue
        rows = rows.assign(_seed=text_of(rows["seed"]), _model=rows["instance"].map(model_of),
                           accuracy=rows["accuracy"].astype(float))
        parts = {level: [] for level in HIERARCHY}
        for _, at in rows.groupby("_level"):
            per_seed = at.groupby(["_model", "instance", "_seed"])["accuracy"]
            parts["task"].append(per_seed.var().mean())
            seed_means = per_seed.mean().groupby(level=["_model", "instance"])
            parts["training seed"].append(seed_means.var().mean())
            instance_means = seed_means.mean().groupby(level="_model")
            parts["pretraining instance"].append(instance_means.var().mean())
        for level in HIERARCHY:
            values = np.array(parts[level], dtype=float)
            variance = float(np.nanmean(values)) if np.isfinite(values).any() else np.nan
            out.append({"series": name, "level": level, "sd": np.sqrt(variance) if np.isfinite(variance) else np.nan,
                        "levels_measured": int(np.isfinite(values).sum())})
    return pd.DataFrame(out)


def selection_table(selection: pd.DataFrame, training: pd.DataFrame) -> pd.DataFrame:
    """One row per (configuration, n in its val_curve): the best validation accuracy over every length
    it ran. A longer run of a configuration (search.widen_steps) is a record of its own with the
    lengths it added; it counts with its shorter run's, as the one run they are."""
    rows = []
    for record in selection.itertuples(index=False):
        lr = _lr(record.hparams)
        for n, accuracy in _validation_by_n(record.val_curve, record.n).items():
            if lr is not None and np.isfinite(accuracy):
                rows.append({"regime": record.regime, "model": record.instance, "n": n, "seed": record.seed,
                             "lr": lr, "val_accuracy": accuracy, "configuration": str(record.hparams)})
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    keys = ["regime", "model", "n", "seed", "configuration"]
    frame = frame.groupby(keys, dropna=False, sort=False).agg(lr=("lr", "first"), val_accuracy=("val_accuracy", "max"))
    frame = frame.reset_index().drop(columns="configuration")
    chosen = training.assign(lr=training["hparams"].map(_lr)).dropna(subset=["lr"])
    chosen = chosen.groupby(["regime", "instance"])["lr"].agg(lambda v: v.mode().iloc[0]).to_dict()
    frame["chosen"] = [chosen.get((r, m)) == lr for r, m, lr in zip(frame["regime"], frame["model"], frame["lr"])]
    return frame


def _lr(text) -> float | None:
    lr = _json_dict(text).get("lr")
    return float(lr) if isinstance(lr, (int, float)) else None


def _validation_by_n(text, n) -> dict[float, float]:
    """{n: best validation accuracy over training lengths}; a curve not keyed by n counts at the record's n."""
    curve = json.loads(text) if isinstance(text, str) else None
    if not isinstance(curve, dict):
        return {}
    out = {}
    for key, by_steps in curve.items():
        values = [float(a) for a in by_steps.values() if isinstance(a, (int, float))] if isinstance(by_steps, dict) \
            else ([float(by_steps)] if isinstance(by_steps, (int, float)) else [])
        level = _number(key) if isinstance(by_steps, dict) else (float(n) if pd.notna(n) else np.nan)
        if values:
            out[level] = max(values + ([out[level]] if level in out else []))
    return out


def _number(text) -> float:
    try:
        return float(text)
    except ValueError:
        return np.nan


def regimes_agree(laws: dict) -> str:
    """One sentence: which training regimes' verdicts agree."""
    if not laws:
        return ""
    by_verdict: dict[str, list[str]] = {}
    for series, law in laws.items():
        by_verdict.setdefault(law.verdict, []).append(series)
    if len(by_verdict) == 1:
        verdict, names = next(iter(by_verdict.items()))
        which = "every one" if len(names) > 1 else "the one"
        return f"The regimes agree: {which} measured ({', '.join(names)}) is {verdict}."
    parts = "; ".join(f"{verdict}: {', '.join(names)}" for verdict, names in by_verdict.items())
    return f"The regimes do not agree - {parts}."


def objective_fit_table(selection: pd.DataFrame, fit_share: float, models: list[str]) -> pd.DataFrame:
    """One row per (regime, method, instance) with selection trials, in regime then instance order
    (`models`): the lowest `final_train_loss` over its trials, the objective's chance level, their
    ratio, and whether it fits (ratio <= share)."""
    needed = {"final_train_loss", "train_loss_chance", "regime", "instance"}
    if selection.empty or not needed <= set(selection.columns):
        return pd.DataFrame()
    rows = selection.assign(method=selection.get("method", pd.Series("full", index=selection.index)).fillna("full"),
                            loss=pd.to_numeric(selection["final_train_loss"], errors="coerce"),
                            chance=pd.to_numeric(selection["train_loss_chance"], errors="coerce"))
    rows = rows.dropna(subset=["loss", "chance"])
    if rows.empty:
        return pd.DataFrame()
    table = rows.groupby(["regime", "method", "instance"], sort=False).agg(
        trials=("loss", "size"), lowest_train_loss=("loss", "min"), chance_loss=("chance", "first")).reset_index()
    table["share_of_chance"] = table["lowest_train_loss"] / table["chance_loss"]
    table["fits"] = table["share_of_chance"] <= fit_share
    rank = {r: i for i, r in enumerate(TRAINING_REGIMES)} | {m: i for i, m in enumerate(models)}
    table = table.sort_values(["regime", "method", "instance"], key=lambda c: c.map(lambda v: (rank.get(v, len(rank)), v)))
    return table.rename(columns={"instance": "model"}).reset_index(drop=True)


def search_edge_table(training: pd.DataFrame, models: list[str]) -> pd.DataFrame:
    """One row per (series, instance, hyperparameter, end) that a scored cell chose, in series then
    instance order: `cells` chose that end of what was searched, of `scored` cells that were selected
    (rows without a `selection`, written before fsv searched, are left out). Every selected
    (series, instance) has a row; one whose choices all lay inside has hyperparameter "-"."""
    if training.empty or "selection" not in training.columns:
        return pd.DataFrame()
    ends, scored = {}, {}
    for series, instance, selection, hparams in zip(training["series"], training["instance"],
                                                    training["selection"], training["hparams"]):
        chosen, searched = _json_dict(hparams), _json_dict(selection)
        if not searched:
            continue
        key = (series, instance)
        scored[key] = scored.get(key, 0) + 1
        for name in searched.get("on_edge") or []:
            end = (series, instance, name, _end(name, chosen, searched))
            ends[end] = ends.get(end, 0) + 1
    rows = [{"series": s, "model": m, "hyperparameter": h, "end": e, "cells": c, "scored": scored[(s, m)]}
            for (s, m, h, e), c in ends.items()]
    with_edges = {(s, m) for s, m, _, _ in ends}
    rows += [{"series": s, "model": m, "hyperparameter": "-", "end": "-", "cells": 0, "scored": n}
             for (s, m), n in scored.items() if (s, m) not in with_edges]
    if not rows:
        return pd.DataFrame()
    frame = pd.DataFrame(rows).assign(share=lambda f: f["cells"] / f["scored"])
    rank = {s: i for i, s in enumerate(series_order(training["series"]))} | {m: i for i, m in enumerate(models)}
    frame = frame.sort_values(["series", "model", "hyperparameter", "end"],
                              key=lambda c: c.map(lambda v: (rank.get(v, len(rank)), v)))
    return frame.reset_index(drop=True)


def _json_dict(text) -> dict:
    value = json.loads(text) if isinstance(text, str) else None
    return value if isinstance(value, dict) else {}


def _end(name: str, chosen: dict, searched: dict) -> str:
    """Which end of hyperparameter `name`'s searched values the chosen configuration took."""
    if name == "steps":
        values, low, high = searched.get("lengths") or [], "shortest", "longest"
    else:
        values, low, high = (searched.get("explored") or {}).get(name) or [], "lowest", "highest"
    value = chosen.get(name)
    numbers = [v for v in values if isinstance(v, (int, float))]
    if not numbers or not isinstance(value, (int, float)):
        return "edge"
    return low if value <= min(numbers) else high if value >= max(numbers) else "edge"


def unfit_regimes(table: pd.DataFrame) -> dict[str, list[str]]:
    """{regime: the instances on which it did not fit its objective}, for regimes with any."""
    if table.empty:
        return {}
    bad = table[~table["fits"]]
    return {regime: list(group["model"]) for regime, group in bad.groupby("regime", sort=False)}
