"""The evaluation the in-context regimes share, on the world or on a text task."""

from __future__ import annotations

import json

from fsv.models.load import param_count


def evaluate_in_context(cell: dict, ctx, k: int, episodes: int) -> dict:
    if cell["world"] is not None:
        from fsv.evaluate import evaluate_world

        model = ctx.load_base()
        res = evaluate_world(model, ctx.world, ctx.world.heldout_tasks, k=k, variant=cell["description"],
                             seed=cell["seed"], episodes=episodes)
        extra = {"bayes_accuracy": ctx.bayes.get(k)}
    else:
        from fsv.hf_eval import evaluate_text

        model, tokenizer = ctx.load_base_with_tokenizer()
        res = evaluate_text(model, tokenizer, ctx.text_task, ctx.text_splits, k=k, variant=cell["description"],
                            seed=cell["seed"], episodes=episodes, max_eval=cell.get("max_eval"))
        extra = {"accuracy_norm": res.accuracy_norm}
    return {"accuracy": res.accuracy, "n_eval": res.n_eval, "chance": res.chance, "label_logprob": res.label_logprob,
            "model_params": param_count(model), "demo_indices": json.dumps(res.demos),
            "device": str(next(model.parameters()).device), **extra}
