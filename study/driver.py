"""The Ray Tune driver: a validated study becomes one Tune trial per cell without an `ok` record.

The data's path: study YAML -> StudyConfig -> cells -> (ladder models pretrained if missing) ->
one trial per cell -> one record per cell -> analysis. Every check that can refuse the study runs
before anything is written or launched. Records are the study's state: a re-run (after success,
Ctrl-C or `kill -9`) runs exactly the cells that have no `ok` record, and a cell's record file is
named by its id, so nothing is ever doubled.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from fsv.config import StudyConfig, load_study
from fsv.errors import ConfigError, FsvError
from fsv.grid import expand, world_of
from fsv.records import (check_cells_json, list_names, local_view, ok_cell_ids, quarantine_damaged, read_records,
                         write_record, write_text)
from study.lease import hold as hold_lease
from study.progress import Progress
from study.trial import base_record, run_trial

TRIAL_DRIVER = "fsv_trial_driver"  # custom resource a training trial holds instead of a CPU
# On a local cluster: the Train controller polls its workers every 0.2 s instead of 2 s (a trial
# ends up to 2 s sooner), and no preemption watcher actor is started (no spot nodes on a laptop;
# on a cluster, given with --address, Ray's defaults stay).
LOCAL_TRAIN_ENV = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2", "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}


def study_dir(storage: str, name: str) -> str:
    return f"{storage.rstrip('/')}/{name}" if "://" in storage else str(Path(storage).expanduser().resolve() / name)


def check_storage(storage: str) -> None:
    if "://" in storage:
        from pyarrow import fs

        try:
            filesystem, path = fs.FileSystem.from_uri(storage)
            bucket = path.split("/")[0]
            found = filesystem.get_file_info(bucket).type != fs.FileType.NotFound
        except Exception as exc:  # noqa: BLE001
            raise ConfigError("--storage", storage, f"cannot open it ({exc}); accepted: a writable folder, s3://…, gs://…") from None
        if not found:
            raise ConfigError("--storage", storage, f"bucket {bucket!r} does not exist or these credentials cannot see it; "
                              "accepted: a writable folder, or s3://BUCKET/… / gs://BUCKET/… in an existing bucket")
        return
    path = Path(storage).expanduser().resolve()
    existing = next(p for p in [path, *path.parents] if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError("--storage", storage, f"{existing} is not a writable folder; accepted: a writable folder, s3://…, gs://…")


def connect(address: str | None, verbose: bool) -> None:
    """Join an existing cluster (`--address` / RAY_ADDRESS) or start a real local one."""
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    quiet = {"log_to_driver": verbose, "logging_level": "INFO" if verbose else "ERROR"}
    if address:
        _check_reachable(address)
        ray.init(address=address, **quiet)
        return
    cpus = os.cpu_count() or 1
    env = {**LOCAL_TRAIN_ENV, **({"DS_ACCELERATOR": "cpu"} if not _has_gpu() else {})}
    ray.init(num_cpus=cpus, resources={TRIAL_DRIVER: 10_000}, include_dashboard=False,
             runtime_env={"env_vars": env}, **quiet)


def _has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def _check_reachable(address: str) -> None:
    import socket

    if address == "auto":
        return
    hostport = address.split("://")[-1]
    host, _, port = hostport.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=5):
            return
    except (OSError, ValueError) as exc:
        raise ConfigError("--address", address, f"cannot reach it ({exc}); accepted: host:port of a running "
                          "Ray cluster's GCS (e.g. 10.0.0.5:6379), ray://host:10001, or 'auto'") from None


def run_study(path: str, storage: str = "results", address: str | None = None, verbose: bool = False,
              analyze: bool | None = None, take_over: bool = False) -> dict:
    study = load_study(path)
    check_storage(storage)
    if address or os.environ.get("RAY_ADDRESS"):
        _check_reachable(address or os.environ["RAY_ADDRESS"])
    root = study_dir(storage, study.name)
    cells = expand(study)
    check_cells_json(root, study.name)  # a cells.json of another study is refused, not overwritten
    with hold_lease(root, take_over):  # one live run per study folder
        _set_aside_damaged(root)
        done = ok_cell_ids(root)
        todo = [c for c in cells if c["cell_id"] not in done]
        _write_cells(root, study, cells)
        say = Progress.say
        say(f"study {study.name}: {len(cells)} cells, {len(cells) - len(todo)} already recorded ok, {len(todo)} to run")
        started = time.time()
        if todo:
            connect(address, verbose)
            from fsv.tracking import Tracker

            tracker = Tracker(study.wandb.model_dump(), study.name, root)
            ensure_models(study, todo, tracker)
            _run_trials(study, root, todo, verbose)
        summary = summarize(root, cells)
        summary["wall_s"] = time.time() - started
        say(f"study {study.name}: {summary['ok']} ok, {summary['failed']} failed, {summary['missing']} missing "
            f"of {summary['total']} cells ({summary['wall_s']:.0f} s); records in {root}/records")
        if (study.analyze if analyze is None else analyze) and summary["ok"]:
            _analyze(root, allow_partial=summary["ok"] < summary["total"])
    return summary


def _set_aside_damaged(root: str) -> None:
    """Damaged files in records/ (torn, foreign, edited) go to records/.damaged/; their cells re-run."""
    for item, dest in quarantine_damaged(root):
        Progress.say(f"moved {item.path} to {dest}: {item.reason}; its cell runs again")


def _write_cells(root: str, study: StudyConfig, cells: list[dict]) -> None:
    """The expanded grid beside the records: what `fsv status` and the analysis compare them to."""
    import fsv

    payload = {"study": study.name, "fsv_version": fsv.__version__, "config": study.model_dump(), "cells": cells}
    write_text(root, "cells.json", json.dumps(payload, indent=1, default=str))


def ensure_models(study: StudyConfig, cells: list[dict], tracker) -> None:
    """Pretrain (under Ray Train + DeepSpeed) every ladder model the cells need and the cache
    lacks, as many at once as the cluster's CPUs (or GPUs) allow, largest first."""
    from concurrent.futures import ThreadPoolExecutor

    import ray

    from fsv.models.cache import is_cached, ladder_dir
    from fsv.models.ladder import LADDER
    from fsv.models.load import pretrain_world_model

    world = world_of(study).config.model_dump()
    pretrain = study.pretrain.model_dump(exclude={"seeds"})
    needed = {(c["model"], c["pretrain_seed"]) for c in cells if c["pretrain_seed"] is not None}
    missing = [(m, s) for m, s in needed if not is_cached(ladder_dir(m, world, pretrain, s))]
    if not missing:
        return
    missing.sort(key=lambda ms: (-LADDER[ms[0]].n_layers * LADDER[ms[0]].d_model ** 2, ms[1]))
    unit = "GPU" if study.pretrain.use_gpu else "CPU"
    per_job = study.pretrain.workers * (1 if study.pretrain.use_gpu else study.pretrain.cpus_per_worker)
    parallel = max(1, int(ray.cluster_resources().get(unit, 1)) // per_job)
    Progress.say(f"pretraining {len(missing)} ladder model(s), {parallel} at a time, {study.pretrain.steps} steps each")

    def one(job):
        name, seed = job
        t0 = time.time()
        pretrain_world_model(name, world, pretrain, seed, tracker)
        Progress.say(f"pretrained {name} (pretrain seed {seed}) in {time.time() - t0:.0f} s")

    with ThreadPoolExecutor(max_workers=parallel) as pool:
        list(pool.map(one, missing))


def bayes_table(study: StudyConfig, cells: list[dict]) -> dict[int, float]:
    from fsv.world.bayes import bayes_accuracy

    ks = sorted({c["k"] for c in cells if c["world"] is not None and c["description"] == "none"} | {0})
    world = world_of(study)
    return {k: float(bayes_accuracy(world, k)[0]) for k in ks}


def _resources(cell: dict, use_gpu: bool) -> dict:
    """An in-context trial computes itself (a CPU, and a GPU on GPU studies); a training trial only
    drives its TorchTrainer, so it holds the custom resource and leaves the CPUs to its workers."""
    if cell["train"] is not None:
        return {TRIAL_DRIVER: 1}
    return {"CPU": 1, "GPU": 1} if use_gpu else {"CPU": 1}


def _run_trials(study: StudyConfig, root: str, todo: list[dict], verbose: bool) -> None:
    import ray
    from ray import tune

    cells = {c["cell_id"]: c for c in todo}
    env = {"study": study.name, "study_dir": root, "bayes": bayes_table(study, todo),
           "wandb": study.wandb.model_dump(), "retries": study.retries,
           "trust_remote_code": study.trust_remote_code}
    trainable = tune.with_resources(tune.with_parameters(run_trial, cells=cells, env=env),
                                    lambda config: _resources(cells[config["cell_id"]], study.train.use_gpu))
    cpus = int(ray.cluster_resources().get("CPU", 1))
    per_trial = max(1 if c["train"] is None else c["train"]["workers"] * c["train"]["cpus_per_worker"] for c in todo)
    progress = Progress(len(todo))
    if not verbose:  # Tune's new console output prints its tables even when silent; ours replaces them
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    tuner = tune.Tuner(
        trainable,
        param_space={"cell_id": tune.grid_search(list(cells))},
        tune_config=tune.TuneConfig(max_concurrent_trials=max(1, cpus // per_trial), reuse_actors=True),
        run_config=tune.RunConfig(
            name=_attempt_name(root), storage_path=_tune_storage(root), verbose=2 if verbose else 0,
            callbacks=[progress], failure_config=tune.FailureConfig(max_failures=study.retries),
        ),
    )
    try:
        grid = tuner.fit()
    except KeyboardInterrupt:
        Progress.say("interrupted; records written so far are kept; run the same command to resume")
        raise
    _record_crashed_trials(study, root, grid, cells)


def _tune_storage(root: str) -> str:
    return f"{root}/tune" if "://" in root else str(Path(root) / "tune")


def _attempt_name(root: str) -> str:
    """Each `fsv run` is its own Tune experiment, named by its ordinal (never a timestamp)."""
    n = len([name for name in list_names(root, "tune") if name.startswith("run-")])
    return f"run-{n + 1:03d}"


def _record_crashed_trials(study: StudyConfig, root: str, grid, cells: dict) -> None:
    """A trial whose process died (not an exception inside it) leaves no record: write `failed`."""
    recorded = set(read_records(root)["cell_id"])
    for result in grid:
        cid = (result.config or {}).get("cell_id")
        if result.error is not None and cid and cid not in recorded:
            record = base_record(cells[cid], study.name)
            record.update(status="failed", error=str(result.error)[-4000:], attempts=study.retries + 1)
            write_record(root, record)


def summarize(root: str, cells: list[dict]) -> dict:
    return count_cells(read_records(root), cells)


def count_cells(frame, cells: list[dict]) -> dict:
    ids = {c["cell_id"] for c in cells}
    frame = frame[frame["cell_id"].isin(ids)]
    ok = int((frame["status"] == "ok").sum())
    failed = int((frame["status"] == "failed").sum())
    return {"total": len(ids), "ok": ok, "failed": failed, "missing": len(ids) - ok - failed}


def _analyze(root: str, allow_partial: bool) -> None:
    from analysis import analyze

    try:
        with local_view(root) as local:  # a scratch copy of remote records; analysis/ goes back up
            analyze(str(local), allow_partial=allow_partial)
        Progress.say(f"analysis: {root}/analysis/report.md, figures in {root}/analysis/figures")
    except FsvError as exc:
        Progress.say(f"analysis refused: {exc}")
    except Exception as exc:  # noqa: BLE001 - the records are safe; say what went wrong
        Progress.say(f"analysis failed ({type(exc).__name__}: {exc}); records are intact; retry with `fsv analyze {root}`")
        print(exc, file=sys.stderr)
