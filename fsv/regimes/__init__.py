"""One module per regime, each reading like its row in the mission. A regime exposes
`run(cell, ctx) -> dict` returning the record fields it measured."""

from __future__ import annotations

import importlib

REGIME_MODULES = {
    "zero_shot": "fsv.regimes.zero_shot",
    "few_shot": "fsv.regimes.few_shot",
    "sft": "fsv.regimes.sft",
    "prompt_tuning": "fsv.regimes.prompt_tuning",
    "instruction_tuning": "fsv.regimes.instruction_tuning",
    "rlhf": "fsv.regimes.rlhf",
}


def regime_module(name: str):
    return importlib.import_module(REGIME_MODULES[name])
