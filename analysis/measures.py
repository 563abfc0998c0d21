"""The per-instance measures of DESIGN.md "Measures", each a point estimate plus bootstrap resamples.

Inputs are `Curve`s (analysis.bootstrap: one model instance's (seed x task) x level values) and the
instance's bootstrap weights. Outputs are plain dataclasses holding the point value, the
equal-tailed interval and the B resampled values (kept for the law's bootstrap and the figures).

Sample need N* (and the exchange rate's matching n, and a description's worth k*) is where the
measured curve, made monotone (analysis.monotone), first reaches its target, interpolated in log2 n.
Censoring: not reached within the largest n is +inf (right-censored, N* > n_max), reached already at
the smallest is 0 (left-censored); the point's value is then null with a reason, its `need_point`
keeps the censoring for the law's rank test, and intervals keep censored resamples, so an interval
reaching into the censored tail has an infinite (null) end. The saturating fit of analysis.fits is
kept as a check (`need_by_fit`); the label's log-likelihood gives a second, continuous N*.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from analysis.bootstrap import Curve, percentile_interval, resampled_means
from analysis.fits import CurveFit, fit_line, fit_saturating
from analysis.monotone import censoring, crossing
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
    raw: float = np.nan  # the point with its censoring (+inf / 0), where the value is a censored crossing

    @classmethod
    def from_samples(cls, value, samples, settings: AnalysisSettings, df: float, reason=None) -> "Estimate":
        low, high = percentile_interval(samples, settings.confidence, df)
        return cls(float(value), float(low), float(high), np.asarray(samples, dtype=float), reason, df)

    @classmethod
    def missing(cls, reason: str, resamples: int) -> "Estimate":
        return cls(np.nan, np.nan, np.nan, np.full(resamples, np.nan), reason)


def interval_df(curve: Curve, settings: AnalysisSettings) -> float:
    """Seeds - 1 (tasks - 1 with one seed) for expanded intervals, inf for plain ones; 0: no interval."""
    units = curve.seeds if curve.seeds > 1 else curve.tasks
    if units < 2:
        return 0.0
    return float(units - 1) if settings.expand_intervals else np.inf


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
    fit: CurveFit | None  # the saturating fit of the mean curve: a check on N*, never the estimate
    target_accuracy: float
    sample_need: Estimate  # monotone interpolation in log2 n; samples +inf right-, 0 left-censored
    need_point: float  # the point N* with its censoring: +inf (> n_max), 0 (<= n_min), NaN (unusable)
    need_by_fit: float  # N* of the saturating fit (+inf beyond the trusted range); NaN without a fit
    n_range: tuple[float, float]
    logprob: LevelMeans | None = None  # the correct label's mean log-likelihood against n
    logprob_need: Estimate | None = None  # n where it first reaches the same normalised target
    logprob_point: float = np.nan

    @property
    def censored(self) -> str | None:
        return censoring(self.need_point)


def finetune_measures(curve: Curve, weights: np.ndarray, settings: AnalysisSettings) -> FinetuneResult:
    acc = level_means(curve, weights, settings)
    target, n_range = _target_and_range(curve, settings)
    if not np.isfinite(curve.chance):
        missing = Estimate.missing("chance accuracy is not recorded, so the target is undefined", len(weights))
        return FinetuneResult(acc, None, target, missing, np.nan, np.nan, n_range)
    need, point = censored_crossing(curve.levels, acc, target, np.full(len(weights), target), settings,
                                    "the target accuracy")
    fit = fit_saturating(np.log2(curve.levels), acc.mean, curve.chance, settings)
    by_fit = n_reaching(target, fit.params[None, :], curve.chance, n_range, settings)[0] if fit else np.nan
    return FinetuneResult(acc, fit, target, need, point, float(by_fit), n_range)


def censored_crossing(levels, means: LevelMeans, target: float, target_samples, settings, what: str):
    """(Estimate, point) of where a curve first reaches `target`, censoring kept (analysis.monotone)."""
    point = float(crossing(levels, means.mean[None, :], target)[0])
    samples = crossing(levels, means.samples, target_samples)
    low, high = levels.min(), levels.max()
    reason = {None: "no usable curve",
              "right": f"{what} is not reached within the largest level ({high:g}): right-censored, > {high:g}",
              "left": f"{what} is already reached at the smallest level ({low:g}): left-censored, <= {low:g}",
              "exact": None}[censoring(point)]
    return _censored_estimate(point, samples, settings, interval_df(means.curve, settings), reason), point


def logprob_measures(result: FinetuneResult, curve: Curve, weights, settings: AnalysisSettings) -> None:
    """Sample need on the label's mean log-likelihood: the same normalised target, log(chance) at 0."""
    means = level_means(curve, weights, settings)
    result.logprob = means
    floor = np.log(curve.chance) if np.isfinite(curve.chance) and 0 < curve.chance < 1 else np.nan
    target = (1 - settings.target_normalised_accuracy) * floor
    if not np.isfinite(target):
        result.logprob_need = Estimate.missing("chance is not recorded, so the log-likelihood has no floor",
                                               len(weights))
        return
    result.logprob_need, result.logprob_point = censored_crossing(
        curve.levels, means, target, np.full(len(weights), target), settings, "the log-likelihood target")


def _target_and_range(curve: Curve, settings: AnalysisSettings) -> tuple[float, tuple[float, float]]:
    target = float(accuracy_at_normalised(settings.target_normalised_accuracy, curve.chance))
    return target, (float(curve.levels.min()), float(curve.levels.max()))


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
    return Estimate(float(value), float(low), float(high), samples, reason, df, float(point))


@dataclass
class ExchangePoint:
    k: float
    accuracy_k: float
    n: Estimate  # training examples that match k-shot accuracy
    n_per_shot: Estimate  # n / k


def exchange_rate(icl: IclResult, finetune: FinetuneResult, settings: AnalysisSettings) -> list[ExchangePoint]:
    """For each k >= 1: the n at which the measured fine-tuning curve first matches k-shot accuracy."""
    points = []
    levels = finetune.acc.curve.levels
    for index, k in enumerate(icl.acc.curve.levels):
        accuracy = icl.acc.mean[index]
        if k < 1 or not np.isfinite(accuracy):
            continue
        point = float(crossing(levels, finetune.acc.mean[None, :], accuracy)[0])
        samples = crossing(levels, finetune.acc.samples, icl.acc.samples[:, index])
        df = min(interval_df(icl.acc.curve, settings), interval_df(finetune.acc.curve, settings))
        reason = _exchange_reason(point, accuracy)
        n = _censored_estimate(point, samples, settings, df, reason)
        ratio = _censored_estimate(point / k, samples / k, settings, df, reason)
        points.append(ExchangePoint(float(k), float(accuracy), n, ratio))
    return points


def _exchange_reason(point, accuracy) -> str | None:
    if np.isinf(point):
        return f"k-shot accuracy {accuracy:.3f} is not reached by fine-tuning within the largest n"
    if point == 0:
        return f"k-shot accuracy {accuracy:.3f} is already passed by fine-tuning at the smallest n"
    if np.isnan(point):
        return "no usable fine-tuning curve"
    return None


def description_worth(icl: IclResult, described: LevelMeans, settings: AnalysisSettings) -> Estimate:
    """k*: the k (>= 1) at which few-shot accuracy equals zero-shot accuracy with a description."""
    shots = icl.acc.curve.levels >= 1
    if shots.sum() < 1 or not np.isfinite(described.mean[0]):
        return Estimate.missing("no few-shot levels with k >= 1 or no described zero-shot accuracy",
                                len(described.samples))
    levels = icl.acc.curve.levels[shots]
    point = float(crossing(levels, icl.acc.mean[None, shots], described.mean[0])[0])
    samples = crossing(levels, icl.acc.samples[:, shots], described.samples[:, 0])
    reason = {"right": f"few-shot accuracy stays below it up to k = {levels.max():g}: k* > {levels.max():g}",
              "left": f"already at k = {levels.min():g} few-shot accuracy is above it: k* <= {levels.min():g}",
              None: "no usable curve", "exact": None}[censoring(point)]
    df = min(interval_df(icl.acc.curve, settings), interval_df(described.curve, settings))
    return _censored_estimate(point, samples, settings, df, reason)
