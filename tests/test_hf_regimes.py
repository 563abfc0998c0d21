"""The multi-task regimes on text tasks and ZeRO-3 on an HF directory, end to end on real engines
(Ray Tune trials, Ray Train workers under DeepSpeed, trl's DPOTrainer): a tiny Llama that ships its
own code and tiny local datasets from `fixtures_hf`."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
import yaml

from fixtures_hf import save_remote_code_model, disk_sources, task_texts
from fsv.models.load import load_model
from fsv.models.registry import resolve_model

pytestmark = pytest.mark.slow

TASKS = ("sst2", "ag_news", "trec")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    base = tmp_path_factory.mktemp("hf-regimes")
    texts = task_texts()
    models = {"remote": save_remote_code_model(base / "remote", texts)}
    sources = disk_sources(TASKS, base / "data")
    return {"base": base, "models": {k: str(v) for k, v in models.items()}, "sources": sources}


def _weights(path) -> dict:
    return {k: v.clone() for k, v in load_model(path, trust_remote_code=True).state_dict().items()}


def _changed(before: dict, path) -> list[str]:
    after = _weights(path)
    return [k for k in before if not torch.equal(before[k], after[k])]


def test_study_with_instruction_tuning_and_rlhf_on_text_under_zero3_through_ray(root, ray_cluster, tmp_path):
    """A small end-to-end study: a model that ships its own code (so `trust_remote_code: true`),
    placed on ZeRO-3 x 2 workers by `train.per_model`; instruction tuning and rlhf (trl DPO) on two
    text tasks, sst2 held out."""
    from study.driver import run_study

    remote = root["models"]["remote"]
    study = {
        "name": "hf-multi", "models": [remote], "tasks": ["sst2"], "task_sources": root["sources"],
        "seeds": [0], "max_eval": 8, "analyze": False, "wandb": {"mode": "disabled"}, "trust_remote_code": True,
        "train": {"per_model": {remote: {"zero_stage": 3, "workers": 2}}, "keep_models": True},
        "regimes": {"instruction_tuning": {"n": [6], "tasks_trained": [1], "train_tasks": list(TASKS), "steps": 2, "batch": 4},
                    "rlhf": {"n": [8], "train_tasks": list(TASKS), "steps": 2, "batch": 4}},
    }
    path = tmp_path / "hf-multi.yaml"
    path.write_text(yaml.safe_dump(study))
    summary = run_study(str(path), str(tmp_path / "results"))
    frame = pd.read_parquet(tmp_path / "results" / "hf-multi" / "records")
    assert summary == {**summary, "ok": 4, "failed": 0, "missing": 0}, frame.error.dropna().tolist()[:1]
    scored = frame[frame.phase == "measure"]  # one selection trial and one scored cell per regime
    assert (frame.zero_stage == 3).all() and (frame.workers == 2).all()
    assert scored.acc_human.notna().all() and scored.acc_none.notna().all() and (scored.accuracy == scored.acc_human).all()
    assert frame.train_tokens.gt(0).all() and frame.final_train_loss.notna().all() and frame.model_params.gt(0).all()
    for _, row in frame.iterrows():
        trained = [t for t, _ in json.loads(row.config)["train_tasks"]]
        assert row.task not in trained and trained
    by_regime = scored.set_index("regime")
    assert by_regime.train_examples.to_dict() == {"instruction_tuning": 6, "rlhf": 8}
    assert by_regime.n_eval.eq(8).all() and by_regime.chance.eq(0.5).all()  # sst2, the held-out task
    # each worker held half of every parameter from the moment it loaded (engine loop and trl's DPO
    # alike); the trained weights, gathered and saved whole, differ from the base
    checkpoints = list((tmp_path / "results" / "hf-multi" / "train").glob("*/checkpoint_*/*/train_curve.json"))
    assert len(checkpoints) == 2
    total, base = resolve_model(remote).params, _weights(remote)
    for checkpoint in (c.parent for c in checkpoints):
        curve = json.loads((checkpoint / "train_curve.json").read_text())
        assert curve["params_total"] == total and total / 2 <= curve["params_local"] <= total / 2 + len(base)
        assert curve["loss"] and _changed(base, checkpoint), checkpoint
