"""Adaptive hyperparameter searches (`search.method: random | optuna`), one Ray Tune experiment per
search plan: a training group (model instance, regime, task, axes) and, on the world, the fold it
chooses for.

Ray Tune does the searching: `OptunaSearch` (TPE) or random sampling (`num_samples`) over the
regime's space (`fsv.search.space.tune_space`), and with `scheduler: asha` an `ASHAScheduler` that
stops configurations behind at the smaller n levels: a trial trains its n levels in ascending order
and reports after each (`training_iteration` = n levels done), so the low-fidelity rungs are the
cheap small-n adaptations. The metric is validation accuracy only (the other folds' tasks, or a
dev split): a search never sees the rows it will be scored on. Each trial writes its selection
record after every n level, so a trial the scheduler stops still leaves what it measured; a
resumed search starts from the configurations already recorded (Optuna is told their scores).
"""

from __future__ import annotations

import json

import numpy as np

from fsv.config import StudyConfig
from fsv.grid import cell_id
from fsv.records import read_records, write_record
from fsv.search.select import validation_means
from fsv.search.space import tune_space

METRIC = "val_accuracy"


def plans(cells: list[dict]) -> list[dict]:
    return [c for c in cells if c.get("phase") == "search"]


def recorded(records, plan: dict) -> list[tuple[dict, float]]:
    """(hparams, validation score) of the plan's trials already recorded."""
    out = []
    frame = records[(records["phase"] == "select") & (records["status"] == "ok")]
    for row in frame.itertuples():
        cell = json.loads(row.config)
        if cell.get("group") == plan["group"] and cell.get("fold") == plan["fold"]:
            out.append((json.loads(row.hparams), validation_score(json.loads(row.curves), plan["fold"])))
    return out


def validation_score(rows: list[dict], fold: str | None) -> float:
    """Mean over the n levels measured of the best length's mean validation accuracy."""
    by_n = validation_means(rows, fold)
    return float(np.mean([max(by_len.values()) for by_len in by_n.values()])) if by_n else 0.0


def pending(root: str, cells: list[dict], records=None) -> list[dict]:
    """The search plans with fewer recorded trials than they sample (a grid study has none, and its
    records are not read)."""
    searches = plans(cells)
    if not searches:
        return []
    records = read_records(root) if records is None else records
    return [p for p in searches if len(recorded(records, p)) < p["samples"]]


def run_searches(study: StudyConfig, root: str, cells: list[dict], env: dict, resources, verbose: bool) -> None:
    records = read_records(root)
    for plan in pending(root, cells, records):
        run_search(study, plan, recorded(records, plan), env, resources, verbose)


def run_search(study: StudyConfig, plan: dict, done: list, env: dict, resources, verbose: bool) -> None:
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    section = study.regime_sections()[plan["regime"]]
    searcher = None
    if study.search.method == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        searcher = OptunaSearch(points_to_evaluate=[h for h, _ in done] or None,
                                evaluated_rewards=[s for _, s in done] or None)
    scheduler = (ASHAScheduler(time_attr="training_iteration", max_t=len(plan["n_levels"]), grace_period=1,
                               reduction_factor=2) if study.search.scheduler == "asha" else FIFOScheduler())
    trainable = tune.with_resources(tune.with_parameters(search_trial, plan=plan, env=env), resources(plan))
    tuner = tune.Tuner(
        trainable, param_space={"hparams": tune_space(section.spaces())},
        tune_config=tune.TuneConfig(metric=METRIC, mode="max", search_alg=searcher, scheduler=scheduler,
                                    num_samples=plan["samples"] - len(done)),
        run_config=tune.RunConfig(name=f"search-{plan['cell_id']}", storage_path=env["tune_storage"],
                                  verbose=2 if verbose else 0),
    )
    tuner.fit()


def search_trial(config: dict, plan: dict, env: dict) -> None:
    """One configuration of a search: its n levels in ascending order, a record and a report after each."""
    from ray import tune

    from fsv.regimes.training import curve_fields
    from study.trial import attempt

    hparams = {k: (int(v) if k == "lora_rank" else float(v)) for k, v in config["hparams"].items()}
    cell = {k: v for k, v in plan.items() if k not in ("cell_id", "samples")} | {"phase": "select", "hparams": hparams}
    cell["cell_id"] = cell_id(cell)
    rows = []
    for level in cell["n_levels"]:
        record = attempt({**cell, "n_levels": [level]}, env)
        if record["status"] != "ok":
            write_record(env["study_dir"], {**record, "config": json.dumps(cell, sort_keys=True, default=str)})
            tune.report({METRIC: float("nan"), "status_ok": 0})
            return
        rows += json.loads(record["curves"])
        record.update(curve_fields(rows, cell), config=json.dumps(cell, sort_keys=True, default=str))
        write_record(env["study_dir"], record)
        tune.report({METRIC: validation_score(rows, plan["fold"]), "status_ok": 1})
