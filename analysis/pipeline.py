"""From trusted records to every measure of the study, and from there to the files on disk.

`measure_study(records, settings, seed)` takes the ok records of one study (schema
`fsv.records.SCHEMA`; columns a frame lacks count as null) and returns a `StudyMeasures`: first
`measure_claim` (per model instance: acc(k) and ICL strength, acc(n) and N* per training series,
then the law of each series), then the study-level summaries (exchange rate, description worth,
variance split, the literature's claims, the hyperparameter search); `analyze(study_dir, ...)` loads and checks the
records (analysis.load), measures, and writes fits.json, tables/*.csv, figures/*.pdf|png and
report.md under OUT (default `study_dir/analysis`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.bootstrap import Resampler, build_curve, replicate_key
from analysis.claims import literature_claims
from analysis.instances import instance_order, measured, selection_rows, task_rows, text_of, with_instances
from analysis.law import LawResult, fit_law
from analysis.load import load_study
from analysis.measures import (
    ExchangePoint, FinetuneResult, IclResult, exchange_rate, finetune_measures, icl_measures, level_means,
    logprob_measures,
)
from analysis.series import (
    DESCRIPTION_VARIANTS, ICL_REGIMES, TRAINING_REGIMES, description_of, icl_description, icl_rows,
    main_series_rows, series_order, training_rows,
)
from analysis.summaries import (
    description_worth_table, exchange_summary, objective_fit_table, regimes_agree, search_edge_table, selection_table, variance_split,
)
from analysis.settings import AnalysisSettings, coerce_settings

TRAINED_DESCRIPTION_REGIMES = ("instruction_tuning", "rlhf")
FEW_REPLICATES = 5  # below this, intervals are flagged as approximate in the report
FEW_N_LEVELS = 5  # below this, N* is interpolated between few levels (noted)


@dataclass
class StudyMeasures:
    models: list[str]  # model instances, ordered by parameter count (analysis.instances)
    params: dict[str, float]  # instance -> parameter count of its model
    model_of: dict[str, str] = field(default_factory=dict)  # instance -> model (its size)
    icl_description: str = "none"  # the description variant of acc(k)
    icl: dict[str, IclResult] = field(default_factory=dict)
    finetune: dict[str, dict[str, FinetuneResult]] = field(default_factory=dict)  # series -> instance
    exchange: dict[str, dict[str, list[ExchangePoint]]] = field(default_factory=dict)
    law: dict[str, LawResult] = field(default_factory=dict)
    descriptions: pd.DataFrame = field(default_factory=pd.DataFrame)
    worth: pd.DataFrame = field(default_factory=pd.DataFrame)  # a description is worth k* shots
    exchange_summary: pd.DataFrame = field(default_factory=pd.DataFrame)
    variance: pd.DataFrame = field(default_factory=pd.DataFrame)
    claims: pd.DataFrame = field(default_factory=pd.DataFrame)
    selection: pd.DataFrame = field(default_factory=pd.DataFrame)  # phase "select" trials, for a figure
    objective_fit: pd.DataFrame = field(default_factory=pd.DataFrame)  # did each regime fit its objective
    search_edges: pd.DataFrame = field(default_factory=pd.DataFrame)  # scored choices at an end of their search
    agreement: str = ""
    notes: list[str] = field(default_factory=list)


def measure_study(records: pd.DataFrame, settings: AnalysisSettings, seed: int) -> StudyMeasures:
    result, context = measure_claim(records, settings, seed)
    records, training, resampler, selection = context
    for series, by_model in result.finetune.items():
        result.exchange[series] = {
            m: exchange_rate(result.icl[m], ft, settings) for m, ft in by_model.items() if m in result.icl
        }
    result.descriptions = description_accuracies(records, training, result.models, result.params, resampler,
                                                 settings)
    result.worth = description_worth_table(records, result, resampler, settings)
    result.exchange_summary = exchange_summary(result, resampler, settings)
    result.variance = variance_split(records, training, result.icl_description, result.model_of)
    result.claims = literature_claims(result, records, resampler, settings)
    result.selection = selection_table(selection, training)
    result.objective_fit = objective_fit_table(selection, settings.fit_share, result.models)
    result.search_edges = search_edge_table(training, result.models)
    result.notes += _fit_notes(result)
    return result


def measure_claim(records: pd.DataFrame, settings: AnalysisSettings, seed: int):
    """The per-instance measures and the law of every series (what benchmarks/coverage.py times):
    (StudyMeasures without the study-level summaries, (records, training rows, resampler, selection))."""
    records = with_instances(records)
    selection = selection_rows(records)
    records = measured(records)
    models, params, model_of = instance_order(records)
    description = icl_description(records, settings)
    rows = pd.concat([task_rows(icl_rows(records, description)),
                      task_rows(records[records["regime"] != "few_shot"])], ignore_index=True)
    by_instance = rows.assign(_r=replicate_key(rows)).groupby("instance")["_r"].apply(list).to_dict()
    resampler = Resampler(by_instance, settings.bootstrap_resamples, seed, settings.resampling, model_of)
    result = StudyMeasures(models, params, model_of, description, notes=_set_aside_notes(records, description))
    result.icl = _by_model(task_rows(icl_rows(records, description)), models, "k", icl_measures, resampler, settings)
    training = training_rows(records)
    for series in series_order(training["series"]):
        series_rows = training[training["series"] == series]
        result.finetune[series] = _finetune_series(series_rows, models, resampler, settings)
    strength = {m: r.strength for m, r in result.icl.items()}
    for series, by_model in result.finetune.items():
        result.law[series] = fit_law(series, strength, by_model, resampler.instance_weights, settings)
    result.agreement = regimes_agree(result.law)
    return result, (records, training, resampler, selection)


def _finetune_series(rows, models, resampler, settings) -> dict[str, FinetuneResult]:
    """acc(n) per instance, its N*, and N* on the label's log-likelihood where recorded."""
    out = _by_model(task_rows(rows), models, "n", finetune_measures, resampler, settings)
    for model, result in out.items():
        curve = build_curve(rows[rows["instance"] == model].assign(task=lambda f: text_of(f["task"])), "n",
                            value="label_logprob")
        if curve is not None and curve.levels.tolist() == result.acc.curve.levels.tolist():
            logprob_measures(result, curve, resampler.weights(model, curve), settings)
    return out


def _fit_notes(result: StudyMeasures) -> list[str]:
    """Say where N* rests on few levels, or where the saturating check disagrees with it."""
    notes = []
    for series, by_model in result.finetune.items():
        for model, ft in by_model.items():
            levels = len(ft.acc.curve.levels)
            if levels < FEW_N_LEVELS:
                notes.append(f"{series}/{model}: {levels} n level(s) measured (fewer than {FEW_N_LEVELS}): N* is "
                             "interpolated between few levels; treat it with care.")
            if ft.fit is not None and not ft.fit.converged:
                notes.append(f"{series}/{model}: the saturating check of acc(n) did not converge ({ft.fit.message}).")
            both = np.array([ft.need_point, ft.need_by_fit])
            if np.isfinite(both).all() and (both > 0).all() and abs(np.log2(both[0] / both[1])) > 1:
                notes.append(f"{series}/{model}: N* by monotone interpolation ({both[0]:.3g}) and by the saturating "
                             f"fit ({both[1]:.3g}) differ by more than a doubling.")
    return notes


def _by_model(rows, models, axis: str, measure, resampler, settings) -> dict:
    """`measure(curve, weights, settings)` for each instance's acc(axis) curve (axis "k" or "n")."""
    out = {}
    for model in models:
        curve = build_curve(rows[rows["instance"] == model], axis)
        if curve is not None:
            out[model] = measure(curve, resampler.weights(model, curve), settings)
    return out


def description_accuracies(records, training, models, params, resampler, settings) -> pd.DataFrame:
    """Zero-shot accuracy per description variant: the base model, and after IT / RLHF at their largest n."""
    rows = []
    base = records[(records["regime"] == "zero_shot")].assign(description=lambda f: description_of(f))
    for model in models:
        for variant in DESCRIPTION_VARIANTS:
            subset = task_rows(base[(base["instance"] == model) & (base["description"] == variant)])
            rows += _description_row("base", model, variant, subset, "accuracy", None, resampler, settings)
        for regime in TRAINED_DESCRIPTION_REGIMES:
            trained = main_series_rows(training, regime)
            trained = trained[trained["instance"] == model]
            if trained.empty:
                continue
            largest = trained[trained["n"] == trained["n"].max()].assign(task=lambda f: text_of(f["task"]))
            for variant in DESCRIPTION_VARIANTS:
                rows += _description_row(regime, model, variant, largest, f"acc_{variant}",
                                         float(trained["n"].max()), resampler, settings)
    frame = pd.DataFrame(rows)
    if not frame.empty:
        frame.insert(2, "model_params", frame["model"].map(params))
    return frame


def _description_row(source, model, variant, subset, column, n, resampler, settings) -> list[dict]:
    curve = build_curve(subset.assign(_level=0), "_level", value=column) if len(subset) else None
    if curve is None:
        return []
    means = level_means(curve, resampler.weights(model, curve), settings)
    return [{
        "source": source, "model": model, "description": variant, "n": n,
        "accuracy": float(means.mean[0]), "ci_low": float(means.ci_low[0]), "ci_high": float(means.ci_high[0]),
        "replicates": len(curve.replicates), "records": curve.rows, "chance": curve.chance,
    }]


def _set_aside_notes(records: pd.DataFrame, description: str) -> list[str]:
    notes = []
    seeds = records[records["regime"].isin(TRAINING_REGIMES)].groupby("instance")["seed"].nunique()
    few = seeds[seeds < 3]
    if len(few):
        notes.append(
            f"{len(few)} instance(s) have fewer than 3 training seeds "
            f"({', '.join(f'{m}: {c}' for m, c in few.items())}): their fine-tuning intervals rest on the "
            "task level alone (one seed) or on few distinct resamples."
        )
    unknown = records[~records["regime"].isin(ICL_REGIMES + TRAINING_REGIMES)]
    if len(unknown):
        regimes = sorted(unknown["regime"].astype(str).unique())
        notes.append(f"{len(unknown)} records of unknown regimes {regimes} were not analysed.")
    few = records[records["regime"] == "few_shot"]
    other = few[description_of(few) != description]
    if len(other):
        notes.append(f"{len(other)} few-shot records with a description other than {description!r} "
                     f"({sorted(description_of(other).unique())}) are not part of acc(k).")
    untrained = records[records["regime"].isin(TRAINING_REGIMES) & ~(records["n"].fillna(0) >= 1)]
    if len(untrained):
        notes.append(f"{len(untrained)} training records with n < 1 or null are not part of acc(n).")
    return notes


def analyze(
    study_dir, out=None, allow_partial: bool = False, seed: int = 0,
    settings: AnalysisSettings | dict | None = None,
) -> Path | str:
    """Analyse the stored records of one study (a folder or an s3:// / gs:// URI, read where it
    lies); write fits.json, tables, figures, report.md under OUT (default STUDY/analysis, uploaded
    there for a remote study); return OUT."""
    from fsv.records import analysis_output

    started = time.perf_counter()
    settings = coerce_settings(settings)
    study = load_study(study_dir, allow_partial=allow_partial, settings=settings)
    with analysis_output(study_dir, out) as dest:
        _write_outputs(dest, study, settings, seed, started)
    return dest if out is not None or "://" not in str(study_dir) else f"{str(study_dir).rstrip('/')}/analysis"


def _write_outputs(out: Path, study, settings: AnalysisSettings, seed: int, started: float) -> None:
    from analysis import figures, report, results

    (out / "tables").mkdir(parents=True, exist_ok=True)
    measures = measure_study(study.records, settings, seed)
    document = results.fits_document(study, measures, settings, seed)
    (out / "fits.json").write_text(json.dumps(document, indent=2, allow_nan=False) + "\n")
    tables = results.tables(study, measures)
    for name in results.TABLES:  # a table absent now (e.g. missing_cells) must not survive from before
        (out / "tables" / f"{name}.csv").unlink(missing_ok=True)
    for name, table in tables.items():
        table.to_csv(out / "tables" / f"{name}.csv", index=False)
    drawn = figures.draw_all(measures, out / "figures", settings)
    report.write_report(out / "report.md", study, measures, document, tables, drawn, settings,
                        wall_s=time.perf_counter() - started)
