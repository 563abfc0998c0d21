"""few_shot: nothing adapts; k demonstrations of the task sit in the context before the query."""

from __future__ import annotations

from fsv.regimes.in_context import evaluate_in_context


def run(cell: dict, ctx) -> dict:
    return evaluate_in_context(cell, ctx, k=cell["k"], episodes=cell["settings"]["episodes"])
