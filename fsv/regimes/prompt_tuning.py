"""prompt_tuning: the base stays frozen; a soft prompt of m virtual tokens -- the description the
model itself understands best -- learns from n examples of the target task (peft
`PromptTuningConfig`, trained under the same Ray Train + DeepSpeed path). Each adaptation's soft
prompt sits on the unmodified base (one base, shared by the trial's adaptations: none changes it)
and is evaluated zero-shot, like the base model."""

from __future__ import annotations

from fsv.regimes.training import frozen_base, label_chance, selection_fields, sequences, text_jobs, train_cell, world_jobs


def build_job(config: dict, rank: int, world_size: int):
    from peft import PromptTuningConfig, TaskType, get_peft_model

    from fsv.models.load import load_for_training, load_tokenizer

    peft_config = PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=config["prompt_tokens"])
    base = frozen_base(config, lambda: load_for_training(config)[0])
    soft_prompted = lambda: get_peft_model(base(), peft_config)  # noqa: E731
    if config["world"] is None:
        tokenizer = load_tokenizer(config["model_path"], config.get("trust_remote_code", False))
        return text_jobs(config, soft_prompted, tokenizer, rank, world_size)
    per_rank = max(1, config["batch"] // world_size)

    def batch(world, task, symbols, rng):
        return sequences(world, task, symbols, "single", "none", rng, per_rank)

    return world_jobs(config, soft_prompted, batch, rank)


def run(cell: dict, ctx) -> dict:
    metrics = train_cell(cell, ctx, "fsv.regimes.prompt_tuning:build_job", prompt_tokens=cell["prompt_tokens"])
    return {**selection_fields(cell, metrics, label_chance(cell, ctx)), "method": "prompt"}
