"""The scorer: the fast path equals naive per-choice full-sequence scoring."""

import numpy as np
import pytest
import torch
from transformers import LlamaForCausalLM

from fsv.evaluate import world_prompts
from fsv.models.ladder import LADDER, llama_config
from fsv.scoring import score_choices, score_naive
from fsv.world import World, preset


@pytest.fixture(scope="module")
def world_and_model():
    world = World(preset("quick"))
    torch.manual_seed(0)
    cfg = llama_config(LADDER["world-s"], len(world.vocab), world.config.context, 0, 1)
    return world, LlamaForCausalLM(cfg).eval()


def test_single_token_fast_path_equals_naive(world_and_model):
    world, model = world_and_model
    prompts = []
    for k in (0, 3, 16):  # different lengths in one batch exercise the right-padding
        p, _, _ = world_prompts(world, world.heldout_tasks[:2], k, "model", seed=1, episodes=1)
        prompts += p[:3]
    choices = [[i] for i in world.label_ids]
    fast, _ = score_choices(model, prompts, choices, batch_size=4)
    slow, _ = score_naive(model, prompts, choices)
    assert np.abs(fast - slow).max() < 1e-5


def test_multi_token_choices_reuse_the_prompt_cache(world_and_model):
    world, model = world_and_model
    prompts, _, _ = world_prompts(world, world.heldout_tasks[:1], 4, "none", seed=2, episodes=1)
    ids = world.ids
    choices = [[ids["L0"]], [ids["L1"], ids["L2"]], [ids["H0"], ids["L3"], ids["s1"]]]
    fast, fast_norm = score_choices(model, prompts[:3], choices)
    slow, slow_norm = score_naive(model, prompts[:3], choices)
    assert np.abs(fast - slow).max() < 1e-5 and np.abs(fast_norm - slow_norm).max() < 1e-5
    assert np.allclose(fast_norm[:, 2], fast[:, 2] / 3)


def test_demonstrations_never_include_the_query_and_are_recorded():
    world = World(preset("quick"))
    prompts, truth, demos = world_prompts(world, world.heldout_tasks, 8, "none", seed=5, episodes=3)
    assert len(demos) == 3 * len(world.heldout_tasks) and len(prompts) == len(truth)
    test = set(world.test_symbols.tolist())
    assert all(not set(shots) & test and len(shots) == 8 for _, shots in demos)
    again = world_prompts(world, world.heldout_tasks, 8, "none", seed=5, episodes=3)[2]
    other = world_prompts(world, world.heldout_tasks, 8, "none", seed=6, episodes=3)[2]
    assert demos == again and demos != other
