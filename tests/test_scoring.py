"""The scorer: each episode's shared prefix computed once, equal to naive per-choice full-sequence
scoring, for world and text models, single- and multi-token choices, uneven suffixes, k = 0 and
prompt-tuned peft models."""

import copy

import numpy as np
import pytest
import torch
from transformers import LlamaForCausalLM

from fixtures_hf import build_tokenizer, task_texts, tiny_config, write_formats
from fsv.evaluate import evaluate_world, world_prompts
from fsv.models.ladder import LADDER, llama_config
from fsv.scoring import (Budget, score_choices, score_episodes, score_full_prompts, score_naive,
                         shared_prefixes)
from fsv.world import World, preset

TOL = 1e-5


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def world_and_model():
    world = World(preset("quick"))
    torch.manual_seed(0)
    cfg = llama_config(LADDER["world-s"], len(world.vocab), world.config.context, 0, 1)
    return world, LlamaForCausalLM(cfg).eval()


def multi_choices(world):
    ids = world.ids
    return [[ids["L0"]], [ids["L1"], ids["L2"]], [ids["H0"], ids["L3"], ids["s1"]], [ids["L2"], ids["s0"]]]


def assert_naive(model, prompts, choices, **kw):
    fast, fast_norm = score_choices(model, prompts, choices, **kw)
    slow, slow_norm = score_naive(model, prompts, choices)
    assert fast.shape == (len(prompts), len(choices))
    assert np.abs(fast - slow).max() < TOL and np.abs(fast_norm - slow_norm).max() < TOL
    return fast


def test_episodes_share_their_demonstrations(world_and_model):
    world, _ = world_and_model
    prompts, _, demos = world_prompts(world, world.heldout_tasks[:3], 8, "none", seed=1, episodes=2)
    runs = shared_prefixes(prompts)
    n_query = len(world.test_symbols)
    assert [(a, b) for a, b, _ in runs] == [(i * n_query, (i + 1) * n_query) for i in range(len(demos))]
    assert all(n >= 1 + 8 * world.example_width for _, _, n in runs)  # <bos> and the 8 demonstrations
    zero, _, _ = world_prompts(world, world.heldout_tasks[:3], 0, "none", seed=1, episodes=1)
    assert all(n == 0 for _, _, n in shared_prefixes(zero))  # <bos> alone saves less than a forward


@pytest.mark.parametrize("multi", [False, True], ids=["single-token", "multi-token"])
def test_world_episodes_equal_naive(world_and_model, multi):
    world, model = world_and_model
    prompts = []
    for k, variant in ((0, "none"), (0, "model"), (3, "model"), (16, "none")):  # uneven prompt lengths
        p, _, _ = world_prompts(world, world.heldout_tasks[:2], k, variant, seed=1, episodes=2)
        prompts += p[:10]  # several queries of an episode, and the start of the next
    choices = multi_choices(world) if multi else [[i] for i in world.label_ids]
    assert_naive(model, prompts, choices, batch_size=3)  # chunks that split an episode
    assert_naive(model, prompts, choices)  # one block, sized by the device budget
    assert_naive(model, prompts, choices, budget=Budget(new=40, cached=200))  # a block per episode


@pytest.mark.parametrize("multi", [False, True], ids=["single-token", "multi-token"])
def test_uneven_suffixes_and_no_prefix(world_and_model, multi):
    world, model = world_and_model
    rng = np.random.default_rng(0)
    prompts, _, _ = world_prompts(world, world.heldout_tasks[:1], 4, "none", seed=2, episodes=1)
    prefix = prompts[0][:-2]
    suffixes = [p[-2:] + rng.integers(9, 30, size=int(rng.integers(0, 5))).tolist() for p in prompts]
    choices = multi_choices(world) if multi else [[i] for i in world.label_ids]
    episodes = [(prefix, suffixes[:5]), ([], [prefix + s for s in suffixes[5:]]), (prefix[:3], suffixes[:2])]
    fast, _ = score_episodes(model, episodes, choices, batch_size=2)
    flat = [p + s for p, ss in episodes for s in ss]
    slow, _ = score_naive(model, flat, choices)
    assert np.abs(fast - slow).max() < TOL
    assert all(n == 0 for _, _, n in shared_prefixes(suffixes))  # each opens with its own query: nothing shared
    assert_naive(model, suffixes, choices, batch_size=4)


@pytest.fixture(scope="module")
def text_setup(tmp_path_factory):
    import datasets

    from fsv.tasks import get_task, load_splits

    datasets.disable_progress_bars()
    task = get_task("ag_news")
    tokenizer = build_tokenizer(task_texts())
    source = write_formats(task, tmp_path_factory.mktemp("scoring-text"))["disk_dict"]
    return task, tokenizer, load_splits(task, str(source), pool_size=16)


@pytest.mark.parametrize("arch", ["gpt_neox", "llama"])
def test_text_multi_token_labels_equal_naive(text_setup, arch):
    from transformers import AutoModelForCausalLM

    from fsv.hf_eval import build_prompts, evaluate_text, label_token_ids, tokenize_prompts

    task, tokenizer, splits = text_setup
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_config(arch, tokenizer, 512)).eval()
    choices = label_token_ids(tokenizer, task)
    assert min(len(c) for c in choices) > 1 and len({len(c) for c in choices}) > 1
    texts = []
    for k in (0, 2):
        texts += build_prompts(task, splits, k, "model", seed=0, episodes=2, max_eval=3)[0]
    prompts = tokenize_prompts(tokenizer, texts)
    assert len({len(p) for p in prompts}) > 1  # uneven queries pad
    assert_naive(model, prompts, choices, batch_size=2)
    assert_naive(model, prompts, choices)
    res = evaluate_text(model, tokenizer, task, splits, k=2, variant="model", episodes=2, max_eval=3)
    truth_ll = res.loglik[np.arange(res.n_eval), res.labels]
    assert res.label_logprob == pytest.approx(float(truth_ll.mean())) and res.label_logprob < 0


def test_peft_models_prompt_tuned_prefix_tuned_and_lora(world_and_model):
    from peft import LoraConfig, PrefixTuningConfig, PromptTuningConfig, TaskType, get_peft_model

    world, base = world_and_model
    torch.manual_seed(1)
    prompts = []
    for k in (0, 4):
        prompts += world_prompts(world, world.heldout_tasks[:2], k, "none", seed=3, episodes=1)[0][:10]
    for config in (PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=3),  # the cache path
                   PrefixTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=3),  # full prompts
                   LoraConfig(task_type=TaskType.CAUSAL_LM, r=2, init_lora_weights=False)):  # the cache path
        model = get_peft_model(copy.deepcopy(base), config).eval()  # the shared base stays as it is
        for choices in ([[i] for i in world.label_ids], multi_choices(world)):
            fast = assert_naive(model, prompts, choices, batch_size=4)
            plain, _ = score_choices(base, prompts, choices)
            assert np.abs(fast - plain).max() > 1e-3  # the adapter was read
            old, _ = score_full_prompts(model, prompts, choices)
            assert np.abs(fast - old).max() < TOL


def test_evaluate_world_reports_the_label_logprob(world_and_model):
    world, model = world_and_model
    res = evaluate_world(model, world, world.heldout_tasks[:2], k=4, seed=0, episodes=2)
    assert res.n_eval == 2 * 2 * len(world.test_symbols) and np.isfinite(res.label_logprob)
    prompts, truth, _ = world_prompts(world, world.heldout_tasks[:2], 4, "none", 0, 2)
    slow, _ = score_naive(model, prompts, [[i] for i in world.label_ids])
    assert res.label_logprob == pytest.approx(float(slow[np.arange(len(truth)), truth].mean()), abs=TOL)
    assert res.accuracy == pytest.approx(float((slow.argmax(1) == truth).mean()))


def test_demonstrations_never_include_the_query_and_are_recorded():
    world = World(preset("quick"))
    prompts, truth, demos = world_prompts(world, world.heldout_tasks, 8, "none", seed=5, episodes=3)
    assert len(demos) == 3 * len(world.heldout_tasks) and len(prompts) == len(truth)
    test = set(world.test_symbols.tolist())
    assert all(not set(shots) & test and len(shots) == 8 for _, shots in demos)
    again = world_prompts(world, world.heldout_tasks, 8, "none", seed=5, episodes=3)[2]
    other = world_prompts(world, world.heldout_tasks, 8, "none", seed=6, episodes=3)[2]
    assert demos == again and demos != other
