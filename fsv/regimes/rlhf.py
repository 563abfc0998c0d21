"""rlhf: the policy learns from n pieces of simulated human feedback on prompts written with human
descriptions -- teaching the model the descriptions humans write.

Two methods, run under the cell's DeepSpeed config on its Ray Train workers:
- `dpo`: the annotator sees a prompt (a training task's human-view description and a query) and two
  candidate labels, and prefers the correct one, except with probability `noise`; the policy learns
  from the n pairs by DPO, its reference the policy where it starts (log-probabilities computed once
  before training on one rank; a frozen copy of the model on several). Its reward margin is
  measured on held-out pairs (fresh queries, another draw). Where a stack can run (ZeRO-0, fp32 weights,
  from the base model) the trial's policies train together through the shared loop with trl's
  loss (`fsv.regimes.dpo`); otherwise each is trl's `DPOTrainer`.
- `grpo`: the reward is verifiable -- the generated label is the correct one -- so trl's
  `GRPOTrainer` learns from n prompts with no annotator at all (world tasks, whose labels are tokens).
On the world the training tasks are the world's; on text they are other text tasks by name
(`cell["train_tasks"]`, the evaluated task held out). The policy starts from the base model, or
(`start: instruction_tuned`) from the base instruction-tuned first, in the same worker: the seed's
chain. Each (n, seed) policy is evaluated on the held-out tasks, zero-shot, with human-view
descriptions (and model-view, none), after each training length.
"""

from __future__ import annotations

import json
import math
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


def preference_data(config: dict, n: int, seed: int):
    from datasets import Dataset

    if config["world"] is None:
        return Dataset.from_list(text_feedback(config["train_tasks"], n, config["noise"], seed))
    from fsv.world import World, WorldConfig

    world = World(WorldConfig(**config["world"]))
    return Dataset.from_list(feedback(world, n, config["noise"], seed))


def reward_prompts(config: dict, n: int, seed: int):
    """GRPO's n prompts (training tasks, human-view descriptions) and each one's correct label."""
    from datasets import Dataset

    from fsv.world import World, WorldConfig

    world = World(WorldConfig(**config["world"]))
    pairs = feedback(world, n, 0.0, seed)  # with no noise, `chosen` is the truth
    return Dataset.from_list([{"prompt": p["prompt"], "label": p["chosen"].strip()} for p in pairs])


def label_is_correct(completions, label, **_) -> list[float]:
    """GRPO's verifiable reward: 1 when the generated label is the true one."""
    return [float(c.strip().split(" ")[0] == y) for c, y in zip(completions, label)]


def trainer_args(config: dict, out: str, micro: int, seed: int):
    """trl's config for the method; creating it registers the DeepSpeed config with transformers,
    so models loaded after it are partitioned at load under ZeRO-3."""
    from trl import DPOConfig, GRPOConfig

    from fsv.train.worker import deepspeed_config

    hp = config["hparams"]
    common = dict(
        output_dir=out, max_steps=max(config["lengths"]), per_device_train_batch_size=micro,
        learning_rate=hp["lr"], weight_decay=hp.get("weight_decay", 0.0),
        warmup_steps=warmup_steps(config),
        lr_scheduler_type="constant_with_warmup", logging_steps=1, save_strategy="no", report_to=[], seed=seed,
        use_cpu=not config["train"]["use_gpu"], bf16=config["train"]["precision"] == "bf16", disable_tqdm=True,
        dataloader_num_workers=0,
        gradient_checkpointing=False,  # trl's default recomputes every activation in backward; fsv's loop keeps them
        deepspeed=deepspeed_config(config["train"], micro) | {"train_batch_size": "auto"},
    )
    if config["method"] == "grpo":
        return GRPOConfig(**common, beta=0.0, num_generations=4, max_completion_length=1, temperature=1.0)
    return DPOConfig(**common, beta=hp.get("beta", 0.1), precompute_ref_log_probs=precomputes_reference())


def warmup_steps(config: dict) -> int:
    """The warm-up in steps: a longer run's is its shorter run's (`warmup_steps`), else a share of the run."""
    if config.get("warmup_steps") is not None:
        return int(config["warmup_steps"])
    return int(config.get("warmup", 0.0) * max(config["lengths"]))


def precomputes_reference() -> bool:
    """Whether trl computes the reference's log-probabilities of every pair once, before training
    (the policy as it starts), instead of a second model's forward each step: on one rank. Across
    ranks trl shares them through a cache file of the dataset, which an in-memory dataset keeps in
    each process's own temporary folder (the other ranks fail to open rank 0's), so several ranks
    keep the reference model."""
    import torch.distributed as dist

    return not dist.is_initialized() or dist.get_world_size() == 1


def evaluating_callback(lengths, measures):
    """A transformers callback collecting the policy's measures after each training length (its
    `trainer` is set once the trainer exists). The model is measured at the step's end; its rows are
    completed when that step's loss is logged (transformers logs after `on_step_end`), so a row's
    training loss includes its own step's, as the shared loop's rows do."""
    from transformers import TrainerCallback

    class EvaluateAtLengths(TrainerCallback):
        def __init__(self):
            self.rows, self.trainer, self.pending = [], None, None

        def on_step_end(self, args, state, control, **kwargs):
            import torch

            if state.global_step not in lengths:
                return
            model = self.trainer.accelerator.unwrap_model(self.trainer.model)
            model.eval()
            with torch.no_grad():
                self.pending = (state.global_step, measures(model))
            model.train()

        def on_log(self, args, state, control, logs=None, **kwargs):
            if self.pending is None or "loss" not in (logs or {}):
                return
            (step, rows), self.pending = self.pending, None
            losses = [log["loss"] for log in state.log_history if "loss" in log]
            recent = losses[-max(1, len(losses) // 10):]
            rewards = [log["reward"] for log in state.log_history if "reward" in log]
            reward = {"reward": float(np.mean(rewards[-max(1, len(rewards) // 10):]))} if rewards else {}
            self.rows += [{**row, "steps": step, "train_loss": float(np.mean(recent)), **reward} for row in rows]

    return EvaluateAtLengths()


def train_loop_per_worker(config: dict) -> None:
    """Ray Train worker: one policy per (n, seed) of the selection trial, trained by the method's trl
    trainer under DeepSpeed and evaluated at each training length; every rank reports the rows."""
    import os
    import tempfile

    import ray.train

    if not config["train"]["use_gpu"]:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import deepspeed
    import torch
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    from fsv.train.precision import resolve
    from fsv.train.worker import release_memory

    config = {**config, "train": resolve(config["train"])}  # `auto`: what this worker's device multiplies natively
    torch.set_num_threads(config["train"]["cpus_per_worker"])
    ctx = ray.train.get_context()
    micro = max(1, config["batch"] // ctx.get_world_size())
    deepspeed.init_distributed()  # on Ray Train's process group: ZeRO-3 loading sizes the batch by its ranks
    t0, rows, tokens, loaded = time.time(), [], [], {}
    with tempfile.TemporaryDirectory() as out:
        for n in config["n_levels"]:
            for seed in config["seeds"]:
                try:
                    found, used, loaded = one_policy(config, n, seed, out, micro)
                finally:  # trl's config registered its DeepSpeed config with transformers: the next cell
                    unset_hf_deepspeed_config()  # a training server runs must not load models by it
                    release_memory()
                rows += found
                tokens.append(used)
        metrics = {"evals": json.dumps(rows), "final_train_loss": float(np.mean([r["train_loss"] for r in rows
                                                                                 if r["steps"] == max(config["lengths"])])),
                   "train_tokens": int(np.mean(tokens)) * len(tokens), "jobs": len(tokens),
                   "train_s": time.time() - t0, "device": "cuda" if config["train"]["use_gpu"] else "cpu",
                   "precision": config["train"]["precision"], **loaded}
        with open(os.path.join(out, "curves.json"), "w") as f:
            json.dump(rows, f)
        checkpoint = ray.train.Checkpoint.from_directory(out) if ctx.get_world_rank() == 0 else None
        ray.train.report(metrics, checkpoint=checkpoint)


def one_policy(config: dict, n: int, seed: int, out: str, micro: int) -> tuple[list[dict], int, dict]:
    """Train one (n, seed) policy; its evaluation rows, the tokens it trained on, its partition stats."""
    from transformers import PrinterCallback
    from trl import DPOTrainer, GRPOTrainer

    from fsv.models.load import load_causal_lm, partition_stats

    cache_package_checks()
    args = trainer_args(config, f"{out}/n{n}-s{seed}", micro, seed)
    remote = config.get("trust_remote_code", False)
    policy, tokenizer = load_causal_lm(config["model_path"], trust_remote_code=remote)
    if config.get("start") == "instruction_tuned":
        policy = instruction_tuned(config, policy, n, seed)
    # a longer run trains from step 0 on this path (trl keeps no per-job state to go on from), and is
    # evaluated, as the shared loop's, at the lengths its shorter run did not reach
    lengths = {L for L in config["lengths"] if L > config.get("resume_at", 0)}
    evaluator = evaluating_callback(lengths, policy_measures(config, tokenizer))
    if config["method"] == "grpo":
        data = reward_prompts(config, n, seed)
        trainer = GRPOTrainer(model=policy, reward_funcs=label_is_correct, args=args, processing_class=tokenizer,
                              train_dataset=data, callbacks=[evaluator])
    else:
        data = preference_data(config, n, seed)
        reference = None  # precomputed: the policy where it starts (the base, or its instruction-tuned self)
        if not args.precompute_ref_log_probs:
            reference = load_causal_lm(config["model_path"], trust_remote_code=remote)[0]
            if config.get("start") == "instruction_tuned":
                reference.load_state_dict(policy.state_dict())  # DPO stays close to where the policy started
        trainer = DPOTrainer(model=policy, ref_model=reference, args=args, processing_class=tokenizer,
                             train_dataset=data, callbacks=[evaluator],
                             eval_dataset=preference_data(config, 64, seed + 10_000))
    trainer.remove_callback(PrinterCallback)  # a line of metrics every step in the worker's log
    evaluator.trainer = trainer
    trainer.train()
    margin = trainer.evaluate().get("eval_rewards/margins") if config["method"] == "dpo" else None
    if config.get("keep_models"):
        keep_policy(trainer, tokenizer, f"{out}/n{n}-s{seed}", partition_stats(policy))
    tags = {"n": n, "seed": seed, "n_distinct": len(set(list(data["prompt"]))), "reward_margin": margin}
    per_step = micro * trainer.args.world_size * example_tokens(data, tokenizer)  # tokens through the policy a step
    rows = [{**r, **tags, "tokens": int(r["steps"] * per_step)} for r in evaluator.rows]
    return rows, int(max(config["lengths"]) * per_step), partition_stats(policy)


def cache_package_checks() -> None:
    """accelerate asks `importlib.metadata` whether peft and deepspeed are installed on every backward
    and every unwrap of the model (`is_peft_model`, `extract_model_from_parallel`): a fifth of a
    world-xs DPO step (cProfile, benchmarks/dpo_policy.py). What is installed does not change while a
    worker runs, so the answers are kept."""
    import functools

    import accelerate.utils.imports as imports

    if not hasattr(imports._is_package_available, "cache_info"):
        imports._is_package_available = functools.cache(imports._is_package_available)


def keep_policy(trainer, tokenizer, folder: str, loaded: dict) -> None:
    """Rank 0 saves the trained policy (gathered from its ZeRO-3 partitions where it is partitioned),
    with its loss curve and what each rank held (`train_curve.json`)."""
    import deepspeed
    import ray.train

    policy = trainer.accelerator.unwrap_model(trainer.model)
    stage3 = trainer.args.hf_deepspeed_config is not None and trainer.args.hf_deepspeed_config.is_zero3()
    with deepspeed.zero.GatheredParameters(list(policy.parameters()), enabled=stage3):  # every rank joins
        if ray.train.get_context().get_world_rank() == 0:
            policy.save_pretrained(folder, safe_serialization=True)
            tokenizer.save_pretrained(folder)
            losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
            with open(f"{folder}/train_curve.json", "w") as f:
                json.dump({"loss": losses, **loaded}, f)


def example_tokens(data, tokenizer) -> float:
    """Mean tokens one example puts through the policy: the prompt with each completion (DPO's
    chosen and rejected; GRPO's one generated label)."""
    length = lambda texts: float(np.mean([len(tokenizer(t).input_ids) for t in list(texts)]))  # noqa: E731
    if "chosen" in data.column_names:
        return 2 * length(data["prompt"]) + length(data["chosen"]) + length(data["rejected"])
    return length(data["prompt"]) + 1


def policy_measures(config: dict, tokenizer):
    """The policy's rows: held-out world tasks with each description (fold = the feature each reads),
    or the held-out text task's dev and test splits with the human-view description."""
    from fsv.regimes.instruction_tuning import VARIANTS

    if config["world"] is None:
        from fsv.regimes.training import dev_split, text_measures
        from fsv.tasks import get_task, load_splits

        target = get_task(config["task"])
        pool, dev = dev_split(load_splits(target, config.get("task_source")))
        return lambda m: text_measures(m, tokenizer, target, pool, dev, config.get("max_eval"), VARIANTS)
    from fsv.regimes.training import fold_of, world_measures
    from fsv.world import World, WorldConfig

    world = World(WorldConfig(**config["world"]))
    return lambda m: [{**r, "fold": fold_of(world.task(r["task"]))}
                      for r in world_measures(m, world, world.heldout_tasks, VARIANTS)]


def instruction_tuned(config: dict, policy, n: int, seed: int):
    """The seed's chain: instruction-tune the base (under a DeepSpeed engine of its own, with
    `start_hparams`) before rlhf starts from it."""
    import ray.train

    from fsv.regimes.instruction_tuning import build_job
    from fsv.train.worker import _train_one, deepspeed_config

    hp = config["start_hparams"]
    ctx = ray.train.get_context()
    it = {**config, "tasks_trained": int(hp["tasks_trained"]), "n_levels": [int(hp["n"])], "seeds": [seed],
          "lengths": [int(hp["steps"])], "batch": int(hp["batch"]), "lr": hp["lr"], "warmup": 0.1, "keep_models": False,
          "deepspeed": deepspeed_config(config["train"], max(1, int(hp["batch"]) // ctx.get_world_size()))}
    job = next(iter(build_job(it, ctx.get_world_rank(), ctx.get_world_size())))
    job.model.load_state_dict(policy.state_dict())
    job.evaluate = None
    _train_one(job, it, ctx.get_world_rank(), ctx.get_world_size(), "")
    return job.model


def run(cell: dict, ctx) -> dict:
    from fsv.regimes.training import selection_fields, train_cell

    from fsv.regimes.dpo import uses_fsv_loop

    s = cell["settings"]
    route = {"job": "fsv.regimes.dpo:build_job"} if uses_fsv_loop(cell) else {"loop": "fsv.regimes.rlhf:train_loop_per_worker"}
    metrics = train_cell(cell, ctx, **route, noise=s["noise"], start=s["start"], start_hparams=s["start_hparams"],
                         train_tasks=cell.get("train_tasks"))
    fields = selection_fields(cell, metrics, math.log(2) if cell["method"] == "dpo" else float("nan"))
    longest = max(s["steps"])  # the margin after the longest run (trl's loop measures it only then)
    margins = [r["reward_margin"] for r in json.loads(metrics["evals"])
               if r.get("reward_margin") is not None and r["steps"] == longest]
    return {**fields, "method": cell["method"], "reward_margin": float(np.mean(margins)) if margins else None}
