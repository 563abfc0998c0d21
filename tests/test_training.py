"""The training path on real engines: Ray Train workers under DeepSpeed, on a real local cluster."""

import json

import numpy as np
import pytest
import torch
from conftest import PRETRAIN, world_config

from fsv.models.cache import is_cached, read_marker
from fsv.models.load import load_causal_lm
from fsv.world import World, preset

pytestmark = pytest.mark.slow

def test_pretraining_under_deepspeed_in_ray_train_lowers_the_loss(tiny_model):
    assert is_cached(tiny_model)
    curve = json.loads((tiny_model / "loss_curve.json").read_text())["loss"]
    assert len(curve) == PRETRAIN["steps"]
    assert np.mean(curve[-5:]) < np.mean(curve[:5]) - 0.3
    marker = read_marker(tiny_model)
    assert marker["params"] > 10_000 and marker["train_tokens"] == 40 * 16 * 48
    assert "model.safetensors" in marker["files"]  # every file's SHA-256, checked before each use


def test_model_and_tokenizer_round_trip_through_save_pretrained(tiny_model):
    world = World(preset("quick"))
    model, tokenizer = load_causal_lm(tiny_model)
    assert (tiny_model / "model.safetensors").is_file()
    task = world.heldout_tasks[0]
    prompt = world.prompt(task, world.train_symbols[:3], int(world.test_symbols[0]), "model")
    text = " ".join(world.vocab[i] for i in prompt[1:])
    assert tokenizer(text).input_ids == prompt  # the tokenizer adds <bos>
    again, _ = load_causal_lm(tiny_model)
    ids = torch.tensor([prompt])
    assert torch.equal(model(input_ids=ids).logits, again(input_ids=ids).logits)


def _curve(ray_cluster, tmp, workers, stage):
    from fsv.models.load import pretrain_config
    from fsv.train.launch import fit

    config = pretrain_config("world-xs", world_config(), {**PRETRAIN, "steps": 12, "workers": workers,
                                                 "zero_stage": stage}, seed=1)
    fit(config, str(tmp / "ray"), f"w{workers}-z{stage}", tmp / f"w{workers}-z{stage}")
    return json.loads((tmp / f"w{workers}-z{stage}" / "train_curve.json").read_text())["loss"]


def test_zero2_with_two_workers_reaches_the_loss_of_one_worker(ray_cluster, tmp_path):
    one = _curve(ray_cluster, tmp_path, 1, 0)
    two = _curve(ray_cluster, tmp_path, 2, 2)
    # same global batches and seed; ranks average their own label-token means, so the curves agree
    # to within the spread of label-token counts between the two halves of a batch
    assert abs(one[-1] - two[-1]) < 0.05 * one[-1]
    assert np.corrcoef(one, two)[0, 1] > 0.95
