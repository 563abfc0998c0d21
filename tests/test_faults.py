"""The smoke study under faults, on a real local Ray cluster with real signals: secrets in the
environment reach no file fsv writes; `kill -9` during pretraining, trials and a record write, then the
same command, leaves every cell exactly one record equal to an uninterrupted run's (apart from
timings), and pretraining again gives bit-identical weights. The long run: benchmarks/kills.py."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.kills import SMOKE, compare, kill_at, run_once, weights  # noqa: E402

pytestmark = pytest.mark.slow
SECRETS = {"WANDB_API_KEY": "wandbsecret" + "7" * 29, "RAY_AUTH_TOKEN": "raysecret" + "3" * 31}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, fsv_env):
    """The smoke study, once, with both secrets in its environment."""
    storage = tmp_path_factory.mktemp("uninterrupted")
    proc = run_once(SMOKE, storage, {**fsv_env, **SECRETS}, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return storage / "smoke", proc


def test_no_secret_reaches_a_file_fsv_writes(uninterrupted):
    study_dir, proc = uninterrupted
    files = [p for p in study_dir.rglob("*") if p.is_file()]
    assert any(p.suffix == ".parquet" for p in files) and (study_dir / "cells.json").is_file()
    assert any("wandb" in p.parts for p in files) and any("tune" in p.parts for p in files)
    for secret in SECRETS.values():
        leaked = [str(p) for p in files if secret.encode() in p.read_bytes()]
        assert not leaked and secret not in proc.stdout + proc.stderr, leaked


def test_kill_9_anywhere_then_resume_equals_an_uninterrupted_run(uninterrupted, tmp_path, fsv_env, fsv_cache):
    cache = tmp_path / "cache"  # a cache of its own: the killed run pretrains again
    env = {**fsv_env, "FSV_CACHE": str(cache)}
    rng = random.Random(0)
    kills = [("pretraining", rng.uniform(0, 15)), ("record_write", 0.0), ("trials", rng.uniform(0, 2))]
    seen = [kill_at(SMOKE, tmp_path, env, stage, delay, patience=600) for stage, delay in kills]
    print(seen)
    assert all(s["reached"] for s in seen), seen
    final = run_once(SMOKE, tmp_path, env, timeout=900)
    assert final.returncode == 0, final.stderr[-3000:]
    assert compare(uninterrupted[0], tmp_path / "smoke") == []
    base = weights(fsv_cache)
    again = weights(cache)
    assert again and all(base.get(name) == digest for name, digest in again.items())  # bit-identical weights
    assert not list(cache.glob("models/*.partial/fsv-model.json"))


def test_a_killed_ray_train_worker_fails_its_cell_after_retries_and_a_rerun_runs_only_it(uninterrupted, tmp_path,
                                                                                           fsv_env):
    from benchmarks.worker_kills import doomed_attempts, run_killing_workers, training_study
    from fsv.records import read_records

    study = training_study(tmp_path, cells=2, retries=1)  # world-xs is cached by the uninterrupted run
    env = {**fsv_env, "FSV_TRAIN_SERVICE": "0"}  # a fit per trial: each attempt is a new worker process
    rc, killed, err = run_killing_workers(study, tmp_path, env, doomed_attempts(2, [0], 1), random.Random(0),
                                          timeout=900)
    assert rc == 1 and len(killed) == 2, (killed, err[-3000:])  # both attempts of the first sft trial
    frame = read_records(tmp_path / "worker-kills")
    failed = frame[frame.status == "failed"]
    assert len(failed) == 1 and failed.phase.iloc[0] == "select" and failed.attempts.iloc[0] == 2 and failed.error.iloc[0]
    assert json.loads(failed.config.iloc[0])["hparams"]["lr"] == 1e-3  # the first to run
    assert (frame[frame.status != "failed"].status == "ok").all()
    rerun = run_once(study, tmp_path, env, timeout=900)
    assert rerun.returncode == 0 and "2 already recorded ok, 1 to run" in rerun.stderr, rerun.stderr[-3000:]
    assert (read_records(tmp_path / "worker-kills").status == "ok").all()
