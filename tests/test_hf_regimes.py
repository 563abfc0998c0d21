"""The multi-task regimes on text tasks and ZeRO-3 on an HF directory, on real engines (Ray Train
workers under DeepSpeed, trl's DPOTrainer): tiny GPT-NeoX / Qwen2 / remote-code Llama models and
tiny local datasets from `fixtures_hf`."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
import yaml

from fixtures_hf import save_remote_code_model, save_tiny_model, task_texts, write_formats
from fsv.config import parse_study
from fsv.grid import expand
from fsv.models.load import load_model
from fsv.regimes import regime_module
from fsv.regimes.context import TrialContext
from fsv.tasks import get_task

pytestmark = pytest.mark.slow

TASKS = ("sst2", "ag_news", "trec")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    import datasets

    datasets.disable_progress_bars()
    base = tmp_path_factory.mktemp("hf-regimes")
    texts = task_texts()
    models = {"neox": save_tiny_model("gpt_neox", base / "neox", texts),
              "qwen2": save_tiny_model("qwen2", base / "qwen2", texts),
              "remote": save_remote_code_model(base / "remote", texts)}
    sources = {t: str(write_formats(get_task(t), base / "data")["disk_dict"]) for t in TASKS}
    return {"base": base, "models": {k: str(v) for k, v in models.items()}, "sources": sources}


def _cell(root, model: str, regimes: dict, sources=("sst2",), **extra) -> dict:
    study = {"name": "hf-regimes", "models": [root["models"][model]], "tasks": ["sst2"], "max_eval": 8,
             "task_sources": {t: root["sources"][t] for t in sources}, "regimes": regimes, **extra}
    return expand(parse_study(study))[0]


def _weights(path) -> dict:
    return {k: v.clone() for k, v in load_model(path).state_dict().items()}


def _changed(before: dict, path) -> list[str]:
    after = _weights(path)
    return [k for k in before if not torch.equal(before[k], after[k])]


def test_instruction_tuning_on_text_trains_on_other_tasks_and_evaluates_the_held_out_one(root, ray_cluster, tmp_path):
    regimes = {"instruction_tuning": {"n": [6], "tasks_trained": [2], "train_tasks": list(TASKS), "steps": 3, "batch": 4}}
    cell = _cell(root, "neox", regimes, sources=TASKS)
    assert {t for t, _ in cell["train_tasks"]} == {"ag_news", "trec"}
    ctx = TrialContext(cell, str(tmp_path / "study"), tmp_path, {})
    fields = regime_module("instruction_tuning").run(cell, ctx)
    assert _changed(_weights(root["models"]["neox"]), tmp_path / "trained"), "training left every weight as it was"
    assert fields["accuracy"] == fields["acc_human"] and {"acc_none", "acc_model", "accuracy_norm"} <= set(fields)
    assert fields["n_eval"] == 8 and fields["chance"] == pytest.approx(0.5)  # sst2, the held-out task
    assert fields["train_examples"] == 12 and fields["train_tokens"] > 0 and fields["final_train_loss"] > 0


def test_zero3_loads_an_hf_directory_partitioned_and_trains_it(root, ray_cluster, tmp_path):
    """Two workers under ZeRO-3: each holds half of every parameter as soon as `from_pretrained`
    returns (zero.Init), before DeepSpeed's engine exists; the gathered model saves whole."""
    from fsv.regimes.training import train_cell

    cell = _cell(root, "qwen2", {"sft": {"n": [8], "steps": 3, "batch": 4}}, train={"zero_stage": 3, "workers": 2})
    assert (cell["train"]["zero_stage"], cell["train"]["workers"]) == (3, 2)
    ctx = TrialContext(cell, str(tmp_path / "study"), tmp_path, {})
    path, metrics = train_cell(cell, ctx, "fsv.regimes.sft:build_job", layout="single", task="sst2",
                               task_source=cell["task_source"])
    base = _weights(root["models"]["qwen2"])
    total = sum(v.numel() for k, v in base.items() if k != "lm_head.weight")  # tied to the embeddings
    assert metrics["params_total"] == total
    assert total / 2 <= metrics["params_local"] <= total / 2 + len(base)  # half of each tensor, rounded up
    changed = _changed(base, path)
    assert changed and json.loads((tmp_path / "trained" / "train_curve.json").read_text())["loss"]
    model, tokenizer = ctx.load(path)
    assert sum(p.numel() for p in model.parameters()) == total and tokenizer("Review: good").input_ids


def test_study_with_instruction_tuning_and_rlhf_on_text_under_zero3_through_ray(root, ray_cluster, tmp_path):
    """A small end-to-end study: a model that ships its own code (so `trust_remote_code: true`),
    placed on ZeRO-3 x 2 workers by `train.per_model`; instruction tuning and rlhf (trl DPO) on two
    text tasks, sst2 held out."""
    from study.driver import run_study

    remote = root["models"]["remote"]
    study = {
        "name": "hf-multi", "models": [remote], "tasks": ["sst2"], "task_sources": root["sources"],
        "seeds": [0], "max_eval": 8, "analyze": False, "wandb": {"mode": "disabled"}, "trust_remote_code": True,
        "train": {"per_model": {remote: {"zero_stage": 3, "workers": 2}}},
        "regimes": {"instruction_tuning": {"n": [6], "tasks_trained": [1], "train_tasks": list(TASKS), "steps": 2, "batch": 4},
                    "rlhf": {"n": [8], "train_tasks": list(TASKS), "steps": 2, "batch": 4}},
    }
    path = tmp_path / "hf-multi.yaml"
    path.write_text(yaml.safe_dump(study))
    summary = run_study(str(path), str(tmp_path / "results"))
    frame = pd.read_parquet(tmp_path / "results" / "hf-multi" / "records")
    assert summary == {**summary, "ok": 2, "failed": 0, "missing": 0}, frame.error.dropna().tolist()[:1]
    assert (frame.zero_stage == 3).all() and (frame.workers == 2).all()
    assert frame.acc_human.notna().all() and frame.acc_none.notna().all() and (frame.accuracy == frame.acc_human).all()
    assert frame.train_tokens.gt(0).all() and frame.final_train_loss.notna().all() and frame.model_params.gt(0).all()
    for _, row in frame.iterrows():
        trained = [t for t, _ in json.loads(row.config)["train_tasks"]]
        assert row.task not in trained and trained
    # each worker held half of the model from the moment it loaded, trl's DPO policy included
    curves = list((tmp_path / "results" / "hf-multi" / "train").glob("*/checkpoint_*/train_curve.json"))
    assert len(curves) == 2
    for curve in map(json.loads, (c.read_text() for c in curves)):
        assert curve["params_local"] < 0.55 * curve["params_total"] and curve["loss"]
