"""Serialise a StudyMeasures: the fits.json document and one pandas table per measure.

fits.json (valid JSON; NaN and +-inf are written as null; no timestamps, so a seed gives one file):
  layout_version, study, seed, records{counts, fsv_version, ...}, settings{...},
  definitions{measure: text}, icl_description,
  models{instance "MODEL/p<seed>/<step|final>": {model, model_params, replicates, acc_k[], icl_strength{},
                chance_normalised_gain{}, icl_efficiency{}, finetune{series: {fit{}, acc_n[]}},
                sample_need{series: {n_star, ci_low, ci_high, censored, reason, n_star_by_fit, ...}}}},
  exchange_rate{series: {instance: [{k, accuracy_k, n, n_ci_low, n_ci_high, n_per_shot, ...}]}},
  exchange_summary[{series, k, n_per_shot, ci_low, ci_high, ...}],
  law{series: {verdict, sentence, tau, tau_ci_low, tau_ci_high, n_censored, comparable_pairs,
               instances_ranked, exponent, ci_low, ci_high, prefactor, r2, n_models, models, excluded,
               interval_df, bootstrap_valid_fraction, ci_models_low, ci_models_high, tau_logprob, ...}},
  regimes_agree, description_worth[], variance_split[], literature_claims[],
  search_edges[{series, model, hyperparameter, end, cells, scored, share}],
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
        "instance": "a model instance (model, pretrain_seed, checkpoint): the unit ICL strength and N* are read on",
        "replicate": "hierarchical: pretraining instance (within its size) -> training seed (for in-context "
                     "records the demonstration draw) -> task; the replicate unit of a per-instance interval is "
                     "the training seed, with tasks resampled within it; across instances (the law, the claims) "
                     "instances are redrawn within their size",
        "interval": f"{pct} {'expanded ' if settings.expand_intervals else ''}percentile interval over "
                    f"{settings.bootstrap_resamples} two-stage {settings.resampling} resamples (seeds, then tasks "
                    "within a seed), drawn per instance and shared by all of that instance's measures",
        "acc_k": f"few-shot accuracy (description {measures.icl_description!r}); k = 0 is zero-shot with it",
        "icl_strength": f"least-squares slope of acc(k) on log2 k over k in {k_range}: accuracy per doubling",
        "chance_normalised_gain": "(acc - chance) / (1 - chance) at the largest k",
        "icl_efficiency": "(acc - chance) / (bayes_accuracy - chance) at the largest k",
        "acc_n": "zero-shot accuracy after training on n examples (phase measure records), mean over seeds "
                 "and tasks; checked against chance + (upper - chance) * sigmoid(slope * (log2 n - midpoint)), "
                 f"bounded, {settings.robust_loss} loss (scale {settings.loss_scale}), multi-start",
        "sample_need": f"n where acc(n), made monotone (isotonic), first reaches chance-normalised accuracy "
                       f"{settings.target_normalised_accuracy}, interpolated in log2 n; right-censored (N* > n_max) "
                       "when not reached, left-censored (N* <= n_min) when reached at the smallest n; "
                       "n_star_by_fit: the saturating fit's N* (a check); logprob: the same on the label's "
                       "mean log-likelihood, target the same fraction of the way from log(chance) to 0",
        "exchange_rate": "for each k >= 1, the n where monotone acc(n) first equals k-shot accuracy, and n / k; "
                         "exchange_summary: the median over instances of n / k",
        "description_worth": "k* where monotone few-shot acc(k) equals zero-shot accuracy with a description",
        "law": "verdict from Kendall's tau between S and N* over instances whose S interval is above 0, "
               "censored N* kept (a pair counts when its order is known); supported if tau's interval lies "
               "below 0, contradicted if above, else inconclusive. The exponent (least squares of log N* on "
               "log S over instances with a reached N*) describes it; its interval from refitting every "
               "resample (df pooled by Welch-Satterthwaite). ci_models_*: OLS interval from the scatter",
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
        "regimes_agree": measures.agreement,
        "exchange_summary": measures.exchange_summary.to_dict(orient="records"),
        "description_worth": measures.worth.to_dict(orient="records"),
        "variance_split": measures.variance.to_dict(orient="records"),
        "literature_claims": measures.claims.to_dict(orient="records"),
        "search_edges": measures.search_edges.to_dict(orient="records"),
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
    entry = {"model": measures.model_of.get(model, model), "model_params": whole(measures.params[model])}
    icl: IclResult | None = measures.icl.get(model)
    if icl is not None:
        entry["replicates"] = icl.acc.curve.seeds
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
        "replicates": result.acc.curve.seeds,
        "tasks": result.acc.curve.tasks,
        "acc_n": _curve_points(result.acc, "n"),
    }


def sample_need_entry(result: FinetuneResult) -> dict:
    samples = result.sample_need.samples
    logprob = result.logprob_need
    return estimate_entry(result.sample_need, "n_star") | {
        "censored": result.censored, "n_star_by_fit": result.need_by_fit,
        "n_star_logprob": logprob.value if logprob is not None else None,
        "n_star_logprob_ci_low": logprob.ci_low if logprob is not None else None,
        "n_star_logprob_ci_high": logprob.ci_high if logprob is not None else None,
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
        "verdict": law.verdict, "sentence": law.sentence, "tau": law.tau, "tau_ci_low": law.tau_ci_low,
        "tau_ci_high": law.tau_ci_high, "tau_p_value": law.tau_p_value,
        "tau_valid_fraction": law.tau_valid_fraction, "n_censored": law.n_censored,
        "comparable_pairs": law.pairs, "instances_ranked": law.ranked, "tau_logprob": law.tau_logprob,
        "tau_logprob_ci_low": law.tau_logprob_ci_low, "tau_logprob_ci_high": law.tau_logprob_ci_high,
    }


TABLES = ("records", "missing_cells", "failed_cells", "acc_k", "icl_strength", "acc_n", "finetune_fits",
          "sample_need", "exchange_rate", "exchange_summary", "law", "zero_shot_descriptions", "description_worth",
          "variance_split", "literature_claims", "selection", "objective_fit", "search_edges")


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
    out["exchange_summary"] = measures.exchange_summary
    out["description_worth"] = measures.worth
    out["variance_split"] = measures.variance
    out["literature_claims"] = measures.claims
    out["selection"] = measures.selection
    out["objective_fit"] = measures.objective_fit
    out["search_edges"] = measures.search_edges
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
                         "n_star_by_fit": result.need_by_fit})
    return pd.DataFrame(rows)


def _flat(table: pd.DataFrame) -> pd.DataFrame:
    """Lists and dicts in cells become JSON-ish text so the CSV is readable."""
    table = table.copy()
    for column in table.columns:
        if table[column].map(lambda v: isinstance(v, (list, dict, tuple))).any():
            table[column] = table[column].map(lambda v: str(json_safe(v)) if isinstance(v, (list, dict, tuple)) else v)
    return table
