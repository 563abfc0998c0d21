"""The per-model measures of DESIGN.md "Measures", each a point estimate plus bootstrap resamples.

Inputs are `Curve`s (analysis.bootstrap: one model's replicate x level accuracies) and the model's
bootstrap weights (B x replicates). Outputs are plain dataclasses holding the point value, the
equal-tailed interval and the B resampled values (kept for the law's bootstrap and the figures).

Censoring: an n that the fitted curve reaches only above `extrapolation_factor` x the largest n
measured is +inf in the resamples and null with a reason at the point; one reached below the
smallest n / factor is 0 and null likewise. Intervals keep censored resamples, so an interval that
reaches into the censored tail has an infinite (null) end.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from analysis.bootstrap import Curve, percentile_interval, resampled_means
from analysis.fits import CurveFit, fit_line, fit_saturating, fit_saturating_batch
from analysis.laws import accuracy_at_normalised, normalised_accuracy, saturating_log2_n_at
from analysis.settings import AnalysisSettings


@dataclass
class Estimate:
    value: float
    ci_low: float
    ci_high: float
    samples: np.ndarray = field(repr=False)
    reason: str | None = None
    df: float = np.nan  # degrees of freedom behind the interval (replicates - 1; inf: plain percentile)

    @classmethod
    def from_samples(cls, value, samples, settings: AnalysisSettings, df: float, reason=None) -> "Estimate":
        low, high = percentile_interval(samples, settings.confidence, df)
        return cls(float(value), float(low), float(high), np.asarray(samples, dtype=float), reason, df)

    @classmethod
    def missing(cls, reason: str, resamples: int) -> "Estimate":
        return cls(np.nan, np.nan, np.nan, np.full(resamples, np.nan), reason)


def interval_df(curve: Curve, settings: AnalysisSettings) -> float:
    """Replicates - 1 for expanded intervals, inf for plain ones; 0 (no interval) with one replicate."""
    replicates = len(curve.replicates)
    if replicates < 2:
        return 0.0
    return float(replicates - 1) if settings.expand_intervals else np.inf


@dataclass
class LevelMeans:
    """A curve's mean per level over replicates, with a bootstrap interval per level."""

    curve: Curve
    mean: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    samples: np.ndarray = field(repr=False)  # (B, L)


def level_means(curve: Curve, weights: np.ndarray, settings: AnalysisSettings) -> LevelMeans:
    samples = resampled_means(curve, weights)
    low, high = percentile_interval(samples, settings.confidence, interval_df(curve, settings))
    return LevelMeans(curve, curve.mean, low, high, samples)


@dataclass
class IclResult:
    acc: LevelMeans
    strength: Estimate  # accuracy per doubling of k
    intercept: float  # fitted accuracy at k = 1
    k_fit: np.ndarray  # the k levels of the strength fit
    largest_k: float
    gain: Estimate  # chance-normalised accuracy at the largest k
    efficiency: Estimate  # (acc - chance) / (bayes - chance) at the largest k


def icl_measures(curve: Curve, weights: np.ndarray, settings: AnalysisSettings) -> IclResult:
    acc = level_means(curve, weights, settings)
    resamples, df = len(weights), interval_df(curve, settings)
    k = curve.levels
    in_fit = (k >= settings.icl_k_min) & (k <= (settings.icl_k_max or np.inf)) & np.isfinite(acc.mean)
    point = fit_line(np.log2(k[in_fit]), acc.mean[in_fit])
    if in_fit.sum() >= 2:
        boot = fit_line(np.log2(k[in_fit]), acc.samples[:, in_fit])
        strength = Estimate.from_samples(point.slope[0], boot.slope, settings, df)
    else:
        strength = Estimate.missing(f"{int(in_fit.sum())} k level(s) in [{settings.icl_k_min}, "
                                    f"{settings.icl_k_max or 'max'}]; a slope needs 2", resamples)
    measured = np.flatnonzero((k >= 1) & np.isfinite(acc.mean))
    if not len(measured):
        no_k = Estimate.missing("no few-shot accuracy with k >= 1", resamples)
        return IclResult(acc, strength, float(point.intercept[0]), k[in_fit], np.nan, no_k, no_k)
    last = measured[-1]
    gain = _gain_at(acc, last, settings)
    efficiency = _efficiency_at(acc, last, settings)
    return IclResult(acc, strength, float(point.intercept[0]), k[in_fit], float(k[last]), gain, efficiency)


def _gain_at(acc: LevelMeans, level: int, settings: AnalysisSettings) -> Estimate:
    chance = acc.curve.chance
    return Estimate.from_samples(
        normalised_accuracy(acc.mean[level], chance), normalised_accuracy(acc.samples[:, level], chance), settings,
        interval_df(acc.curve, settings),
    )


def _efficiency_at(acc: LevelMeans, level: int, settings: AnalysisSettings) -> Estimate:
    chance, bayes = acc.curve.chance, acc.curve.bayes[level]
    resamples = len(acc.samples)
    if not np.isfinite(bayes):
        return Estimate.missing("no Bayes-optimal accuracy recorded (not a world task)", resamples)
    if bayes - chance <= 1e-9:
        return Estimate.missing(f"Bayes-optimal accuracy {bayes:.3f} is not above chance {chance:.3f}", resamples)
    scale = bayes - chance
    return Estimate.from_samples((acc.mean[level] - chance) / scale, (acc.samples[:, level] - chance) / scale,
                                 settings, interval_df(acc.curve, settings))


@dataclass
class FinetuneResult:
    acc: LevelMeans
    fit: CurveFit | None
    boot_params: np.ndarray = field(repr=False)  # (B, 3) upper, midpoint, slope
    boot_converged: float  # fraction of the fittable resamples whose fit converged
    boot_fittable: float  # fraction of resamples with >= 3 n levels measured
    boot_refitted: int  # resamples that needed the multi-start fallback
    target_accuracy: float
    sample_need: Estimate
    n_range: tuple[float, float]


def finetune_measures(curve: Curve, weights: np.ndarray, settings: AnalysisSettings) -> FinetuneResult:
    acc = level_means(curve, weights, settings)
    if not np.isfinite(curve.chance):
        return _unfitted(acc, "chance accuracy is not recorded, so the curve has no floor", weights, settings)
    log2_n = np.log2(curve.levels)
    target, n_range = _target_and_range(curve, settings)
    fit = fit_saturating(log2_n, acc.mean, curve.chance, settings)
    if fit is None:
        reason = f"{int(np.isfinite(acc.mean).sum())} n level(s) measured; the curve has 3 parameters"
        return _unfitted(acc, reason, weights, settings)
    batch = fit_saturating_batch(log2_n, acc.samples, curve.chance, fit.params, settings)
    need_samples = n_reaching(target, batch.params, curve.chance, n_range, settings)
    need_point = n_reaching(target, fit.params[None, :], curve.chance, n_range, settings)[0]
    reason = _need_reason(need_point, fit, target, n_range, settings)
    need = _censored_estimate(need_point, need_samples, settings, interval_df(curve, settings), reason)
    return FinetuneResult(acc, fit, batch.params, batch.converged_fraction, float(batch.fittable.mean()),
                          batch.refitted, target, need, n_range)


def _target_and_range(curve: Curve, settings: AnalysisSettings) -> tuple[float, tuple[float, float]]:
    target = float(accuracy_at_normalised(settings.target_normalised_accuracy, curve.chance))
    return target, (float(curve.levels.min()), float(curve.levels.max()))


def _unfitted(acc: LevelMeans, reason: str, weights, settings) -> FinetuneResult:
    target, n_range = _target_and_range(acc.curve, settings)
    empty = np.full((len(weights), 3), np.nan)
    return FinetuneResult(acc, None, empty, np.nan, 0.0, 0, target, Estimate.missing(reason, len(weights)), n_range)


def n_reaching(accuracy, params: np.ndarray, chance: float, n_range, settings: AnalysisSettings) -> np.ndarray:
    """n where each fitted curve reaches `accuracy`: +inf above the trusted range, 0 below it."""
    log2_n = saturating_log2_n_at(accuracy, params[:, 0], params[:, 1], params[:, 2], chance)
    reach = np.log2(settings.extrapolation_factor)
    low, high = np.log2(n_range[0]) - reach, np.log2(n_range[1]) + reach
    with np.errstate(over="ignore", invalid="ignore"):
        n = np.where(log2_n > high, np.inf, np.where(log2_n < low, 0.0, 2.0**log2_n))
    return np.where(np.isnan(log2_n), np.nan, n)


def _censored_estimate(point: float, samples: np.ndarray, settings, df: float, reason) -> Estimate:
    low, high = percentile_interval(samples, settings.confidence, df)
    value = point if np.isfinite(point) and point > 0 else np.nan
    return Estimate(float(value), float(low), float(high), samples, reason, df)


def _need_reason(point, fit: CurveFit, target, n_range, settings) -> str | None:
    factor = settings.extrapolation_factor
    if np.isnan(point):
        return "the fit gave no usable curve"
    if np.isinf(point) and fit.upper <= target:
        return f"the fitted ceiling {fit.upper:.3f} is below the target accuracy {target:.3f}"
    if np.isinf(point):
        return f"the target {target:.3f} is reached only beyond {factor:g} x the largest n ({n_range[1]:g})"
    if point == 0:
        return f"the target {target:.3f} is already passed below the smallest n ({n_range[0]:g}) / {factor:g}"
    return None


@dataclass
class ExchangePoint:
    k: float
    accuracy_k: float
    n: Estimate  # training examples that match k-shot accuracy
    n_per_shot: Estimate  # n / k


def exchange_rate(icl: IclResult, finetune: FinetuneResult, settings: AnalysisSettings) -> list[ExchangePoint]:
    """For each k >= 1: the n at which the fitted fine-tuning curve matches k-shot accuracy."""
    points = []
    if finetune.fit is None:
        return points
    chance = finetune.acc.curve.chance
    df = min(interval_df(icl.acc.curve, settings), interval_df(finetune.acc.curve, settings))
    for index, k in enumerate(icl.acc.curve.levels):
        accuracy = icl.acc.mean[index]
        if k < 1 or not np.isfinite(accuracy):
            continue
        point = n_reaching(accuracy, finetune.fit.params[None, :], chance, finetune.n_range, settings)[0]
        samples = n_reaching(icl.acc.samples[:, index], finetune.boot_params, chance, finetune.n_range, settings)
        reason = _exchange_reason(point, accuracy, finetune, settings)
        n = _censored_estimate(point, samples, settings, df, reason)
        ratio = _censored_estimate(point / k, samples / k, settings, df, reason)
        points.append(ExchangePoint(float(k), float(accuracy), n, ratio))
    return points


def _exchange_reason(point, accuracy, finetune: FinetuneResult, settings) -> str | None:
    if np.isinf(point):
        return f"k-shot accuracy {accuracy:.3f} is not reached by fine-tuning within the trusted n range"
    if point == 0:
        return f"k-shot accuracy {accuracy:.3f} is below fine-tuned accuracy at the smallest n"
    if np.isnan(point):
        return "no usable fine-tuning curve"
    return None
