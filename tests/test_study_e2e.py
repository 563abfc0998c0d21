"""End to end on a real local Ray cluster: the smoke study's records, an idempotent re-run that
starts no trial, and a resume after `kill -9` of the driver that records every cell exactly once."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "study" / "smoke.yaml"

pytestmark = pytest.mark.slow


def fsv(*args, timeout=900, **kw):
    return subprocess.run([sys.executable, "-m", "fsv.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, **kw)


def _cells(study_dir: Path) -> list[dict]:
    return json.loads((study_dir / "cells.json").read_text())["cells"]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, fsv_env):
    storage = tmp_path_factory.mktemp("smoke")
    t0 = time.time()
    proc = fsv("run", str(SMOKE), "--storage", str(storage), env=fsv_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return storage / "smoke", proc, time.time() - t0


def test_smoke_study_leaves_one_record_per_cell(smoke_run):
    study_dir, proc, wall = smoke_run
    records = pd.read_parquet(study_dir / "records")
    cells = _cells(study_dir)
    assert len(records) == len(cells) and set(records.cell_id) == {c["cell_id"] for c in cells}
    assert (records.status == "ok").all(), records.error.dropna().tolist()[:1]
    assert records.accuracy.between(0, 1).all() and (records.n_eval > 0).all()
    assert records.chance.eq(0.25).all() and records.model_params.gt(0).all()
    few = records[records.regime == "few_shot"]
    assert few.bayes_accuracy.notna().all() and few.demo_indices.str.len().gt(2).all()
    print(f"smoke study wall time {wall:.0f} s")


def test_smoke_study_tracks_each_trial_in_wandb_offline(smoke_run):
    study_dir, _, _ = smoke_run
    runs = list((study_dir / "wandb" / "wandb").glob("offline-run-*"))
    assert len(runs) >= len(_cells(study_dir))


def test_status_counts_cells(smoke_run, fsv_env):
    study_dir, _, _ = smoke_run
    proc = fsv("status", str(study_dir), env=fsv_env, timeout=120)
    n = len(_cells(study_dir))
    assert proc.returncode == 0 and f"{n} ok, 0 failed, 0 missing, {n} cells" in proc.stdout


def test_rerun_is_idempotent_and_starts_no_trial(smoke_run, fsv_env):
    study_dir, _, _ = smoke_run
    before = {p.name: p.stat().st_mtime_ns for p in (study_dir / "records").glob("*.parquet")}
    experiments = len(list((study_dir / "tune").glob("run-*")))
    proc = fsv("run", str(SMOKE), "--storage", str(study_dir.parent), "--no-analyze", env=fsv_env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "0 to run" in proc.stderr
    after = {p.name: p.stat().st_mtime_ns for p in (study_dir / "records").glob("*.parquet")}
    assert before == after
    assert len(list((study_dir / "tune").glob("run-*"))) == experiments  # no new Tune experiment


def test_kill_9_then_resume_records_every_cell_exactly_once(tmp_path, fsv_env, smoke_run):
    """Killed after the driver compacted records in the background (a part every 2 trials here,
    every 500 in a study), so the resume reads a part and the files written since."""
    storage = tmp_path / "killed"
    cmd = [sys.executable, "-m", "fsv.cli", "run", str(SMOKE), "--storage", str(storage), "--no-analyze"]
    driver = subprocess.Popen(cmd, cwd=ROOT, env={**fsv_env, "FSV_COMPACT_EVERY": "2"}, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, start_new_session=True)
    records = storage / "smoke" / "records"
    parts = lambda: list((records / "_compact").glob("part-*.parquet"))  # noqa: E731
    deadline = time.time() + 600
    while time.time() < deadline and (len(list(records.glob("*.parquet"))) < 3 or not parts()):
        time.sleep(0.5)
    os.killpg(driver.pid, signal.SIGKILL)  # the driver and everything it started, mid-study
    driver.wait()
    partial = len(list(records.glob("*.parquet")))
    assert 3 <= partial and parts(), "the driver compacted no records while trials ran"
    proc = fsv("run", str(SMOKE), "--storage", str(storage), "--no-analyze", env=fsv_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    frame = pd.read_parquet(records)
    cells = _cells(storage / "smoke")
    assert len(frame) == len(cells) and frame.cell_id.is_unique and (frame.status == "ok").all()
    assert set(frame.cell_id) == {c["cell_id"] for c in cells}


def test_models_shows_the_ladder_a_study_pretrained_as_cached_under_that_study(smoke_run, fsv_env):
    proc = fsv("models", "--study", str(SMOKE), env=fsv_env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {line.split()[0]: line for line in proc.stdout.splitlines()[1:]}
    assert "cached (study smoke)" in proc.stdout.splitlines()[0]
    assert rows["world-xs"].endswith("pretrain seeds [0]") and rows["world-xxl"].endswith("no")
    default = fsv("models", env=fsv_env, timeout=120)  # other pretraining: another cache entry
    assert default.returncode == 0 and "world-xs" in default.stdout and "pretrain seeds [0]" not in default.stdout
