"""Replicate curves and the seeded, hierarchical bootstrap.

The levels of variance, top down: the pretraining instance (model, pretrain_seed, checkpoint), the
training seed (for in-context records: the demonstration draw) within it, the task within a seed.
`Curve` holds one instance's values on one example axis as a (seed x task rows) x levels matrix.
`Resampler` draws, once per instance, B weight vectors over those rows in two stages: counts over
the instance's seeds (bootknife by default), then counts over each seed's tasks; a row's weight is
its seed's count times its task's count over the seed's task total. It also draws, per size, counts
over that size's instances (`instance_weights`), the top level, used wherever a statistic spans
instances (the law, the claims of the literature, the exchange-rate summary). Seeded by (analysis
seed, instance name): every measure of an instance (its ICL curve, each training series, its
zero-shot descriptions) is resampled with the same draws, and an instance's draws do not depend on
which others the study holds.

Resampling each level adds that level's spread on top of the spread already inside the level above
(a two-stage bootstrap over-states variance slightly); on planted studies this is what brought the
law's interval to its nominal coverage (benchmarks/coverage.py).
"""

from __future__ import annotations

import warnings
import zlib
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from analysis.instances import text_of


def replicate_key(frame: pd.DataFrame) -> pd.Series:
    """'seed|task' per row ('-' where null): the bootstrap's rows within an instance."""
    return text_of(frame["seed"]) + "|" + text_of(frame["task"])


@dataclass(frozen=True)
class Curve:
    """Values of one instance against one example axis; NaN where a row lacks a level."""

    levels: np.ndarray  # (L,) ascending k or n
    replicates: tuple[str, ...]  # (R,) row labels 'seed|task'
    values: np.ndarray  # (R, L)
    chance: float
    bayes: np.ndarray  # (L,) Bayes-optimal accuracy per level, NaN where unknown
    rows: int  # records behind the curve

    @property
    def mean(self) -> np.ndarray:
        return resampled_means(self, np.ones((1, len(self.replicates))))[0]

    @property
    def seeds(self) -> int:
        return len({r.split("|")[0] for r in self.replicates})

    @property
    def tasks(self) -> int:
        return len({r.split("|", 1)[1] for r in self.replicates})


def build_curve(rows: pd.DataFrame, level: str, value: str = "accuracy") -> Curve | None:
    """Average `value` over duplicate rows within each (seed, task) and level."""
    rows = rows[np.isfinite(pd.to_numeric(rows[value], errors="coerce").astype(float))]
    if rows.empty:
        return None
    keyed = rows.assign(_replicate=replicate_key(rows), _level=rows[level].fillna(0).astype(float),
                        _value=rows[value].astype(float))
    table = keyed.groupby(["_replicate", "_level"])["_value"].mean().unstack("_level").sort_index(axis=1)
    bayes = keyed.groupby("_level")["bayes_accuracy"].mean().reindex(table.columns)
    return Curve(
        levels=table.columns.to_numpy(dtype=float),
        replicates=tuple(table.index),
        values=table.to_numpy(dtype=float),
        chance=float(pd.to_numeric(keyed["chance"], errors="coerce").astype(float).mean()),
        bayes=bayes.to_numpy(dtype=float),
        rows=len(rows),
    )


def resampled_means(curve: Curve, weights: np.ndarray) -> np.ndarray:
    """(B, L) weighted means over rows; NaN where a resample holds no measurement of a level."""
    measured = np.isfinite(curve.values)
    total = weights @ np.where(measured, curve.values, 0.0)
    count = weights @ measured.astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan)


class Resampler:
    """Two-stage resampling weights per instance (seeds, then tasks), and per size over instances.

    "bootknife" (default; Hesterberg 2004): each resample leaves one unit out at random and draws R
    from the other R - 1, which makes the resampled variance of a mean unbiased (the plain
    bootstrap's is (R - 1) / R too small: a third too small at R = 3). "bootstrap": R draws from R.
    A level with one unit adds no spread; an instance with one seed and one task has none at all.
    """

    def __init__(self, rows_by_instance: dict[str, list[str]], resamples: int, seed: int,
                 method: str = "bootknife", strata: dict[str, str] | None = None):
        self.resamples, self.method, self.seed = resamples, method, seed
        self._rows = {i: sorted(set(r)) for i, r in rows_by_instance.items()}
        self._weights, self._seed_counts = {}, {}
        for instance, rows in self._rows.items():
            self._weights[instance], self._seed_counts[instance] = self._two_stage(instance, rows)
        self._strata = strata or {i: i for i in self._rows}

    def _two_stage(self, instance: str, rows: list[str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        rng = np.random.default_rng([self.seed, zlib.crc32(instance.encode())])
        seeds = sorted({r.split("|")[0] for r in rows})
        seed_counts = draw_counts(rng, len(seeds), self.resamples, self.method)
        weights = np.zeros((self.resamples, len(rows)))
        for s, name in enumerate(seeds):
            columns = [c for c, r in enumerate(rows) if r.split("|")[0] == name]
            task_counts = draw_counts(rng, len(columns), self.resamples, self.method)
            weights[:, columns] = seed_counts[:, [s]] * task_counts / len(columns)
        return weights, {name: seed_counts[:, s] for s, name in enumerate(seeds)}

    def weights(self, instance: str, curve: Curve) -> np.ndarray:
        """(B, R_curve) weights for the curve's rows, in the curve's row order.

        A row the instance's draws do not hold (a per-record value such as the label's log-likelihood
        of a record that adapted to several tasks: 'seed|-') takes its seed's count alone."""
        position = {r: i for i, r in enumerate(self._rows[instance])}
        columns = [self._weights[instance][:, position[r]] if r in position
                   else self._seed_counts[instance][r.split("|")[0]] for r in curve.replicates]
        return np.stack(columns, axis=1)

    def instance_weights(self, instances: list[str]) -> np.ndarray:
        """(B, I) counts over the given instances, drawn within each size (the top level)."""
        counts = np.ones((self.resamples, len(instances)))
        by_stratum: dict[str, list[int]] = {}
        for column, instance in enumerate(instances):
            by_stratum.setdefault(self._strata.get(instance, instance), []).append(column)
        for stratum, columns in sorted(by_stratum.items()):
            rng = np.random.default_rng([self.seed, zlib.crc32(b"instances"), zlib.crc32(stratum.encode())])
            counts[:, columns] = draw_counts(rng, len(columns), self.resamples, self.method)
        return counts


def draw_counts(rng, units: int, resamples: int, method: str) -> np.ndarray:
    """(B, units) resampling counts summing to `units` (bootknife or bootstrap); ones for one unit."""
    if units == 1:
        return np.ones((resamples, 1))
    if method == "bootstrap":
        return rng.multinomial(units, np.full(units, 1.0 / units), resamples).astype(float)
    left_out = rng.integers(units, size=resamples)
    kept = rng.multinomial(units, np.full(units - 1, 1.0 / (units - 1)), resamples)
    slots = np.arange(units - 1)[None, :]
    columns = slots + (slots >= left_out[:, None])
    counts = np.zeros((resamples, units))
    counts[np.arange(resamples)[:, None], columns] = kept
    return counts


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
