"""A real multi-node Ray cluster on one machine, for tests: `ray start --head` and `ray start
--address …` processes, each node with its own environment (so its own `FSV_CACHE`), its own
ports and temp dir. Each node runs `ray start --block` in a process group of its own, so a test
stops exactly its nodes (a killed node is a lost node), never anyone else's (`ray stop` would)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RAY = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalCluster:
    def __init__(self, root: Path, env: dict):
        self.root, self.env, self.nodes = Path(root), env, {}
        self.temp = tempfile.mkdtemp(prefix="fsv-ray-", dir="/tmp")  # Unix socket paths stay < 108 bytes
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"

    def _ports(self) -> list[str]:
        return ["--dashboard-agent-listen-port", str(free_port()), "--dashboard-agent-grpc-port", str(free_port()),
                "--runtime-env-agent-port", str(free_port()), "--metrics-export-port", str(free_port()),
                "--node-ip-address", "127.0.0.1", "--disable-usage-stats", "--block"]

    def start(self, name: str, head: bool = False, cpus: int = 0, gpus: int = 0, resources: str = "{}",
              env: dict | None = None, timeout: float = 180, tries: int = 3) -> None:
        """Start a node; a busy machine can time out a worker's first RPCs to the head: try again."""
        for attempt in range(1, tries + 1):
            try:
                return self._start(name, head, cpus, gpus, resources, env, timeout)
            except RuntimeError:
                self.kill(name)
                if attempt == tries or head:
                    raise

    def _start(self, name, head, cpus, gpus, resources, env, timeout) -> None:
        where = (["--head", "--port", str(self.port), "--include-dashboard", "false", "--temp-dir",
                  self.temp] if head else ["--address", self.address])
        log = self.root / f"{name}.log"
        proc = subprocess.Popen([RAY, "start", *where, "--num-cpus", str(cpus), "--num-gpus", str(gpus),
                                 "--resources", resources, *self._ports()], env={**self.env, **(env or {})},
                                stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)
        self.nodes[name] = proc
        deadline = time.time() + timeout
        while "Ray runtime started" not in log.read_text():
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"node {name} did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)

    def kill(self, name: str) -> None:
        """Lose a node: SIGKILL to its whole process group (raylet, agents; its workers follow)."""
        proc = self.nodes.pop(name)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()

    def stop(self) -> None:
        for name in [n for n in self.nodes if n != "head"] + [n for n in self.nodes if n == "head"]:
            self.kill(name)
        shutil.rmtree(self.temp, ignore_errors=True)
