"""Each training regime on real engines (Ray Train + DeepSpeed, peft, trl): the trained weights
(or adapter) changed, the base did not, and the record carries the training fields."""

import json

import pytest
import torch
from conftest import PRETRAIN, WORLD

from fsv.config import parse_study
from fsv.grid import expand
from fsv.models.load import load_causal_lm, load_model
from fsv.regimes import regime_module
from fsv.regimes.context import TrialContext

pytestmark = pytest.mark.slow

STUDY = {
    "name": "regimes", "models": ["world-xs"], "seeds": [0], "world": WORLD,
    "pretrain": {k: v for k, v in PRETRAIN.items()} | {"seeds": [0]},
    "regimes": {
        "sft": {"n": [16], "layouts": ["packed"], "steps": 8, "batch": 4},
        "prompt_tuning": {"n": [16], "prompt_tokens": [4], "steps": 8, "batch": 4},
        "instruction_tuning": {"n": [4], "tasks_trained": [4], "steps": 8, "batch": 4},
        "rlhf": {"n": [16], "steps": 4, "batch": 4},
    },
}


@pytest.fixture(scope="module")
def cells():
    return {c["regime"]: c for c in expand(parse_study(STUDY))}


def _run(regime, cells, tiny_model, tmp_path):
    cell = cells[regime]
    ctx = TrialContext(cell, str(tmp_path / "study"), tmp_path, bayes={0: 0.25})
    assert ctx.model_path == str(tiny_model)
    return cell, ctx, regime_module(regime).run(cell, ctx)


def _trained_dir(tmp_path):
    return tmp_path / "trained"


def _state(path):
    model = load_model(path)
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("regime", ["instruction_tuning", "rlhf"])
def test_full_weight_regimes_change_the_weights(regime, cells, tiny_model, tmp_path):
    cell, _, fields = _run(regime, cells, tiny_model, tmp_path)
    base, trained = _state(tiny_model), _state(_trained_dir(tmp_path))
    changed = [k for k in base if not torch.equal(base[k], trained[k])]
    assert changed, "training left every weight as it was"
    _check_training_fields(regime, fields)


def _check_training_fields(regime, fields):
    assert 0 <= fields["accuracy"] <= 1 and fields["n_eval"] > 0
    assert fields["train_tokens"] > 0 and fields["train_flops"] == 6.0 * fields["model_params"] * fields["train_tokens"]
    assert fields["final_train_loss"] > 0 and fields["train_s"] > 0 and fields["device"].startswith("cpu")
    if regime != "sft":
        assert {"acc_none", "acc_model", "acc_human"} <= set(fields) and fields["accuracy"] == fields["acc_human"]


def _check_per_task(ctx, fields, tmp_path):
    """One adaptation per held-out task, in its own folder; accuracy pooled over all their test symbols."""
    tasks = [t.name for t in ctx.world.heldout_tasks]
    assert sorted(p.name for p in _trained_dir(tmp_path).iterdir()) == sorted(tasks)
    per_task = json.loads(fields["task_accuracy"])
    assert list(per_task) == tasks
    assert fields["n_eval"] == len(tasks) * len(ctx.world.test_symbols)
    assert fields["accuracy"] == pytest.approx(sum(per_task.values()) / len(tasks))


def test_sft_adapts_one_copy_per_heldout_task(cells, tiny_model, tmp_path):
    cell, ctx, fields = _run("sft", cells, tiny_model, tmp_path)
    _check_training_fields("sft", fields)
    _check_per_task(ctx, fields, tmp_path)
    base = _state(tiny_model)
    first, second = (_state(_trained_dir(tmp_path) / t.name) for t in ctx.world.heldout_tasks[:2])
    assert any(not torch.equal(base[k], first[k]) for k in base), "training left every weight as it was"
    assert any(not torch.equal(first[k], second[k]) for k in base), "two tasks' adaptations are the same model"


def test_prompt_tuning_trains_the_soft_prompt_and_leaves_the_base(cells, tiny_model, tmp_path):
    from peft import PeftModel
    from safetensors.torch import load_file

    before = _state(tiny_model)
    cell, ctx, fields = _run("prompt_tuning", cells, tiny_model, tmp_path)
    assert all(torch.equal(v, _state(tiny_model)[k]) for k, v in before.items())  # the base on disk
    _check_per_task(ctx, fields, tmp_path)
    prompts = []
    for task in ctx.world.heldout_tasks[:2]:
        folder = _trained_dir(tmp_path) / task.name
        tuned = PeftModel.from_pretrained(load_causal_lm(tiny_model)[0], folder)
        assert tuned.get_prompt_embedding_to_save("default").shape[0] == 4
        adapter = load_file(str(folder / "adapter_model.safetensors"))
        assert list(adapter) == ["prompt_embeddings"]  # only the soft prompt was trained and saved
        prompts.append(adapter["prompt_embeddings"])
        inner = tuned.get_base_model().state_dict()
        assert all(torch.equal(v, inner[k]) for k, v in before.items())
    assert not torch.equal(*prompts), "two tasks learned the same soft prompt"
    assert fields["train_tokens"] > 0 and 0 <= fields["accuracy"] <= 1
