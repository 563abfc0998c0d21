"""few_shot: nothing adapts; k demonstrations of the task sit in the context before the query."""

from __future__ import annotations

import json

from fsv.evaluate import evaluate_world
from fsv.models.load import param_count


def run(cell: dict, ctx) -> dict:
    model = ctx.load_base()
    res = evaluate_world(
        model, ctx.world, ctx.world.heldout_tasks, k=cell["k"], variant=cell["description"],
        seed=cell["seed"], episodes=cell["settings"]["episodes"],
    )
    return {
        "accuracy": res.accuracy, "n_eval": res.n_eval, "chance": res.chance,
        "bayes_accuracy": ctx.bayes.get(cell["k"]), "model_params": param_count(model),
        "demo_indices": json.dumps(res.demos),
    }
