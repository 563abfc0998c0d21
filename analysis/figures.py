"""The paper figures, drawn from a StudyMeasures (analysis.pipeline), never from anything else.

Input: `StudyMeasures` (models ordered by parameter count; icl / finetune / exchange / law results;
the zero-shot description table). Output: FOLDER/<name>.pdf and .png for each figure that has data;
a figure without data is skipped with a reason (reported in report.md):

  icl_curves              accuracy vs k per model size, bootstrap band, chance and Bayes-optimal lines
  finetune_curves         accuracy vs n per model size, one panel per training series, fitted curve
  need_vs_strength        N* vs S (log-log) with intervals, the fitted law and its bootstrap band
  exchange_rate           n matching k-shot accuracy vs k, per model size, one panel per series
  zero_shot_descriptions  zero-shot accuracy by description variant across sizes: base, after IT / RLHF

Run again from stored results with `python -m analysis DIR/STUDY`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from analysis import style
from analysis.law import law_band
from analysis.laws import saturating_accuracy
from analysis.settings import AnalysisSettings

FIGURES = ("icl_curves", "finetune_curves", "need_vs_strength", "exchange_rate", "zero_shot_descriptions")


class Skip(Exception):
    """This figure has no data in the study; the message says what is absent."""


def draw_all(measures, folder: Path, settings: AnalysisSettings) -> dict[str, dict]:
    """{figure: {"files": [paths]} or {"skipped": reason}} for every figure, in FIGURES order."""
    for name in FIGURES:  # a figure skipped now must not survive from an earlier analysis
        for suffix in (".pdf", ".png"):
            (Path(folder) / f"{name}{suffix}").unlink(missing_ok=True)
    drawn = {}
    if not settings.figures:
        return {name: {"skipped": "figures switched off (settings.figures = False)"} for name in FIGURES}
    with style.context():
        for name in FIGURES:
            try:
                figure = DRAWERS[name](measures, settings)
            except Skip as skip:
                drawn[name] = {"skipped": str(skip)}
                continue
            drawn[name] = {"files": style.save(figure, Path(folder), name, settings.dpi)}
    return drawn


def _legend_below(figure, axes) -> None:
    handles, labels = axes[0].get_legend_handles_labels()
    for axis in axes[1:]:
        for handle, label in zip(*axis.get_legend_handles_labels()):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    figure.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 4))


def icl_curves(measures, settings):
    if not measures.icl:
        raise Skip("no zero-shot or few-shot records")
    figure, (axis,) = style.panels(1)
    colours = style.size_colours(list(measures.icl))
    for model, icl in measures.icl.items():
        acc = icl.acc
        axis.fill_between(acc.curve.levels, acc.ci_low, acc.ci_high, color=colours[model], alpha=0.2, linewidth=0)
        axis.plot(acc.curve.levels, acc.mean, "o-", color=colours[model],
                  label=style.model_label(model, measures.params[model]))
    _reference_lines(axis, measures)
    axis.set_xscale("symlog", base=2, linthresh=1, linscale=0.6)
    style.log2_ticks(axis, np.concatenate([r.acc.curve.levels for r in measures.icl.values()]))
    axis.set_xlabel("demonstrations in context, k (log2 scale; 0 = zero-shot)")
    axis.set_ylabel("accuracy")
    axis.set_title("In-context learning curves")
    axis.legend(loc="best")
    return figure


def _reference_lines(axis, measures) -> None:
    chance = np.mean([r.acc.curve.chance for r in measures.icl.values()])
    axis.axhline(chance, **style.CHANCE_STYLE, label="chance")
    levels = np.unique(np.concatenate([r.acc.curve.levels for r in measures.icl.values()]))
    bayes = [np.nanmean([_bayes_at(r, k) for r in measures.icl.values()] or [np.nan]) for k in levels]
    if np.isfinite(bayes).any():
        axis.plot(levels, bayes, marker="s", markersize=3, **style.BAYES_STYLE, label="Bayes-optimal")


def _bayes_at(icl, k) -> float:
    hit = icl.acc.curve.bayes[icl.acc.curve.levels == k]
    return float(hit[0]) if len(hit) else np.nan


def finetune_curves(measures, settings):
    if not measures.finetune:
        raise Skip("no training-regime records (sft, prompt_tuning, instruction_tuning, rlhf)")
    figure, axes = style.panels(len(measures.finetune))
    colours = style.size_colours(measures.models)
    for axis, (series, by_model) in zip(axes, measures.finetune.items()):
        for model, result in by_model.items():
            _finetune_panel_line(axis, model, result, colours[model], measures.params[model])
        targets = [r.target_accuracy for r in by_model.values()]
        axis.axhline(np.mean(targets), color="0.3", linestyle="-.", linewidth=0.9, label="sample-need target")
        chance = np.mean([r.acc.curve.chance for r in by_model.values()])
        axis.axhline(chance, **style.CHANCE_STYLE, label="chance")
        axis.set_xscale("log", base=2)
        style.log2_ticks(axis, np.concatenate([r.acc.curve.levels for r in by_model.values()]))
        axis.set_xlabel("training examples, n (log2 scale)")
        axis.set_ylabel("zero-shot accuracy after training")
        axis.set_title(series)
    _legend_below(figure, axes)
    return figure


def _finetune_panel_line(axis, model, result, colour, params) -> None:
    acc = result.acc
    axis.fill_between(acc.curve.levels, acc.ci_low, acc.ci_high, color=colour, alpha=0.18, linewidth=0)
    axis.plot(acc.curve.levels, acc.mean, "o", color=colour, label=style.model_label(model, params))
    if result.fit is not None:
        grid = np.linspace(np.log2(acc.curve.levels.min()), np.log2(acc.curve.levels.max()), 200)
        fitted = saturating_accuracy(grid, *result.fit.params, result.fit.chance)
        axis.plot(2.0**grid, fitted, "-", color=colour, linewidth=1.2)


def need_vs_strength(measures, settings):
    if not measures.law:
        raise Skip("no training-regime records, so no sample need")
    laws = {s: law for s, law in measures.law.items() if law.n_models >= 1}
    if not laws:
        raise Skip("no model has both a positive ICL strength and a reached sample need")
    figure, axes = style.panels(len(laws))
    colours = style.size_colours(measures.models)
    for axis, (series, law) in zip(axes, laws.items()):
        for model in law.models:
            _need_point(axis, measures, series, model, colours[model])
        if np.isfinite(law.exponent):
            _law_line(axis, measures, law, settings)
        axis.set_xscale("log")
        axis.set_yscale("log")
        style.plain_log_labels(axis)
        axis.set_xlabel("ICL strength S (accuracy per doubling of k)")
        axis.set_ylabel("sample need N* (training examples)")
        axis.set_title(f"{series}: {law.verdict}")
    _legend_below(figure, axes)
    return figure


def _need_point(axis, measures, series, model, colour) -> None:
    s = measures.icl[model].strength
    n = measures.finetune[series][model].sample_need
    xerr = _error_bar(s.value, s.ci_low, s.ci_high)
    yerr = _error_bar(n.value, n.ci_low, n.ci_high)
    axis.errorbar(s.value, n.value, xerr=xerr, yerr=yerr, fmt="o", color=colour, capsize=2, elinewidth=0.9,
                  label=style.model_label(model, measures.params[model]))


def _error_bar(value, low, high):
    """Asymmetric error bar; an open (censored or missing) end is drawn as zero length."""
    below = value - low if np.isfinite(low) and low > 0 else 0.0
    above = high - value if np.isfinite(high) else 0.0
    return np.array([[max(below, 0.0)], [max(above, 0.0)]])


def _law_line(axis, measures, law, settings) -> None:
    strengths = np.array([measures.icl[m].strength.value for m in law.models])
    grid = np.geomspace(strengths.min() / 1.15, strengths.max() * 1.15, 100)
    line, low, high = law_band(law, grid, settings.confidence)
    if low is not None:
        axis.fill_between(grid, low, high, color="0.5", alpha=0.2, linewidth=0)
    text = (f"N* ~ S^{law.exponent:.2f} [{law.ci_low:.2f}, {law.ci_high:.2f}]\nR^2 = {law.r2:.2f}, "
            f"{law.n_models} models")
    axis.plot(grid, line, color="black", linewidth=1.2, label="fitted law (bootstrap band)")
    axis.text(0.97, 0.97, text, transform=axis.transAxes, ha="right", va="top", fontsize=7)


def exchange_rate(measures, settings):
    if not measures.exchange:
        raise Skip("no training-regime records, so nothing to exchange shots for")
    series_with_points = {
        s: by for s, by in measures.exchange.items()
        if any(np.isfinite(p.n.value) for points in by.values() for p in points)
    }
    if not series_with_points:
        raise Skip("no k-shot accuracy is matched by a fitted fine-tuning curve within the trusted n range")
    figure, axes = style.panels(len(series_with_points))
    colours = style.size_colours(measures.models)
    for axis, (series, by_model) in zip(axes, series_with_points.items()):
        ks = []
        for model, points in by_model.items():
            k = np.array([p.k for p in points])
            n = np.array([p.n.value for p in points])
            low = np.array([p.n.ci_low if np.isfinite(p.n.ci_low) and p.n.ci_low > 0 else np.nan for p in points])
            high = np.array([p.n.ci_high for p in points])
            axis.fill_between(k, low, high, color=colours[model], alpha=0.15, linewidth=0)
            axis.plot(k, n, "o-", color=colours[model], label=style.model_label(model, measures.params[model]))
            ks += list(k)
        axis.plot(sorted(set(ks)), sorted(set(ks)), color="0.4", linestyle="--", linewidth=0.9,
                  label="n = k (one example per shot)")
        axis.set_xscale("log", base=2)
        axis.set_yscale("log", base=2)
        style.log2_ticks(axis, ks)
        style.plain_log_labels(axis, "y")
        axis.set_xlabel("demonstrations in context, k (log2 scale)")
        axis.set_ylabel("training examples matching k shots, n")
        axis.set_title(f"Shot exchange rate: {series}")
    _legend_below(figure, axes)
    return figure


def zero_shot_descriptions(measures, settings):
    table = measures.descriptions
    if table.empty:
        raise Skip("no zero-shot records and no acc_none/acc_model/acc_human after instruction tuning or RLHF")
    sources = [s for s in ("base", "instruction_tuning", "rlhf") if (table["source"] == s).any()]
    figure, axes = style.panels(len(sources), sharey=True)
    models = [m for m in measures.models if (table["model"] == m).any()]
    positions = {m: i for i, m in enumerate(models)}
    for axis, source in zip(axes, sources):
        for variant, rows in table[table["source"] == source].groupby("description", sort=False):
            x = rows["model"].map(positions).to_numpy(dtype=float)
            yerr = _interval_bars(rows)
            axis.errorbar(x, rows["accuracy"], yerr=yerr, fmt="o-", capsize=2,
                          color=style.DESCRIPTION_COLOURS.get(variant, "0.5"), label=f"description: {variant}")
        axis.axhline(table["chance"].mean(), **style.CHANCE_STYLE, label="chance")
        axis.set_xticks(range(len(models)), [style.model_label(m, measures.params[m]).replace(" (", "\n(")
                                             for m in models])
        axis.set_xlim(-0.5, len(models) - 0.5)
        axis.set_xlabel("model (ordered by parameter count)")
        axis.set_ylabel("zero-shot accuracy")
        axis.tick_params(axis="y", labelleft=True)
        axis.set_title({"base": "base model", "instruction_tuning": "after instruction tuning",
                        "rlhf": "after RLHF"}[source] + _largest_n(table, source))
    _legend_below(figure, axes)
    return figure


def _interval_bars(rows):
    low = (rows["accuracy"] - rows["ci_low"]).clip(lower=0).fillna(0)
    high = (rows["ci_high"] - rows["accuracy"]).clip(lower=0).fillna(0)
    return np.vstack([low.to_numpy(), high.to_numpy()])


def _largest_n(table, source) -> str:
    n = table.loc[table["source"] == source, "n"].dropna()
    return f" (n = {n.max():g})" if len(n) else ""


DRAWERS = {
    "icl_curves": icl_curves,
    "finetune_curves": finetune_curves,
    "need_vs_strength": need_vs_strength,
    "exchange_rate": exchange_rate,
    "zero_shot_descriptions": zero_shot_descriptions,
}
