"""The strength -> need law: log N* = log C + b log S across models, for one training series.

Input: per model, ICL strength S and sample need N* as `Estimate`s whose `samples` come from the
same bootstrap draws of that model's replicates (analysis.bootstrap.Resampler), so each resample
refits the whole chain (acc(k) -> S, acc(n) -> fit -> N*) and then the law.

A model enters the law when its point S > 0 (log S needs it) and its point N* was reached within
the trusted n range. A resample counts when every entering model has S > 0 and an uncensored N*
in it; the interval is taken over counted resamples and their fraction is reported. The interval
is an expanded percentile interval (analysis.bootstrap.interval_tail) with the Welch-Satterthwaite
df of the models' replicates. Reported beside it, not used for the verdict: the across-model OLS
interval from the models' scatter about the line, which treats the models as a sample of sizes.

Verdict (settings.min_models_for_law models needed, default 3): "supported" when the exponent's
whole interval lies below 0 (stronger ICL, fewer examples), "contradicted" when wholly above 0,
"inconclusive" otherwise, or with too few models, or when fewer than
settings.min_valid_resample_fraction of resamples could be counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from analysis.bootstrap import percentile_interval
from analysis.fits import fit_line
from analysis.measures import Estimate
from analysis.settings import AnalysisSettings


@dataclass
class LawResult:
    series: str
    models: list[str]
    excluded: dict[str, str]
    exponent: float = np.nan
    ci_low: float = np.nan
    ci_high: float = np.nan
    prefactor: float = np.nan
    r2: float = np.nan
    valid_fraction: float = np.nan
    df: float = np.nan  # effective degrees of freedom of the bootstrap interval (Welch-Satterthwaite)
    ci_models_low: float = np.nan  # across-model interval: OLS standard error, t with n_models - 2 df
    ci_models_high: float = np.nan
    verdict: str = "inconclusive"
    sentence: str = ""
    boot_exponent: np.ndarray = field(default=None, repr=False)
    boot_log_prefactor: np.ndarray = field(default=None, repr=False)

    @property
    def n_models(self) -> int:
        return len(self.models)


def fit_law(
    series: str, strength: dict[str, Estimate], need: dict[str, Estimate], settings: AnalysisSettings
) -> LawResult:
    """Fit the law over the models that have both a positive S and a reached N*."""
    models, excluded = _entering_models(strength, need)
    result = LawResult(series, models, excluded)
    if len(models) >= 2:
        log_s = np.log([strength[m].value for m in models])
        log_n = np.log([need[m].value for m in models])
        point = fit_line(log_s, log_n)
        result.exponent, result.r2 = float(point.slope[0]), float(point.r2[0])
        result.prefactor = float(np.exp(point.intercept[0]))
        _across_models_interval(result, log_s, log_n, settings)
        _bootstrap_law(result, strength, need, settings)
    result.verdict, result.sentence = verdict(result, settings)
    if result.verdict == "supported" and not result.ci_models_high < 0:
        result.sentence += (
            f" The across-model interval ({result.ci_models_low:.2f} to {result.ci_models_high:.2f}), from the "
            "models' scatter about the line, includes 0: with these few sizes the law is not yet shown to "
            "hold beyond them."
        )
    return result


def _entering_models(strength, need) -> tuple[list[str], dict[str, str]]:
    models, excluded = [], {}
    for model in need:
        s, n = strength.get(model), need[model]
        if s is None or not np.isfinite(s.value):
            excluded[model] = "no ICL strength" + (f" ({s.reason})" if s is not None and s.reason else "")
        elif s.value <= 0:
            excluded[model] = f"ICL strength S = {s.value:.4f} is not positive, so log S is undefined"
        elif not np.isfinite(n.value):
            excluded[model] = f"no sample need ({n.reason})"
        else:
            models.append(model)
    return models, excluded


def _bootstrap_law(result: LawResult, strength, need, settings: AnalysisSettings) -> None:
    s = np.stack([strength[m].samples for m in result.models], axis=1)
    n = np.stack([need[m].samples for m in result.models], axis=1)
    usable = (np.isfinite(s) & (s > 0) & np.isfinite(n) & (n > 0)).all(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        boot = fit_line(np.log(np.where(usable[:, None], s, np.nan)), np.log(np.where(usable[:, None], n, np.nan)))
    result.boot_exponent, result.boot_log_prefactor = boot.slope, boot.intercept
    result.valid_fraction = float(np.isfinite(boot.slope).mean())
    if np.isfinite(boot.slope).any():
        result.df = _satterthwaite_df(result, strength, need, np.log(s[usable]), np.log(n[usable]), settings)
        low, high = percentile_interval(boot.slope, settings.confidence, result.df)
        result.ci_low, result.ci_high = float(low), float(high)


def _satterthwaite_df(result: LawResult, strength, need, log_s, log_n, settings) -> float:
    """Effective df of the exponent's variance, pooled over models by Welch-Satterthwaite.

    The exponent is a weighted sum over models (OLS weights w_i = (x_i - mean x) / Sxx); model i adds
    about w_i^2 (Var log N*_i + b^2 Var log S_i), known with replicates_i - 1 df. Leverage makes the
    end models dominate, so the pooled df is below the sum of the models' df.
    """
    if not settings.expand_intervals:
        return np.inf
    x = np.log([strength[m].value for m in result.models])
    weights = (x - x.mean()) / ((x - x.mean()) ** 2).sum()
    parts = weights**2 * (np.var(log_n, axis=0) + result.exponent**2 * np.var(log_s, axis=0))
    dfs = np.array([min(strength[m].df, need[m].df) for m in result.models])
    spread = parts > 0
    if not spread.any():
        return 0.0
    return float(parts[spread].sum() ** 2 / (parts[spread] ** 2 / dfs[spread]).sum())


def _across_models_interval(result: LawResult, log_s, log_n, settings) -> None:
    """The textbook OLS interval, from the models' scatter about the line (needs 3+ models)."""
    models = len(log_s)
    if models < 3:
        return
    residual = log_n - (np.log(result.prefactor) + result.exponent * log_s)
    sxx = ((log_s - log_s.mean()) ** 2).sum()
    error = np.sqrt((residual**2).sum() / (models - 2) / sxx)
    half = stats.t.ppf((1 + settings.confidence) / 2, models - 2) * error
    result.ci_models_low, result.ci_models_high = result.exponent - half, result.exponent + half


def verdict(result: LawResult, settings: AnalysisSettings) -> tuple[str, str]:
    """('supported' | 'contradicted' | 'inconclusive', a plain sentence saying which way the data went)."""
    head = f"{result.series}: "
    if result.n_models < settings.min_models_for_law:
        why = "; ".join(f"{m}: {r}" for m, r in result.excluded.items())
        return "inconclusive", (
            head + f"only {result.n_models} model(s) have both a positive ICL strength and a reached sample "
            f"need ({settings.min_models_for_law} needed), so the data cannot test the claim"
            + (f" (left out: {why})." if why else ".")
        )
    pct = round(100 * settings.confidence)
    fitted = (f"across {result.n_models} models, sample need scales as N* ~ S^{result.exponent:.2f} "
              f"({pct}% CI {result.ci_low:.2f} to {result.ci_high:.2f}, R^2 {result.r2:.2f})")
    if not result.valid_fraction >= settings.min_valid_resample_fraction:
        return "inconclusive", head + fitted + (
            f", but only {100 * result.valid_fraction:.0f}% of bootstrap resamples gave every model a positive S "
            f"and a reached N*, so the interval is not trustworthy: inconclusive."
        )
    if result.ci_high < 0:
        return "supported", head + fitted + (
            ": the data support the claim - models with stronger in-context learning needed fewer examples."
        )
    if result.ci_low > 0:
        return "contradicted", head + fitted + (
            ": the data contradict the claim - models with stronger in-context learning needed more examples."
        )
    return "inconclusive", head + fitted + (
        ": the interval includes 0, so the data neither support nor contradict the claim."
    )


def law_band(result: LawResult, strengths: np.ndarray, confidence: float):
    """Fitted N*(S) and its bootstrap band over the given strengths (for figures)."""
    line = result.prefactor * strengths**result.exponent
    if result.boot_exponent is None:
        return line, None, None
    log_n = result.boot_log_prefactor[:, None] + result.boot_exponent[:, None] * np.log(strengths)[None, :]
    low, high = percentile_interval(log_n, confidence)
    return line, np.exp(low), np.exp(high)
