"""Two runs, one storage: a study folder held by a live `fsv run` is refused at once (exit 2, naming
the other run's host and pid and how to take over); a lease left by a dead run never blocks. Local
folders and `s3://` (the local moto S3 server of test_remote_storage), with real processes."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from study.lease import LEASE, Lease, StudyInUse, hold
from test_remote_storage import BUCKET, s3  # noqa: F401 - the moto S3 server fixture

ROOT = Path(__file__).resolve().parents[1]
HOLD = "import sys, time; from study.lease import hold\nwith hold(sys.argv[1]):\n print('held', flush=True); time.sleep(600)"


def _holder(root: str, env=None) -> subprocess.Popen:
    """A real process on this host that holds the lease of `root`."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, root], cwd=ROOT, stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_live_run_on_this_host_is_refused_naming_host_pid_and_take_over(tmp_path):
    root = str(tmp_path / "study")
    holder = _holder(root)
    try:
        with pytest.raises(StudyInUse) as refused:
            Lease(root).acquire()
        message = str(refused.value)
        assert f"host {socket.gethostname()}" in message and f"pid {holder.pid}" in message
        assert "--take-over" in message and LEASE in message
    finally:
        holder.kill()
        holder.wait()
    with hold(root):  # the holder was killed (-9): its lease is stale at once
        pass
    assert not (tmp_path / "study" / LEASE).exists()  # given back at the end


def test_fsv_run_is_refused_with_exit_2_before_writing_anything(tmp_path):
    study = tmp_path / "s.yaml"
    study.write_text(yaml.safe_dump({"name": "s", "models": ["world-xs"],
                                     "regimes": {"zero_shot": {"descriptions": ["none"]}}}))
    holder = _holder(str(tmp_path / "out" / "s"))
    try:
        t0 = time.time()
        proc = subprocess.run([sys.executable, "-m", "fsv.cli", "run", str(study), "--storage", str(tmp_path / "out")],
                              capture_output=True, text=True, timeout=120, cwd=ROOT)
        assert proc.returncode == 2 and f"pid {holder.pid}" in proc.stderr and "--take-over" in proc.stderr
        assert "Traceback" not in proc.stderr and time.time() - t0 < 60
        assert sorted(p.name for p in (tmp_path / "out" / "s").iterdir()) == [LEASE]
    finally:
        holder.kill()
        holder.wait()


def _foreign(path: Path, expires_in: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"host": "node-7", "pid": 4242, "token": "x", "started": time.time() - 60,
                                "expires": time.time() + expires_in}))


def test_another_hosts_lease_blocks_until_it_expires_and_take_over_overrides(tmp_path):
    root = tmp_path / "study"
    _foreign(root / LEASE, expires_in=300)
    with pytest.raises(StudyInUse, match="host node-7, pid 4242"):
        Lease(str(root)).acquire()
    with hold(str(root), take_over=True) as lease:
        assert json.loads((root / LEASE).read_text())["token"] == lease.mine["token"]
    _foreign(root / LEASE, expires_in=-1)  # expired: its run stopped renewing it
    with hold(str(root)):
        pass
    (root / LEASE).write_text("{ torn")  # a torn lease proves nobody holds it
    with hold(str(root)):
        pass


def test_s3_lease_refuses_a_second_run_renews_and_expires(s3, monkeypatch):  # noqa: F811
    for key, value in s3.items():
        monkeypatch.setenv(key, value)
    root = f"s3://{BUCKET}/leases/study"
    first = Lease(root, ttl=1.5)
    first.acquire()
    try:
        expires = json.loads(first.filesystem.open_input_stream(first.path).read())["expires"]
        with pytest.raises(StudyInUse, match=f"pid {first.mine['pid']}"):
            Lease(root).acquire()
        time.sleep(1.5)
        renewed = json.loads(first.filesystem.open_input_stream(first.path).read())["expires"]
        assert renewed > expires  # the heartbeat keeps it alive
    finally:
        first.release()
    with first.filesystem.open_output_stream(first.path) as out:  # a dead run on another host
        out.write(json.dumps({"host": "node-7", "pid": 1, "token": "t", "expires": time.time() - 1}).encode())
    with hold(root) as lease:
        assert json.loads(lease.filesystem.open_input_stream(lease.path).read())["token"] == lease.mine["token"]
