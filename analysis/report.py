"""report.md: the study, whether its records were trusted, every measure as a table, the law in plain
words, the figures, the settings and the analysis wall time.

Input: the loaded study (analysis.load.StudyRecords), its StudyMeasures, the fits.json document, the
tables (analysis.results.tables) and the figure outcomes (analysis.figures.draw_all).
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from analysis.load import StudyRecords, describe_cells
from analysis.settings import AnalysisSettings
from analysis.summaries import unfit_regimes


def number(value, digits: int = 3) -> str:
    """Short text for a table cell: '-' for missing, integers from 100 up, else `digits` significant."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if not isinstance(value, float):
        return str(value)
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if abs(value) >= 100 or digits == 0:
        return f"{value:.0f}"
    return f"{value:.{digits}g}"


def with_interval(value, low, high, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{number(value, digits)} [{number(low, digits)}, {number(high, digits)}]"


def intervals(table: pd.DataFrame, name: str, low: str | None = None, high: str | None = None) -> list[str]:
    """'value [low, high]' per row, from columns name, name_ci_low, name_ci_high (or those given)."""
    columns = [name, low or f"{name}_ci_low", high or f"{name}_ci_high"]
    return [with_interval(*row) for row in table[columns].itertuples(index=False)]


def markdown_table(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "_(no rows)_"
    header = "| " + " | ".join(str(c) for c in frame.columns) + " |"
    rule = "| " + " | ".join("---" for _ in frame.columns) + " |"
    body = ["| " + " | ".join(_cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def _cell(value) -> str:
    text = number(value) if isinstance(value, float) else ("-" if value is None else str(value))
    return text.replace("|", "\\|").replace("\n", " ")


def write_report(path: Path, study: StudyRecords, measures, document: dict, tables: dict, drawn: dict,
                 settings: AnalysisSettings, wall_s: float) -> Path:
    sections = [
        _header(study, document, settings),
        _trust_section(study, measures),
        _law_section(measures, document),
        _objective_section(tables, settings),
        _edge_section(tables),
        _claims_section(tables),
        _icl_section(measures, tables),
        _finetune_section(measures, tables),
        _exchange_section(tables),
        _descriptions_section(tables),
        _worth_section(tables),
        _variance_section(tables),
        _figures_section(path.parent, drawn),
        _settings_section(settings),
        f"Analysis wall time: {wall_s:.1f} s.\n",
    ]
    path.write_text("\n".join(s for s in sections if s))
    return path


def _header(study: StudyRecords, document: dict, settings: AnalysisSettings) -> str:
    counts = document["records"]
    by_regime = ", ".join(f"{r}: {c}" for r, c in counts["analysed_by_regime"].items())
    return (
        f"# fsv analysis: {study.study}\n\n"
        f"- study folder: `{study.study_dir}`\n- fsv version of the records: {study.fsv_version}\n"
        f"- records: {counts['records']} stored, {counts['analysed']} analysed ({by_regime})\n"
        f"- cells listed in cells.json: {counts['cells_listed'] if counts['cells_json'] else 'cells.json absent'}\n"
        f"- bootstrap: {settings.bootstrap_resamples} resamples, seed {document['seed']}, "
        f"{100 * settings.confidence:g}% intervals\n"
        f"- replicate unit: {document['definitions']['replicate']}\n"
    )


def _trust_section(study: StudyRecords, measures) -> str:
    lines = ["## Trust\n"]
    if not len(study.missing) and not len(study.failed):
        lines.append("Every listed cell has an ok record.\n" if study.cells_listed is not None
                     else "No cells.json: the records were trusted as the whole study.\n")
    if len(study.missing):
        lines.append(f"- PARTIAL: missing cells (no record): {describe_cells(study.missing)}")
    if len(study.failed):
        lines.append(f"- PARTIAL: failed cells (not analysed): {describe_cells(study.failed, errors=True)}")
    if len(study.missing) or len(study.failed):
        lines.append("- The full lists are in tables/missing_cells.csv and tables/failed_cells.csv.")
    lines += [f"- {note}" for note in study.notes + measures.notes]
    return "\n".join(lines) + "\n"


def _law_section(measures, document: dict) -> str:
    lines = ["## The claim: sample need against ICL strength\n"]
    if not measures.law:
        lines.append("No training-regime records: sample need, the exchange rate and the law cannot be measured; "
                     "the in-context measures below stand alone.")
        return "\n".join(lines) + "\n"
    unfit = unfit_regimes(measures.objective_fit)
    for series, law in measures.law.items():
        lines.append(f"- **{law.verdict}** - {law.sentence}")
        if series.split(":")[0] in unfit:
            models = unfit[series.split(":")[0]]
            lines.append(f"  - **{series.split(':')[0]} did not fit its training objective on {len(models)} instance(s)** "
                         f"({', '.join(models)}): there its sample need measures a regime that has not trained "
                         "(see \"Did each regime fit its objective?\").")
        longest, scored = _longest_share(measures.search_edges, series)
        if longest:
            lines.append(f"  - {longest} of its {scored} scored cells chose the longest length searched: there its "
                         "accuracy is a lower bound and its N* an upper bound (see \"Did each search contain its choice?\").")
    lines += ["", measures.agreement]
    rows = [{"series": s, "verdict": e["verdict"],
             "Kendall tau [CI]": with_interval(e["tau"], e["tau_ci_low"], e["tau_ci_high"]),
             "instances (censored)": f"{len(e['instances_ranked'])} ({e['n_censored']})",
             "pairs": e["comparable_pairs"],
             "tau on log-lik N*": with_interval(e["tau_logprob"], e["tau_logprob_ci_low"], e["tau_logprob_ci_high"]),
             "exponent b [CI]": with_interval(e["exponent"], e["ci_low"], e["ci_high"]),
             "across-instance CI": f"[{number(e['ci_models_low'])}, {number(e['ci_models_high'])}]",
             "R^2": number(e["r2"]), "in fit": e["n_models"],
             "not driving / not in fit": "; ".join(f"{m}: {r}" for m, r in e["excluded"].items()) or "-"}
            for s, e in document["law"].items()]
    lines += ["", "The verdict is the censoring-aware rank test (Kendall's tau between S and N*; a censored N* "
              "counts wherever its order is known). N* = C * S^b, fitted on log N* and log S over instances that "
              "reached the target, describes the relation; its replicate interval refits every resample.", "",
              markdown_table(pd.DataFrame(rows))]
    return "\n".join(lines) + "\n"


def _objective_section(tables, settings: AnalysisSettings) -> str:
    table = tables.get("objective_fit")
    if table is None or table.empty:
        return ""
    rows = pd.DataFrame({"regime": table["regime"], "method": table["method"], "instance": table["model"],
                         "trials": table["trials"], "lowest train loss": table["lowest_train_loss"].map(number),
                         "chance": table["chance_loss"].map(number),
                         "share of chance": table["share_of_chance"].map(number),
                         "fits": table["fits"].map({True: "yes", False: "**no**"})})
    return ("## Did each regime fit its objective?\n\nA regime is measured only after it has fit its own training "
            "objective: the lowest training loss its search reached (at the longest length, mean over its "
            f"adaptations) must be at most {number(settings.fit_share)} of chance (ln C for the labels, ln 2 for "
            "DPO's preferences). Selection may still stop earlier: a shorter length chosen on validation is early "
            "stopping, not a failure to fit.\n\n" + markdown_table(rows) + "\n")


def _edge_section(tables) -> str:
    table = tables.get("search_edges")
    if table is None or table.empty:
        return ""
    rows = []
    for (series, model), group in table.groupby(["series", "model"], sort=False):
        edges = group[group["hyperparameter"] != "-"]
        rows.append({"series": series, "instance": model, "scored cells": int(group["scored"].iloc[0]),
                     "chosen at an end": "; ".join(f"{h} {e}: {c}" for h, e, c in
                                                  zip(edges["hyperparameter"], edges["end"], edges["cells"])) or "-"})
    return ("## Did each search contain its choice?\n\nEvery scored cell runs the configuration chosen on "
            "validation among what its search ran (rates widened as `search.widen` says). A choice at an end of "
            "a searched range says the best may lie beyond it: at the longest length the regime might score "
            "higher trained longer, so its accuracy there is a lower bound on what its recipe reaches and its N* "
            "an upper bound; at the lowest or highest rate, the same for the rate. The shortest length is the "
            "first evaluation of each run (early stopping). A cell can sit at an end of two ranges at once.\n\n"
            + "\n".join(f"- {line}" for line in edge_sentences(table)) + "\n\n" + markdown_table(pd.DataFrame(rows)) + "\n")


def _longest_share(table: pd.DataFrame, series: str) -> tuple[int, int]:
    """(scored cells of `series` that chose the longest length searched, its scored cells)."""
    if table.empty:
        return 0, 0
    group = table[table["series"] == series]
    longest = int(group.loc[(group["hyperparameter"] == "steps") & (group["end"] == "longest"), "cells"].sum())
    return longest, int(group.drop_duplicates("model")["scored"].sum())


def edge_sentences(table: pd.DataFrame) -> list[str]:
    """Per series: how many scored cells chose the longest length, and how many an end of another range."""
    out = []
    for series, group in table.groupby("series", sort=False):
        longest, scored = _longest_share(table, series)
        others = group[~group["hyperparameter"].isin(["-", "steps"])]
        names = ", ".join(sorted(set(others["hyperparameter"]))) or "none"
        out.append(f"{series}: {longest} of {scored} scored cells chose the longest length searched; "
                   f"{int(others['cells'].sum())} chose an end of another searched range ({names}).")
    return out


def _claims_section(tables) -> str:
    table = tables.get("literature_claims")
    if table is None or table.empty:
        return ""
    rows = pd.DataFrame({"claim": table["claim"], "source": table["source"], "measure": table["measure"],
                         "effect [CI]": intervals(table, "effect", "ci_low", "ci_high"),
                         "status": table["status"], "note": table["note"].fillna("")})
    return ("## Claims of the literature, on this study's records\n\n"
            + markdown_table(rows) + "\n")


def _worth_section(tables) -> str:
    table = tables.get("description_worth")
    if table is None or table.empty:
        return ""
    rows = pd.DataFrame({"instance": table["model"], "description": table["description"],
                         "zero-shot acc": table["zero_shot_accuracy"].map(number),
                         "k* [CI]": intervals(table, "k_star", "ci_low", "ci_high"),
                         "censored": table["censored"].fillna("-"), "reason": table["reason"].fillna("-")})
    return "## A description is worth k* shots\n\n" + markdown_table(rows) + "\n"


def _variance_section(tables) -> str:
    table = tables.get("variance_split")
    if table is None or table.empty:
        return ""
    wide = table.pivot_table(index="series", columns="level", values="sd", aggfunc="first", sort=False)
    wide = wide.reset_index()
    return ("## Where the variance lives\n\nStandard deviation of accuracy at each level (spread of that "
            "level's means, averaged over n or k levels; it includes the noise of the levels below).\n\n"
            + markdown_table(wide) + "\n")


def _icl_section(measures, tables) -> str:
    if not measures.icl:
        return "## In-context learning\n\nNo zero-shot or few-shot records.\n"
    strength = tables["icl_strength"]
    rows = pd.DataFrame({
        "model": strength["model"], "params": strength["model_params"].map(lambda p: number(p, 0)),
        "S (acc per doubling of k)": intervals(strength, "icl_strength"),
        "largest k": strength["largest_k"],
        "chance-normalised gain": intervals(strength, "chance_normalised_gain"),
        "ICL efficiency vs Bayes": intervals(strength, "icl_efficiency"),
    })
    return ("## In-context learning\n\n### ICL strength\n\n" + markdown_table(rows)
            + "\n\n### acc(k)\n\n" + markdown_table(_wide(tables["acc_k"], "k")) + "\n")


def _wide(table: pd.DataFrame, level: str, extra_index: tuple = ()) -> pd.DataFrame:
    """model (x series) by level, cells 'mean [low, high]'."""
    cells = table.assign(cell=[with_interval(a, lo, hi) for a, lo, hi in
                               table[["accuracy", "ci_low", "ci_high"]].itertuples(index=False)])
    index = [*extra_index, "model"]
    wide = cells.pivot_table(index=index, columns=level, values="cell", aggfunc="first", sort=False)
    wide.columns = [f"{level}={c:g}" for c in wide.columns]
    return wide.reset_index().fillna("-")


def _finetune_section(measures, tables) -> str:
    if not measures.finetune:
        return ""
    need = tables["sample_need"]
    need_rows = pd.DataFrame({
        "series": need["series"], "model": need["model"],
        "N*": intervals(need, "n_star", "ci_low", "ci_high"),
        "censored": need["censored"].fillna("-"),
        "N* by fit (check)": need["n_star_by_fit"].map(number),
        "N* on log-lik": intervals(need, "n_star_logprob"),
        "target acc": need["target_accuracy"].map(number),
        "resamples reached": need["resamples_reached"].map(number),
        "reason": need.get("reason", pd.Series("-", index=need.index)).fillna("-"),
    })
    fits = tables["finetune_fits"]
    fit_columns = [c for c in ("series", "model", "upper", "midpoint_n", "slope_per_doubling", "rmse", "converged",
                               "starts_at_best", "starts", "bootstrap_converged_fraction") if c in fits]
    return ("## Fine-tuning\n\n### Sample need\n\n" + markdown_table(need_rows)
            + "\n\n### Fitted acc(n) curves\n\n" + markdown_table(fits[fit_columns])
            + "\n\n### acc(n)\n\n" + markdown_table(_wide(tables["acc_n"], "n", ("series",))) + "\n")


def _exchange_section(tables) -> str:
    table = tables.get("exchange_rate")
    if table is None or table.empty:
        return ""
    rows = pd.DataFrame({
        "series": table["series"], "model": table["model"], "k": table["k"],
        "k-shot acc": table["accuracy_k"].map(number),
        "matching n": intervals(table, "n", "n_ci_low", "n_ci_high"),
        "n per shot": intervals(table, "n_per_shot"),
        "reason": table.get("reason", pd.Series("-", index=table.index)).fillna("-"),
    })
    summary = tables.get("exchange_summary")
    head = ""
    if summary is not None and not summary.empty:
        head = ("Median over instances of fine-tuning examples per in-context example at matched accuracy:\n\n"
                + markdown_table(pd.DataFrame({
                    "series": summary["series"], "k": summary["k"], "instances": summary["instances"],
                    "n per shot [CI]": intervals(summary, "n_per_shot", "ci_low", "ci_high"),
                    "censored above / below": [f"{a} / {b}" for a, b in
                                               zip(summary["censored_above"], summary["censored_below"])]}))
                + "\n\nPer instance:\n\n")
    return "## Shot exchange rate\n\n" + head + markdown_table(rows) + "\n"


def _descriptions_section(tables) -> str:
    table = tables.get("zero_shot_descriptions")
    if table is None or table.empty:
        return ""
    return "## Zero-shot accuracy by description\n\n" + markdown_table(_description_wide(table)) + "\n"


def _description_wide(table: pd.DataFrame) -> pd.DataFrame:
    cells = table.assign(cell=[with_interval(a, lo, hi) for a, lo, hi in
                               table[["accuracy", "ci_low", "ci_high"]].itertuples(index=False)])
    wide = cells.pivot_table(index=["source", "model"], columns="description", values="cell",
                             aggfunc="first", sort=False)
    wide.columns = [f"description {c}" for c in wide.columns]
    return wide.reset_index().fillna("-")


def _figures_section(out: Path, drawn: dict) -> str:
    lines = ["## Figures\n"]
    for name, outcome in drawn.items():
        if "files" in outcome:
            paths = ", ".join(f"`{p.relative_to(out)}`" for p in outcome["files"])
            lines.append(f"- {name}: {paths}")
        else:
            lines.append(f"- {name}: skipped - {outcome['skipped']}")
    return "\n".join(lines) + "\n"


def _settings_section(settings: AnalysisSettings) -> str:
    rows = pd.DataFrame([{"setting": k, "value": str(v)} for k, v in settings.to_dict().items()])
    return "## Settings\n\n" + markdown_table(rows) + "\n"
