"""zero_shot: nothing adapts; the model reads a task description (none / model-view / human-view)
and no examples."""

from __future__ import annotations

from fsv.regimes.in_context import evaluate_in_context


def run(cell: dict, ctx) -> dict:
    fields = evaluate_in_context(cell, ctx, k=0, episodes=1)
    fields[f"acc_{cell['description']}"] = fields["accuracy"]
    if cell["description"] != "none":
        fields["bayes_accuracy"] = None  # the Bayes reference is for examples, not descriptions
    return fields
