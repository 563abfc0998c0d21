"""sft: the weights learn from n examples of the target (held-out) task -- "infinitely many shots".

How the weights move is an axis (`method`): all of them (`full`), or a low-rank update of the
attention and MLP projections (`lora`, peft LoRA, its rank searched like a learning rate). How the
n examples are laid out is another (`layout`): `single` (one example per sequence, the usual
fine-tuning format) or `packed` (examples packed into one sequence like a pretraining document, so
fine-tuning can use the model's in-context machinery). Each adaptation is evaluated like the base
model: zero-shot on the task's test symbols (or dev and test examples), which training never shows.
"""

from __future__ import annotations

from fsv.regimes.training import fresh_models, label_chance, selection_fields, sequences, text_jobs, train_cell, world_jobs

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def with_method(model, config: dict):
    """The model as the method trains it: whole, or wrapped in a LoRA adapter of the searched rank."""
    if config.get("method", "full") != "lora":
        return model
    from peft import LoraConfig, TaskType, get_peft_model

    rank = int(config["hparams"]["lora_rank"])
    targets = [t for t in LORA_TARGETS if any(name.endswith(t) for name, _ in model.named_modules())]
    lora = LoraConfig(task_type=TaskType.CAUSAL_LM, r=rank, lora_alpha=2 * rank, lora_dropout=0.0,
                      target_modules=targets)
    return get_peft_model(model, lora)


def build_job(config: dict, rank: int, world_size: int):
    from fsv.models.load import load_for_training

    if config["world"] is None:
        tokenizer = load_for_training(config)[1]
        base = fresh_models(config, lambda: load_for_training(config)[0])
        return text_jobs(config, lambda: with_method(base(), config), tokenizer, rank, world_size)
    per_rank = max(1, config["batch"] // world_size)
    base = fresh_models(config, lambda: load_for_training(config)[0])

    def batch(world, task, symbols, rng):
        return sequences(world, task, symbols, config["layout"], "none", rng, per_rank)

    return world_jobs(config, lambda: with_method(base(), config), batch, rank)


def run(cell: dict, ctx) -> dict:
    metrics = train_cell(cell, ctx, "fsv.regimes.sft:build_job", layout=cell["layout"])
    return {**selection_fields(cell, metrics, label_chance(cell, ctx)), "method": cell["method"]}
