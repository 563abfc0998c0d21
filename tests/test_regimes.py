"""Each training regime on real engines (Ray Train + DeepSpeed, peft, trl), as one selection trial on
a tiny world model: it fits its own objective (its training loss ends below the objective's chance
level; GRPO's reward rises above chance), the weights it should move moved and the others did not,
and the record carries its curves at every length."""

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

# Settings that fit each objective on a world-xs pretrained for 40 steps (it has not learned to read a
# symbol yet, so what fits is memorising the n examples). Prompt tuning cannot fit them on such a base
# (a frozen model that ignores the symbol gives a soft prompt nothing to steer): its check is that only
# the soft prompt moved.
REGIMES = {
    "sft": {"n": [4], "methods": ["full", "lora"], "lora_rank": [8], "steps": [5, 30], "batch": 4, "lr": [1e-2]},
    "prompt_tuning": {"n": [4], "prompt_tokens": [4], "steps": [5, 10], "batch": 4, "lr": [3e-1]},
    "instruction_tuning": {"n": [2], "tasks_trained": [2], "steps": [5, 60], "batch": 8, "lr": [3e-2]},
    "rlhf": {"n": [4], "methods": ["dpo", "grpo"], "steps": [5, 40], "batch": 16, "lr": [3e-2], "noise": 0.0},
}
STUDY = {"name": "regimes", "models": ["world-xs"], "seeds": [0], "world": WORLD,
         "pretrain": dict(PRETRAIN) | {"seeds": [0]}, "regimes": REGIMES}


@pytest.fixture(scope="module")
def trials():
    return {f"{c['regime']}-{c['method']}": c for c in expand(parse_study(STUDY)) if c["phase"] == "select"}


def _run(key, trials, tiny_model, tmp_path, precision="fp32"):
    cell = trials[key]
    cell = {**cell, "train": {**cell["train"], "keep_models": True, "precision": precision}}
    ctx = TrialContext(cell, str(tmp_path / "study"), tmp_path, bayes={0: 0.25})
    assert ctx.model_path == str(tiny_model)
    fields = regime_module(cell["regime"]).run(cell, ctx)
    rows = json.loads(fields["curves"])
    assert {r["steps"] for r in rows} == set(REGIMES[cell["regime"]]["steps"])  # every length, read from one run
    assert all(0 <= r["accuracy"] <= 1 and r["n_eval"] > 0 for r in rows)
    assert fields["phase"] == "select" and json.loads(fields["hparams"])["lr"] == REGIMES[cell["regime"]]["lr"][0]
    assert fields["precision"] == precision  # what the worker trained in, recorded
    return cell, ctx, fields, rows


def _state(path):
    return {k: v.clone() for k, v in load_model(path).state_dict().items()}


def _changed(base, trained):
    return [k for k in base if not torch.equal(base[k], trained[k])]


def test_sft_fits_its_examples_one_copy_per_heldout_task(trials, tiny_model, tmp_path):
    cell, ctx, fields, rows = _run("sft-full", trials, tiny_model, tmp_path)
    assert fields["final_train_loss"] < fields["train_loss_chance"]  # ln 4: a uniform guess over the labels
    tasks = [t.name for t in ctx.world.heldout_tasks]
    assert sorted({r["task"] for r in rows}) == sorted(tasks) and {r["fold"] for r in rows} == {"f0", "f1"}
    assert all(r["n_distinct"] == 4 for r in rows)
    folders = sorted((tmp_path / "trained").iterdir())
    assert [p.name for p in folders] == sorted(f"n4-s0-{t}" for t in tasks)
    base, first, second = _state(tiny_model), _state(folders[0]), _state(folders[1])
    assert _changed(base, first), "training left every weight as it was"
    assert _changed(first, second), "two tasks' adaptations are the same model"


def test_lora_moves_a_low_rank_update_and_fits(trials, tiny_model, tmp_path):
    from safetensors.torch import load_file

    cell, ctx, fields, rows = _run("sft-lora", trials, tiny_model, tmp_path)
    assert fields["final_train_loss"] < fields["train_loss_chance"]
    folder = next((tmp_path / "trained").iterdir())
    adapter = load_file(str(folder / "adapter_model.safetensors"))
    assert adapter and all("lora_" in k for k in adapter)  # only the low-rank update was trained and saved
    assert any(v.shape[0] == 8 or v.shape[-1] == 8 for v in adapter.values())  # the searched rank


def test_prompt_tuning_trains_the_soft_prompt_and_leaves_the_base(trials, tiny_model, tmp_path):
    from peft import PeftModel
    from safetensors.torch import load_file

    before = _state(tiny_model)
    cell, ctx, fields, rows = _run("prompt_tuning-prompt", trials, tiny_model, tmp_path)
    prompts = []
    for folder in sorted((tmp_path / "trained").iterdir())[:2]:
        tuned = PeftModel.from_pretrained(load_causal_lm(tiny_model)[0], folder)
        assert tuned.get_prompt_embedding_to_save("default").shape[0] == 4
        adapter = load_file(str(folder / "adapter_model.safetensors"))
        assert list(adapter) == ["prompt_embeddings"]
        prompts.append(adapter["prompt_embeddings"])
        inner = tuned.get_base_model().state_dict()
        assert all(torch.equal(v, inner[k]) for k, v in before.items())
    assert not torch.equal(*prompts), "two tasks learned the same soft prompt"


def test_instruction_tuning_fits_its_training_tasks(trials, tiny_model, tmp_path):
    cell, ctx, fields, rows = _run("instruction_tuning-full", trials, tiny_model, tmp_path)
    assert fields["final_train_loss"] < fields["train_loss_chance"]
    assert {"acc_none", "acc_model", "acc_human"} <= set(rows[0]) and all(r["accuracy"] == r["acc_human"] for r in rows)


def test_dpo_fits_its_preferences(trials, tiny_model, tmp_path):
    cell, ctx, fields, rows = _run("rlhf-dpo", trials, tiny_model, tmp_path)
    assert fields["train_loss_chance"] == pytest.approx(0.6931, abs=1e-4)  # ln 2: no preference learned
    assert fields["final_train_loss"] < fields["train_loss_chance"]
    assert fields["reward_margin"] is not None


@pytest.mark.parametrize("precision", ["fp32", "bf16-mixed"])  # trl's loop, its forwards under DeepSpeed's autocast
def test_grpo_changes_the_weights_and_raises_reward(precision, trials, tiny_model, tmp_path):
    cell, ctx, fields, rows = _run("rlhf-grpo", trials, tiny_model, tmp_path, precision)
    last = max(r["steps"] for r in rows)
    reward = [r["reward"] for r in rows if r["steps"] == last]
    assert min(reward) > 0.25  # above a uniform guess over the 4 labels, on its training prompts
    policy = tmp_path / "trained" / "n4-s0"
    assert _changed(_state(tiny_model), _state(policy)), "GRPO left every weight as it was"


def test_dpo_after_instruction_tuning_starts_from_the_tuned_policy(trials, tiny_model, tmp_path):
    """The seed's chain: rlhf from the instruction-tuned base. DPO's reference is the policy where it
    starts, so its first loss is exactly ln 2 (no margin yet); and that start is not the base (the
    same DPO from the base gives other evaluations at its first length)."""
    import math

    chain = {**REGIMES["rlhf"], "methods": ["dpo"], "start": "instruction_tuned",
             "start_hparams": {"lr": 3e-2, "steps": 20, "tasks_trained": 2, "n": 2, "batch": 8}}
    study = {**STUDY, "regimes": {"rlhf": chain}}
    chained = {**trials, "rlhf-dpo": next(c for c in expand(parse_study(study)) if c["phase"] == "select")}
    cell, ctx, fields, rows = _run("rlhf-dpo", chained, tiny_model, tmp_path / "chain")
    with open(tmp_path / "chain" / "trained" / "n4-s0" / "train_curve.json") as f:
        losses = json.load(f)["loss"]
    assert losses[0] == pytest.approx(math.log(2), abs=1e-5)
    assert fields["final_train_loss"] < math.log(2)
    base_rows = _run("rlhf-dpo", trials, tiny_model, tmp_path / "base")[3]
    first = min(r["steps"] for r in rows)
    assert [r["label_logprob"] for r in rows if r["steps"] == first] != pytest.approx(
        [r["label_logprob"] for r in base_rows if r["steps"] == first], abs=1e-3)
