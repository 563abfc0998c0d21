"""Adaptations trained as one stack (`fsv.train.stacked`) equal the same adaptations trained one at a
time, on real DeepSpeed engines (ZeRO-0, one gloo rank in this process): every evaluation row
(training loss, accuracy, label log-likelihood) and every saved model, for full fine-tuning, LoRA,
soft prompts, instruction tuning and DPO on the world, and sft on text tasks with padded batches across
three HF architectures; a trial's soft prompts share one base that none of them changes; and under
`bf16-mixed` a stack and a lone job multiply in bf16 while weights and evaluations stay fp32."""

from __future__ import annotations

import importlib

import pytest
import torch
from conftest import world_config
from fixtures_hf import disk_sources, save_tiny_model, task_texts

from safetensors.torch import load_file

TRAIN = {"workers": 1, "cpus_per_worker": 1, "use_gpu": False, "zero_stage": 0, "precision": "fp32",
         "optimizer": "adamw", "weight_decay": 0.01, "grad_clip": 0.5, "keep_models": True}


pytestmark = pytest.mark.usefixtures("process_group")


def config_for(model_path: str, stack: int | None, world: bool = True, precision: str = "fp32", **extra) -> dict:
    from fsv.train.worker import deepspeed_config

    config = {"model_path": model_path, "world": world_config() if world else None, "seed": 0, "n_levels": [1, 3],
              "seeds": [0, 1], "lengths": [3, 6], "batch": 4, "warmup": 0.2, "hparams": {"lr": 3e-3, "lora_rank": 4},
              "lr": 3e-3, "train": {**TRAIN, "stack": stack, "precision": precision}, "trust_remote_code": False, "keep_models": True,
              "task": "world", "method": "full", "layout": "single", "prompt_tokens": 4, "tasks_trained": 4,
              "max_eval": 8, **extra}
    config["deepspeed"] = deepspeed_config(config["train"], config["batch"])
    return config


def train(regime: str, config: dict, out) -> tuple[list[dict], list[int]]:
    """The worker's own grouping and training of a trial's jobs: (evaluation rows, group sizes)."""
    from fsv.train import stacked
    from fsv.train.worker import train_jobs

    jobs = list(importlib.import_module(f"fsv.regimes.{regime}").build_job(config, 0, 1))
    sizes = [len(group) for group in stacked.groups(iter(jobs), config)]  # grouping is by the jobs' settings alone
    done, _ = train_jobs(jobs, config, 0, 1, str(out))
    return [row for d in done for row in d["evals"]], sizes


def assert_same_training(regime: str, one_config: dict, stack_config: dict, tmp_path) -> None:
    one_rows, one_sizes = train(regime, one_config, tmp_path / "one")
    rows, sizes = train(regime, stack_config, tmp_path / "stacked")
    assert set(one_sizes) == {1} and max(sizes) > 1  # the second run really stacked
    assert len(rows) == len(one_rows) > 0
    for a, b in zip(one_rows, rows):
        assert {k: v for k, v in a.items() if not isinstance(v, float)} == {k: v for k, v in b.items() if not isinstance(v, float)}
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4)
        assert b["label_logprob"] == pytest.approx(a["label_logprob"], abs=1e-4)
        assert b["accuracy"] == a["accuracy"]
        assert b.get("reward_margin") == pytest.approx(a.get("reward_margin"), abs=1e-5)
    saved = sorted((tmp_path / "one").rglob("*.safetensors"))
    assert len(saved) == len(one_sizes)  # one model a job
    for path in saved:
        one, stacked = load_file(path), load_file(tmp_path / "stacked" / path.relative_to(tmp_path / "one"))
        assert one.keys() == stacked.keys()
        diff = torch.cat([(stacked[k] - one[k]).abs().flatten() for k in one])
        # Adam divides by the root of a gradient's square, so a weight whose gradient is rounding
        # noise (a key bias: softmax ignores it) moves by a noise-driven fraction of one step in
        # each path; the weights that learn agree to rounding, and a job saved from another's slice
        # would differ everywhere
        assert diff.mean() < 1e-6 and diff.max() < one_config["lr"], path


@pytest.mark.parametrize("regime,method", [("sft", "full"), ("sft", "lora"), ("prompt_tuning", "prompt"),
                                           ("instruction_tuning", "full"), ("dpo", "dpo")])
def test_a_stack_trains_world_adaptations_as_one_at_a_time_does(regime, method, world_model, tmp_path):
    extra = {"method": method, "noise": 0.1, "start": "base"}
    assert_same_training(regime, config_for(world_model, 1, **extra), config_for(world_model, None, **extra), tmp_path)


@pytest.mark.parametrize("arch", ["gpt_neox", "qwen2", "llama"])
def test_a_stack_trains_text_adaptations_with_padded_batches_as_one_at_a_time_does(arch, tmp_path):
    model = str(save_tiny_model(arch, tmp_path / arch, task_texts()))
    source = disk_sources(["sst2"], tmp_path / "data")["sst2"]
    extra = {"task": "sst2", "task_source": source}
    assert_same_training("sft", config_for(model, 1, world=False, **extra),
                         config_for(model, 3, world=False, **extra), tmp_path)


@pytest.mark.parametrize("stack", [1, None])
def test_a_trials_soft_prompts_share_one_base_that_training_leaves_as_loaded(stack, world_model, tmp_path):
    """Each soft prompt of a trial is its own, on one base shared by all (not a copy each: a world-l
    trial's 120 copies were half a GB), and training them, one at a time or stacked, changes no
    weight of that base."""
    from fsv.models.load import load_model
    from fsv.regimes import prompt_tuning
    from fsv.train.worker import train_jobs

    config = config_for(world_model, stack)
    jobs = list(prompt_tuning.build_job(config, 0, 1))
    assert len(jobs) > 1 and len({id(job.model.get_base_model()) for job in jobs}) == 1
    assert len({id(job.model.prompt_encoder.default.embedding.weight) for job in jobs}) == len(jobs)
    train_jobs(jobs, config, 0, 1, str(tmp_path))
    loaded = load_model(world_model, torch.float32).state_dict()
    base = jobs[0].model.get_base_model().state_dict()
    assert base.keys() == loaded.keys() and all(torch.equal(base[k], loaded[k]) for k in loaded)
    prompts = [job.model.prompt_encoder.default.embedding.weight for job in jobs]
    assert not torch.equal(prompts[0], prompts[1])  # each job trained its own


def test_groups_keep_order_and_split_where_jobs_differ():
    from fsv.train.stacked import groups
    from fsv.train.worker import TrainJob

    def job(name, steps=4, **kw):
        return TrainJob(model=torch.nn.Linear(2, 2), batches=iter(()), steps=steps, save=None, name=name, **kw)

    jobs = [job("a"), job("b"), job("c"), job("d", steps=8), job("e", objective=lambda forward, batch: None), job("f"), job("g")]
    config = {"train": {"zero_stage": 0, "precision": "fp32", "stack": 2}}
    assert [[j.name for j in g] for g in groups(iter(jobs), config)] == [["a", "b"], ["c"], ["d"], ["e"], ["f", "g"]]
    assert [len(g) for g in groups(iter(jobs[:3]), {"train": {**config["train"], "zero_stage": 2}})] == [1, 1, 1]


def test_clipping_is_per_job_as_clip_grad_norm_clips_one():
    from fsv.train.stacked import clip_per_job

    torch.manual_seed(0)
    weights = [torch.nn.Parameter(torch.zeros(3, 4, 5)), torch.nn.Parameter(torch.zeros(3, 5))]
    for w, scale in zip(weights, (1.0, 0.01)):
        w.grad = torch.randn_like(w) * scale
    expected = []
    for i in range(3):
        alone = [torch.nn.Parameter(torch.zeros_like(w[i])) for w in weights]
        for a, w in zip(alone, weights):
            a.grad = w.grad[i].clone()
        torch.nn.utils.clip_grad_norm_(alone, 0.5)
        expected.append([a.grad for a in alone])
    weights[0].grad[1] *= 1e-4  # one job's gradient under the limit: left as it is
    expected[1][0] = weights[0].grad[1].clone()
    expected[1][1] = weights[1].grad[1].clone()
    clip_per_job(weights, 0.5)
    for i in range(3):
        for w, e in zip(weights, expected[i]):
            torch.testing.assert_close(w.grad[i], e)


def test_stack_is_in_a_cell_only_when_a_study_sets_it():
    """How a trial runs, not what it measures: left unset, cells (and their ids) are as before."""
    from fsv.config import parse_study
    from fsv.grid import expand

    study = {"name": "s", "models": ["world-xs"], "regimes": {"sft": {"n": [2]}}}
    default = [c for c in expand(parse_study(study)) if c["train"] is not None]
    one_at_a_time = [c for c in expand(parse_study({**study, "train": {"stack": 1}})) if c["train"] is not None]
    assert default and all("stack" not in c["train"] for c in default)
    assert all(c["train"]["stack"] == 1 for c in one_at_a_time)


def linear_output_dtypes(run) -> tuple[object, set]:
    """What `run()` returns, and the (grad enabled, dtype) of every linear layer's output while it
    trains and evaluates."""
    seen = set()

    def hook(module, args, output):
        if isinstance(module, torch.nn.Linear):
            seen.add((torch.is_grad_enabled(), output.dtype))

    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    try:
        result = run()
    finally:
        handle.remove()
    return result, seen


@pytest.mark.parametrize("stack", [1, None])
def test_bf16_mixed_multiplies_in_bf16_and_keeps_weights_and_evaluations_fp32(stack, world_model, tmp_path):
    """DeepSpeed's `torch_autocast` under `train.precision: bf16-mixed`, stacked and alone: the
    training forwards' matmuls run in bf16, the evaluations (no grad) in fp32, the saved weights are
    fp32, and the rows follow fp32 training's to within bf16 rounding without equalling them."""
    trained, dtypes = {}, {}
    for precision in ["fp32", "bf16-mixed"]:
        config = config_for(world_model, stack, precision=precision)
        assert ("torch_autocast" in config["deepspeed"]) == (precision == "bf16-mixed")
        out = tmp_path / precision
        trained[precision], dtypes[precision] = linear_output_dtypes(lambda: train("sft", config, out))
        assert all(load_file(p)[k].dtype == torch.float32 for p in out.rglob("*.safetensors") for k in load_file(p))
    assert dtypes["fp32"] == {(True, torch.float32), (False, torch.float32)}
    assert dtypes["bf16-mixed"] == {(True, torch.bfloat16), (False, torch.float32)}
    (fp32, fp32_sizes), (mixed, sizes) = trained["fp32"], trained["bf16-mixed"]
    assert sizes == fp32_sizes and (max(sizes) > 1) == (stack is None)  # bf16-mixed stacks as fp32 does
    assert len(mixed) == len(fp32) > 0
    losses = [(a["train_loss"], b["train_loss"]) for a, b in zip(fp32, mixed)]
    assert all(b == pytest.approx(a, rel=0.05) for a, b in losses) and any(a != b for a, b in losses)


def test_auto_precision_is_resolved_where_the_trial_trains():
    from fsv.train.precision import deepspeed_sections, keeps_fp32_weights, native_bf16, resolve

    for explicit in ["fp32", "bf16", "bf16-mixed"]:
        assert resolve({"precision": explicit, "use_gpu": False})["precision"] == explicit
    resolved = resolve({"precision": "auto", "use_gpu": False})["precision"]
    assert resolved == ("bf16-mixed" if native_bf16(False) else "fp32")
    assert native_bf16(False) == bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    assert [keeps_fp32_weights(p) for p in ["fp32", "bf16", "bf16-mixed", "auto"]] == [True, False, True, True]
    with pytest.raises(ValueError, match="train.precision='auto'.*resolve"):
        deepspeed_sections("auto")
