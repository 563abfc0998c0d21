"""The claim tested: does stronger in-context learning go with a smaller sample need, across instances?

Input, per model instance (analysis.instances), for one training series: ICL strength S and the
FinetuneResult (N* with its censoring, analysis.measures), each with B resamples from the same
within-instance bootstrap draws, and the top-level draws over instances within each size
(analysis.bootstrap.Resampler.instance_weights).

Which instances count: one whose S interval lies wholly above 0 drives the test; one whose S
interval includes 0 (or has none) is shown in the figure and the tables but does not drive it.

The test (primary, decides the verdict): Kendall's tau between S and N* over the driving instances,
censoring handled as in Oakes (1982): N* is an interval (exact: a point; right-censored: above the
largest n measured; left-censored: at most the smallest), and a pair counts only when the order of
its two N* is known (the intervals do not overlap). tau = (concordant - discordant) / comparable
pairs, in every resample with the instances' resampling counts as pair weights. The bootstrap
holds the instances fixed, so a handful of them, perfectly ordered, would always look certain; the
verdict also needs the point tau to pass a one-sided permutation test at (1 - confidence) / 2 (every
ordering of S for up to 7 instances): three instances can never pass it, five only when perfectly
ordered. Verdict: "supported" when the whole interval of tau lies below 0 (stronger ICL, fewer
examples) and the permutation test agrees, "contradicted" likewise above 0, "inconclusive" otherwise,
each with its reason, also when fewer than
settings.min_models_for_law instances drive it, no pair is comparable, or fewer than
settings.min_valid_resample_fraction of resamples give a tau - each with the reason said.
A planted rising law whose strongest models never reach the target is contradicted: their
censored N* lie above every reached one, which the rank test counts and a fit on reached N* drops.

The description (secondary): log N* = log C + b log S by least squares over the driving instances
with a reached N*; its interval from the same resamples (instances weighted by their counts), an
expanded percentile interval with the Welch-Satterthwaite df of the instances' replicates. Beside
it, not used for anything: the across-instance OLS interval from the scatter about the line.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from analysis.bootstrap import percentile_interval
from analysis.fits import fit_line
from analysis.monotone import bounds
from analysis.settings import AnalysisSettings


@dataclass
class LawResult:
    series: str
    models: list[str]  # instances in the power-law fit (driving, N* reached)
    excluded: dict[str, str]  # instance -> why it does not drive the test or the fit
    exponent: float = np.nan
    ci_low: float = np.nan
    ci_high: float = np.nan
    prefactor: float = np.nan
    r2: float = np.nan
    valid_fraction: float = np.nan
    df: float = np.nan  # effective degrees of freedom of the bootstrap interval (Welch-Satterthwaite)
    ci_models_low: float = np.nan  # across-instance interval: OLS standard error, t with n_models - 2 df
    ci_models_high: float = np.nan
    ranked: list[str] = field(default_factory=list)  # instances driving the rank test
    tau: float = np.nan
    tau_ci_low: float = np.nan
    tau_ci_high: float = np.nan
    tau_valid_fraction: float = np.nan
    pairs: int = 0  # comparable pairs at the point
    n_censored: int = 0  # driving instances whose N* is censored (either side)
    tau_p_value: float = np.nan  # one-sided permutation p of the point tau (its sign's side)
    tau_logprob: float = np.nan  # the same test on N* of the label's log-likelihood
    tau_logprob_ci_low: float = np.nan
    tau_logprob_ci_high: float = np.nan
    verdict: str = "inconclusive"
    sentence: str = ""
    boot_exponent: np.ndarray = field(default=None, repr=False)
    boot_log_prefactor: np.ndarray = field(default=None, repr=False)
    boot_tau: np.ndarray = field(default=None, repr=False)

    @property
    def n_models(self) -> int:
        return len(self.models)


def fit_law(series: str, strength: dict, finetune: dict, weights, settings: AnalysisSettings) -> LawResult:
    """The rank test over driving instances, then the power law over those with a reached N*.

    strength: instance -> Estimate; finetune: instance -> FinetuneResult; weights(instances) -> (B, I)."""
    ranked, excluded = _driving_instances(strength, finetune)
    reached = [i for i in ranked if finetune[i].censored == "exact"]
    for instance in sorted(set(ranked) - set(reached)):
        low, high = finetune[instance].n_range
        bound = f"N* > {high:g} (right-censored)" if finetune[instance].censored == "right" else (
            f"N* <= {low:g} (left-censored)")
        excluded[instance] = f"{bound}: in the rank test, not the power-law fit"
    result = LawResult(series, reached, excluded, ranked=ranked)
    if ranked:
        _rank_test(result, strength, finetune, weights(ranked), settings)
    if len(reached) >= 2:
        log_s = np.log([strength[m].value for m in reached])
        log_n = np.log([finetune[m].need_point for m in reached])
        point = fit_line(log_s, log_n)
        result.exponent, result.r2 = float(point.slope[0]), float(point.r2[0])
        result.prefactor = float(np.exp(point.intercept[0]))
        _across_models_interval(result, log_s, log_n, settings)
        _bootstrap_law(result, strength, finetune, weights(reached), settings)
    result.verdict, result.sentence = verdict(result, settings)
    return result


def _driving_instances(strength, finetune) -> tuple[list[str], dict[str, str]]:
    ranked, excluded = [], {}
    for instance, result in finetune.items():
        s = strength.get(instance)
        if s is None or not np.isfinite(s.value):
            excluded[instance] = "no ICL strength" + (f" ({s.reason})" if s is not None and s.reason else "")
        elif not s.ci_low > 0:
            shown = f"[{s.ci_low:.3g}, {s.ci_high:.3g}]" if np.isfinite(s.ci_low) else "(no interval)"
            excluded[instance] = (f"ICL strength S = {s.value:.4f} {shown}: its interval is not above 0 "
                                  "(not positive for sure), shown only")
        elif np.isnan(result.need_point):
            excluded[instance] = f"no sample need ({result.sample_need.reason})"
        else:
            ranked.append(instance)
    return ranked, excluded


def censored_tau(s, lower, upper, weights) -> tuple[np.ndarray, np.ndarray]:
    """Kendall's tau per row over comparable pairs, and the weighted count of comparable pairs.

    s, lower, upper, weights: (B, I); N* of i is known to lie in [lower, upper]. A pair is
    comparable when its two intervals do not overlap and its S differ."""
    i, j = np.triu_indices(s.shape[1], k=1)
    order_s = np.sign(s[:, i] - s[:, j])
    order_n = np.where(lower[:, i] > upper[:, j], 1.0, np.where(upper[:, i] < lower[:, j], -1.0, 0.0))
    pair_weight = weights[:, i] * weights[:, j]
    signed = np.nan_to_num(order_s * order_n) * pair_weight
    comparable = np.abs(signed).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(comparable > 0, signed.sum(axis=1) / comparable, np.nan), comparable


def permutation_p(s: np.ndarray, lower: np.ndarray, upper: np.ndarray, tau: float, draws: int = 4000) -> float:
    """One-sided p of tau under no association: the share of orderings of S whose tau is as extreme.

    Every ordering for up to 7 instances, else `draws` seeded random ones; censoring is kept (the N*
    bounds stay with their instance). This is what a handful of instances can show at best: with 3
    perfectly ordered instances p = 1/6, with 5 it is 1/120."""
    if not np.isfinite(tau):
        return np.nan
    if len(s) <= 7:
        orders = np.array(list(itertools.permutations(range(len(s)))))
    else:
        rng = np.random.default_rng(len(s))
        orders = np.array([rng.permutation(len(s)) for _ in range(draws)])
    shuffled = s[orders]
    repeat = lambda values: np.broadcast_to(values, shuffled.shape)  # noqa: E731
    null, _ = censored_tau(shuffled, repeat(lower), repeat(upper), np.ones(shuffled.shape))
    null = np.nan_to_num(null)
    return float(np.mean(null <= tau + 1e-12) if tau <= 0 else np.mean(null >= tau - 1e-12))


def _need_bounds(results: list, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    low = np.array([r.n_range[0] for r in results])
    high = np.array([r.n_range[1] for r in results])
    return bounds(values, low, high)


def _rank_test(result: LawResult, strength, finetune, weights, settings: AnalysisSettings) -> None:
    chosen = [finetune[i] for i in result.ranked]
    s_point = np.array([[strength[i].value for i in result.ranked]])
    n_point = np.array([[r.need_point for r in chosen]])
    tau, pairs = censored_tau(s_point, *_need_bounds(chosen, n_point), np.ones_like(s_point))
    result.tau, result.pairs = float(tau[0]), int(pairs[0])
    result.tau_p_value = permutation_p(s_point[0], *(b[0] for b in _need_bounds(chosen, n_point)), result.tau)
    result.n_censored = sum(r.censored in ("right", "left") for r in chosen)
    s = np.stack([strength[i].samples for i in result.ranked], axis=1)
    n = np.stack([r.sample_need.samples for r in chosen], axis=1)
    boot, _ = censored_tau(s, *_need_bounds(chosen, n), weights)
    result.boot_tau, result.tau_valid_fraction = boot, float(np.isfinite(boot).mean())
    result.tau_ci_low, result.tau_ci_high = (float(v) for v in percentile_interval(boot, settings.confidence))
    lp = [r.logprob_need for r in chosen]
    if all(e is not None for e in lp):
        point = np.array([[r.logprob_point for r in chosen]])
        result.tau_logprob = float(censored_tau(s_point, *_need_bounds(chosen, point), np.ones_like(s_point))[0][0])
        lp_samples = np.stack([e.samples for e in lp], axis=1)
        boot_lp, _ = censored_tau(s, *_need_bounds(chosen, lp_samples), weights)
        result.tau_logprob_ci_low, result.tau_logprob_ci_high = (
            float(v) for v in percentile_interval(boot_lp, settings.confidence))


def _bootstrap_law(result: LawResult, strength, finetune, weights, settings: AnalysisSettings) -> None:
    s = np.stack([strength[m].samples for m in result.models], axis=1)
    n = np.stack([finetune[m].sample_need.samples for m in result.models], axis=1)
    usable = (np.isfinite(s) & (s > 0) & np.isfinite(n) & (n > 0)).all(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        boot = fit_line(np.log(np.where(usable[:, None], s, np.nan)), np.log(np.where(usable[:, None], n, np.nan)),
                        weights)
    result.boot_exponent, result.boot_log_prefactor = boot.slope, boot.intercept
    result.valid_fraction = float(np.isfinite(boot.slope).mean())
    if np.isfinite(boot.slope).any():
        result.df = _satterthwaite_df(result, strength, finetune, np.log(s[usable]), np.log(n[usable]), settings)
        low, high = percentile_interval(boot.slope, settings.confidence, result.df)
        result.ci_low, result.ci_high = float(low), float(high)


def _satterthwaite_df(result: LawResult, strength, finetune, log_s, log_n, settings) -> float:
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
    dfs = np.array([min(strength[m].df, finetune[m].sample_need.df) for m in result.models])
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
    needed = settings.min_models_for_law
    if len(result.ranked) < needed:
        why = "; ".join(f"{m}: {r}" for m, r in result.excluded.items())
        return "inconclusive", (
            head + f"only {len(result.ranked)} instance(s) have an ICL-strength interval above 0 and a sample need "
            f"(reached or censored; {needed} needed), so the data cannot test the claim"
            + (f" (left out: {why})." if why else ".")
        )
    pct = round(100 * settings.confidence)
    censored = f", {result.n_censored} of them censored" if result.n_censored else ""
    tested = (f"across {len(result.ranked)} instances{censored}, Kendall's tau between ICL strength and N* is "
              f"{result.tau:.2f} ({pct}% CI {result.tau_ci_low:.2f} to {result.tau_ci_high:.2f}, "
              f"{result.pairs} comparable pairs)")
    if result.pairs == 0:
        return "inconclusive", head + tested + (
            ": no pair of instances has a known order of N* (every N* is censored on the same side or the "
            "intervals overlap), so the data cannot tell.")
    if not result.tau_valid_fraction >= settings.min_valid_resample_fraction:
        return "inconclusive", head + tested + (
            f", but only {100 * result.tau_valid_fraction:.0f}% of resamples had a comparable pair, so the "
            "interval is not trustworthy: inconclusive.")
    described = _description(result, pct)
    tail = (1 - settings.confidence) / 2
    if (result.tau_ci_high < 0 or result.tau_ci_low > 0) and not result.tau_p_value <= tail:
        return "inconclusive", head + tested + (
            f": the measurement intervals exclude 0, but {len(result.ranked)} instances are too few for their order "
            f"to be told from chance (permutation p = {result.tau_p_value:.3f} > {tail:g}), so the data cannot "
            "tell yet." + described)
    if result.tau_ci_high < 0:
        return "supported", head + tested + (
            ": the data support the claim - instances with stronger in-context learning needed fewer examples."
            + described)
    if result.tau_ci_low > 0:
        return "contradicted", head + tested + (
            ": the data contradict the claim - instances with stronger in-context learning needed more examples."
            + described)
    return "inconclusive", head + tested + (
        ": the interval includes 0, so the data neither support nor contradict the claim." + described)


def _description(result: LawResult, pct: int) -> str:
    if not np.isfinite(result.exponent):
        return f" Only {result.n_models} instance(s) reached the target, too few for the power law."
    text = (f" Described as a power law over the {result.n_models} instances that reached the target: N* ~ "
            f"S^{result.exponent:.2f} ({pct}% CI {result.ci_low:.2f} to {result.ci_high:.2f}, R^2 {result.r2:.2f}).")
    if np.isfinite(result.ci_models_low) and result.ci_models_low <= 0 <= result.ci_models_high:
        text += (f" The across-instance interval ({result.ci_models_low:.2f} to {result.ci_models_high:.2f}), from "
                 "the scatter about the line, includes 0.")
    return text


def law_band(result: LawResult, strengths: np.ndarray, confidence: float):
    """Fitted N*(S) and its bootstrap band over the given strengths (for figures)."""
    line = result.prefactor * strengths**result.exponent
    if result.boot_exponent is None:
        return line, None, None
    log_n = result.boot_log_prefactor[:, None] + result.boot_exponent[:, None] * np.log(strengths)[None, :]
    low, high = percentile_interval(log_n, confidence)
    return line, np.exp(low), np.exp(high)
