"""The paper figures, drawn from a StudyMeasures (analysis.pipeline), never from anything else.

Input: `StudyMeasures` (models ordered by parameter count; icl / finetune / exchange / law results;
the zero-shot description table). Output: FOLDER/<name>.pdf and .png for each figure that has data;
a figure without data is skipped with a reason (reported in report.md):

  icl_curves              accuracy vs k per model instance, bootstrap band, chance and Bayes-optimal lines
  finetune_curves         accuracy vs n per instance, one panel per training series: the mean with its
                          band, each training seed's points, the target line, the saturating check
  need_vs_strength        N* vs S (log-log) per instance with intervals; censored N* drawn at the
                          largest n with an arrow; instances whose S interval includes 0 hollow; the
                          power law with its bootstrap band; Kendall's tau with its interval as text
  exchange_rate           n matching k-shot accuracy vs k, per instance, one panel per series
  zero_shot_descriptions  zero-shot accuracy by description variant across instances: base, after IT / RLHF
  trained_to_best         validation accuracy vs learning rate per instance, one panel per regime,
                          from the phase "select" records; the learning rate the scored runs used ringed
  description_worth       k* (the shots a description is worth) per instance and description, censored
                          ends as arrows
  variance_split          standard deviation of accuracy by level: pretraining instance, training seed, task

Colour reads as size (viridis by parameter count); instances of one size share its colour.

Run again from stored results with `python -m analysis DIR/STUDY`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from analysis import style
from analysis.law import law_band
from analysis.laws import saturating_accuracy
from analysis.monotone import censoring
from analysis.settings import AnalysisSettings

FIGURES = ("icl_curves", "finetune_curves", "need_vs_strength", "exchange_rate", "zero_shot_descriptions",
           "trained_to_best", "description_worth", "variance_split")


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


def colours(measures, instances=None) -> dict:
    """Instance -> the colour of its size (viridis by parameter count)."""
    sizes = list(dict.fromkeys(measures.model_of.get(i, i) for i in measures.models))
    by_size = style.size_colours(sizes)
    return {i: by_size[measures.model_of.get(i, i)] for i in (instances or measures.models)}


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
    palette = colours(measures)
    for model, icl in measures.icl.items():
        acc = icl.acc
        axis.fill_between(acc.curve.levels, acc.ci_low, acc.ci_high, color=palette[model], alpha=0.2, linewidth=0)
        axis.plot(acc.curve.levels, acc.mean, "o-", color=palette[model],
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
    palette = colours(measures)
    for axis, (series, by_model) in zip(axes, measures.finetune.items()):
        for model, result in by_model.items():
            _finetune_panel_line(axis, model, result, palette[model], measures.params[model])
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
    levels = acc.curve.levels
    axis.fill_between(levels, acc.ci_low, acc.ci_high, color=colour, alpha=0.18, linewidth=0)
    axis.plot(levels, acc.mean, "o-", color=colour, label=style.model_label(model, params))
    for seed_values in _seed_means(acc.curve):
        axis.plot(levels, seed_values, ".", color=colour, alpha=0.45, markersize=3)
    if result.fit is not None:
        grid = np.linspace(np.log2(levels.min()), np.log2(levels.max()), 200)
        fitted = saturating_accuracy(grid, *result.fit.params, result.fit.chance)
        axis.plot(2.0**grid, fitted, ":", color=colour, linewidth=0.9)


def _seed_means(curve) -> list[np.ndarray]:
    """Each training seed's accuracy per level (mean over its tasks)."""
    seeds = [r.split("|")[0] for r in curve.replicates]
    out = []
    for seed in dict.fromkeys(seeds):
        rows = curve.values[[s == seed for s in seeds]]
        with np.errstate(invalid="ignore"):
            out.append(np.nanmean(np.where(np.isfinite(rows), rows, np.nan), axis=0) if len(rows) else rows)
    return out


def need_vs_strength(measures, settings):
    if not measures.law:
        raise Skip("no training-regime records, so no sample need")
    laws = {s: law for s, law in measures.law.items()
            if any(np.isfinite(measures.icl[m].strength.value) for m in measures.finetune[s] if m in measures.icl)}
    if not laws:
        raise Skip("no instance has both an ICL strength and a sample need")
    figure, axes = style.panels(len(laws))
    palette = colours(measures)
    for axis, (series, law) in zip(axes, laws.items()):
        for model, result in measures.finetune[series].items():
            if model in measures.icl and np.isfinite(measures.icl[model].strength.value):
                _need_point(axis, measures, result, model, palette[model], driving=model in law.ranked)
        if np.isfinite(law.exponent):
            _law_line(axis, measures, law, settings)
        _tau_text(axis, law, settings)
        axis.set_xscale("log")
        axis.set_yscale("log")
        style.plain_log_labels(axis)
        axis.set_xlabel("ICL strength S (accuracy per doubling of k)")
        axis.set_ylabel("sample need N* (training examples)")
        axis.set_title(f"{series}: {law.verdict}")
    _legend_below(figure, axes)
    return figure


def _need_point(axis, measures, result, model, colour, driving: bool) -> None:
    s = measures.icl[model].strength
    n = result.sample_need
    shown = result.need_point
    censored = censoring(shown)
    y = {"right": result.n_range[1], "left": result.n_range[0]}.get(censored, shown)
    if not np.isfinite(y) or s.value <= 0:
        return
    face = colour if driving else "white"
    xerr = _error_bar(s.value, s.ci_low, s.ci_high)
    yerr = _error_bar(y, n.ci_low, n.ci_high) if censored == "exact" else None
    axis.errorbar(s.value, y, xerr=xerr, yerr=yerr, fmt="o", color=colour, markerfacecolor=face, capsize=2,
                  elinewidth=0.9, label=style.model_label(model, measures.params[model]))
    if censored in ("right", "left"):
        _censor_arrow(axis, s.value, y, censored, colour)


def _censor_arrow(axis, x, y, censored: str, colour) -> None:
    """An arrow from a censored bound toward where the value lies (up: above it; down: below it)."""
    end = y * (1.8 if censored == "right" else 1 / 1.8)
    axis.annotate("", xy=(x, end), xytext=(x, y), arrowprops=dict(arrowstyle="->", color=colour, linewidth=1.1))
    axis.plot([x], [end], alpha=0)  # the arrow's tip inside the axis limits


def _tau_text(axis, law, settings) -> None:
    pct = round(100 * settings.confidence)
    text = (f"Kendall tau = {law.tau:.2f} [{law.tau_ci_low:.2f}, {law.tau_ci_high:.2f}] ({pct}%)\n"
            f"{len(law.ranked)} instances, {law.n_censored} censored, {law.pairs} pairs"
            if np.isfinite(law.tau) else "no rank test: too few instances")
    axis.text(0.03, 0.03, text, transform=axis.transAxes, ha="left", va="bottom", fontsize=7,
              bbox=dict(boxstyle="round", facecolor="white", edgecolor="0.7", alpha=0.85))


def _error_bar(value, low, high):
    """Asymmetric error bar; an open (censored or missing) end is drawn as zero length."""
    below = value - low if np.isfinite(low) and low > 0 else 0.0
    above = high - value if np.isfinite(high) else 0.0
    return np.array([[max(below, 0.0)], [max(above, 0.0)]])


def _law_line(axis, measures, law, settings) -> None:
    strengths = np.array([measures.icl[m].strength.value for m in law.models])
    if strengths.min() <= 0:
        return
    grid = np.geomspace(strengths.min() / 1.15, strengths.max() * 1.15, 100)
    line, low, high = law_band(law, grid, settings.confidence)
    if low is not None:
        axis.fill_between(grid, low, high, color="0.5", alpha=0.2, linewidth=0)
    text = (f"N* ~ S^{law.exponent:.2f} [{law.ci_low:.2f}, {law.ci_high:.2f}]\nR^2 = {law.r2:.2f}, "
            f"{law.n_models} instances reached")
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
    palette = colours(measures)
    for axis, (series, by_model) in zip(axes, series_with_points.items()):
        ks = []
        for model, points in by_model.items():
            k = np.array([p.k for p in points])
            n = np.array([p.n.value for p in points])
            low = np.array([p.n.ci_low if np.isfinite(p.n.ci_low) and p.n.ci_low > 0 else np.nan for p in points])
            high = np.array([p.n.ci_high for p in points])
            axis.fill_between(k, low, high, color=palette[model], alpha=0.15, linewidth=0)
            axis.plot(k, n, "o-", color=palette[model], label=style.model_label(model, measures.params[model]))
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


def trained_to_best(measures, settings):
    table = measures.selection
    if table.empty:
        raise Skip("no phase 'select' records with a learning rate and a validation curve")
    regimes = list(dict.fromkeys(table["regime"]))
    figure, axes = style.panels(len(regimes), sharey=True)
    palette = colours(measures, list(dict.fromkeys(table["model"])) + measures.models)
    for axis, regime in zip(axes, regimes):
        rows = table[table["regime"] == regime]
        largest = rows["n"].max()
        for model, mine in rows.groupby("model", sort=False):
            colour = palette.get(model, "0.5")
            for n, at_n in mine.groupby("n"):  # smaller n fainter and thinner
                by_lr = at_n.groupby("lr")["val_accuracy"].mean().sort_index()
                label = style.model_label(model, measures.params.get(model, np.nan)) if n == largest else None
                axis.plot(by_lr.index, by_lr.to_numpy(), "o-", color=colour, label=label,
                          alpha=1.0 if n == largest else 0.35, linewidth=1.5 if n == largest else 0.8)
            chosen = mine[mine["chosen"] & (mine["n"] == largest)].groupby("lr")["val_accuracy"].mean()
            axis.plot(chosen.index, chosen.to_numpy(), "o", markersize=9, markerfacecolor="none", color=colour,
                      label="the lr the scored runs used")
        axis.set_xscale("log")
        axis.set_xlabel("learning rate (log scale)")
        axis.set_ylabel("validation accuracy (best length)")
        axis.tick_params(axis="y", labelleft=True)
        axis.set_title(f"{regime}: trained to its best (n = {rows['n'].max():g}; fainter: smaller n)")
    _legend_below(figure, axes)
    return figure


def description_worth(measures, settings):
    table = measures.worth
    if table.empty:
        raise Skip("no zero-shot records with a description other than acc(k)'s, or no few-shot curve")
    figure, (axis,) = style.panels(1)
    instances = [m for m in measures.models if (table["model"] == m).any()]
    figure.set_size_inches(max(style.PANEL_SIZE[0], 0.5 * len(instances)), style.PANEL_SIZE[1])
    positions = {m: i for i, m in enumerate(instances)}
    variants = list(dict.fromkeys(table["description"]))
    for offset, variant in zip(np.linspace(-0.12, 0.12, len(variants)), variants):
        rows = table[table["description"] == variant]
        colour = style.DESCRIPTION_COLOURS.get(variant, "0.5")
        for row in rows.itertuples(index=False):
            _worth_point(axis, positions[row.model] + offset, row, colour)
        axis.plot([], [], "o", color=colour, label=f"description: {variant}")
    axis.set_yscale("log", base=2)
    style.plain_log_labels(axis, "y")
    axis.set_xticks(range(len(instances)), [m.replace("/", "\n", 1) for m in instances], fontsize=6)
    axis.set_xlim(-0.5, len(instances) - 0.5)
    axis.set_xlabel("model instance (ordered by parameter count)")
    axis.set_ylabel("k*: shots a description is worth")
    axis.set_title("A description is worth k* shots")
    axis.legend(loc="best")
    return figure


def _worth_point(axis, x, row, colour) -> None:
    """k* with its interval; a censored k* drawn hollow at the end of the k range with an arrow."""
    if row.censored == "exact":
        yerr = _error_bar(row.k_star, row.ci_low, row.ci_high)
        axis.errorbar(x, row.k_star, yerr=yerr, fmt="o", color=colour, capsize=2, elinewidth=0.9)
    elif row.censored in ("right", "left"):
        y = row.k_max if row.censored == "right" else row.k_min
        axis.plot(x, y, "o", color=colour, markerfacecolor="white")
        _censor_arrow(axis, x, y, row.censored, colour)


def variance_split(measures, settings):
    table = measures.variance
    if table.empty or not np.isfinite(table["sd"]).any():
        raise Skip("no records with more than one seed, task or instance")
    groups = list(dict.fromkeys(table["series"]))
    figure, (axis,) = style.panels(1)
    levels = ("pretraining instance", "training seed", "task")
    width = 0.8 / len(levels)
    for index, (level, colour) in enumerate(zip(levels, style.OKABE_ITO)):
        rows = table[table["level"] == level].set_index("series").reindex(groups)
        x = np.arange(len(groups)) + (index - (len(levels) - 1) / 2) * width
        axis.bar(x, rows["sd"].fillna(0).to_numpy(), width, color=colour, label=level)
    axis.set_xticks(range(len(groups)), groups, rotation=20, ha="right")
    axis.set_ylabel("standard deviation of accuracy")
    axis.set_title("Where the variance lives")
    _legend_below(figure, [axis])
    return figure


DRAWERS = {
    "icl_curves": icl_curves,
    "finetune_curves": finetune_curves,
    "need_vs_strength": need_vs_strength,
    "exchange_rate": exchange_rate,
    "zero_shot_descriptions": zero_shot_descriptions,
    "trained_to_best": trained_to_best,
    "description_worth": description_worth,
    "variance_split": variance_split,
}
