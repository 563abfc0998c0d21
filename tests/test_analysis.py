"""Tests of the analysis package: pure laws and fits, recovery of planted laws (falling, flat, rising
with censoring) from synthetic records with the right verdict, the files analyze() writes,
determinism, HF-model records (null pretrain_seed) under pandas 3, and the refusal of records it
cannot trust. Interval coverage is measured by benchmarks/coverage.py, not here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import AnalysisSettings, TrustError, analyze, load_study, measure_study
from analysis.__main__ import main as cli_main
from analysis.bootstrap import Curve, Resampler, interval_tail, resampled_means
from analysis.fits import fit_line, fit_saturating
from analysis.law import censored_tau
from analysis.laws import saturating_accuracy, saturating_log2_n_at
from analysis.monotone import crossing, isotonic
from analysis.series import training_rows
from analysis.synthetic import SyntheticSpec, planted_truth, records_frame, write_synthetic_study
from fsv.records import read_records, write_record

FAST = AnalysisSettings(bootstrap_resamples=200)
NO_FIGURES = AnalysisSettings(bootstrap_resamples=50, figures=False)
FIGURES = ("icl_curves", "finetune_curves", "need_vs_strength", "exchange_rate", "zero_shot_descriptions",
           "trained_to_best", "description_worth", "variance_split")
LEAN = dict(select=False, descriptions=False)  # recovery tests need only acc(k) and acc(n)
N64 = (2, 4, 8, 16, 32, 64)

# A small study with every kind of record: 3 models x 3 seeds x 1 task, 3 training series.
SMALL = SyntheticSpec(
    models=("tiny", "small", "medium"), params=(50_000, 400_000, 3_200_000), strengths=(0.04, 0.07, 0.12),
    laws=(("sft:packed", 1.0, -1.0), ("instruction_tuning", 1.0, -0.8), ("rlhf", 0.6, -1.0)),
    ks=(0, 1, 4, 16), ns=(2, 8, 32, 128, 512), seeds=(0, 1, 2), tasks=("task-a",),
)
# Trust tests need only a handful of records.
TINY = SyntheticSpec(models=("tiny", "small"), params=(50_000, 400_000), strengths=(0.04, 0.08),
                     laws=(("sft", 2.0, -1.0),), ks=(0, 1, 4), ns=(4, 16, 64), seeds=(0, 1), tasks=("t",),
                     descriptions=False)


def strict_json(path: Path) -> dict:
    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(path.read_text(), parse_constant=refuse)


# ---------------------------------------------------------------- pure laws and fits


def test_saturating_curve_and_its_inverse_agree():
    log2_n = np.linspace(0, 10, 11)
    accuracy = saturating_accuracy(log2_n, 0.9, 5.0, 1.3, 0.25)
    assert np.all(np.diff(accuracy) > 0) and accuracy.max() < 0.9 and accuracy.min() > 0.25
    np.testing.assert_allclose(saturating_log2_n_at(accuracy, 0.9, 5.0, 1.3, 0.25), log2_n, atol=1e-9)
    assert saturating_log2_n_at(0.95, 0.9, 5.0, 1.3, 0.25) == np.inf  # above the ceiling: never reached


def test_fit_line_skips_missing_points_row_by_row():
    fit = fit_line(np.arange(4.0), np.array([[1, 3, 5, 7], [2, np.nan, 2, 2], [np.nan, np.nan, np.nan, 1]]))
    np.testing.assert_allclose(fit.slope[:2], [2.0, 0.0])
    assert np.isnan(fit.slope[2])  # one point: no slope


def test_fit_saturating_recovers_planted_parameters_and_resists_an_outlier():
    log2_n = np.arange(1, 11, dtype=float)
    truth = np.array([0.95, 5.5, 1.2])
    noisy = saturating_accuracy(log2_n, *truth, 0.25) + np.random.default_rng(0).normal(0, 0.01, 10)
    fit = fit_saturating(log2_n, noisy, 0.25, AnalysisSettings())
    assert fit.converged and fit.starts_converged >= 1 and fit.starts_at_best >= 1
    np.testing.assert_allclose(fit.params, truth, rtol=0.06)
    noisy[3] += 0.3  # one wild point
    robust = fit_saturating(log2_n, noisy, 0.25, AnalysisSettings()).params
    squares = fit_saturating(log2_n, noisy, 0.25, AnalysisSettings(loss_scale=100.0)).params  # ~ plain least squares
    assert np.all(np.abs(robust - truth) <= np.abs(squares - truth) + 1e-9)
    np.testing.assert_allclose(robust, truth, rtol=0.15)


def test_bootknife_resampling_is_seeded_and_unbiased_for_a_mean():
    curve = Curve(np.array([1.0]), ("a|t", "b|t", "c|t"), np.array([[0.0], [1.0], [5.0]]), 0.25, np.array([np.nan]), 3)
    draws = Resampler({"m": ["a|t", "b|t", "c|t"]}, 20_000, seed=7)
    again = Resampler({"m": ["a|t", "b|t", "c|t"]}, 20_000, seed=7)
    np.testing.assert_array_equal(draws.weights("m", curve), again.weights("m", curve))
    means = resampled_means(curve, draws.weights("m", curve))[:, 0]
    unbiased = np.var([0.0, 1.0, 5.0], ddof=1) / 3
    assert abs(np.var(means) / unbiased - 1) < 0.05
    assert interval_tail(0.95, None) == pytest.approx(0.025)
    assert interval_tail(0.95, 4) < 0.025 and np.isnan(interval_tail(0.95, 0))


def test_two_stage_resampling_draws_seeds_then_tasks_and_instances_within_a_size():
    rows = ["0|a", "0|b", "1|a", "1|b", "2|a", "2|b"]
    draws = Resampler({"m/p0": rows, "m/p1": rows, "x/p0": rows}, 4000, seed=1,
                      strata={"m/p0": "m", "m/p1": "m", "x/p0": "x"})
    curve = Curve(np.array([1.0]), tuple(rows), np.arange(6.0)[:, None], 0.25, np.array([np.nan]), 6)
    weights = draws.weights("m/p0", curve)
    np.testing.assert_allclose(weights.sum(axis=1), 3.0)  # three seeds' worth, tasks split within a seed
    assert len(np.unique(weights.round(6), axis=0)) > 10  # tasks resampled too, not only seeds
    per_record = Curve(np.array([1.0]), ("0|-", "1|-", "2|-"), np.ones((3, 1)), 0.25, np.array([np.nan]), 3)
    np.testing.assert_allclose(draws.weights("m/p0", per_record).sum(axis=1), 3.0)  # a seed-level value
    counts = draws.instance_weights(["m/p0", "m/p1", "x/p0"])
    np.testing.assert_allclose(counts[:, :2].sum(axis=1), 2.0)  # redrawn within size m
    assert (counts[:, 2] == 1).all() and (counts[:, 0] != 1).any()  # a size with one instance is kept whole


def test_monotone_crossing_interpolates_in_log_n_and_keeps_censoring():
    fitted = isotonic(np.array([[0.3, 0.5, 0.4, 0.7, np.nan, 0.9]]))
    np.testing.assert_allclose(fitted[0], [0.3, 0.45, 0.45, 0.7, 0.8, 0.9])
    levels = np.array([2.0, 4.0, 8.0, 16.0])
    curves = np.array([[0.2, 0.4, 0.6, 0.8], [0.2, 0.3, 0.35, 0.4], [0.7, 0.8, 0.85, 0.9], [np.nan] * 4])
    need = crossing(levels, curves, 0.5)
    assert need[0] == pytest.approx(2**2.5) and need[1] == np.inf and need[2] == 0 and np.isnan(need[3])


def test_kendall_tau_counts_a_censored_pair_only_when_its_order_is_known():
    s = np.array([[1.0, 2.0, 3.0]])
    lower, upper = np.array([[10.0, 20.0, 64.0]]), np.array([[10.0, 20.0, np.inf]])  # the third: N* > 64
    tau, pairs = censored_tau(s, lower, upper, np.ones_like(s))
    assert tau[0] == 1.0 and pairs[0] == 3
    both_censored = censored_tau(s, np.array([[10.0, 64.0, 64.0]]), np.array([[10.0, np.inf, np.inf]]), np.ones_like(s))
    assert both_censored[1][0] == 2  # the two censored at 64 cannot be ordered


# ---------------------------------------------------------------- recovery of planted laws


def instance(model: str, pretrain: int = 0) -> str:
    return f"{model}/p{pretrain}/final"


@pytest.mark.parametrize("generator_seed", [0, 1, 2, 3])
def test_planted_law_is_recovered(generator_seed):
    spec = SyntheticSpec(seeds=(0, 1, 2, 3, 4), **LEAN)
    truth = planted_truth(spec)
    measures = measure_study(records_frame(spec, generator_seed), FAST, seed=0)
    law = measures.law["sft"]
    planted = truth["law"]["sft"]["exponent"]
    assert law.ci_low <= planted <= law.ci_high, (law.exponent, law.ci_low, law.ci_high)
    assert law.verdict == "supported" and law.n_models == 5 and law.r2 > 0.8
    assert law.tau == -1.0 and law.tau_ci_high < 0 and law.n_censored == 0
    for model, planted_model in truth["models"].items():
        need = measures.finetune["sft"][instance(model)].sample_need
        assert need.value == pytest.approx(planted_model["sample_need"]["sft"], rel=0.2)
        assert measures.icl[instance(model)].strength.value == pytest.approx(planted_model["icl_strength"], rel=0.25)


PLANTED = {  # law (prefactor, exponent) over n = 2..64 -> the verdict the data must give
    "falling": ((2.0, -1.0), "supported"),
    "flat": ((20.0, 0.0), "inconclusive"),
    "rising, strong models censored": ((600.0, 1.0), "contradicted"),
}


@pytest.mark.parametrize("direction", list(PLANTED))
def test_planted_laws_get_the_right_verdict_across_generator_seeds(direction):
    (prefactor, exponent), expected = PLANTED[direction]
    spec = SyntheticSpec(laws=(("sft", prefactor, exponent),), ns=N64, **LEAN)
    for generator_seed in range(3):
        law = measure_study(records_frame(spec, generator_seed), FAST, seed=0).law["sft"]
        assert law.verdict == expected, (direction, generator_seed, law.sentence)


def test_instances_that_never_reach_the_target_are_censored_and_drive_a_contradiction():
    spec = SyntheticSpec(laws=(("sft", 600.0, 1.0),), ns=N64, **LEAN)  # syn-xl needs ~84 > 64
    measures = measure_study(records_frame(spec, 0), FAST, seed=0)
    strongest = measures.finetune["sft"][instance("syn-xl")]
    assert strongest.censored == "right" and np.isnan(strongest.sample_need.value)
    assert "right-censored" in strongest.sample_need.reason and np.isinf(strongest.sample_need.ci_high)
    law = measures.law["sft"]
    assert instance("syn-xl") in law.ranked and instance("syn-xl") not in law.models  # tested, not fitted
    assert law.n_censored >= 1 and law.verdict == "contradicted" and "censored" in law.sentence


def test_an_instance_whose_strength_interval_includes_zero_is_shown_but_does_not_drive():
    frame = records_frame(SyntheticSpec(**LEAN), 0)
    flat_icl = (frame["model"] == "syn-xs") & (frame["regime"] == "few_shot")
    frame.loc[flat_icl, "accuracy"] = 0.3 + np.random.default_rng(0).normal(0, 0.02, flat_icl.sum())
    measures = measure_study(frame, FAST, seed=0)
    strength = measures.icl[instance("syn-xs")].strength
    assert strength.ci_low <= 0 <= strength.ci_high
    law = measures.law["sft"]
    assert "not above 0" in law.excluded[instance("syn-xs")] and instance("syn-xs") not in law.ranked
    assert len(law.ranked) == 4 and law.tau == -1.0 and law.tau_ci_high < 0
    assert law.verdict == "inconclusive" and "too few for their order" in law.sentence  # 4 ordered: p = 1/24


def test_too_few_instances_is_inconclusive_with_the_reason():
    spec = SyntheticSpec(models=("a", "b"), params=(1, 2), strengths=(0.05, 0.1), **LEAN)
    law = measure_study(records_frame(spec, 0), FAST, seed=0).law["sft"]
    assert law.verdict == "inconclusive" and "only 2 instance(s)" in law.sentence


def test_pretraining_instances_are_read_apart_and_the_label_loglikelihood_gives_a_second_need():
    spec = SyntheticSpec(seeds=(0, 1, 2), pretrain_seeds=(0, 1), instance_sd=0.3, **LEAN)
    measures = measure_study(records_frame(spec, 0), FAST, seed=0)
    assert len(measures.models) == 10 and measures.model_of[instance("syn-m", 1)] == "syn-m"
    law = measures.law["sft"]
    assert law.verdict == "supported" and len(law.ranked) == 10 and law.tau_logprob_ci_high < 0
    need = measures.finetune["sft"][instance("syn-m", 1)]
    assert need.logprob_need.value == pytest.approx(need.sample_need.value, rel=0.35)
    split = measures.variance.set_index(["series", "level"])["sd"]
    assert split["sft", "pretraining instance"] > 0 and split["sft", "task"] > 0


def test_the_literature_claims_are_each_tested_or_said_untestable():
    spec = SyntheticSpec(laws=(("sft", 2.0, -1.0), ("prompt_tuning", 3.0, -1.0)), **LEAN)
    claims = measure_study(records_frame(spec, 0), FAST, seed=0).claims.set_index("source")
    assert list(claims.index) == ["Brown et al. 2020", "Lester et al. 2021", "Wei et al. 2021", "Chan et al. 2022",
                                  "Zhao et al. 2021"]
    assert claims.loc["Brown et al. 2020", "status"] == "held"  # planted: gain grows with S, S with size
    assert claims.loc["Wei et al. 2021", "status"] == "not testable here"  # no instruction tuning records
    assert claims.loc["Lester et al. 2021", "status"] in ("held", "not held")
    assert set(claims["status"]) <= {"held", "not held", "not testable here"}


def test_series_are_named_by_regime_and_non_default_qualifiers():
    rows = pd.DataFrame({
        "regime": ["sft", "sft", "prompt_tuning", "prompt_tuning", "instruction_tuning", "instruction_tuning", "rlhf"],
        "layout": ["single", "packed", None, None, None, None, None],
        "prompt_tokens": [None, None, 8, 32, None, None, None],
        "tasks_trained": [None, None, None, None, 4, 16, None],
        "k": [0, 0, 0, 0, 0, 0, 0], "n": [8] * 7, "description": [None, None, None, None, "human", "human", "human"],
    })
    names = training_rows(rows)["series"].tolist()
    assert names == ["sft", "sft:packed", "prompt_tuning:m=8", "prompt_tuning", "instruction_tuning:T=4",
                     "instruction_tuning", "rlhf"]


# ---------------------------------------------------------------- analyze(): files, contract, determinism


@pytest.fixture(scope="module")
def small_study(tmp_path_factory) -> Path:
    study_dir = tmp_path_factory.mktemp("studies") / "small"
    write_synthetic_study(study_dir, SMALL, seed=0)
    return study_dir


@pytest.fixture(scope="module")
def analysed(small_study) -> Path:
    return analyze(small_study, settings=AnalysisSettings(bootstrap_resamples=200, dpi=100))


def test_analyze_writes_every_figure_as_pdf_and_png(analysed):
    assert analysed == analysed.parent / "analysis"
    for name in FIGURES:
        pdf, png = analysed / "figures" / f"{name}.pdf", analysed / "figures" / f"{name}.png"
        assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 5000, name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000, name


def test_fits_json_follows_the_contract(analysed):
    fits = strict_json(analysed / "fits.json")
    assert set(fits["law"]) == {"sft:packed", "instruction_tuning", "rlhf"}  # packed alone: still suffixed
    for law in fits["law"].values():
        assert {"exponent", "ci_low", "ci_high", "r2", "n_models", "verdict", "sentence", "tau", "tau_ci_low",
                "tau_ci_high", "n_censored"} <= set(law)
        assert law["n_models"] == 3 and law["verdict"] in ("supported", "contradicted", "inconclusive")
        assert law["tau_ci_low"] <= law["tau"] <= law["tau_ci_high"] and law["n_censored"] == 0
    assert list(fits["models"]) == ["tiny/p0/final", "small/p0/final", "medium/p0/final"]  # by parameter count
    assert fits["models"]["tiny/p0/final"]["model"] == "tiny"
    assert "pretraining instance" in fits["definitions"]["replicate"]
    assert {row["source"] for row in fits["literature_claims"]} >= {"Brown et al. 2020", "Zhao et al. 2021"}
    assert fits["regimes_agree"] and fits["description_worth"] and fits["variance_split"]
    assert list(fits["law"]) == ["sft:packed", "instruction_tuning", "rlhf"]  # in TRAINING_REGIMES order
    for model in fits["models"].values():
        assert isinstance(model["model_params"], int)
        for measure in ("icl_strength", "icl_efficiency", "chance_normalised_gain"):
            assert {"value", "ci_low", "ci_high"} <= set(model[measure])
        assert set(model["sample_need"]) == set(fits["law"])
        for need in model["sample_need"].values():
            assert {"n_star", "ci_low", "ci_high", "censored", "n_star_by_fit", "n_star_logprob"} <= set(need)
            assert need["n_star"] is not None or need["reason"]
    assert fits["settings"]["bootstrap_resamples"] == 200
    assert fits["records"]["analysed"] == fits["records"]["records"] and fits["records"]["fsv_version"] == "0.1.0"
    assert set(fits["exchange_rate"]) == set(fits["law"])
    sources = {row["source"] for row in fits["zero_shot_descriptions"]}
    assert sources == {"base", "instruction_tuning", "rlhf"}


def test_tables_and_report_cover_every_measure(analysed):
    tables = {p.stem for p in (analysed / "tables").glob("*.csv")}
    assert {"records", "acc_k", "icl_strength", "acc_n", "finetune_fits", "sample_need", "exchange_rate", "law",
            "zero_shot_descriptions", "exchange_summary", "description_worth", "variance_split", "literature_claims",
            "selection"} <= tables
    report = (analysed / "report.md").read_text()
    fits = strict_json(analysed / "fits.json")
    for law in fits["law"].values():
        assert law["sentence"] in report
    for heading in ("## Trust", "## The claim", "## Claims of the literature", "### ICL strength", "### Sample need",
                    "## Shot exchange rate", "## Zero-shot accuracy by description", "## A description is worth k*",
                    "## Where the variance lives", "## Figures", "## Settings", "Analysis wall time", "replicate unit"):
        assert heading in report
    assert "figures/need_vs_strength.pdf" in report


def test_analysis_is_deterministic_given_its_seed(small_study, tmp_path):
    first = analyze(small_study, out=tmp_path / "a", seed=3, settings=NO_FIGURES)
    second = analyze(small_study, out=tmp_path / "b", seed=3, settings=NO_FIGURES)
    other = analyze(small_study, out=tmp_path / "c", seed=4, settings=NO_FIGURES)
    assert (first / "fits.json").read_bytes() == (second / "fits.json").read_bytes()
    assert (first / "fits.json").read_bytes() != (other / "fits.json").read_bytes()


def test_in_context_only_study_analyses_and_skips_the_rest(tmp_path):
    spec = SyntheticSpec(models=("a", "b", "c"), params=(1, 2, 3), strengths=(0.02, 0.05, 0.1), laws=(),
                         seeds=(0, 1, 2), tasks=("t",), ks=(0, 1, 2, 8))
    write_synthetic_study(tmp_path / "icl", spec)
    stale = tmp_path / "icl" / "analysis" / "figures" / "finetune_curves.pdf"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"%PDF- from an earlier analysis")
    out = analyze(tmp_path / "icl", settings=AnalysisSettings(bootstrap_resamples=50, dpi=100))
    fits = strict_json(out / "fits.json")
    assert fits["law"] == {} and fits["models"]["c/p0/final"]["icl_strength"]["value"] > 0
    assert (out / "figures" / "icl_curves.pdf").exists() and (out / "figures" / "zero_shot_descriptions.png").exists()
    assert not (out / "figures" / "finetune_curves.pdf").exists()
    report = (out / "report.md").read_text()
    assert "finetune_curves: skipped - no training-regime records" in report
    assert "No training-regime records" in report


def test_command_line_writes_and_refuses(small_study, tmp_path):
    assert cli_main([str(small_study), "--out", str(tmp_path / "cli"), "--resamples", "20", "--no-figures"]) == 0
    assert (tmp_path / "cli" / "fits.json").exists()
    assert cli_main([str(tmp_path / "cli")]) != 0  # a folder with no records


# ---------------------------------------------------------------- trust


@pytest.fixture()
def tiny_study(tmp_path) -> Path:
    write_synthetic_study(tmp_path / "tiny", TINY)
    return tmp_path / "tiny"


def one_record(study_dir: Path, **where) -> dict:
    frame = read_records(study_dir)
    for key, value in where.items():
        frame = frame[frame[key] == value]
    return {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in frame.iloc[0].to_dict().items()}


def test_mixed_fsv_versions_are_refused(tiny_study):
    record = one_record(tiny_study, regime="sft") | {"fsv_version": "9.9.9"}
    write_record(tiny_study, record)
    with pytest.raises(TrustError, match=r"2 fsv versions.*9\.9\.9") as refused:
        load_study(tiny_study, allow_partial=True)  # partial analysis does not excuse mixed versions
    assert record["cell_id"] in str(refused.value)


def test_failed_cells_are_refused_then_listed_when_partial(tiny_study):
    record = one_record(tiny_study, regime="sft", model="small") | {
        "status": "failed", "accuracy": None, "error": "RuntimeError: out of memory"}
    write_record(tiny_study, record)
    with pytest.raises(TrustError, match="failed cells: 1 \\(sft/small: 1\\)") as refused:
        analyze(tiny_study, settings=NO_FIGURES)
    assert record["cell_id"] in str(refused.value) and "out of memory" in str(refused.value)
    out = analyze(tiny_study, allow_partial=True, settings=NO_FIGURES)
    report = (out / "report.md").read_text()
    assert "PARTIAL: failed cells" in report and record["cell_id"] in report
    assert strict_json(out / "fits.json")["records"]["failed"] == 1


def test_missing_cells_are_refused_then_listed_when_partial(tiny_study):
    record = one_record(tiny_study, regime="few_shot", model="tiny")
    (tiny_study / "records" / f"{record['cell_id']}.parquet").unlink()
    with pytest.raises(TrustError, match="missing cells .*1 \\(few_shot/tiny: 1\\)") as refused:
        analyze(tiny_study, settings=NO_FIGURES)
    assert record["cell_id"] in str(refused.value)
    out = analyze(tiny_study, allow_partial=True, settings=NO_FIGURES)
    report = (out / "report.md").read_text()
    assert "PARTIAL: missing cells" in report and record["cell_id"] in report
    assert (out / "tables" / "missing_cells.csv").read_text().count(record["cell_id"]) == 1


def test_records_outside_the_grid_are_noted_and_left_out(tiny_study):
    stray = one_record(tiny_study, regime="sft") | {"cell_id": "stray-cell", "n": 999}
    write_record(tiny_study, stray)
    study = load_study(tiny_study)
    assert study.unlisted == ["stray-cell"] and "stray-cell" not in set(study.records["cell_id"])
    assert any("not in cells.json" in note for note in study.notes)


def test_without_cells_json_the_records_are_trusted_and_the_report_says_so(tiny_study):
    (tiny_study / "cells.json").unlink()
    out = analyze(tiny_study, settings=NO_FIGURES)
    assert "cells.json is absent" in (out / "report.md").read_text()


def test_an_empty_study_is_refused(tmp_path):
    (tmp_path / "empty" / "records").mkdir(parents=True)
    with pytest.raises(TrustError, match="no records"):
        load_study(tmp_path / "empty")


def test_settings_refuse_bad_values_naming_the_field():
    with pytest.raises(ValueError, match="confidence=1.5"):
        AnalysisSettings(confidence=1.5)
    with pytest.raises(ValueError, match="unknown analysis setting.*bootstrap_samples"):
        AnalysisSettings.from_dict({"bootstrap_samples": 10})


def test_acc_k_follows_the_description_of_the_few_shot_rows():
    frame = records_frame(SyntheticSpec(laws=(), seeds=(0, 1, 2), tasks=("t",)), 0)
    frame.loc[frame["regime"] == "few_shot", "description"] = "model"
    measures = measure_study(frame, FAST, seed=0)
    assert measures.icl_description == "model"
    icl = measures.icl["syn-xl/p0/final"]
    model_view = frame[(frame["model"] == "syn-xl") & (frame["description"] == "model") & (frame["k"] == 0)]
    assert icl.acc.curve.levels[0] == 0 and icl.acc.mean[0] == pytest.approx(model_view["accuracy"].mean())
    assert any("description other than" in note for note in
               measure_study(frame, AnalysisSettings(bootstrap_resamples=20, icl_description="none"), 0).notes)


# ---------------------------------------------------------------- records of any shape


def hf_study(study_dir: Path) -> Path:
    """Records shaped as an HF-model study writes them: null pretrain_seed, checkpoint, world and Bayes;
    model names with a slash; training records pooled over tasks with task_accuracy; 1 training seed."""
    spec = SyntheticSpec(models=("org/tiny-lm", "org/small-lm", "org/big-lm"), params=(70_000_000, 160_000_000,
                         410_000_000), strengths=(0.03, 0.06, 0.12), ks=(0, 1, 4), ns=(4, 16, 64), seeds=(0,),
                         tasks=("sst2", "ag_news"), bayes=False, laws=(("sft", 4.0, -1.0),))
    for record in records_frame(spec, 0).to_dict(orient="records"):
        record = {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in record.items()}
        write_record(study_dir, record | {"pretrain_seed": None, "instance": None, "world": None})
    return study_dir


def test_hf_model_records_with_null_pretrain_seed_analyse_under_pandas_3(tmp_path):
    study = hf_study(tmp_path / "hf")
    out = analyze(study, settings=NO_FIGURES)
    fits = strict_json(out / "fits.json")
    assert list(fits["models"]) == ["org/tiny-lm/p-/final", "org/small-lm/p-/final", "org/big-lm/p-/final"]
    law = fits["law"]["sft"]
    assert law["verdict"] in ("supported", "contradicted", "inconclusive") and law["sentence"]
    need = fits["models"]["org/big-lm/p-/final"]["sample_need"]["sft"]
    assert need["n_star"] is not None or need["reason"]
    assert fits["models"]["org/big-lm/p-/final"]["finetune"]["sft"]["tasks"] == 2  # task_accuracy read


@pytest.mark.parametrize("column, value, message", [
    ("accuracy", None, "column 'accuracy' is null"),
    ("model", None, "column 'model' is null"),
    ("task_accuracy", "{not json", "column 'task_accuracy' does not parse as JSON"),
    ("task_accuracy", "[0.5, 0.6]", "column 'task_accuracy' is not a JSON object"),
])
def test_a_null_or_broken_column_is_refused_naming_column_and_file(tiny_study, column, value, message):
    record = one_record(tiny_study, regime="sft", phase="measure") | {column: value}
    write_record(tiny_study, record)
    with pytest.raises(TrustError, match=message) as refused:
        load_study(tiny_study)
    assert f"records/{record['cell_id']}.parquet" in str(refused.value)
    assert cli_main([str(tiny_study), "--no-figures", "--resamples", "10"]) == 2


def test_a_record_file_of_another_schema_is_refused_by_name(tiny_study):
    import pyarrow as pa
    import pyarrow.parquet as pq

    bad = tiny_study / "records" / "foreign.parquet"
    pq.write_table(pa.table({"cell_id": ["foreign"], "model_params": ["seventy million"]}), bad)
    from fsv.records import DamagedRecords

    with pytest.raises(DamagedRecords, match="foreign.parquet: column 'model_params' has type string"):
        load_study(tiny_study)  # the file and its column named, as fsv status and fsv run name it


def test_fsv_analyze_exits_2_on_a_refused_study(tiny_study):
    from click.testing import CliRunner

    from fsv.cli import main as fsv_main

    write_record(tiny_study, one_record(tiny_study, regime="sft", phase="measure") | {"accuracy": None})
    result = CliRunner().invoke(fsv_main, ["analyze", str(tiny_study)])
    assert result.exit_code == 2 and "column 'accuracy' is null" in result.output
    missing = CliRunner().invoke(fsv_main, ["analyze", str(tiny_study / "nowhere")])
    assert missing.exit_code == 2 and "no study folder" in missing.output


def test_records_written_before_the_instance_and_search_columns_still_analyse(tiny_study):
    import pyarrow.parquet as pq

    newer = ["checkpoint", "instance", "phase", "method", "hparams", "selected_on", "selection", "val_curve",
             "n_distinct", "label_logprob", "train_loss_chance", "reward_margin", "task_accuracy"]
    for path in (tiny_study / "records").glob("*.parquet"):
        table = pq.read_table(path)
        if table.column("phase")[0].as_py() == "select":
            path.unlink()  # an old study has no search trials
            continue
        pq.write_table(table.drop_columns(newer), path)
    frame = read_records(tiny_study).drop(columns=newer)
    assert measure_study(frame, NO_FIGURES, seed=0).law["sft"].verdict  # a frame lacking columns, in memory
    out = analyze(tiny_study, allow_partial=True, settings=NO_FIGURES)
    assert strict_json(out / "fits.json")["law"]["sft"]["verdict"]


def test_search_trials_need_not_be_listed_and_feed_the_trained_to_best_table(tiny_study):
    listing = json.loads((tiny_study / "cells.json").read_text())
    search = {r["cell_id"] for r in read_records(tiny_study).to_dict(orient="records") if r["phase"] == "select"}
    listing["cells"] = [c for c in listing["cells"] if c["cell_id"] not in search]
    (tiny_study / "cells.json").write_text(json.dumps(listing))
    study = load_study(tiny_study)
    assert search and search <= set(study.records["cell_id"]) and not study.unlisted
    selection = measure_study(study.records, NO_FIGURES, seed=0).selection
    assert set(selection["lr"]) == {1e-4, 3e-4, 1e-3, 3e-3} and selection.loc[selection["chosen"], "lr"].eq(1e-3).all()


def test_a_regime_that_never_fits_its_training_objective_is_named_in_the_law_section(tmp_path):
    """Training loss of the search trials against chance: sft fits (a tenth of ln 4 at its highest
    rate), instruction tuning stays at .9 of it on every instance, and the report says so beside
    the verdict and in its own table."""
    spec = SyntheticSpec(laws=(("sft", 2.0, -1.0), ("instruction_tuning", 1.0, -0.8)),
                         unfit=("instruction_tuning",), descriptions=False)
    write_synthetic_study(tmp_path / "study", spec)
    out = analyze(tmp_path / "study", settings=NO_FIGURES)
    table = pd.read_csv(out / "tables" / "objective_fit.csv")
    by_regime = table.groupby("regime")["fits"].agg(["all", "any", "size"])
    assert by_regime.loc["sft", "all"] and by_regime.loc["sft", "size"] == len(spec.models)
    assert not by_regime.loc["instruction_tuning", "any"]
    assert table.loc[table["regime"] == "sft", "share_of_chance"].max() == pytest.approx(0.1)
    assert table.loc[table["regime"] == "sft", "trials"].eq(len(spec.lrs)).all()
    report = (out / "report.md").read_text()
    assert f"instruction_tuning did not fit its training objective on {len(spec.models)} instance(s)" in report
    assert "sft did not fit" not in report and "## Did each regime fit its objective?" in report
    with pytest.raises(ValueError, match="fit_share"):
        AnalysisSettings(fit_share=0.0)


# Two pretraining instances per size, sft and prompt tuning: every claim over instances has a size with
# more than one instance in it, where an unordered set of instance names would reorder the draws.
REPLICATED = SyntheticSpec(models=("tiny", "small", "medium"), params=(50_000, 400_000, 3_200_000),
                           strengths=(0.04, 0.07, 0.12), laws=(("sft", 2.0, -1.0), ("prompt_tuning", 4.0, -0.8)),
                           ks=(0, 1, 4), ns=(2, 8, 32), seeds=(0, 1), tasks=("t",), pretrain_seeds=(0, 1),
                           instance_sd=0.2, select=False, descriptions=False)


def test_analysis_repeats_across_processes_with_other_hash_seeds(tmp_path):
    """Python salts str hashes per process: nothing the analysis reports may follow a set's order."""
    import os
    import subprocess
    import sys

    study_dir = tmp_path / "replicated"
    write_synthetic_study(study_dir, REPLICATED, seed=0)
    script = ("import sys; from analysis import AnalysisSettings, analyze; "
              "analyze(sys.argv[1], out=sys.argv[2], seed=0, settings=AnalysisSettings(bootstrap_resamples=50, figures=False))")
    outputs = []
    for hash_seed in ("1", "2", "3"):
        out = tmp_path / f"hash-{hash_seed}"
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        subprocess.run([sys.executable, "-c", script, str(study_dir), str(out)], env=env, check=True,
                       cwd=Path(__file__).resolve().parents[1])
        outputs.append(strict_json(out / "fits.json"))
    lester = [row for row in outputs[0]["literature_claims"] if row["source"] == "Lester et al. 2021"]
    assert lester and lester[0]["effect"] is not None  # the claim is tested on this study, not skipped
    assert outputs[1] == outputs[0] and outputs[2] == outputs[0]


def test_choices_at_an_end_of_their_search_are_counted_and_reported(tmp_path):
    """Scored sft records whose selection sits at the longest length and the highest rate searched
    (fsv.search's `selection` field) are counted per instance and end, in a table, in fits.json, and
    beside the law; a series whose choices all lie inside is listed with none."""
    from analysis.synthetic import cells_listing, synthetic_records
    from fsv.records import write_text

    spec = SyntheticSpec(laws=(("sft", 2.0, -1.0), ("instruction_tuning", 1.0, -0.8)), descriptions=False)
    records = synthetic_records(spec, 0)
    scored = lambda regime: [r for r in records if r["regime"] == regime and r["phase"] == "measure"]  # noqa: E731
    sft = scored("sft")
    searched = {"explored": {"lr": [1e-4, 1e-3, 1e-2]}, "lengths": [4, 8, 16], "val_accuracy": 0.5}
    for i, record in enumerate(sft):  # every other cell: the longest length; every fourth: the highest rate too
        on_edge = (["steps"] if i % 2 == 0 else []) + (["lr"] if i % 4 == 0 else [])
        record["selection"] = json.dumps({**searched, "on_edge": on_edge})
        record["hparams"] = json.dumps({"lr": 1e-2 if "lr" in on_edge else 1e-3, "steps": 16 if "steps" in on_edge else 8})
    study_dir = tmp_path / "study"
    for record in records:
        write_record(study_dir, record)
    write_text(study_dir, "cells.json", json.dumps(cells_listing(spec, records)))
    out = analyze(study_dir, settings=NO_FIGURES)
    longest, highest = len(sft[::2]), len(sft[::4])
    table = pd.read_csv(out / "tables" / "search_edges.csv")
    edges = table[table["series"] == "sft"].groupby(["hyperparameter", "end"])["cells"].sum().to_dict()
    assert edges == {("lr", "highest"): highest, ("steps", "longest"): longest}
    per_instance = table[table["series"] == "sft"].drop_duplicates("model")["scored"]
    assert per_instance.sum() == len(sft) and len(per_instance) == len(spec.models)
    inside = table[table["series"] == "instruction_tuning"]
    assert set(inside["hyperparameter"]) == {"-"} and inside["cells"].eq(0).all()
    fits = strict_json(out / "fits.json")
    assert sum(r["cells"] for r in fits["search_edges"] if r["series"] == "sft" and r["end"] == "longest") == longest
    report = (out / "report.md").read_text()
    assert "## Did each search contain its choice?" in report
    assert f"{longest} of its {len(sft)} scored cells chose the longest length searched" in report
    assert f"instruction_tuning: 0 of {len(scored('instruction_tuning'))} scored cells chose the longest" in report


def test_a_longer_run_counts_with_its_shorter_run_as_one_configuration():
    """A configuration's longer run (its own select record, with the lengths it added) and its
    shorter run are one point of the validation curve: the best over every length either ran."""
    from analysis.summaries import selection_table

    def record(hparams: dict, curve: dict) -> dict:
        return {"regime": "sft", "instance": "world-s/p0/final", "n": None, "seed": None,
                "hparams": json.dumps(hparams, sort_keys=True), "val_curve": json.dumps(curve)}

    short, other = {"lr": 1e-3, "weight_decay": 0.0}, {"lr": 3e-3, "weight_decay": 0.0}
    selection = pd.DataFrame([record(short, {"1": {"4": 0.5, "8": 0.6}, "2": {"4": 0.7, "8": 0.65}}),
                              record(short, {"1": {"16": 0.8}}),  # its longer run, for n = 1 only
                              record(other, {"1": {"4": 0.4, "8": 0.45}, "2": {"4": 0.5, "8": 0.55}})])
    training = pd.DataFrame({"regime": ["sft"], "instance": ["world-s/p0/final"], "hparams": [json.dumps({**short, "steps": 16})]})
    table = selection_table(selection, training).set_index(["lr", "n"])["val_accuracy"].to_dict()
    assert table == {(1e-3, 1.0): 0.8, (1e-3, 2.0): 0.7, (3e-3, 1.0): 0.45, (3e-3, 2.0): 0.55}
