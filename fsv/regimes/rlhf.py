"""rlhf: the policy learns from n pieces of simulated human feedback on prompts written with human
descriptions -- teaching the model the descriptions humans write.

The annotator sees a prompt (a training task's human-view description and a query) and two
candidate labels, and prefers the correct one, except with probability `noise`. On the world the
training tasks are the world's; on text they are other text tasks by name (`cell["train_tasks"]`,
the evaluated task held out), queries from their train splits, candidates their label words.
Preference optimisation is trl's `DPOTrainer` (with an explicit frozen reference model), configured
with the cell's DeepSpeed config and run on the cell's Ray Train workers; the `DPOConfig` exists
before the models load, so under ZeRO-3 they load partitioned. The policy starts from the base
model. Evaluation: held-out tasks, zero-shot, with human-view descriptions (and model-view, none).
"""

from __future__ import annotations

import json
import time

import numpy as np


def feedback(world, n: int, noise: float, seed: int) -> list[dict]:
    """n preference pairs from the simulated annotator, as trl's prompt/chosen/rejected text."""
    rng = np.random.default_rng([seed, n, 8])
    vocab, V = world.vocab, world.config.n_values
    pairs = []
    for _ in range(n):
        task = world.train_tasks[int(rng.integers(len(world.train_tasks)))]
        x = int(rng.choice(world.train_symbols))
        prompt = world.prompt(task, [], x, "human")
        truth = int(world.labels(task, [x])[0])
        wrong = int(rng.choice([y for y in range(V) if y != truth]))
        chosen, rejected = (truth, wrong) if rng.random() >= noise else (wrong, truth)
        pairs.append({"prompt": " ".join(vocab[i] for i in prompt[1:]),  # the tokenizer adds <bos>
                      "chosen": f" L{chosen}", "rejected": f" L{rejected}"})
    return pairs


def text_feedback(train_tasks: list, n: int, noise: float, seed: int) -> list[dict]:
    """n preference pairs on text tasks: a random training task, a random example of its train
    split shown zero-shot with the human-view description, its label word against another."""
    from fsv.tasks import get_task, load_splits

    rng = np.random.default_rng([seed, n, 9])
    splits = [load_splits(get_task(name), source, field=f"task_sources.{name}") for name, source in train_tasks]
    pairs = []
    for _ in range(n):
        s = splits[int(rng.integers(len(splits)))]
        ex = s.train[int(rng.integers(len(s.train)))]
        words = s.task.label_words
        wrong = int(rng.choice([y for y in range(len(words)) if y != ex.label]))
        chosen, rejected = (ex.label, wrong) if rng.random() >= noise else (wrong, ex.label)
        pairs.append({"prompt": s.task.prompt([], ex.fields, "human"), "chosen": words[chosen],
                      "rejected": words[rejected]})
    return pairs


def preference_data(config: dict):
    from datasets import Dataset

    if config["world"] is None:
        return Dataset.from_list(text_feedback(config["train_tasks"], config["n"], config["noise"], config["seed"]))
    from fsv.world import World, WorldConfig

    world = World(WorldConfig(**config["world"]))
    return Dataset.from_list(feedback(world, config["n"], config["noise"], config["seed"]))


def dpo_args(config: dict, out: str, micro: int):
    """trl's DPOConfig for the cell; creating it registers the DeepSpeed config with transformers,
    so models loaded after it are partitioned at load under ZeRO-3."""
    from trl import DPOConfig

    from fsv.train.worker import deepspeed_config

    return DPOConfig(
        output_dir=out, max_steps=config["steps"], per_device_train_batch_size=micro,
        learning_rate=config["lr"], beta=config["beta"], logging_steps=1, save_strategy="no",
        report_to=[], seed=config["seed"], use_cpu=not config["train"]["use_gpu"],
        deepspeed=deepspeed_config(config["train"], micro) | {"train_batch_size": "auto"},
        bf16=config["train"]["precision"] == "bf16", disable_tqdm=True, dataloader_num_workers=0,
    )


def pair_tokens(dataset) -> float:
    """Mean tokens a preference pair puts through the model: the prompt with each completion
    (trl's tokenized columns `prompt_ids`, `chosen_ids`, `rejected_ids`)."""
    cols = dataset.select_columns(["prompt_ids", "chosen_ids", "rejected_ids"])
    return float(np.mean([2 * len(r["prompt_ids"]) + len(r["chosen_ids"]) + len(r["rejected_ids"]) for r in cols]))


def train_loop_per_worker(config: dict) -> None:
    """Ray Train worker: trl DPO under DeepSpeed; rank 0 saves the policy as the checkpoint."""
    import os
    import tempfile

    import ray.train

    if not config["train"]["use_gpu"]:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import deepspeed
    import torch
    from trl import DPOTrainer

    from fsv.models.load import load_causal_lm, partition_stats

    torch.set_num_threads(config["train"]["cpus_per_worker"])
    ctx = ray.train.get_context()
    micro = max(1, config["batch"] // ctx.get_world_size())
    deepspeed.init_distributed()  # on Ray Train's process group: ZeRO-3 loading sizes the batch by its ranks
    t0 = time.time()
    with tempfile.TemporaryDirectory() as out:
        args = dpo_args(config, out, micro)
        policy, tokenizer = load_causal_lm(config["model_path"], trust_remote_code=config.get("trust_remote_code", False))
        reference, _ = load_causal_lm(config["model_path"], trust_remote_code=config.get("trust_remote_code", False))
        loaded = partition_stats(policy)
        trainer = DPOTrainer(model=policy, ref_model=reference, args=args, train_dataset=preference_data(config),
                             processing_class=tokenizer)
        result = trainer.train()
        losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
        pairs_seen = config["steps"] * micro * ctx.get_world_size()
        metrics = {"final_train_loss": float(losses[-1]) if losses else float(result.training_loss),
                   "train_tokens": int(pairs_seen * pair_tokens(trainer.train_dataset)),
                   "train_s": time.time() - t0, "device": str(trainer.args.device), **loaded}
        _save_policy(trainer, tokenizer, out, metrics, ctx.get_world_rank())


def _save_policy(trainer, tokenizer, out: str, metrics: dict, rank: int) -> None:
    """Rank 0 saves the policy (gathered from its ZeRO-3 partitions where it is partitioned) and its
    tokenizer; every rank reports."""
    import deepspeed
    import ray.train

    policy = trainer.accelerator.unwrap_model(trainer.model)
    stage3 = trainer.args.hf_deepspeed_config.is_zero3()
    with deepspeed.zero.GatheredParameters(list(policy.parameters()), enabled=stage3):  # every rank joins
        if rank == 0:
            policy.save_pretrained(out + "/policy", safe_serialization=True)
            tokenizer.save_pretrained(out + "/policy")
            with open(out + "/policy/train_curve.json", "w") as f:
                json.dump({"loss": [log["loss"] for log in trainer.state.log_history if "loss" in log], **metrics}, f)
    checkpoint = ray.train.Checkpoint.from_directory(out + "/policy") if rank == 0 else None
    ray.train.report(metrics, checkpoint=checkpoint)


def run(cell: dict, ctx) -> dict:
    from fsv.models.load import param_count
    from fsv.regimes.instruction_tuning import evaluate_descriptions
    from fsv.regimes.training import train_cell, training_fields

    s = cell["settings"]
    path, metrics = train_cell(cell, ctx, loop="fsv.regimes.rlhf:train_loop_per_worker", noise=s["noise"],
                               beta=s["beta"], method=s["method"], train_tasks=cell.get("train_tasks"))
    t0 = time.time()
    model, tokenizer = ctx.load(path, tokenizer=cell["world"] is None)
    fields = evaluate_descriptions(model, tokenizer, cell, ctx)
    return {**fields, **training_fields(cell, param_count(model), metrics, time.time() - t0)}
