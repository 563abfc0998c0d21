"""Serialise a StudyMeasures: the fits.json document and one pandas table per measure.

fits.json (valid JSON; NaN and +-inf are written as null; no timestamps, so a seed gives one file):
  layout_version, study, seed, records{counts, fsv_version, ...}, settings{...},
  definitions{measure: text}, icl_description,
  models{name: {model_params, replicates, acc_k[], icl_strength{}, chance_normalised_gain{},
                icl_efficiency{}, finetune{series: {fit{}, bootstrap{}, acc_n[]}},
                sample_need{series: {n_star, ci_low, ci_high, reason, ...}}}},
  exchange_rate{series: {model: [{k, accuracy_k, n, n_ci_low, n_ci_high, n_per_shot, ...}]}},
  law{series: {exponent, ci_low, ci_high, prefactor, r2, n_models, models, excluded, interval_df,
               bootstrap_valid_fraction, ci_models_low, ci_models_high, verdict, sentence}},
  zero_shot_descriptions[{source, model, description, accuracy, ci_low, ci_high, ...}], notes[].
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis.law import LawResult
from analysis.load import StudyRecords
from analysis.measures import Estimate, FinetuneResult, IclResult, LevelMeans
from analysis.settings import AnalysisSettings

LAYOUT_VERSION = 1


def json_safe(value):
    """Plain JSON types; NaN and infinities become None."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [json_safe(v) for v in value]
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer, int)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if value is None or value is pd.NA or isinstance(value, str):
        return value
    return str(value)


def definitions(settings: AnalysisSettings, measures) -> dict[str, str]:
    pct = f"{100 * settings.confidence:g}%"
    k_range = f"[{settings.icl_k_min}, {settings.icl_k_max or 'largest k'}]"
    return {
        "replicate": "one (seed, pretrain_seed) pair of a model; accuracies are averaged over tasks within it",
        "interval": f"{pct} {'expanded ' if settings.expand_intervals else ''}percentile interval over "
                    f"{settings.bootstrap_resamples} {settings.resampling} resamples of replicates, drawn per model "
                    "and shared by all of that model's measures",
        "acc_k": f"few-shot accuracy (description {measures.icl_description!r}); k = 0 is zero-shot with it",
        "icl_strength": f"least-squares slope of acc(k) on log2 k over k in {k_range}: accuracy per doubling",
        "chance_normalised_gain": "(acc - chance) / (1 - chance) at the largest k",
        "icl_efficiency": "(acc - chance) / (bayes_accuracy - chance) at the largest k",
        "acc_n": "zero-shot accuracy after training on n examples, fitted as chance + (upper - chance) * "
                 "sigmoid(slope * (log2 n - midpoint)), upper <= 1, bounded, "
                 f"{settings.robust_loss} loss (scale {settings.loss_scale}), multi-start",
        "sample_need": f"n where the fitted acc(n) first reaches chance-normalised accuracy "
                       f"{settings.target_normalised_accuracy}; null outside "
                       f"[n_min / {settings.extrapolation_factor:g}, n_max * {settings.extrapolation_factor:g}]",
        "exchange_rate": "for each k >= 1, the n where the fitted acc(n) equals k-shot accuracy, and n / k",
        "law": "least squares of log N* on log S across models; exponent interval from refitting every "
               "resample (df pooled over models by Welch-Satterthwaite); supported if the interval lies below 0, "
               "contradicted if above, else inconclusive. ci_models_*: OLS interval from the models' scatter "
               "(t, n_models - 2 df), reported, not used for the verdict",
    }


def fits_document(study: StudyRecords, measures, settings: AnalysisSettings, seed: int) -> dict:
    document = {
        "layout_version": LAYOUT_VERSION,
        "study": study.study,
        "seed": seed,
        "records": study.counts(),
        "settings": settings.to_dict(),
        "definitions": definitions(settings, measures),
        "icl_description": measures.icl_description,
        "models": {m: _model_entry(m, measures) for m in measures.models},
        "exchange_rate": {
            series: {m: [_exchange_entry(p) for p in points] for m, points in by_model.items()}
            for series, by_model in measures.exchange.items()
        },
        "law": {series: law_entry(law) for series, law in measures.law.items()},
        "zero_shot_descriptions": [
            {k: whole(v) if k in ("model_params", "n") else v for k, v in row.items()}
            for row in measures.descriptions.to_dict(orient="records")
        ],
        "notes": study.notes + measures.notes,
    }
    return json_safe(document)


def estimate_entry(estimate: Estimate, value_key: str = "value") -> dict:
    entry = {value_key: estimate.value, "ci_low": estimate.ci_low, "ci_high": estimate.ci_high}
    if estimate.reason:
        entry["reason"] = estimate.reason
    return entry


def whole(value: float):
    """An integral float (a count of examples or parameters) as int; anything else unchanged."""
    if isinstance(value, (float, np.floating)) and np.isfinite(value) and value == int(value):
        return int(value)
    return value


def _curve_points(acc: LevelMeans, level: str) -> list[dict]:
    return [
        {level: whole(acc.curve.levels[i]), "accuracy": acc.mean[i], "ci_low": acc.ci_low[i], "ci_high": acc.ci_high[i],
         "bayes_accuracy": acc.curve.bayes[i]}
        for i in range(len(acc.curve.levels))
    ]


def _model_entry(model: str, measures) -> dict:
    entry = {"model_params": whole(measures.params[model])}
    icl: IclResult | None = measures.icl.get(model)
    if icl is not None:
        entry["replicates"] = len(icl.acc.curve.replicates)
        entry["chance"] = icl.acc.curve.chance
        entry["acc_k"] = _curve_points(icl.acc, "k")
        entry["icl_strength"] = estimate_entry(icl.strength) | {
            "unit": "accuracy per doubling of k", "k_fit": [whole(k) for k in icl.k_fit],
            "accuracy_at_k1": icl.intercept}
        entry["chance_normalised_gain"] = estimate_entry(icl.gain) | {"k": whole(icl.largest_k)}
        bayes = icl.acc.curve.bayes[icl.acc.curve.levels == icl.largest_k]
        entry["icl_efficiency"] = estimate_entry(icl.efficiency) | {
            "k": whole(icl.largest_k), "bayes_accuracy": bayes[0] if len(bayes) else None}
    else:
        missing = {"value": None, "ci_low": None, "ci_high": None, "reason": "no zero/few-shot records"}
        entry |= {"icl_strength": missing, "chance_normalised_gain": missing, "icl_efficiency": missing}
    entry["finetune"], entry["sample_need"] = {}, {}
    for series, by_model in measures.finetune.items():
        if model in by_model:
            entry["finetune"][series] = _finetune_entry(by_model[model])
            entry["sample_need"][series] = sample_need_entry(by_model[model])
    return entry


def _finetune_entry(result: FinetuneResult) -> dict:
    return {
        "fit": result.fit.to_json() if result.fit else None,
        "bootstrap": {"converged_fraction": result.boot_converged, "fittable_fraction": result.boot_fittable,
                      "refitted_multistart": result.boot_refitted},
        "replicates": len(result.acc.curve.replicates),
        "acc_n": _curve_points(result.acc, "n"),
    }


def sample_need_entry(result: FinetuneResult) -> dict:
    samples = result.sample_need.samples
    return estimate_entry(result.sample_need, "n_star") | {
        "target_accuracy": result.target_accuracy,
        "n_range": [whole(n) for n in result.n_range],
        "resamples_reached": float(np.mean(np.isfinite(samples) & (samples > 0))),
        "resamples_above_range": float(np.mean(np.isinf(samples))),
        "resamples_below_range": float(np.mean(samples == 0)),
    }


def _exchange_entry(point) -> dict:
    entry = {"k": whole(point.k), "accuracy_k": point.accuracy_k, "n": point.n.value, "n_ci_low": point.n.ci_low,
             "n_ci_high": point.n.ci_high, "n_per_shot": point.n_per_shot.value,
             "n_per_shot_ci_low": point.n_per_shot.ci_low, "n_per_shot_ci_high": point.n_per_shot.ci_high}
    if point.n.reason:
        entry["reason"] = point.n.reason
    return entry


def law_entry(law: LawResult) -> dict:
    return {
        "exponent": law.exponent, "ci_low": law.ci_low, "ci_high": law.ci_high, "prefactor": law.prefactor,
        "r2": law.r2, "n_models": law.n_models, "models": law.models, "excluded": law.excluded,
        "bootstrap_valid_fraction": law.valid_fraction, "interval_df": law.df,
        "ci_models_low": law.ci_models_low, "ci_models_high": law.ci_models_high,
        "verdict": law.verdict, "sentence": law.sentence,
    }


TABLES = ("records", "missing_cells", "failed_cells", "acc_k", "icl_strength", "acc_n", "finetune_fits",
          "sample_need", "exchange_rate", "law", "zero_shot_descriptions")


def tables(study: StudyRecords, measures) -> dict[str, pd.DataFrame]:
    """Every table of the report, long form, one row per model (x level / series)."""
    out = {"records": _records_table(study)}
    if len(study.missing):
        out["missing_cells"] = study.missing
    if len(study.failed):
        out["failed_cells"] = study.failed[["cell_id", "regime", "model", "task", "k", "n", "seed", "error"]]
    out["acc_k"] = _levels_table({m: r.acc for m, r in measures.icl.items()}, "k", measures)
    out["icl_strength"] = _icl_table(measures)
    out["acc_n"] = pd.concat([_levels_table({m: r.acc for m, r in by.items()}, "n", measures).assign(series=s)
                              for s, by in measures.finetune.items()] or [pd.DataFrame()], ignore_index=True)
    out["finetune_fits"] = _finetune_table(measures)
    out["sample_need"] = pd.DataFrame([
        {"series": s, "model": m, "model_params": measures.params[m]} | sample_need_entry(r)
        for s, by in measures.finetune.items() for m, r in by.items()])
    out["exchange_rate"] = pd.DataFrame([
        {"series": s, "model": m, "model_params": measures.params[m]} | _exchange_entry(p)
        for s, by in measures.exchange.items() for m, points in by.items() for p in points])
    out["law"] = pd.DataFrame([{"series": s} | law_entry(law) for s, law in measures.law.items()])
    out["zero_shot_descriptions"] = measures.descriptions
    return {name: _flat(table) for name, table in out.items()}


def _records_table(study: StudyRecords) -> pd.DataFrame:
    analysed = study.records.groupby(["regime", "model"]).size().rename("analysed")
    failed = study.failed.groupby(["regime", "model"]).size().rename("failed")
    missing = study.missing.groupby(["regime", "model"]).size().rename("missing") if len(study.missing) else None
    parts = [p for p in (analysed, failed, missing) if p is not None]
    return pd.concat(parts, axis=1).fillna(0).astype(int).reset_index()


def _levels_table(by_model: dict[str, LevelMeans], level: str, measures) -> pd.DataFrame:
    rows = []
    for model, acc in by_model.items():
        replicates = np.isfinite(acc.curve.values).sum(axis=0)
        for point, count in zip(_curve_points(acc, level), replicates):
            rows.append({"model": model, "model_params": measures.params[model], **point,
                         "replicates": int(count), "chance": acc.curve.chance})
    return pd.DataFrame(rows)


def _icl_table(measures) -> pd.DataFrame:
    rows = []
    for model, icl in measures.icl.items():
        row = {"model": model, "model_params": measures.params[model], "largest_k": icl.largest_k}
        for name, estimate in (("icl_strength", icl.strength), ("chance_normalised_gain", icl.gain),
                               ("icl_efficiency", icl.efficiency)):
            row |= {name: estimate.value, f"{name}_ci_low": estimate.ci_low, f"{name}_ci_high": estimate.ci_high}
        rows.append(row)
    return pd.DataFrame(rows)


def _finetune_table(measures) -> pd.DataFrame:
    rows = []
    for series, by_model in measures.finetune.items():
        for model, result in by_model.items():
            fit = result.fit.to_json() if result.fit else {"message": "not fitted"}
            rows.append({"series": series, "model": model, "model_params": measures.params[model], **fit,
                         "bootstrap_converged_fraction": result.boot_converged,
                         "bootstrap_fittable_fraction": result.boot_fittable,
                         "bootstrap_refitted_multistart": result.boot_refitted})
    return pd.DataFrame(rows)


def _flat(table: pd.DataFrame) -> pd.DataFrame:
    """Lists and dicts in cells become JSON-ish text so the CSV is readable."""
    table = table.copy()
    for column in table.columns:
        if table[column].map(lambda v: isinstance(v, (list, dict, tuple))).any():
            table[column] = table[column].map(lambda v: str(json_safe(v)) if isinstance(v, (list, dict, tuple)) else v)
    return table
