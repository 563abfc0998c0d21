"""Replicate curves and the seeded bootstrap over replicates.

A replicate is one (seed, pretrain_seed) pair of a model. `Curve` holds one model's accuracy on one
example axis as a (replicates x levels) matrix, already averaged over tasks within a replicate.
`Resampler` draws, once per model, B count vectors over that model's replicates (bootknife by
default), from a generator seeded by (analysis seed, model name): every measure of a model (its ICL curve, each
fine-tuning series, its zero-shot descriptions) is resampled with the same draws, so the pairing of
S and N* inside a replicate survives into the law's bootstrap, and a model's draws do not depend on
which other models the study holds.
"""

from __future__ import annotations

import warnings
import zlib
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats


def replicate_key(frame: pd.DataFrame) -> pd.Series:
    """'seed/pretrain_seed' per row (pretrain_seed '-' where null)."""
    seed = frame["seed"].astype("Int64").astype(str).replace("<NA>", "-")
    pretrain = frame["pretrain_seed"].astype("Int64").astype(str).replace("<NA>", "-")
    return seed + "/" + pretrain


@dataclass(frozen=True)
class Curve:
    """Accuracy of one model against one example axis; NaN where a replicate lacks a level."""

    levels: np.ndarray  # (L,) ascending k or n
    replicates: tuple[str, ...]  # (R,)
    values: np.ndarray  # (R, L)
    chance: float
    bayes: np.ndarray  # (L,) Bayes-optimal accuracy per level, NaN where unknown
    rows: int  # records behind the curve

    @property
    def mean(self) -> np.ndarray:
        return resampled_means(self, np.ones((1, len(self.replicates))))[0]


def build_curve(rows: pd.DataFrame, level: str, value: str = "accuracy") -> Curve | None:
    """Average `value` over tasks (and duplicate rows) within each replicate and level."""
    rows = rows[np.isfinite(rows[value].astype(float))]
    if rows.empty:
        return None
    keyed = rows.assign(_replicate=replicate_key(rows), _level=rows[level].fillna(0).astype(float))
    table = keyed.groupby(["_replicate", "_level"])[value].mean().unstack("_level").sort_index(axis=1)
    bayes = keyed.groupby("_level")["bayes_accuracy"].mean().reindex(table.columns)
    return Curve(
        levels=table.columns.to_numpy(dtype=float),
        replicates=tuple(table.index),
        values=table.to_numpy(dtype=float),
        chance=float(keyed["chance"].mean()),
        bayes=bayes.to_numpy(dtype=float),
        rows=len(rows),
    )


def resampled_means(curve: Curve, weights: np.ndarray) -> np.ndarray:
    """(B, L) weighted means over replicates; NaN where a resample holds no measurement of a level."""
    measured = np.isfinite(curve.values)
    total = weights @ np.where(measured, curve.values, 0.0)
    count = weights @ measured.astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan)


class Resampler:
    """Resampling count vectors over each model's replicates, seeded per (seed, model).

    "bootknife" (default; Hesterberg 2004): each resample leaves one replicate out at random and
    draws R from the other R - 1, which makes the resampled variance of a mean unbiased (the plain
    bootstrap's is (R - 1) / R too small: a third too small at R = 3). "bootstrap": R draws from R.
    A model with one replicate gets no spread at all (its intervals are null).
    """

    def __init__(self, replicates_by_model: dict[str, list[str]], resamples: int, seed: int,
                 method: str = "bootknife"):
        self.resamples = resamples
        self.method = method
        self._replicates = {m: sorted(set(r)) for m, r in replicates_by_model.items()}
        self._counts = {m: self._draw(m, len(r), seed) for m, r in self._replicates.items()}

    def _draw(self, model: str, n_replicates: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng([seed, zlib.crc32(model.encode())])
        if n_replicates == 1:
            return np.ones((self.resamples, 1), dtype=int)
        if self.method == "bootstrap":
            return rng.multinomial(n_replicates, np.full(n_replicates, 1.0 / n_replicates), self.resamples)
        left_out = rng.integers(n_replicates, size=self.resamples)
        kept = rng.multinomial(n_replicates, np.full(n_replicates - 1, 1.0 / (n_replicates - 1)), self.resamples)
        slots = np.arange(n_replicates - 1)[None, :]
        columns = slots + (slots >= left_out[:, None])
        counts = np.zeros((self.resamples, n_replicates), dtype=int)
        counts[np.arange(self.resamples)[:, None], columns] = kept
        return counts

    def weights(self, model: str, curve: Curve) -> np.ndarray:
        """(B, R_curve) counts for the curve's replicates, in the curve's replicate order."""
        position = {r: i for i, r in enumerate(self._replicates[model])}
        return self._counts[model][:, [position[r] for r in curve.replicates]].astype(float)

    def replicates(self, model: str) -> list[str]:
        return self._replicates[model]


def interval_tail(confidence: float, df: float | None) -> float:
    """Tail probability of each end of the interval.

    df None: the plain percentile interval, (1 - confidence) / 2. Otherwise the expanded percentile
    interval (Hesterberg 2015): the tail of a standard normal beyond the Student-t quantile with df
    degrees of freedom, so an interval resting on few replicates widens as a t interval would.
    NaN when df < 1 (one replicate: no interval).
    """
    if df is None or not np.isfinite(df):
        return (1 - confidence) / 2
    if df < 1:
        return np.nan
    return float(stats.norm.cdf(-stats.t.ppf((1 + confidence) / 2, df)))


def percentile_interval(samples: np.ndarray, confidence: float, df: float | None = None, axis: int = 0):
    """Equal-tailed (expanded) percentile interval; NaN samples ignored, +-inf (censored) kept."""
    samples = np.asarray(samples, dtype=float)
    tail = interval_tail(confidence, df)
    if np.isnan(tail):
        shape = np.delete(samples.shape, axis) if samples.ndim > 1 else ()
        return np.full(shape, np.nan), np.full(shape, np.nan)
    low = _nanpercentile_keep_inf(samples, 100 * tail, axis)
    high = _nanpercentile_keep_inf(samples, 100 * (1 - tail), axis)
    return low, high


def _nanpercentile_keep_inf(samples, q, axis):
    # method="inverted_cdf" picks actual samples, so an interval reaching a censored (inf) tail is
    # reported as inf instead of an inf-nan interpolation.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanpercentile(samples, q, axis=axis, method="inverted_cdf")
