"""DPO through fsv's shared loop (`fsv.regimes.dpo`, the path that lets a trial's policies train as one
stack) is trl's DPO: on the same pairs, from the same model, with the same rate, its losses, held-out
evaluations and reward margin equal those of trl's `DPOTrainer` to rounding. Real engines: trl's
trainer under DeepSpeed, fsv's DeepSpeed engine, one gloo rank in this process."""

from __future__ import annotations

import math

import pytest
from test_stacked import config_for

pytestmark = pytest.mark.usefixtures("process_group")


def dpo_config(model_path: str) -> dict:
    """Full batches (8 pairs, batch 8): every step of both trainers sees every pair, so the order
    each draws them in cannot matter; no warm-up and no weight decay, whose rules the two differ in
    (trl's scheduler starts its ramp at 0, transformers decays no norm or bias)."""
    from fsv.train.worker import deepspeed_config

    config = config_for(model_path, None, n_levels=[8], seeds=[0], batch=8, lengths=[5, 12], warmup=0.0,
                        hparams={"lr": 3e-3, "beta": 0.1}, lr=3e-3, method="dpo", noise=0.1, start="base",
                        keep_models=False)
    config["train"] = {**config["train"], "weight_decay": 0.0, "grad_clip": 1.0, "keep_models": False}
    config["deepspeed"] = deepspeed_config(config["train"], config["batch"])
    return config


def test_dpo_in_fsvs_loop_equals_trls_dpo_trainer(world_model, tmp_path):  # noqa: F811
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    from fsv.regimes import dpo, rlhf
    from fsv.train.worker import train_jobs

    config = dpo_config(world_model)
    done, _ = train_jobs(list(dpo.build_job(config, 0, 1)), config, 0, 1, str(tmp_path / "fsv"))
    ours = done[0]["evals"]
    try:
        theirs = rlhf.one_policy(config, 8, 0, str(tmp_path / "trl"), 8)[0]
    finally:
        unset_hf_deepspeed_config()
    assert len(ours) == len(theirs) == 2 * 8  # two lengths x the 8 held-out tasks
    assert ours[0]["train_loss"] != pytest.approx(math.log(2), abs=1e-3)  # it trained: the loss left ln 2
    for a, b in zip(ours, theirs, strict=True):
        assert (a["task"], a["steps"], a["n"], a["seed"], a["n_distinct"]) == (b["task"], b["steps"], b["n"], b["seed"], b["n_distinct"])
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
        assert a["label_logprob"] == pytest.approx(b["label_logprob"], abs=1e-4)
        assert a["accuracy"] == b["accuracy"] and a["acc_human"] == b["acc_human"]
        assert a["tokens"] == b["tokens"]
        if a["steps"] == max(config["lengths"]):  # trl's margin is measured once, after training
            assert a["reward_margin"] == pytest.approx(b["reward_margin"], abs=1e-4)  # as label_logprob: float rounding of two loops
    assert ours[-1]["reward_margin"] > 0  # the held-out pairs' chosen labels gained on the rejected


def test_a_dpo_cell_takes_fsvs_loop_only_where_a_stack_can_run():
    from fsv.regimes.dpo import uses_fsv_loop

    cell = {"method": "dpo", "settings": {"start": "base"}, "train": {"zero_stage": 0, "precision": "fp32"}}
    assert uses_fsv_loop(cell)
    assert not uses_fsv_loop({**cell, "method": "grpo"})
    assert not uses_fsv_loop({**cell, "settings": {"start": "instruction_tuned"}})
    assert not uses_fsv_loop({**cell, "train": {"zero_stage": 3, "precision": "fp32"}})
    assert not uses_fsv_loop({**cell, "train": {"zero_stage": 0, "precision": "bf16"}})
    for fp32_weights in ["bf16-mixed", "auto"]:  # fp32 weights, bf16 matmuls: a stack runs them
        assert uses_fsv_loop({**cell, "train": {"zero_stage": 0, "precision": fp32_weights}})
