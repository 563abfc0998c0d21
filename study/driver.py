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
from contextlib import contextmanager
from pathlib import Path

from fsv.config import IN_CONTEXT, StudyConfig, load_study
from fsv.errors import ConfigError, FsvError
from fsv.grid import expand, world_of
from fsv.records import (check_cells_json, list_names, ok_cell_ids, quarantine_damaged, read_records,
                         write_record, write_text)
from study.lease import hold as hold_lease
from study.progress import PretrainProgress, Progress
from study.search import pending, run_searches
from study.selection import known_cells, measure_groups
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
        try:
            ray.init(address=address, **quiet)
        except ConnectionError as exc:
            raise _auth_error(address, exc) or exc from None
        return
    cpus = os.cpu_count() or 1
    env = {**LOCAL_TRAIN_ENV, **({"DS_ACCELERATOR": "cpu"} if not _has_gpu() else {})}
    ray.init(num_cpus=cpus, resources={TRIAL_DRIVER: 10_000}, include_dashboard=False,
             runtime_env={"env_vars": env}, **quiet)


def _has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def _auth_error(address: str, exc: Exception) -> ConfigError | None:
    """A cluster that refused this client's Ray auth token, said as a ConfigError (else None)."""
    causes, cause = [], exc
    while cause is not None:  # ray.init raises ConnectionError from ray.exceptions.AuthenticationError
        causes.append(f"{type(cause).__name__}: {cause}")
        cause = cause.__cause__ or cause.__context__
    if not any("AuthenticationError" in c or "InvalidAuthToken" in c for c in causes):
        return None
    return ConfigError("--address", address, "the cluster refused this client's Ray auth token (or got none); "
                       "pass the cluster's token: export RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH=/path/to/token "
                       "(or RAY_AUTH_TOKEN=<token>), e.g. the file clusters/README.md keeps in ~/.fsv/cluster-secrets")


def check_gpus(study: StudyConfig, remote: bool) -> None:
    """Refuse a study that asks for GPUs where the cluster has none (and its autoscaler, if any,
    could start none). On a remote cluster call after `connect`."""
    asks = [f for f, on in (("train.use_gpu", study.train.use_gpu), ("pretrain.use_gpu", study.pretrain.use_gpu)) if on]
    if not asks:
        return
    gpus = _cluster_gpus() if remote else (1 if _has_gpu() else 0)
    if not gpus:
        where = "the Ray cluster at --address" if remote else "this machine (torch sees no CUDA device)"
        raise ConfigError(asks[0], True, f"{where} has no GPUs and can start none; accepted: false, or a "
                          "cluster with GPU nodes (or an autoscaler whose node types declare GPUs)")


def _cluster_gpus() -> float:
    import ray

    now = ray.cluster_resources().get("GPU", 0)
    try:  # an autoscaling cluster whose GPU workers scale from zero: the most it could start
        from ray._private.state import state

        most = (state.get_max_resources_from_cluster_config() or {}).get("GPU", 0)
    except Exception:  # noqa: BLE001 - no autoscaler config: the nodes there now are the cluster
        most = 0
    return max(now, most)


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
              analyze: bool | None = None, models: str | None = None, take_over: bool = False) -> dict:
    study = load_study(path)
    check_storage(storage)
    remote = bool(address or os.environ.get("RAY_ADDRESS"))
    if remote:
        _check_reachable(address or os.environ["RAY_ADDRESS"])
    store = _model_store(storage, models, remote)
    if remote:
        connect(address, verbose)
    check_gpus(study, remote)
    root = study_dir(storage, study.name)
    check_cells_json(root, study.name)  # a cells.json of another study is refused, not overwritten
    with hold_lease(root, take_over):  # one live run per study folder
        _set_aside_damaged(root)
        cells = known_cells(expand(study), read_records(root))
        done = ok_cell_ids(root)
        todo = [c for c in cells if c["cell_id"] not in done and is_trial(c)]
        _write_cells(root, study, cells)
        say = Progress.say
        recorded = [c for c in cells if c.get("phase") != "search"]
        say(f"study {study.name}: {len(recorded)} cells ({sum(map(is_trial, cells))} trials, the rest scored from "
            f"their searches), {sum(c['cell_id'] in done for c in recorded)} already recorded ok, {len(todo)} to run")
        started = time.time()
        searches = pending(root, cells)
        if todo or searches:
            connect(address, verbose)
            from fsv.tracking import Tracker

            tracker = Tracker(study.wandb.model_dump(), study.name, root)
            early = [c for c in todo if c["regime"] in IN_CONTEXT]  # these start as soon as their own model is ready
            with pretraining(study, todo + searches, tracker, store) as settled:
                ran = _run_trials(study, root, early, verbose, store, settled) if not all(map(settled, early)) else set()
            todo = [c for c in todo if c["cell_id"] not in ran]  # the rest run after pretraining
        cells = _trials_then_scores(study, root, cells, todo, address, verbose, store)
        summary = summarize(root, cells)
        summary["wall_s"] = time.time() - started
        say(f"study {study.name}: {summary['ok']} ok, {summary['failed']} failed, {summary['missing']} missing "
            f"of {summary['total']} cells ({summary['wall_s']:.0f} s); records in {root}/records")
        if (study.analyze if analyze is None else analyze) and summary["ok"]:
            _analyze(root, allow_partial=summary["ok"] < summary["total"])
    return summary


def is_trial(cell: dict) -> bool:
    """In-context cells and selection trials run as Tune trials; scored training cells are derived
    from their group's selection trials (study/selection.py)."""
    return cell.get("phase") == "select" or cell["regime"] in IN_CONTEXT


def _trials_then_scores(study: StudyConfig, root: str, cells: list[dict], todo: list[dict], address, verbose,
                        store=None) -> list[dict]:
    """Run the trials, then derive the scored training records; a grid whose choice sits on its edge
    runs its widened trials and is scored again (rates and lengths: at most `search.widen` +
    `search.widen_steps` rounds, a longer run of a rate the previous round added included)."""
    for _ in range(study.search.widen + study.search.widen_steps + 1):
        for group in trial_groups(todo):
            _run_trials(study, root, group, verbose, store)
        searches = pending(root, cells)
        if searches:
            connect(address, verbose)
            with _training_service(root, searches):  # the search trials' cells go to its servers
                run_searches(study, root, cells, _trial_env(study, root, todo, store), lambda c: _resources(c, study.train),
                             verbose)
            cells = known_cells(cells, read_records(root))
        todo = measure_groups(study, root, cells)
        if not todo:
            break
        Progress.say(f"widening: {len(todo)} selection trial(s) beyond the edge of their rates or lengths")
        cells = cells + todo
        _write_cells(root, study, cells)
        connect(address, verbose)
    return cells


def trial_groups(todo: list[dict]) -> list[list[dict]]:
    """The trials as experiments run one after another, each with the whole cluster sized for it:
    in-context trials (a CPU each, actors reused), then training cells (every CPU in a training
    server). In one experiment, the CPU kept for in-context or per-fit trials idles while the served
    cells train on the other (measured on the default study: one core busy for the whole selection
    phase, load average 1.4 on 2 cores)."""
    groups = [[c for c in todo if c["train"] is None], [c for c in todo if c["train"] is not None]]
    return [g for g in groups if g]


def _set_aside_damaged(root: str) -> None:
    """Damaged files in records/ (torn, foreign, edited) go to records/.damaged/; their cells re-run."""
    for item, dest in quarantine_damaged(root):
        Progress.say(f"moved {item.path} to {dest}: {item.reason}; its cell runs again")


def _write_cells(root: str, study: StudyConfig, cells: list[dict]) -> None:
    """The expanded grid beside the records: what `fsv status` and the analysis compare them to."""
    import fsv

    payload = {"study": study.name, "fsv_version": fsv.__version__, "config": study.model_dump(), "cells": cells}
    write_text(root, "cells.json", json.dumps(payload, indent=1, default=str))


def _model_store(storage: str, models: str | None, remote: bool):
    """The model store (`fsv.models.store`) every node fetches ladder models from: `--models`, else
    STORAGE/_models, on a cluster (`--address`) or remote storage; None for a local run on local
    storage, where this node's cache is the only one. Refused (exit 2) if it cannot be written."""
    from fsv.models.store import ModelStore, models_uri

    if not (models or remote or "://" in storage):
        return None
    store = ModelStore(models_uri(storage, models))
    store.check_writable("--models" if models else "--storage")
    return store


@contextmanager
def pretraining(study: StudyConfig, cells: list[dict], tracker, store=None):
    """Every ladder model the cells need, good in this node's cache and published to the store:
    fetched from the store, or pretrained (under Ray Train + DeepSpeed) and published, as many at
    once as the cluster's CPUs (or GPUs) allow, largest first. A damaged copy is named and replaced.

    Pretraining runs in the background: the block gets `settled(cell)`, true once the cell's model
    is ready (or its pretraining failed, so its trial records why), and leaves when every model is.
    In-context trials run in that block, each as soon as its own model is ready (`study.ready`);
    training trials wait for the whole ladder, because the training service holds its CPUs for its
    whole run and pretraining two at a time keeps both cores of a laptop busy meanwhile."""
    from concurrent.futures import ThreadPoolExecutor

    import ray

    from fsv.models.cache import is_cached, ladder_dir
    from fsv.models.ladder import LADDER
    from fsv.models.load import pretrain_world_model
    from fsv.models.store import prepare

    world = world_of(study).config.model_dump()
    pretrain = study.pretrain.model_dump(exclude={"seeds"})
    needed = {(c["model"], c["pretrain_seed"]) for c in cells if c["pretrain_seed"] is not None}
    missing = [(m, s) for m, s in needed if not (prepare(ladder_dir(m, world, pretrain, s), store, Progress.say)
                                                 and is_cached(ladder_dir(m, world, pretrain, s), study.pretrain.checkpoints))]
    if not missing:
        yield lambda cell: True
        return
    missing.sort(key=lambda ms: (-LADDER[ms[0]].n_layers * LADDER[ms[0]].d_model ** 2, ms[1]))
    unit = "GPU" if study.pretrain.use_gpu else "CPU"
    per_job = study.pretrain.workers * (1 if study.pretrain.use_gpu else study.pretrain.cpus_per_worker)
    parallel = max(1, int(ray.cluster_resources().get(unit, 1)) // per_job)
    Progress.say(f"pretraining {len(missing)} ladder model(s), {parallel} at a time, {study.pretrain.steps} steps each")
    train_storage = f"{store.uri}/_ray" if store else None  # every node reaches it

    def one(job):
        name, seed = job
        t0 = time.time()
        path = pretrain_world_model(name, world, pretrain, seed, tracker, train_storage)
        if store:
            store.publish(path)
        Progress.say(f"pretrained {name} (pretrain seed {seed}) in {time.time() - t0:.0f} s"
                     + (f", published to {store.uri}" if store else ""))

    with PretrainProgress(), ThreadPoolExecutor(max_workers=parallel) as pool:
        jobs = {job: pool.submit(one, job) for job in missing}
        yield lambda cell: (job := jobs.get((cell["model"], cell["pretrain_seed"]))) is None or job.done()
        for job in jobs.values():
            job.result()  # a failed pretraining stops the study here, named


def ensure_models(study: StudyConfig, cells: list[dict], tracker, store=None) -> None:
    """Every ladder model the cells need, ready before this returns (see `pretraining`)."""
    with pretraining(study, cells, tracker, store):
        pass


def bayes_table(study: StudyConfig, cells: list[dict]) -> dict[int, float]:
    from fsv.world.bayes import bayes_accuracy

    ks = sorted({c["k"] for c in cells if c["world"] is not None and c["description"] == "none"} | {0})
    world = world_of(study)
    return {k: float(bayes_accuracy(world, k)[0]) for k in ks}


def _resources(cell: dict, train) -> dict:
    """An in-context trial computes itself (a CPU, and on GPU studies the share of a GPU its model
    needs, `fsv.models.placement.gpu_fraction`); a training trial only drives its TorchTrainer, so
    it holds the custom resource and leaves the CPUs (and GPUs) to its workers."""
    if cell["train"] is not None:
        return {TRIAL_DRIVER: 1}
    if not train.use_gpu:
        return {"CPU": 1}
    from fsv.models.placement import gpu_fraction
    from fsv.models.registry import resolve_model

    return {"CPU": 1, "GPU": gpu_fraction(resolve_model(cell["model"]).params, train, cell["model"])}


def _run_trials(study: StudyConfig, root: str, todo: list[dict], verbose: bool, store=None, settled=None) -> set:
    """One Tune experiment over the cells: a grid over them, or with `settled` (while models still
    pretrain) a searcher that hands each out once its model is ready (`study.ready.ReadyCells`).
    Returns the ids of the cells it ran."""
    from ray import tune

    from study.compactor import CompactAsItGoes

    cells = {c["cell_id"]: c for c in todo}
    env = _trial_env(study, root, todo, store)
    trainable = tune.with_resources(tune.with_parameters(run_trial, cells=cells, env=env),
                                    lambda config: _resources(cells[config["cell_id"]], study.train))
    concurrent = _training_pools(todo)[1]
    progress = Progress(todo)
    if not verbose:  # Tune's new console output prints its tables even when silent; ours replaces them
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    if settled is None:
        space, search = {"cell_id": tune.grid_search(list(cells))}, {}
    else:
        from study.ready import ReadyCells

        # no actor kept for reuse: an idle one would hold the CPU a model still pretraining waits for
        space, search = {}, {"search_alg": ReadyCells(list(cells.values()), settled), "num_samples": len(cells),
                             "reuse_actors": False}
    tuner = tune.Tuner(
        trainable,
        param_space=space,
        tune_config=tune.TuneConfig(**{"max_concurrent_trials": concurrent, "reuse_actors": True, **search}),
        run_config=tune.RunConfig(
            name=_attempt_name(root), storage_path=_tune_storage(root), verbose=2 if verbose else 0,
            callbacks=[progress, CompactAsItGoes(root)], failure_config=tune.FailureConfig(max_failures=study.retries),
        ),
    )
    service = _training_service(root, todo)  # before the trials: their fit() finds it by name
    try:
        grid = tuner.fit()
    except KeyboardInterrupt:
        Progress.say("interrupted; records written so far are kept; run the same command to resume")
        raise
    finally:
        _say_restarts(service.stop())
    _record_crashed_trials(study, root, grid, cells)
    return {(result.config or {}).get("cell_id") for result in grid}


def _say_restarts(reports: list[dict]) -> None:
    """A server generation that ended on an error (its cell was put back and ran again): say why."""
    for report in reports:
        for error in report["errors"]:
            Progress.say(f"a training server restarted after: {error.strip().splitlines()[-1][:300]}")


def _training_service(root: str, cells: list[dict]):
    """The training service for these cells' placements (`fsv.train.service`); `.stop()` ends it."""
    from fsv.train.service import TrainService

    return TrainService(_training_pools(cells)[0], f"{root}/train")


def _training_pools(todo: list[dict]) -> tuple[list, int]:
    """(servers per training placement, max concurrent trials). Servers hold their workers' CPUs
    for the whole run (`fsv.train.service.pool_sizes` leaves a CPU to in-context trials);
    a trial whose cell a server trains holds no CPU, and each server gets two such trials, one
    training while the other evaluates its model; the CPUs left run the other trials.
    2 cores, 1-worker training + in-context cells: 1 server + 1 CPU -> 2 + 1 = 3 trials at a time;
    training only: 2 servers -> 4. FSV_TRAIN_SERVICE=0: one fit per cell, as before."""
    import ray

    from fsv.train.service import placement, pool_sizes

    cpus = int(ray.cluster_resources().get("CPU", 1))
    gpus = int(ray.cluster_resources().get("GPU", 0))
    pools = pool_sizes(todo, cpus, gpus) if os.environ.get("FSV_TRAIN_SERVICE", "1") != "0" else []
    served = {placement(t) for t, _ in pools}
    held = sum(n * t["workers"] * t["cpus_per_worker"] for t, n in pools)
    alone = [c for c in todo if c["train"] is None or placement(c["train"]) not in served]
    per_trial = max((1 if c["train"] is None else c["train"]["workers"] * c["train"]["cpus_per_worker"] for c in alone),
                    default=1)
    feeders = 2 * sum(n for _, n in pools)
    return pools, max(1, feeders + (max(0, cpus - held) // per_trial if alone else 0))


def _trial_env(study: StudyConfig, root: str, cells: list[dict], store=None) -> dict:
    """What every trial needs to know of its study (name, folder, Bayes table, W&B, retries, the
    model store its node fetches ladder models from)."""
    return {"study": study.name, "study_dir": root, "bayes": bayes_table(study, cells),
            "wandb": study.wandb.model_dump(), "retries": study.retries, "trust_remote_code": study.trust_remote_code,
            "tune_storage": _tune_storage(root), "models": store.uri if store else None}


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
    from fsv.compaction import read_compacted

    return count_cells(read_compacted(root), cells)


def count_cells(frame, cells: list[dict]) -> dict:
    ids = {c["cell_id"] for c in cells if c.get("phase") != "search"}  # a search plan has no record of its own
    frame = frame[frame["cell_id"].isin(ids)]
    ok = int((frame["status"] == "ok").sum())
    failed = int((frame["status"] == "failed").sum())
    return {"total": len(ids), "ok": ok, "failed": failed, "missing": len(ids) - ok - failed}


def _analyze(root: str, allow_partial: bool) -> None:
    from analysis import analyze

    try:
        analyze(root, allow_partial=allow_partial)  # remote records are read where they lie
        Progress.say(f"analysis: {root}/analysis/report.md, figures in {root}/analysis/figures")
    except FsvError as exc:
        Progress.say(f"analysis refused: {exc}")
    except Exception as exc:  # noqa: BLE001 - the records are safe; say what went wrong
        Progress.say(f"analysis failed ({type(exc).__name__}: {exc}); records are intact; retry with `fsv analyze {root}`")
        print(exc, file=sys.stderr)
