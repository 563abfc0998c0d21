"""The grid: a validated study expands into cells, one per trial, each with a stable `cell_id`.

A cell is a plain dict of everything that decides its result (model, regime, axis values, the world,
the pretraining budget, the training settings); `cell_id` is a hash of its normalised JSON, never
a timestamp, so the same study always yields the same ids and a re-run finds its own records.
"""

from __future__ import annotations

import hashlib
import itertools
import json

from fsv.config import StudyConfig
from fsv.errors import ConfigError, did_you_mean
from fsv.models.registry import resolve_model
from fsv.world import World, preset

WORLD_TASKS = ["world"]  # the world's held-out tasks


def cell_id(cell: dict) -> str:
    blob = json.dumps(cell, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def world_of(study: StudyConfig) -> World:
    return World(preset(study.world.preset, seed=study.world.seed))


def check_study(study: StudyConfig, source: str | None = None) -> None:
    """Checks that need the registries: models, tasks, and whether each prompt fits the context."""
    from fsv.tasks import get_task, is_text_task, task_names

    specs = [resolve_model(m, f"models[{i}]") for i, m in enumerate(study.models)]
    for i, task in enumerate(study.tasks):
        if task in WORLD_TASKS:
            if not all(s.is_world for s in specs):
                raise ConfigError(f"tasks[{i}]", task, "world tasks need world-ladder models", source)
            continue
        if not is_text_task(task):
            raise ConfigError(f"tasks[{i}]", task, f"unknown task; {did_you_mean(task, WORLD_TASKS + task_names())}", source)
        get_task(task, f"tasks[{i}]")
        if any(s.is_world for s in specs):
            raise ConfigError(f"tasks[{i}]", task, "text tasks need HF models (world models read only the world's tokens)", source)
        unsupported = [r for r in study.regime_sections() if r in ("instruction_tuning", "rlhf")]
        if unsupported:
            raise ConfigError("regimes", unsupported, "text tasks run zero_shot, few_shot, sft and prompt_tuning; "
                              "instruction_tuning and rlhf run on the world for now", source)
    for name in study.task_sources:
        if name not in study.tasks:
            raise ConfigError(f"task_sources.{name}", study.task_sources[name], f"not a task of this study; accepted: {study.tasks}", source)
    sections = study.regime_sections()
    if not sections:
        raise ConfigError("regimes", {}, "the grid is empty; give at least one of " + ", ".join(
            ["zero_shot", "few_shot", "sft", "prompt_tuning", "instruction_tuning", "rlhf"]), source)
    if "few_shot" in sections and any(s.is_world for s in specs):
        _check_world_context(study, sections["few_shot"], source)
    if "few_shot" in sections and not any(s.is_world for s in specs):
        _check_text_context(study, specs, sections["few_shot"], source)


def _check_world_context(study: StudyConfig, few_shot, source) -> None:
    world = world_of(study)
    window = world.config.context
    task = world.heldout_tasks[0]
    for i, k in enumerate(few_shot.k):
        demos = world.train_symbols[:1].repeat(k)
        length = len(world.prompt(task, demos, int(world.test_symbols[0]), few_shot.description))
        if length > window:
            kmax = max(j for j in range(1, window) if world.prompt_length(j, few_shot.description) <= window)
            raise ConfigError(
                f"regimes.few_shot.k[{i}]",
                k,
                f"its prompt is {length} tokens and the world models' context window is {window}; "
                f"accepted: k <= {kmax}",
                source,
            )


def _check_text_context(study: StudyConfig, specs, few_shot, source) -> None:
    """k against each model's context window, from the real tokenized length of the longest
    prompt. Needs the tokenizer here: a hub id that is not available offline is checked on the
    cluster instead, when its trial loads it."""
    from transformers import AutoTokenizer

    from fsv.hf_eval import check_context
    from fsv.tasks import get_task, load_splits

    for spec in specs:
        try:  # never reach for the network while validating: the local dir or the HF cache only
            tokenizer = AutoTokenizer.from_pretrained(spec.name, local_files_only=True)
        except (OSError, ValueError):
            continue
        for task in study.tasks:
            splits = load_splits(get_task(task), study.task_sources.get(task))
            check_context(tokenizer, get_task(task), splits, few_shot.k, few_shot.description, spec.context,
                          max_eval=study.max_eval, source=source)


def expand(study: StudyConfig) -> list[dict]:
    """Every cell of the study, in a stable order."""
    cells = []
    world_model = {m: resolve_model(m).is_world for m in study.models}
    pretrain = study.pretrain.model_dump(exclude={"seeds"})
    for regime, section in study.regime_sections().items():
        seeds = getattr(section, "seeds", None) or study.seeds
        for model, task, seed, axes in itertools.product(study.models, study.tasks, seeds, _regime_axes(regime, section)):
            for pretrain_seed in list(study.pretrain.seeds) if world_model[model] else [None]:
                cell = {
                    "regime": regime,
                    "model": model,
                    "pretrain_seed": pretrain_seed,
                    "task": task,
                    "seed": seed,
                    **axes,
                    "settings": section.model_dump(exclude={"n", "k", "layouts", "prompt_tokens",
                                                            "tasks_trained", "descriptions", "seeds"}),
                    "world": study.world.model_dump() if task in WORLD_TASKS else None,
                    "task_source": study.task_sources.get(task),
                    "max_eval": study.max_eval if task not in WORLD_TASKS else None,
                    "pretrain": pretrain if world_model[model] else None,
                    "train": study.train.model_dump() if regime not in ("zero_shot", "few_shot") else None,
                }
                cell["cell_id"] = cell_id(cell)
                cells.append(cell)
    return cells


def _regime_axes(regime: str, s) -> list[dict]:
    base = {"k": 0, "n": 0, "layout": None, "prompt_tokens": None, "tasks_trained": None}
    if regime == "zero_shot":
        return [{**base, "description": d} for d in s.descriptions]
    if regime == "few_shot":
        return [{**base, "description": s.description, "k": k} for k in s.k]
    if regime == "sft":
        return [{**base, "description": "none", "n": n, "layout": lay} for lay in s.layouts for n in s.n]
    if regime == "prompt_tuning":
        return [{**base, "description": "none", "n": n, "prompt_tokens": m} for m in s.prompt_tokens for n in s.n]
    if regime == "instruction_tuning":
        return [{**base, "description": "human", "n": n, "tasks_trained": t} for t in s.tasks_trained for n in s.n]
    if regime == "rlhf":
        return [{**base, "description": "human", "n": n} for n in s.n]
    raise ValueError(regime)
