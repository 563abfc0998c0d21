"""rlhf: the policy learns from n pieces of simulated human feedback on prompts written with human
descriptions -- teaching the model the descriptions humans write.

The annotator sees a prompt (a training task's human-view description and a query) and two
candidate labels, and prefers the correct one, except with probability `noise`. Preference
optimisation is trl's `DPOTrainer` (with an explicit frozen reference model), configured with the
cell's DeepSpeed config and run on the cell's Ray Train workers. The policy starts from the base
model. Evaluation: held-out tasks, zero-shot, with human-view descriptions (and model-view, none).
"""

from __future__ import annotations

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


def train_loop_per_worker(config: dict) -> None:
    """Ray Train worker: trl DPO under DeepSpeed; rank 0 saves the policy as the checkpoint."""
    import os
    import tempfile

    import ray.train

    if not config["train"]["use_gpu"]:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import torch
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from fsv.models.load import load_causal_lm
    from fsv.train.worker import deepspeed_config
    from fsv.world import World, WorldConfig

    torch.set_num_threads(config["train"]["cpus_per_worker"])
    ctx = ray.train.get_context()
    world = World(WorldConfig(**config["world"]))
    policy, tokenizer = load_causal_lm(config["model_path"])
    reference, _ = load_causal_lm(config["model_path"])
    micro = max(1, config["batch"] // ctx.get_world_size())
    t0 = time.time()
    with tempfile.TemporaryDirectory() as out:
        args = DPOConfig(
            output_dir=out, max_steps=config["steps"], per_device_train_batch_size=micro,
            learning_rate=config["lr"], beta=config["beta"], logging_steps=1, save_strategy="no",
            report_to=[], seed=config["seed"], use_cpu=not config["train"]["use_gpu"],
            deepspeed=deepspeed_config(config["train"], micro) | {"train_batch_size": "auto"},
            bf16=config["train"]["precision"] == "bf16", disable_tqdm=True, dataloader_num_workers=0,
        )
        data = Dataset.from_list(feedback(world, config["n"], config["noise"], config["seed"]))
        trainer = DPOTrainer(model=policy, ref_model=reference, args=args, train_dataset=data,
                             processing_class=tokenizer)
        result = trainer.train()
        losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
        metrics = {"final_train_loss": float(losses[-1]) if losses else float(result.training_loss),
                   "train_tokens": int(trainer.state.num_input_tokens_seen or 0),
                   "train_s": time.time() - t0, "device": str(trainer.args.device)}
        if ctx.get_world_rank() == 0:
            trainer.model.save_pretrained(out + "/policy", safe_serialization=True)
        checkpoint = ray.train.Checkpoint.from_directory(out + "/policy") if ctx.get_world_rank() == 0 else None
        ray.train.report(metrics, checkpoint=checkpoint)


def run(cell: dict, ctx) -> dict:
    from fsv.models.load import load_model, param_count
    from fsv.regimes.instruction_tuning import evaluate_descriptions
    from fsv.regimes.training import train_cell, training_fields

    s = cell["settings"]
    path, metrics = train_cell(cell, ctx, loop="fsv.regimes.rlhf:train_loop_per_worker",
                               noise=s["noise"], beta=s["beta"], method=s["method"])
    if not metrics["train_tokens"]:  # trl counts tokens only when asked; estimate from the pairs
        metrics["train_tokens"] = cell["n"] * ctx.world.prompt_length(0, "human") * 2
    t0 = time.time()
    model = load_model(path)
    fields = evaluate_descriptions(model, ctx, cell["seed"])
    return {**fields, **training_fields(cell, param_count(model), metrics, time.time() - t0)}
