"""A small end-to-end study on the HF path, through Ray: tiny models of the real architectures
(GPT-NeoX as Pythia, Qwen2 as Qwen2.5) saved locally, tasks read from local files (save_to_disk and
CSV, one with multi-token label words), zero-/few-shot, sft and prompt tuning under DeepSpeed."""

import json

import pandas as pd
import pytest
import yaml
from fixtures_hf import save_tiny_model, task_texts, write_formats

from fsv.tasks import get_task
from study.driver import run_study

pytestmark = pytest.mark.slow


def test_hf_study_runs_every_text_regime_through_ray(tmp_path, ray_cluster, fsv_cache):
    texts = task_texts()
    models = [str(save_tiny_model(arch, tmp_path / arch, texts)) for arch in ("gpt_neox", "qwen2")]
    sources = {"sst2": str(write_formats(get_task("sst2"), tmp_path / "data")["disk_dict"]),
               "ag_news": str(write_formats(get_task("ag_news"), tmp_path / "data")["csv_dir"])}
    study = {
        "name": "hf", "models": models, "tasks": ["sst2", "ag_news"], "task_sources": sources, "seeds": [0],
        "max_eval": 12, "analyze": False, "wandb": {"mode": "disabled"},
        "regimes": {"zero_shot": {"descriptions": ["none", "human"]}, "few_shot": {"k": [2], "episodes": 1},
                    "sft": {"n": [8], "steps": 3, "batch": 4},
                    "prompt_tuning": {"n": [8], "prompt_tokens": [4], "steps": 3, "batch": 4}},
    }
    path = tmp_path / "hf.yaml"
    path.write_text(yaml.safe_dump(study))
    summary = run_study(str(path), str(tmp_path / "results"))
    frame = pd.read_parquet(tmp_path / "results" / "hf" / "records")
    # 12 in-context trials; per training regime, model and task one selection trial and one scored cell
    assert summary == {**summary, "ok": 12 + 2 * 2 * 2 * 2, "failed": 0, "missing": 0}, frame.error.dropna().tolist()[:1]
    scored_or_in_context = frame[frame.phase != "select"]  # a selection trial's accuracies are in its curves
    assert set(frame.task) == {"sst2", "ag_news"} and scored_or_in_context.accuracy_norm.notna().all()
    assert frame.model_params.gt(0).all() and frame.world.isna().all() and frame.bayes_accuracy.isna().all()
    chance = frame.groupby("task").chance.first()
    assert chance["sst2"] == pytest.approx(1 / 2) and chance["ag_news"] == pytest.approx(1 / 4)
    trained = frame[frame.regime.isin(["sft", "prompt_tuning"])]
    assert trained.train_tokens.gt(0).all() and trained.final_train_loss.notna().all()
    scored = trained[trained.phase == "measure"]
    assert scored.selected_on.map(json.loads).map(lambda tasks: all(t.endswith(":dev") for t in tasks)).all()
    assert scored.label_logprob.lt(0).all() and scored.n_distinct.eq(8).all()
    # the analysis reads an HF study's records (null pretrain_seed, world and Bayes) without crashing
    from analysis import AnalysisSettings, analyze

    out = analyze(tmp_path / "results" / "hf", settings=AnalysisSettings(bootstrap_resamples=20, figures=False))
    fits = json.loads((out / "fits.json").read_text())
    assert set(fits["law"]) == {"sft", "prompt_tuning"} and all(law["verdict"] for law in fits["law"].values())
