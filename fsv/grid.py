"""The grid: a validated study expands into cells, one per trial, each with a stable `cell_id`.

A cell is a plain dict of everything that decides its result (model, regime, axis values, the world,
the pretraining budget, the training settings); `cell_id` is a hash of its normalised JSON, never
a timestamp, so the same study always yields the same ids and a re-run finds its own records.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json

import numpy as np

from fsv.config import TRAINING, StudyConfig
from fsv.errors import ConfigError, did_you_mean
from fsv.models.placement import gpu_fraction, placement
from fsv.models.registry import resolve_model
from fsv.world import World, preset

WORLD_TASKS = ["world"]  # the world's held-out tasks


def cell_id(cell: dict) -> str:
    blob = json.dumps(cell, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def world_of(study: StudyConfig) -> World:
    """The study's world, built once per (preset, seed) in a process: expanding a grid asks for its
    folds per training group, and building the hard world each time made `fsv validate
    study/paper.yaml` take 45 s (29 341 worlds)."""
    return _world(study.world.preset, study.world.seed)


@functools.lru_cache(maxsize=8)
def _world(name: str, seed: int) -> World:
    return World(preset(name, seed=seed))


def check_study(study: StudyConfig, source: str | None = None) -> None:
    """Checks that need the registries: models, tasks, and whether each prompt fits the context."""
    from fsv.tasks import get_task, is_text_task, task_names

    specs = [resolve_model(m, f"models[{i}]") for i, m in enumerate(study.models)]
    for i, spec in enumerate(specs):
        if spec.remote_code and not study.trust_remote_code:
            raise ConfigError(f"models[{i}]", study.models[i], "its config.json or tokenizer_config.json maps to "
                              "code shipped with the model (auto_map), which fsv does not run by default; accepted: "
                              "a model transformers implements, or set `trust_remote_code: true` in the study to run "
                              "that code", source)
    _check_grid_size(study, specs, source)
    for name in study.train.per_model:
        if name not in study.models:
            raise ConfigError(f"train.per_model.{name}", name, f"not a model of this study; accepted: {study.models}", source)
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
    sections = study.regime_sections()
    _check_search(study, sections, source)
    _check_task_pools(study, sections, source)
    known = set(study.tasks) | {t for r in sections for t in task_pool(study, r)}
    for name in study.task_sources:
        if name not in known:
            raise ConfigError(f"task_sources.{name}", study.task_sources[name],
                              f"not a task of this study; accepted: {sorted(known)}", source)
    if not sections:
        raise ConfigError("regimes", {}, "the grid is empty; give at least one of " + ", ".join(
            ["zero_shot", "few_shot", "sft", "prompt_tuning", "instruction_tuning", "rlhf"]), source)
    if "few_shot" in sections and any(s.is_world for s in specs):
        _check_world_context(study, sections["few_shot"], source)
    if "few_shot" in sections and not any(s.is_world for s in specs):
        _check_text_context(study, specs, sections["few_shot"], source)


def _check_search(study: StudyConfig, sections: dict, source) -> None:
    """A grid runs lists of values (a range has no points to run); GRPO's reward needs a label it can
    verify in one generated token (the world's tasks)."""
    from fsv.config import Range

    for regime, section in sections.items():
        for name, space in (section.spaces().items() if regime in TRAINING else []):
            if isinstance(space, Range) and study.search.method == "grid":
                raise ConfigError(f"regimes.{regime}.{name}", space.model_dump(), "a range is sampled by "
                                  "search.method random | optuna; a grid needs a list of values", source)
    rlhf = sections.get("rlhf")
    if rlhf is not None and "grpo" in rlhf.methods and any(t not in WORLD_TASKS for t in study.tasks):
        text = [t for t in study.tasks if t not in WORLD_TASKS]
        raise ConfigError("regimes.rlhf.methods", rlhf.methods, f"GRPO rewards a generated label that can be "
                          f"checked as one token; text tasks ({', '.join(text)}) have label words; accepted: "
                          "methods: [dpo] on text tasks, grpo on the world", source)


def task_pool(study: StudyConfig, regime: str) -> list[str]:
    """The text tasks a multi-task regime (instruction_tuning, rlhf) trains on, before the evaluated
    task is held out: its `train_tasks`, else the study's tasks. Empty on the world."""
    from fsv.tasks import get_task

    section = study.regime_sections().get(regime)
    if regime not in ("instruction_tuning", "rlhf") or section is None or WORLD_TASKS[0] in study.tasks:
        return []
    return [get_task(t).name for t in (section.train_tasks or study.tasks)]


def _check_task_pools(study: StudyConfig, sections: dict, source) -> None:
    """Every multi-task regime on text must leave each evaluated task at least one other task (and T of
    them for instruction tuning) to train on; its training tasks are registered text tasks."""
    from fsv.tasks import get_task

    for regime in ("instruction_tuning", "rlhf"):
        section = sections.get(regime)
        if section is None or section.train_tasks is None:
            continue
        field = f"regimes.{regime}.train_tasks"
        if WORLD_TASKS[0] in study.tasks:
            raise ConfigError(field, section.train_tasks, "train_tasks names text tasks; on the world the regime "
                              "draws its training tasks from the world's own; accepted: leave it out", source)
        for j, name in enumerate(section.train_tasks):
            get_task(name, f"{field}[{j}]")
    for regime in ("instruction_tuning", "rlhf"):
        pool = task_pool(study, regime)
        if regime not in sections or not pool:
            continue
        for target in study.tasks:
            others = held_out(pool, target)
            if not others:
                raise ConfigError(f"regimes.{regime}.train_tasks", pool, f"holding out the evaluated task {target} "
                                  f"leaves no task to train on; accepted: at least one text task other than {target}", source)
            ts = getattr(sections[regime], "tasks_trained", [])
            for i, t in enumerate(ts):
                if t > len(others):
                    raise ConfigError(f"regimes.{regime}.tasks_trained[{i}]", t, f"evaluating {target} leaves "
                                      f"{len(others)} training tasks ({', '.join(others)}); accepted: T <= {len(others)}, "
                                      f"or more names in regimes.{regime}.train_tasks", source)


def held_out(pool: list[str], target: str) -> list[str]:
    from fsv.tasks import get_task

    return [t for t in pool if t != get_task(target).name]


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
            tokenizer = AutoTokenizer.from_pretrained(spec.name, local_files_only=True,
                                                      trust_remote_code=study.trust_remote_code)
        except (OSError, ValueError):
            continue
        for task in study.tasks:
            splits = load_splits(get_task(task), study.task_sources.get(task))
            check_context(tokenizer, get_task(task), splits, few_shot.k, few_shot.description, spec.context,
                          max_eval=study.max_eval, source=source)


SEARCHED = ("lr", "weight_decay", "beta", "lora_rank")
NOT_SETTINGS = {"n", "k", "layouts", "prompt_tokens", "tasks_trained", "descriptions", "seeds", "train_tasks",
                "methods", *SEARCHED}


def instance_name(model: str, pretrain_seed: int, checkpoint: int | None) -> str:
    """A ladder model instance: one pretrained set of weights (a size, a pretraining seed, a step)."""
    return f"{model}/p{pretrain_seed}/{'final' if checkpoint is None else f'step{checkpoint}'}"


def instances(study: StudyConfig, model: str, is_world: bool) -> list[dict]:
    if not is_world:  # a suite's hub revision (`ID@step1000`) is the instance at that step
        from fsv.models.registry import revision_step

        return [{"pretrain_seed": None, "checkpoint": revision_step(model), "instance": model}]
    steps = [None, *study.pretrain.checkpoints]
    return [{"pretrain_seed": p, "checkpoint": c, "instance": instance_name(model, p, c)}
            for p in study.pretrain.seeds for c in steps]


def expand(study: StudyConfig) -> list[dict]:
    """Every cell of the study, in a stable order: in-context cells (one trial each), and for each
    training regime its selection trials (phase "select", one per grid point; an adaptive search
    lists one plan per fold instead, phase "search", whose trials its searcher chooses) and the
    scored cells they are measured into (phase "measure", derived once the group's search is done)."""
    cells = []
    specs = {m: resolve_model(m) for m in study.models}
    pretrain = study.pretrain.model_dump(exclude={"seeds", "checkpoints"})
    for regime, section in study.regime_sections().items():
        seeds = getattr(section, "seeds", None) or study.seeds
        for model, task, axes in itertools.product(study.models, study.tasks, _regime_axes(regime, section)):
            for inst in instances(study, model, specs[model].is_world):
                base = {
                    "regime": regime, "model": model, **inst, "task": task, **axes,
                    "settings": section.model_dump(exclude=NOT_SETTINGS),
                    "world": study.world.model_dump() if task in WORLD_TASKS else None,
                    "task_source": study.task_sources.get(task),
                    "max_eval": study.max_eval if task not in WORLD_TASKS else None,
                    "pretrain": pretrain if specs[model].is_world else None,
                    "train": train_settings(study, model, specs[model]) if regime in TRAINING else None,
                }
                if task_pool(study, regime):
                    base["train_tasks"] = training_tasks(study, regime, task, seeds[0], axes["tasks_trained"])
                if regime in TRAINING:
                    cells += search_cells(study, base, section, seeds)
                    continue
                for seed in seeds:
                    cells.append(_with_id({**base, "seed": seed, "phase": "measure"}))
    return cells


def _with_id(cell: dict) -> dict:
    cell["cell_id"] = cell_id(cell)
    return cell


def folds(study: StudyConfig, task: str) -> list[str | None]:
    """Cross-fitting folds of the world's held-out tasks (the feature each reads); text tasks have one
    scored split and select on a dev split of their own."""
    if task not in WORLD_TASKS:
        return [None]
    from fsv.regimes.training import fold_of

    return sorted({fold_of(t) for t in world_of(study).heldout_tasks})


def search_cells(study: StudyConfig, base: dict, section, seeds: list[int]) -> list[dict]:
    """A training group's selection trials and its scored cells. `group` ties them together."""
    from fsv.search.space import grid_points

    group = cell_id(base)
    common = {**base, "group": group, "n_levels": list(section.n), "seeds": list(seeds)}
    if study.search.method == "grid" and study.search.widen_steps:  # a longer run goes on from its state
        common["keep_state"] = True
    cells = []
    if study.search.method == "grid":
        for point in grid_points(section.spaces()):
            cells.append(_with_id({**common, "phase": "select", "hparams": point, "fold": None, "seed": None, "n": None}))
    else:  # an adaptive search plan per fold: its trials' configurations come from the searcher
        for fold in folds(study, base["task"]):
            cells.append(_with_id({**common, "phase": "search", "hparams": None, "fold": fold,
                                   "samples": study.search.samples, "seed": None, "n": None}))
    for n in section.n:
        for seed in seeds:
            for fold in folds(study, base["task"]):
                cells.append(_with_id({**base, "group": group, "phase": "measure", "n": n, "seed": seed, "fold": fold}))
    return cells


def train_settings(study: StudyConfig, model: str, spec) -> dict:
    """The cell's `train` settings with its ZeRO stage and workers placed (`fsv.models.placement`)."""
    chosen = placement(spec.params, study.train, model)
    unset = {"stack"} if study.train.stack is None else set()  # how a trial runs, not what it measures:
    settings = {**study.train.model_dump(exclude={"per_model", "gpu_fraction", *unset}),  # ids stay as they were
                "zero_stage": chosen.zero_stage, "workers": chosen.workers}
    if study.train.use_gpu:  # the share of a GPU each worker asks for (CPU studies' ids stay as they were)
        settings["gpu_fraction"] = gpu_fraction(spec.params, study.train, model)
    return settings


def training_tasks(study: StudyConfig, regime: str, target: str, seed: int, count: int | None) -> list[list]:
    """[[task, source], ...]: the text tasks a multi-task cell trains on, the evaluated one held out.
    Instruction tuning takes the first T of a seeded order (so T = 2 is within T = 4 for one seed);
    rlhf spreads its feedback over all of them."""
    from fsv.tasks import get_task

    others = held_out(task_pool(study, regime), target)
    if count is not None:
        order = np.random.default_rng([seed, 11]).permutation(len(others))
        others = [others[i] for i in order[:count]]
    sources = {get_task(k).name: v for k, v in study.task_sources.items()}
    return [[name, sources.get(name)] for name in others]


MAX_CELLS = 100_000  # a grid larger than this is a typo (or several studies in one), refused before expanding


def _check_grid_size(study: StudyConfig, specs, source: str | None) -> None:
    instances = sum(len(study.pretrain.seeds) if spec.is_world else 1 for spec in specs)
    size = sum(len(_regime_axes(regime, section)) * len(getattr(section, "seeds", None) or study.seeds)
               for regime, section in study.regime_sections().items()) * instances * len(study.tasks)
    if size > MAX_CELLS:
        raise ConfigError("study", f"a grid of {size:,} cells", f"accepted: at most {MAX_CELLS:,} cells; shorten "
                          "the axes (models, tasks, seeds, k, n, ...) or split the study into several", source)


def _regime_axes(regime: str, s) -> list[dict]:
    base = {"k": 0, "n": 0, "layout": None, "prompt_tokens": None, "tasks_trained": None, "method": None}
    if regime == "zero_shot":
        return [{**base, "description": d} for d in s.descriptions]
    if regime == "few_shot":
        return [{**base, "description": s.description, "k": k} for k in s.k]
    if regime == "sft":
        return [{**base, "description": "none", "layout": lay, "method": m} for m in s.methods for lay in s.layouts]
    if regime == "prompt_tuning":
        return [{**base, "description": "none", "prompt_tokens": m, "method": "prompt"} for m in s.prompt_tokens]
    if regime == "instruction_tuning":
        return [{**base, "description": "human", "tasks_trained": t, "method": "full"} for t in s.tasks_trained]
    if regime == "rlhf":
        return [{**base, "description": "human", "method": m} for m in s.methods]
    raise ValueError(regime)
