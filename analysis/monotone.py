"""Where a measured curve first reaches a value, without fitting a shape to it.

`isotonic(samples)`: the non-decreasing least-squares fit of each row of a (B, L) matrix (levels
ascending, NaN where unmeasured), by the min-max formula iso_i = max_{j<=i} min_{k>=i} mean(y_j..y_k):
vectorised over the B bootstrap resamples (L is a handful of n or k levels).
`crossing(levels, samples, target)`: the level at which each isotonic row first reaches its target,
linearly interpolated in log2 of the level between the last level below and the first at or above.
Censoring is kept, never dropped: +inf where the target is not reached within the largest level
(right-censored: the need exceeds it), 0 where it is already reached at the smallest (left-censored).

Why not the 3-parameter saturating curve (analysis.fits)? Through 3 to 5 points it has no or few
residual degrees of freedom: world-l's .266 / .375 / .484 fitted exactly with ceiling .500 and was
reported "ceiling below target". The saturating fit stays as a check beside this estimate.
"""

from __future__ import annotations

import warnings

import numpy as np

EXACT, RIGHT, LEFT = "exact", "right", "left"


def isotonic(samples: np.ndarray, x: np.ndarray | None = None) -> np.ndarray:
    """Row-wise non-decreasing least-squares fit; an unmeasured (NaN) level is interpolated linearly in x
    (default: the level's position) between its measured neighbours, so it moves no crossing."""
    y = np.atleast_2d(np.asarray(samples, dtype=float))
    used = np.isfinite(y)
    count = np.concatenate([np.zeros((len(y), 1)), np.cumsum(used, axis=1)], axis=1)
    total = np.concatenate([np.zeros((len(y), 1)), np.cumsum(np.where(used, y, 0.0), axis=1)], axis=1)
    levels = y.shape[1]
    j, k = np.meshgrid(np.arange(levels), np.arange(levels), indexing="ij")
    with np.errstate(invalid="ignore", divide="ignore"):
        means = (total[:, k + 1] - total[:, j]) / (count[:, k + 1] - count[:, j])  # (B, j, k)
    means = np.where(k >= j, means, np.nan)
    fitted = np.full(y.shape, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices: a row with nothing measured
        for i in range(levels):
            fitted[:, i] = np.nanmax(np.nanmin(means[:, : i + 1, i:], axis=2), axis=1)
    x = np.arange(levels, dtype=float) if x is None else np.asarray(x, dtype=float)
    for row in np.flatnonzero(~used.all(axis=1) & used.any(axis=1)):
        fitted[row] = np.interp(x, x[used[row]], fitted[row, used[row]])
    return fitted


def crossing(levels: np.ndarray, samples: np.ndarray, target) -> np.ndarray:
    """(B,) level where each row's isotonic fit first reaches `target` (scalar or (B,)); inf / 0 censored."""
    x = np.log2(np.asarray(levels, dtype=float))
    fitted = isotonic(samples, x)
    target = np.broadcast_to(np.asarray(target, dtype=float), (len(fitted),))
    reached = fitted >= target[:, None]
    first = np.argmax(reached, axis=1)
    rows = np.arange(len(fitted))
    before = np.maximum(first - 1, 0)
    low, high = fitted[rows, before], fitted[rows, first]
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.clip((target - low) / (high - low), 0.0, 1.0)
    log2_level = x[before] + share * (x[first] - x[before])
    out = np.where(first == 0, 0.0, 2.0**log2_level)
    out = np.where(reached.any(axis=1), out, np.inf)
    usable = np.isfinite(fitted).any(axis=1) & np.isfinite(target)
    return np.where(usable, out, np.nan)


def censoring(value: float) -> str | None:
    """'right' (+inf), 'left' (0), 'exact' (a positive finite level), None (unusable)."""
    if np.isnan(value):
        return None
    if np.isinf(value):
        return RIGHT
    return LEFT if value == 0 else EXACT


def bounds(values: np.ndarray, low: float, high: float) -> tuple[np.ndarray, np.ndarray]:
    """The interval each value is known to lie in: exact (v, v); right (high, inf); left (0, low)."""
    values = np.asarray(values, dtype=float)
    lower = np.where(np.isinf(values), high, values)
    upper = np.where(values == 0, low, values)
    return lower, upper
