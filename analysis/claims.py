"""Claims of the literature, each tested on the study's own records: one row per claim.

Every effect is measured across model instances, with an interval from the same hierarchical
bootstrap as everything else (each instance's own resamples, instances redrawn within their size).
A trend with size is the least-squares slope of the instance's value on log10 parameters.
Status: "held" when the whole interval lies on the side the claim predicts, "not held" otherwise
(the note says whether the interval includes no effect or lies on the other side), "not testable
here" when the study lacks what the claim needs (the note says what). No result is a target.

  Brown et al. 2020   few-shot gain over zero-shot grows with model size           slope > 0
  Lester et al. 2021  prompt tuning closes the gap to full fine-tuning with size   slope of the gap < 0
  Wei et al. 2021     instruction tuning helps held-out zero-shot only at scale    slope of the help > 0
  Chan et al. 2022    in-context and in-weights learning trade off                 tau(S, fine-tuned acc) < 0
  Zhao et al. 2021    accuracy varies across demonstration sets beyond sampling    variance ratio > 1
                      (a chi-square interval: under binomial noise alone the ratio is 1)
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from analysis.bootstrap import build_curve, percentile_interval
from analysis.fits import fit_line
from analysis.instances import task_rows, text_of
from analysis.law import censored_tau
from analysis.measures import level_means
from analysis.series import description_of

MIN_SIZES = 3


def literature_claims(measures, records, resampler, settings) -> pd.DataFrame:
    rows = [
        _brown(measures, resampler, settings),
        _lester(measures, resampler, settings),
        _wei(measures, records, resampler, settings),
        _chan(measures, resampler, settings),
        _zhao(measures, records, resampler, settings),
    ]
    return pd.DataFrame(rows)


def _row(claim, source, measure, effect=np.nan, low=np.nan, high=np.nan, side=1, null=0.0, note=""):
    if not np.isfinite(effect):
        status = "not testable here"
    elif (side > 0 and low > null) or (side < 0 and high < null):
        status = "held"
    else:
        status = "not held"
        if not note:
            note = "the interval includes no effect" if low <= null <= high else "the interval lies on the other side"
    return {"claim": claim, "source": source, "measure": measure, "effect": effect, "ci_low": low,
            "ci_high": high, "status": status, "note": note}


def _size_trend(measures, values: dict, resampler, settings):
    """Slope of an instance value on log10 params: (point, low, high) or None with fewer than 3 sizes."""
    names = [i for i in values if np.isfinite(measures.params.get(i, np.nan)) and np.isfinite(values[i][0])]
    if len({measures.model_of[i] for i in names}) < MIN_SIZES:
        return None
    x = np.log10([measures.params[i] for i in names])
    point = fit_line(x, np.array([values[i][0] for i in names])).slope[0]
    samples = np.stack([values[i][1] for i in names], axis=1)
    boot = fit_line(x, samples, resampler.instance_weights(names)).slope
    low, high = percentile_interval(boot, settings.confidence)
    return float(point), float(low), float(high)


def _untestable(claim, source, measure, why):
    return _row(claim, source, measure, note=why)


def _brown(measures, resampler, settings):
    claim, source = "few-shot gain over zero-shot grows with model size", "Brown et al. 2020"
    measure = "slope of acc(largest k) - acc(0) on log10 params"
    values = {}
    for instance, icl in measures.icl.items():
        levels = icl.acc.curve.levels
        if 0 in levels and levels.max() >= 1:
            zero, top = np.flatnonzero(levels == 0)[0], len(levels) - 1
            mean, samples = icl.acc.mean, icl.acc.samples
            values[instance] = (mean[top] - mean[zero], samples[:, top] - samples[:, zero])
    trend = _size_trend(measures, values, resampler, settings)
    if trend is None:
        return _untestable(claim, source, measure, f"zero- and few-shot records on fewer than {MIN_SIZES} sizes")
    return _row(claim, source, measure, *trend, side=1)


def _last_level(result):
    return result.acc.curve.levels.max(), result.acc.mean[-1], result.acc.samples[:, -1]


def _lester(measures, resampler, settings):
    claim, source = "prompt tuning closes the gap to full fine-tuning as models grow", "Lester et al. 2021"
    measure = "slope of acc(sft) - acc(prompt tuning) at the largest n on log10 params"
    full, prompt = measures.finetune.get("sft", {}), measures.finetune.get("prompt_tuning", {})
    values = {}
    for instance in sorted(set(full) & set(prompt)):
        n_full, a_full, s_full = _last_level(full[instance])
        n_prompt, a_prompt, s_prompt = _last_level(prompt[instance])
        if n_full == n_prompt:
            values[instance] = (a_full - a_prompt, s_full - s_prompt)
    trend = _size_trend(measures, values, resampler, settings)
    if trend is None:
        return _untestable(claim, source, measure,
                           f"sft and prompt_tuning at a common largest n on fewer than {MIN_SIZES} sizes")
    return _row(claim, source, measure, *trend, side=-1)


def _wei(measures, records, resampler, settings):
    claim, source = "instruction tuning helps held-out zero-shot only at scale", "Wei et al. 2021"
    measure = "slope of acc(after IT, largest n) - base zero-shot acc (same description) on log10 params"
    tuned = measures.finetune.get("instruction_tuning", {})
    zero = records[records["regime"] == "zero_shot"]
    trained = records[records["regime"] == "instruction_tuning"]
    variant = description_of(trained).mode().iloc[0] if len(trained) else "human"
    values = {}
    for instance, result in tuned.items():
        base = zero[(zero["instance"] == instance) & (description_of(zero) == variant)]
        curve = build_curve(task_rows(base).assign(_level=0), "_level") if len(base) else None
        if curve is None:
            continue
        means = level_means(curve, resampler.weights(instance, curve), settings)
        _, accuracy, samples = _last_level(result)
        values[instance] = (accuracy - means.mean[0], samples - means.samples[:, 0])
    trend = _size_trend(measures, values, resampler, settings)
    if trend is None:
        return _untestable(claim, source, measure,
                           f"instruction tuning and base zero-shot records on fewer than {MIN_SIZES} sizes")
    return _row(claim, source, measure, *trend, side=1)


def _chan(measures, resampler, settings):
    claim, source = "in-context and in-weights learning trade off", "Chan et al. 2022"
    measure = "Kendall's tau across instances between ICL strength S and sft accuracy at the largest n"
    full = measures.finetune.get("sft", {})
    names = [i for i in full if i in measures.icl and np.isfinite(measures.icl[i].strength.value)]
    if len(names) < MIN_SIZES:
        return _untestable(claim, source, measure, f"S and sft accuracy on fewer than {MIN_SIZES} instances")
    s = np.array([[measures.icl[i].strength.value for i in names]])
    a = np.array([[_last_level(full[i])[1] for i in names]])
    point = censored_tau(s, a, a, np.ones_like(s))[0][0]
    s_boot = np.stack([measures.icl[i].strength.samples for i in names], axis=1)
    a_boot = np.stack([_last_level(full[i])[2] for i in names], axis=1)
    boot = censored_tau(s_boot, a_boot, a_boot, resampler.instance_weights(names))[0]
    low, high = percentile_interval(boot, settings.confidence)
    return _row(claim, source, measure, float(point), float(low), float(high), side=-1)


def _zhao(measures, records, resampler, settings):
    claim, source = "accuracy varies across demonstration sets beyond sampling noise", "Zhao et al. 2021"
    measure = "variance of few-shot accuracy across demonstration draws / binomial variance (pooled over k >= 1)"
    few = task_rows(records[(records["regime"] == "few_shot") & (records["k"] >= 1)])
    scaled, df = _scaled_variance(few)
    if df == 0:
        return _untestable(claim, source, measure,
                           "no instance has few-shot records from 2 or more demonstration draws")
    ratio = scaled / df
    tail = (1 - settings.confidence) / 2
    low, high = ratio * df / stats.chi2.ppf(1 - tail, df), ratio * df / stats.chi2.ppf(tail, df)
    return _row(claim, source, measure, ratio, low, high, side=1, null=1.0,
                note=f"chi-square interval on {df} df (draws - 1, summed over instances and k)")


def _scaled_variance(rows: pd.DataFrame) -> tuple[float, int]:
    """Sum over (instance, k) of (draws - 1) * variance of the draws' task-mean accuracy / its binomial
    variance, and the summed draws - 1."""
    if rows.empty:
        return 0.0, 0
    rows = rows.assign(_seed=text_of(rows["seed"]), accuracy=rows["accuracy"].astype(float),
                       n_eval=rows["n_eval"].astype(float))
    draws = rows.groupby(["instance", "k", "_seed"]).agg(
        accuracy=("accuracy", "mean"), tasks=("task", "nunique"), n_eval=("n_eval", "mean"))
    groups = draws.groupby(level=["instance", "k"])
    p = groups["accuracy"].transform("mean")
    draws = draws.assign(binomial=p * (1 - p) / (draws["n_eval"] * draws["tasks"]))
    summary = draws.groupby(level=["instance", "k"]).agg(
        var=("accuracy", "var"), binomial=("binomial", "mean"), draws=("accuracy", "size"))
    summary = summary[(summary["draws"] >= 2) & (summary["binomial"] > 0)]
    df = summary["draws"] - 1
    return float((df * summary["var"] / summary["binomial"]).sum()), int(df.sum())
