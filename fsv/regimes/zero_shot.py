"""zero_shot: nothing adapts; the model reads a task description (none / model-view / human-view)
and no examples."""

from __future__ import annotations

import json

from fsv.evaluate import evaluate_world
from fsv.models.load import param_count


def run(cell: dict, ctx) -> dict:
    model = ctx.load_base()
    res = evaluate_world(model, ctx.world, ctx.world.heldout_tasks, k=0, variant=cell["description"], seed=cell["seed"])
    return {
        "accuracy": res.accuracy, "n_eval": res.n_eval, "chance": res.chance,
        "bayes_accuracy": ctx.bayes.get(0) if cell["description"] == "none" else None,
        "model_params": param_count(model),
        f"acc_{cell['description']}": res.accuracy, "demo_indices": json.dumps(res.demos),
    }
