"""Which records feed which measure, and how training records are named as series.

Input: ok records (columns of `fsv.records.SCHEMA`).

- acc(k): `few_shot` rows with k >= 1 and `zero_shot` rows (k = 0), both with one description
  variant (a null description counts as "none"): `settings.icl_description`, or with "auto" (the
  default) the variant the study's few-shot rows carry ("none" when they carry several).
- acc(n): rows of a training regime. A series is one regime under one set of qualifiers; the regime's
  default qualifiers give the plain name, any other value adds a suffix, in this order:
    layout         default "single" (null counts as single)           -> "sft:packed"
    prompt_tokens  default the largest m of the regime                -> "prompt_tuning:m=8"
    tasks_trained  default the largest T of the regime                -> "instruction_tuning:T=4"
    k              default 0 (evaluated zero-shot; null counts as 0)  -> "sft:k=4"
    description    default the regime's most frequent variant         -> "rlhf:desc=model"
  So "sft" is always one-example-per-sequence SFT evaluated zero-shot, "instruction_tuning" the
  largest task mix, and a study's extra variants appear as their own series.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.settings import AnalysisSettings

ICL_REGIMES = ("zero_shot", "few_shot")
TRAINING_REGIMES = ("sft", "prompt_tuning", "instruction_tuning", "rlhf")
DESCRIPTION_VARIANTS = ("none", "model", "human")


def description_of(rows: pd.DataFrame) -> pd.Series:
    return rows["description"].fillna("none").astype(str)


def icl_description(records: pd.DataFrame, settings: AnalysisSettings) -> str:
    """The description variant acc(k) is measured under (resolves "auto")."""
    if settings.icl_description != "auto":
        return settings.icl_description
    variants = set(description_of(records[records["regime"] == "few_shot"]))
    if len(variants) == 1:
        return variants.pop()
    return "none"


def icl_rows(records: pd.DataFrame, description: str) -> pd.DataFrame:
    k = records["k"].fillna(0)
    described = description_of(records) == description
    few_shot = (records["regime"] == "few_shot") & (k >= 1)
    zero_shot = (records["regime"] == "zero_shot") & (k == 0)
    return records[(few_shot | zero_shot) & described].assign(k=k)


def training_rows(records: pd.DataFrame) -> pd.DataFrame:
    """Training-regime rows with n >= 1 and a `series` column."""
    rows = records[records["regime"].isin(TRAINING_REGIMES) & (records["n"].fillna(0) >= 1)]
    if rows.empty:
        return rows.assign(series=pd.Series(dtype=str))
    names = pd.concat([_series_names(group) for _, group in rows.groupby("regime")])
    return rows.assign(series=names.reindex(rows.index))


def series_order(names) -> list[str]:
    """Series in the order of TRAINING_REGIMES (many examples to few), plain names before variants."""
    def key(name: str):
        regime = name.split(":")[0]
        rank = TRAINING_REGIMES.index(regime) if regime in TRAINING_REGIMES else len(TRAINING_REGIMES)
        return rank, ":" in name, name
    return sorted(set(names), key=key)


def _series_names(rows: pd.DataFrame) -> pd.Series:
    regime = rows["regime"].iloc[0]
    layout = rows["layout"].fillna("single").astype(str)
    k = rows["k"].fillna(0).astype(int)
    description = description_of(rows)
    suffixes = [
        _suffix(layout, "single" if (layout == "single").any() else None, "{}"),
        _suffix(rows["prompt_tokens"], rows["prompt_tokens"].max(), "m={:.0f}"),
        _suffix(rows["tasks_trained"], rows["tasks_trained"].max(), "T={:.0f}"),
        _suffix(k, 0, "k={}"),
        _suffix(description, _most_frequent(description), "desc={}"),
    ]
    names = pd.Series(regime, index=rows.index)
    for suffix in suffixes:
        names = names + suffix
    return names


def _suffix(values: pd.Series, default, template: str) -> pd.Series:
    """':label' where a value differs from the default (nulls and the default give '')."""
    present = values.notna() & (values != default) if default is not None else values.notna()
    labels = values.map(lambda v: ":" + template.format(v) if pd.notna(v) else "")
    return labels.where(present, "")


def _most_frequent(values: pd.Series) -> str:
    counts = values.value_counts()
    return sorted(counts[counts == counts.max()].index)[0]


def model_order(records: pd.DataFrame) -> tuple[list[str], dict[str, float]]:
    """Models ordered by parameter count (median over their rows; unknown sizes last, by name)."""
    params = records.groupby("model")["model_params"].median().astype(float)
    order = sorted(params.index, key=lambda m: (np.isnan(params[m]), params[m] if not np.isnan(params[m]) else 0, m))
    return order, {m: float(params[m]) for m in order}


def main_series_rows(training: pd.DataFrame, regime: str) -> pd.DataFrame:
    return training[training["series"] == regime]
