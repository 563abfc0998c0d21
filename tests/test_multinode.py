"""A study on a real multi-node Ray cluster on one machine: a head that takes no work (CPU 0, as
on the cloud configs) and worker nodes that each have their own `FSV_CACHE` and offer the CPUs
and `fsv_trial_driver` the trials need, so every trial runs on a worker node while the driver
pretrains on the head's side. The ladder model is published to the study's storage and fetched,
verified, into each worker's own cache; the worker node is killed mid-study and the study
completes on a re-run, each cell recorded exactly once; then the same on S3 (moto)."""

from __future__ import annotations

import shutil
import signal
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from fsv.models.cache import MARKER
from ray_nodes import LocalCluster
from test_remote_storage import BUCKET, _names, s3  # noqa: F401 - the moto S3 server fixture

ROOT = Path(__file__).resolve().parents[1]
STUDY = {"name": "nodes", "models": ["world-xs"], "tasks": ["world"], "seeds": [0, 1],
         "world": {"preset": "quick", "seed": 0}, "pretrain": {"steps": 10, "batch": 8, "seeds": [0]},
         "regimes": {"zero_shot": {"descriptions": ["none", "model"]}, "few_shot": {"k": [1, 4], "episodes": 1}},
         "wandb": {"mode": "offline"}, "analyze": False, "retries": 0}
CELLS = 8


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, s3):  # noqa: F811
    root = tmp_path_factory.mktemp("nodes")
    env = {**os.environ, **s3, "RAY_AUTH_MODE": "disabled", "WANDB_MODE": "offline",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), "FSV_CACHE": str(root / "head-cache")}
    env.pop("RAY_ADDRESS", None)
    nodes = LocalCluster(root, env)
    try:
        nodes.start("head", head=True, cpus=0)
        yield nodes
    finally:
        nodes.stop()


def _worker(cluster, name: str) -> Path:
    cache = cluster.root / f"{name}-cache"
    cluster.start(name, cpus=1, resources='{"fsv_trial_driver": 4}', env={"FSV_CACHE": str(cache)})
    return cache


def _fsv(cluster, *args, wait=True):
    cmd = [sys.executable, "-m", "fsv.cli", *args]
    if not wait:
        return subprocess.Popen(cmd, env=cluster.env, cwd=cluster.root, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
    proc = subprocess.run(cmd, env=cluster.env, cwd=cluster.root, capture_output=True, text=True, timeout=600)
    return proc.returncode, proc.stdout + proc.stderr


def _models(cache: Path) -> list[str]:
    return sorted(p.name for p in (cache / "models").glob("world-xs-*") if (p / MARKER).is_file())


@pytest.mark.slow
def test_trials_on_a_worker_node_fetch_their_model_and_a_lost_node_costs_a_rerun(cluster, s3, tmp_path):  # noqa: F811
    path = tmp_path / "nodes.yaml"
    path.write_text(yaml.safe_dump(STUDY))
    storage = tmp_path / "results"
    first = _worker(cluster, "worker-1")
    t0 = time.time()
    driver = _fsv(cluster, "run", str(path), "--storage", str(storage), "--address", cluster.address, wait=False)
    records = storage / "nodes" / "records"
    while len(list(records.glob("*.parquet"))) < 2:  # mid-study: some cells recorded, others not
        assert driver.poll() is None, driver.stdout.read()[-3000:]
        assert time.time() - t0 < 400, "no records after 400 s"
        time.sleep(0.2)
    cluster.kill("worker-1")
    lost_at = len(list(records.glob("*.parquet")))
    time.sleep(3)
    os.killpg(driver.pid, signal.SIGKILL)  # nothing left to run the trials on: stop the driver too
    driver.wait()
    print(f"worker node lost after {time.time() - t0:.0f} s with {lost_at} of {CELLS} cells recorded")
    assert _models(first) and _models(cluster.root / "head-cache")  # pretrained by the driver, fetched there
    published = storage / "_models" / _models(first)[0]
    assert (published / MARKER).is_file() and (published / "model.safetensors").is_file()

    second = _worker(cluster, "worker-2")  # a fresh node with an empty cache
    rc, out = _fsv(cluster, "run", str(path), "--storage", str(storage), "--address", cluster.address)
    done = len(list(records.glob("*.parquet")))
    assert rc == 0 and f"{CELLS} ok, 0 failed, 0 missing of {CELLS} cells" in out, out[-3000:]
    assert "already recorded ok" in out and "pretraining" not in out, out[-3000:]
    assert done == CELLS and _models(second) == _models(first)
    print(f"re-run completed the study after {time.time() - t0:.0f} s")

    shutil.rmtree(second / "models")  # the same node starts over with an empty cache; models come from S3
    path.write_text(yaml.safe_dump({**STUDY, "seeds": [0]}))
    rc, out = _fsv(cluster, "run", str(path), "--storage", f"s3://{BUCKET}/nodes", "--address", cluster.address)
    assert rc == 0 and "4 ok, 0 failed" in out, out[-3000:]
    assert _models(second) == _models(first)
    assert MARKER in _names(s3, f"{BUCKET}/nodes/_models/{_models(first)[0]}")
    assert len(_names(s3, f"{BUCKET}/nodes/nodes/records")) == 4
    rc, out = _fsv(cluster, "status", f"s3://{BUCKET}/nodes/nodes")  # as from a laptop: only the bucket
    assert rc == 0 and "4 ok, 0 failed, 0 missing" in out, out
    print(f"multi-node test done in {time.time() - t0:.0f} s")


def _overlap(intervals: list[tuple[float, float]]) -> int:
    """The most intervals that held their resources at one instant."""
    return max(sum(s <= t < e for s, e in intervals) for t, _ in intervals)


@pytest.mark.slow
def test_small_trials_share_a_declared_gpu(cluster, tmp_path):
    """A GPU study on a cluster without GPUs is refused (exit 2, the field named); on a node that
    declares one GPU (no CUDA here: trials pick their device by torch.cuda.is_available()), world
    trials ask for 1/8 of it each, so four run on it at once."""
    import json

    study = {**STUDY, "name": "gpu", "seeds": [0], "train": {"use_gpu": True}}
    path = tmp_path / "gpu.yaml"
    path.write_text(yaml.safe_dump(study))
    storage = tmp_path / "results"
    gpu_nodes = [n for n in cluster.nodes if n != "head"]
    for name in gpu_nodes:  # any CPU worker left by the test before
        cluster.kill(name)
    rc, out = _fsv(cluster, "run", str(path), "--storage", str(storage), "--address", cluster.address)
    assert rc == 2 and "train.use_gpu" in out and "no GPUs" in out and "Traceback" not in out, out[-2000:]
    assert not (storage / "gpu").exists()  # refused before anything was written

    cluster.start("gpu-node", cpus=4, gpus=1, resources='{"fsv_trial_driver": 4}',
                  env={"FSV_CACHE": str(cluster.root / "gpu-cache")})
    rc, out = _fsv(cluster, "run", str(path), "--storage", str(storage), "--address", cluster.address)
    assert rc == 0 and "4 ok, 0 failed" in out, out[-3000:]
    results = [json.loads(line) for f in (storage / "gpu" / "tune").rglob("result.json") for line in f.read_text().splitlines()]
    intervals = [(r["trial_start"], r["trial_end"]) for r in results]
    assert len(intervals) == 4 and _overlap(intervals) >= 2, intervals
    frame = __import__("pandas").read_parquet(storage / "gpu" / "records")
    assert set(frame.device) == {"cpu"}  # the declared GPU is Ray's bookkeeping; nothing called CUDA
    rc, out = _fsv(cluster, "status", str(storage / "gpu"), "--hours")  # the cost: GPU-hours held
    gpu_hours = float(out.split(" GPU-hours")[0].split()[-1])
    assert rc == 0 and gpu_hours == pytest.approx(frame.wall_s.sum() * 0.125 / 3600, abs=1e-4), out
    print(f"{_overlap(intervals)} world trials at once on one declared GPU")


@pytest.mark.slow
def test_a_cluster_that_refuses_the_auth_token_is_refused_with_how_to_pass_it(tmp_path):
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "fsv-test-token-0123456789abcdef0123"}
    env.pop("RAY_ADDRESS", None)
    guarded = LocalCluster(tmp_path, env)
    try:
        guarded.start("head", head=True, cpus=1)
        path = tmp_path / "nodes.yaml"
        path.write_text(yaml.safe_dump(STUDY))
        client = {k: v for k, v in env.items() if not k.startswith("RAY_AUTH")}
        proc = subprocess.run([sys.executable, "-m", "fsv.cli", "run", str(path), "--storage", str(tmp_path / "r"),
                               "--address", guarded.address], env=client, capture_output=True, text=True, timeout=300)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 2 and "--address" in out and "RAY_AUTH_MODE=token" in out, out[-2000:]
        assert "RAY_AUTH_TOKEN_PATH" in out and "Traceback" not in out, out[-2000:]
    finally:
        guarded.stop()
