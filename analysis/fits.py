"""Fits of the laws in `analysis.laws` to measured points: lines row by row, and the saturating acc(n) check.

Inputs are plain arrays: an example axis in log2 (`log2_n`, shape (L,)) and accuracies (shape (L,)
for one curve, (B, L) for B bootstrap resamples), NaN where a level was not measured.

- `fit_line`: least squares of y on x, row by row, ignoring NaN (ICL strength, the law).
- `fit_saturating`: acc(n) of one curve with scipy.optimize.least_squares, bounded, robust loss, run
  from the `settings.fit_starts` best points of a 72-point grid of starts; the best converged run
  wins, and how many runs converged and agree with it is recorded.

The saturating fit is a check on sample need, not its estimate (analysis.monotone): with 3 to 5 n
levels its 3 parameters leave no or few residual degrees of freedom. A vectorised refit of every
bootstrap resample (batched Levenberg-Marquardt) was used while N* came from this curve and was
removed with that role.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import least_squares

from analysis.laws import saturating_accuracy, saturating_jacobian
from analysis.settings import AnalysisSettings

PARAMETERS = ("upper", "midpoint", "slope")  # midpoint is log2 n; slope is logit units per doubling


@dataclass(frozen=True)
class LineFit:
    slope: np.ndarray
    intercept: np.ndarray
    r2: np.ndarray
    n_points: np.ndarray


def fit_line(x: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None) -> LineFit:
    """(Weighted) least squares y = intercept + slope * x for each row of y (NaN points skipped).

    `weights` (broadcast to y) are resampling counts: a point drawn twice counts twice."""
    y = np.atleast_2d(np.asarray(y, dtype=float))
    x = np.broadcast_to(np.asarray(x, dtype=float), y.shape)
    w = np.ones(y.shape) if weights is None else np.broadcast_to(np.asarray(weights, dtype=float), y.shape)
    used = np.isfinite(y) & np.isfinite(x) & (w > 0)
    w = np.where(used, w, 0.0)
    count = used.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        total = w.sum(axis=1)
        x_mean = (w * np.where(used, x, 0)).sum(axis=1) / total
        y_mean = (w * np.where(used, y, 0)).sum(axis=1) / total
        dx = np.where(used, x - x_mean[:, None], 0)
        dy = np.where(used, y - y_mean[:, None], 0)
        sxx, sxy, syy = (w * dx * dx).sum(axis=1), (w * dx * dy).sum(axis=1), (w * dy * dy).sum(axis=1)
        slope = np.where((count >= 2) & (sxx > 1e-12), sxy / sxx, np.nan)
        intercept = y_mean - slope * x_mean
        r2 = np.where(syy > 0, 1.0 - (syy - slope * sxy) / syy, np.nan)
    return LineFit(slope, intercept, np.where(count >= 3, r2, np.nan), count)


@dataclass(frozen=True)
class CurveFit:
    """One fitted acc(n) curve, with how the fit went."""

    upper: float
    midpoint: float
    slope: float
    chance: float
    converged: bool
    cost: float
    rmse: float
    starts: int
    starts_converged: int
    starts_at_best: int
    message: str

    @property
    def params(self) -> np.ndarray:
        return np.array([self.upper, self.midpoint, self.slope])

    def to_json(self) -> dict:
        out = asdict(self)
        out["midpoint_log2_n"] = out.pop("midpoint")
        out["slope_per_doubling"] = out.pop("slope")
        out["midpoint_n"] = float(2.0**self.midpoint)
        return out


def saturating_bounds(log2_n: np.ndarray, chance: float, settings: AnalysisSettings):
    margin = settings.midpoint_margin_doublings
    low = np.array([chance + 0.01 * (1 - chance), np.min(log2_n) - margin, settings.slope_bounds[0]])
    high = np.array([1.0, np.max(log2_n) + margin, settings.slope_bounds[1]])
    return low, high


def starting_points(log2_n, accuracy, chance: float, low, high, settings: AnalysisSettings) -> list:
    """The `settings.fit_starts` lowest-cost points of a grid over (upper, midpoint, slope)."""
    top = float(np.nanmax(accuracy))
    uppers = (min(max(top, chance + 0.02), 1.0), (1.0 + top) / 2, 1.0)
    midpoints = np.linspace(np.min(log2_n) - 1, np.max(log2_n) + 1, 6)
    slopes = (0.3, 0.8, 2.0, 5.0)
    grid = np.clip(np.array(list(itertools.product(uppers, midpoints, slopes))), low, high)
    y = np.broadcast_to(accuracy, (len(grid), len(accuracy)))
    cost, _, _ = _batch_cost(log2_n, y, np.isfinite(y), grid, chance, settings)
    return list(grid[np.argsort(cost, kind="stable")[: settings.fit_starts]])


def fit_saturating(
    log2_n: np.ndarray, accuracy: np.ndarray, chance: float, settings: AnalysisSettings,
    extra_starts: list | None = None,
) -> CurveFit | None:
    """Best robust fit of acc(n) from several starts; None when fewer than 3 levels are measured."""
    used = np.isfinite(accuracy)
    x, y = np.asarray(log2_n, dtype=float)[used], np.asarray(accuracy, dtype=float)[used]
    if len(x) < len(PARAMETERS):
        return None
    low, high = saturating_bounds(x, chance, settings)
    starts = starting_points(x, y, chance, low, high, settings) + list(extra_starts or [])
    results = [_least_squares(x, y, chance, start, low, high, settings) for start in starts]
    converged = [r for r in results if r.success]
    best = min(converged or results, key=lambda r: r.cost)
    at_best = sum(abs(r.cost - best.cost) <= 1e-6 * max(best.cost, 1e-12) + 1e-12 for r in converged)
    residual = saturating_accuracy(x, *best.x, chance) - y
    return CurveFit(
        upper=float(best.x[0]), midpoint=float(best.x[1]), slope=float(best.x[2]), chance=float(chance),
        converged=bool(best.success), cost=float(best.cost), rmse=float(np.sqrt(np.mean(residual**2))),
        starts=len(starts), starts_converged=len(converged), starts_at_best=int(at_best),
        message=str(best.message),
    )


def _least_squares(x, y, chance, start, low, high, settings: AnalysisSettings):
    return least_squares(
        lambda p: saturating_accuracy(x, *p, chance) - y,
        start,
        jac=lambda p: saturating_jacobian(x, *p, chance),
        bounds=(low, high),
        loss=settings.robust_loss,
        f_scale=settings.loss_scale,
        max_nfev=2000,
    )


def _robust_weights(residual: np.ndarray, settings: AnalysisSettings):
    """rho(z) and rho'(z) of scipy's robust losses, z = (r / f_scale)^2."""
    z = (residual / settings.loss_scale) ** 2
    if settings.robust_loss == "soft_l1":
        root = np.sqrt(1.0 + z)
        return 2.0 * (root - 1.0), 1.0 / root
    small = z <= 1.0
    root = np.sqrt(np.maximum(z, 1e-300))
    return np.where(small, z, 2.0 * root - 1.0), np.where(small, 1.0, 1.0 / root)


def _batch_cost(x, y, used, params, chance, settings):
    fitted = saturating_accuracy(x[None, :], params[:, :1], params[:, 1:2], params[:, 2:3], chance)
    residual = np.where(used, fitted - np.nan_to_num(y), 0.0)
    rho, weight = _robust_weights(residual, settings)
    cost = 0.5 * settings.loss_scale**2 * np.where(used, rho, 0.0).sum(axis=1)
    return cost, residual, np.where(used, weight, 0.0)
