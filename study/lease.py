"""One live `fsv run` per study folder: a lease beside the records.

`STUDY/run.lease` (JSON: host, pid, the process's start time, when the run started, when the lease
expires) is taken before anything is written and given back at the end. A heartbeat thread renews
its expiry every `ttl / 3` seconds, so a lease that is not renewed is stale: its run was killed
(`kill -9`, a lost spot instance), and the next run takes it over without asking. On the same host
a lease whose process is gone is stale at once (the pid is checked, and its start time, so a reused
pid does not keep a dead run's lease alive); from another host only expiry tells.

Local folders take the lease with an exclusive create (`O_EXCL`), which only one process can win.
Object stores (`s3://`, `gs://`) have no such primitive through pyarrow, so a run writes its lease
only when there is none or it is stale, waits a moment and reads it back: a run whose token is not
the one read back lost a race and is refused. A lease held by a live run is refused with exit 2,
naming the other run's host and pid and how to take over (`--take-over`, or delete the file).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from contextlib import contextmanager

from fsv.errors import FsvError

LEASE = "run.lease"
TTL_S = float(os.environ.get("FSV_LEASE_TTL_S", 120))
SETTLE_S = 0.5  # object stores: the wait before reading a just-written lease back


class StudyInUse(FsvError):
    """Another live `fsv run` holds the study folder."""


def _fs(root: str):
    from fsv.records import _fs as records_fs

    return records_fs(root)


def _proc_start(pid: int) -> float | None:
    try:
        import psutil

        return psutil.Process(pid).create_time()
    except Exception:  # noqa: BLE001 - gone, or no permission to look
        return None


def _alive_here(holder: dict) -> bool:
    pid = holder.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    started = _proc_start(pid)
    if started is None:
        return False
    recorded = holder.get("proc_start")
    return recorded is None or abs(started - recorded) < 1.0


def is_stale(holder: dict, now: float | None = None) -> bool:
    if holder.get("host") == socket.gethostname() and not _alive_here(holder):
        return True
    expires = holder.get("expires")
    return not isinstance(expires, (int, float)) or expires < (now or time.time())


def _read(filesystem, path: str) -> dict | None:
    from pyarrow import fs

    if filesystem.get_file_info(path).type == fs.FileType.NotFound:
        return None
    try:
        with filesystem.open_input_stream(path) as handle:
            holder = json.loads(handle.read().decode())
        return holder if isinstance(holder, dict) else {}
    except (ValueError, OSError):
        return {}  # torn or foreign: nobody can prove they hold it; treated as stale


def _refusal(where: str, holder: dict) -> StudyInUse:
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(holder.get("started", 0)))
    return StudyInUse(f"{where} is in use by another fsv run (host {holder.get('host')}, pid {holder.get('pid')}, "
                      f"started {started}; its lease is renewed every {holder.get('ttl', TTL_S) / 3:.0f} s). Wait for it to finish; "
                      f"if that run is dead, run again with --take-over, or delete {where}/{LEASE}")


class Lease:
    def __init__(self, root: str, ttl: float = TTL_S):
        self.root, self.ttl = root.rstrip("/"), ttl
        self.filesystem, base = _fs(self.root)
        self.path = f"{base}/{LEASE}"
        self.remote = "://" in self.root
        pid = os.getpid()
        self.mine = {"host": socket.gethostname(), "pid": pid, "proc_start": _proc_start(pid),
                     "token": uuid.uuid4().hex, "started": time.time()}
        self._stop = threading.Event()
        self._thread = None

    def _payload(self) -> bytes:
        return json.dumps({**self.mine, "expires": time.time() + self.ttl, "ttl": self.ttl}).encode()

    def acquire(self, take_over: bool = False) -> None:
        self.filesystem.create_dir(self.path.rsplit("/", 1)[0], recursive=True)
        holder = _read(self.filesystem, self.path)
        if holder is not None and not take_over and not is_stale(holder):
            raise _refusal(self.root, holder)
        self._take_remote() if self.remote else self._take_local(holder)
        self._thread = threading.Thread(target=self._heartbeat, name="fsv-lease", daemon=True)
        self._thread.start()

    def _take_local(self, holder: dict | None) -> None:
        if holder is not None:  # stale or taken over: set it aside, then create ours exclusively
            aside = f"{self.path}.{uuid.uuid4().hex[:8]}.stale"
            try:
                os.replace(self.path, aside)
            except FileNotFoundError:
                pass
            else:
                moved = _read(self.filesystem, aside) or {}
                if moved.get("token") != holder.get("token"):  # a new run's lease got in between
                    os.replace(aside, self.path)
                    raise _refusal(self.root, moved)
                os.unlink(aside)
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:  # another run got in between
            raise _refusal(self.root, _read(self.filesystem, self.path) or {}) from None
        with os.fdopen(fd, "wb") as handle:
            handle.write(self._payload())

    def _take_remote(self) -> None:
        self._write()
        time.sleep(SETTLE_S)
        now = _read(self.filesystem, self.path) or {}
        if now.get("token") != self.mine["token"]:
            raise _refusal(self.root, now)

    def _write(self) -> None:
        if self.remote:
            with self.filesystem.open_output_stream(self.path) as out:
                out.write(self._payload())
            return
        tmp = f"{self.path}.{uuid.uuid4().hex[:8]}.tmp"
        with open(tmp, "wb") as handle:
            handle.write(self._payload())
        os.replace(tmp, self.path)

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                holder = _read(self.filesystem, self.path) or {}
                if holder.get("token") == self.mine["token"]:
                    self._write()
            except Exception:  # noqa: BLE001 - a failed renewal is retried at the next beat
                pass

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        holder = _read(self.filesystem, self.path) or {}
        if holder.get("token") == self.mine["token"]:
            self.filesystem.delete_file(self.path)


@contextmanager
def hold(root: str, take_over: bool = False):
    """Hold the study folder's lease for the block (refused at once if a live run holds it)."""
    lease = Lease(root)
    lease.acquire(take_over)
    try:
        yield lease
    finally:
        lease.release()
