"""A long-lived Ray Train worker group that serves training cells from a queue.

Why: one `TorchTrainer.fit()` per cell pays ~20 s of Ray Train start-up (controller, worker actors,
train context, helper actors) for ~0.2 s of training on world-xs (`benchmarks/train_overhead.py`).
What was measured (ray 2.60, 2 cores, `../shared/notes/train-overhead.md`) and chosen:
- **chosen: a server** -- one `TorchTrainer.fit()` whose workers loop over cells: rank 0 takes the
  next cell from a queue actor and shares it with `ray.train.collective.broadcast_from_rank_zero`;
  every rank runs the cell's ordinary per-worker loop (`fsv.train.worker:train_loop_per_worker`:
  its own `deepspeed.initialize`, its own `ray.train.report` with its own checkpoint), so DeepSpeed
  still runs in a Ray Train worker group, ZeRO 0-3, any number of workers and GPUs. Measured in one
  run of `benchmarks/train_overhead.py` (sft on world-xs, 8 adaptations a cell, 10 steps each, 2
  busy cores): fixed cost per cell 37.4 s per fit -> 0.49 s served (1 worker, ZeRO-0); 47.4 ->
  1.25 s (2 workers, ZeRO-2); 55.3 -> 13.6 s (2 workers, ZeRO-3: 8 ZeRO-3 engines set up and
  gathered per cell, which Ray does not pay for). A server's first cell waits for its start-up.
- rejected: several cells per fit (needs >= 8 cells known up front to reach ~3 s a cell; a failure
  re-runs its whole group; a search submits its cells one trial at a time).
- rejected: Ray Train's local mode (no process group, so no ZeRO-2/3 or several workers; keeps only
  the last checkpoint; raises inside a Tune trial).
How it stays correct:
- each server generation is its own Ray Train run with its own name (reusing a `RunConfig` name
  restores that run's old checkpoints), and ends after `RETIRE_AFTER` cells: re-initialising a
  DeepSpeed engine leaks a little host memory (DeepSpeed issue 7204); a new generation then starts.
- a crashed worker (or any failure of the worker group) ends that server's `fit()`; the queue puts
  back only the cell that server held (at most `MAX_DELIVERIES` times, then it is failed), and a new
  generation starts. Other servers' cells are untouched. A cell that raises is failed with its
  traceback and also ends its generation (another rank may be waiting in a collective).
- trl's loop (rlhf: DPO, GRPO) is served too: a served cell runs the per-worker loop it names
  (`SERVED_LOOPS`), and trl's trainers already run one after another in one worker (a cell trains a
  policy per n and seed). Served, an rlhf cell costs its training, not ~20 s of Ray Train start-up
  more (the default study's 38 rlhf fits took 12 of its 59 min, half of it start-up).
- the queue is a named actor per placement (workers, ZeRO stage, GPU, CPUs per worker) in the
  driver's job, owned by the driver: `launch.fit` finds it by name, or falls back to a fit of its own.
"""

from __future__ import annotations

import asyncio
import os
import traceback
from collections import deque

NAMESPACE = "fsv"
# cells per server generation: rank 0 grew 1.7 MB a cell (ZeRO-0), 4.1 (ZeRO-2), 7.4 (ZeRO-3; 8
# engines a cell), so a generation ends under ~300 MB of growth; its successor costs one start-up
RETIRE_AFTER = 40
MAX_DELIVERIES = 2  # a cell whose server dies twice under it is failed, not retried for ever
MAX_IDLE_FAILURES = 3  # generations in a row that fail before their first cell: the server gives up
# re-entrant per-worker loops: fsv's DeepSpeed engine loop, and trl's (rlhf)
SERVED_LOOPS = {"fsv.train.worker:train_loop_per_worker", "fsv.regimes.rlhf:train_loop_per_worker"}


def placement(train: dict) -> str:
    device = "gpu" if train["use_gpu"] else "cpu"
    return f"w{train['workers']}-z{train['zero_stage']}-{device}-c{train['cpus_per_worker']}"


def queue_name(train: dict) -> str:
    """The queue's name: this Ray job's (so two studies on one cluster never share) and placement."""
    import ray

    return f"fsv-train-{ray.get_runtime_context().get_job_id()}-{placement(train)}"


def find_queue(config: dict):
    """The queue serving this config's placement and loop, or None (then fit runs a fit of its own)."""
    import ray

    from fsv.train.launch import DEFAULT_LOOP

    if not ray.is_initialized() or config.get("loop", DEFAULT_LOOP) not in SERVED_LOOPS:
        return None
    try:
        return ray.get_actor(queue_name(config["train"]), namespace=NAMESPACE)
    except ValueError:
        return None


def run_cell(queue, key: str, config: dict) -> tuple[dict, object]:
    """Submit a cell and wait for it: (the worker's reported metrics, its stored `Checkpoint`)."""
    import ray

    ray.get(queue.submit.remote(key, config))
    outcome = ray.get(queue.result.remote(key))
    if outcome[0] != "ok":
        raise RuntimeError(f"training cell {key} failed in the training service:\n{outcome[1]}")
    return outcome[1], outcome[2]


class CellQueue:
    """Cells waiting, cells in flight (by server), and outcomes; an asyncio actor, so `take` and
    `result` wait without holding a thread."""

    def __init__(self, servers: int = 1):
        self.pending, self.configs, self.outcomes = deque(), {}, {}
        self.servers, self.broken = servers, None  # servers still up; why the last one gave up
        self.in_flight: dict[str, tuple[str, int]] = {}  # key -> (server, pid of its rank 0)
        self.deliveries: dict[str, int] = {}
        self.pids: dict[str, int] = {}  # server -> pid of its rank 0 (to watch its memory, or kill it)
        self.stopped = False
        self.changed = asyncio.Condition()

    async def submit(self, key: str, config: dict) -> None:
        async with self.changed:
            self.configs[key], self.deliveries[key] = config, 0
            self.outcomes.pop(key, None)
            if self.broken:
                self.outcomes[key] = ("failed", self.broken)
            else:
                self.pending.append(key)
            self.changed.notify_all()

    async def give_up(self, why: str) -> None:
        """A server that cannot start: when none is left, every waiting cell fails with `why`."""
        async with self.changed:
            self.servers -= 1
            if self.servers > 0:
                return
            self.broken = f"no training server could start: {why}"
            while self.pending:
                self.outcomes[self.pending.popleft()] = ("failed", self.broken)
            self.changed.notify_all()

    async def take(self, server: str, pid: int, wait_s: float = 2.0):
        """("cell", key, config), ("wait",) after `wait_s` without work, or ("stop",)."""
        async with self.changed:
            try:
                await asyncio.wait_for(self.changed.wait_for(lambda: self.pending or self.stopped), wait_s)
            except asyncio.TimeoutError:
                return ("wait",)
            if self.stopped:
                return ("stop",)
            key = self.pending.popleft()
            self.in_flight[key], self.pids[server] = (server, pid), pid
            self.deliveries[key] += 1
            return ("cell", key, self.configs[key])

    async def finish(self, key: str, outcome: tuple) -> None:
        async with self.changed:
            self.in_flight.pop(key, None)
            self.outcomes[key] = outcome
            self.configs.pop(key, None)
            self.changed.notify_all()

    async def requeue(self, server: str, why: str) -> list[str]:
        """Put back the cells `server` held when its worker group ended (first in line)."""
        keys = [k for k, (s, _) in self.in_flight.items() if s == server]
        for key in keys:
            if self.deliveries[key] >= MAX_DELIVERIES:
                await self.finish(key, ("failed", f"its training server died {MAX_DELIVERIES} times under it: {why}"))
                continue
            async with self.changed:
                del self.in_flight[key]
                self.pending.appendleft(key)
                self.changed.notify_all()
        return keys

    async def result(self, key: str) -> tuple:
        async with self.changed:
            await self.changed.wait_for(lambda: key in self.outcomes)
            return self.outcomes.pop(key)

    async def stop(self) -> None:
        async with self.changed:
            self.stopped = True
            self.changed.notify_all()

    def is_stopped(self) -> bool:
        return self.stopped

    def state(self) -> dict:
        return {"pending": list(self.pending), "in_flight": dict(self.in_flight), "deliveries": dict(self.deliveries),
                "pids": dict(self.pids)}


def serve_cells(config: dict) -> None:
    """Every worker of a server: take cells until told to stop or `retire_after` are done; each cell
    runs the ordinary per-worker loop, which reports its own metrics and checkpoint."""
    import ray
    import ray.train
    from ray.train.collective import broadcast_from_rank_zero

    from fsv.train.launch import DEFAULT_LOOP, loop_function

    rank = ray.train.get_context().get_world_rank()
    queue = ray.get_actor(config["queue"], namespace=NAMESPACE) if rank == 0 else None
    for _ in range(config["retire_after"]):
        item = broadcast_from_rank_zero(_next_cell(queue, config["server"]) if rank == 0 else None)
        if item[0] == "stop":
            return
        _, key, cell = item
        try:
            loop_function(cell.get("loop", DEFAULT_LOOP))(cell)
        except Exception:
            if rank == 0:
                ray.get(queue.finish.remote(key, ("failed", traceback.format_exc(limit=20)[-4000:])))
            raise  # the other ranks may be stuck in a collective: end this generation
        if rank == 0:
            reported = ray.train.get_all_reported_checkpoints()[-1]
            ray.get(queue.finish.remote(key, ("ok", dict(reported.metrics), reported.checkpoint)))


def _next_cell(queue, server: str) -> tuple:
    import ray

    while (item := ray.get(queue.take.remote(server, os.getpid())))[0] == "wait":
        pass
    return item


class Server:
    """One slot of the pool: runs server generations (each one `TorchTrainer.fit()`) until the
    queue stops; after each, puts back the cell it held."""

    def __init__(self, queue: str, train: dict, storage_path: str, prefix: str, retire_after: int):
        self.queue, self.train, self.storage_path = queue, train, storage_path
        self.prefix, self.retire_after = prefix, retire_after
        self.generations, self.errors = 0, []

    def run(self) -> dict:
        import ray

        queue = ray.get_actor(self.queue, namespace=NAMESPACE)
        idle_failures = 0
        while not ray.get(queue.is_stopped.remote()):
            name = f"{self.prefix}-{self.generations:03d}"
            self.generations += 1
            error = self._generation(name)
            if error:
                self.errors.append(error[-2000:])
            held = ray.get(queue.requeue.remote(name, error or "it retired"))
            served = name in ray.get(queue.state.remote())["pids"]
            idle_failures = idle_failures + 1 if error and not served and not held else 0
            if idle_failures >= MAX_IDLE_FAILURES:
                ray.get(queue.give_up.remote(error))
                break
        return {"generations": self.generations, "errors": self.errors}

    def _generation(self, name: str) -> str | None:
        from ray.train import CheckpointConfig, FailureConfig, RunConfig
        from ray.train.torch import TorchConfig, TorchTrainer

        from fsv.train.launch import scaling_config

        trainer = TorchTrainer(
            serve_cells,
            train_loop_config={"queue": self.queue, "server": name, "retire_after": self.retire_after},
            scaling_config=scaling_config(self.train),
            torch_config=TorchConfig(backend="nccl" if self.train["use_gpu"] else "gloo"),
            run_config=RunConfig(name=name, storage_path=self.storage_path,
                                 failure_config=FailureConfig(max_failures=0),
                                 checkpoint_config=CheckpointConfig(num_to_keep=None)),
        )
        try:
            result = trainer.fit()
        except Exception:  # noqa: BLE001 - a dead worker group: its cell goes back in the queue
            return traceback.format_exc(limit=8)
        return str(result.error) if result.error else None


class TrainService:
    """The driver's handle: one queue and `servers` server slots per placement; `stop()` ends them."""

    def __init__(self, pools: list[tuple[dict, int]], storage_path: str, retire_after: int = RETIRE_AFTER):
        import uuid

        import ray

        queue_cls = ray.remote(num_cpus=0)(CellQueue)
        server_cls = ray.remote(num_cpus=0, max_restarts=0)(Server)
        self.queues, self.servers, self.runs = [], [], []
        tag = uuid.uuid4().hex[:8]  # each service's runs are new Ray Train runs, never restored ones
        for train, count in pools:
            name = queue_name(train)
            self.queues.append(queue_cls.options(name=name, namespace=NAMESPACE).remote(count))
            for slot in range(count):
                server = server_cls.remote(name, train, storage_path, f"service-{tag}-{placement(train)}-{slot}",
                                           retire_after)
                self.servers.append(server)
                self.runs.append(server.run.remote())

    def stop(self, timeout_s: float = 120) -> list[dict]:
        """Tell the servers to finish; wait for their generations to end; free the actors."""
        import ray

        if not self.queues:
            return []
        ray.get([q.stop.remote() for q in self.queues])
        done, _ = ray.wait(self.runs, num_returns=len(self.runs), timeout=timeout_s)
        reports = [ray.get(r) for r in done]
        for actor in self.servers + self.queues:
            ray.kill(actor)
        return reports

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def pool_sizes(cells: list[dict], cpus: int, gpus: int) -> list[tuple[dict, int]]:
    """How many servers each training placement gets, given the cluster's CPUs and GPUs.

    A server's workers hold their CPUs (GPUs) for the service's lifetime, so the pool leaves enough
    for the largest of what must still run beside it: an in-context trial (1 CPU, and 1 GPU on a
    GPU cluster: with every CPU in a server it would wait for ever), a cell of a regime not served
    or of a placement left without a server (each a fit of its own).
    On 2 cores, 1-worker cells: training only -> 2 servers (2 cells at a time, as with one fit per
    cell); training with in-context cells -> 1 server + 1 CPU for those (served cells then
    train one at a time, at ~0.5 s of fixed cost each instead of ~20 s).
    Placements take turns, the most common first, one server per turn, never more than their cells.
    """
    from collections import Counter

    def holds(t: dict) -> dict:
        return {"CPU": t["workers"] * t["cpus_per_worker"], "GPU": t["workers"] if t["use_gpu"] else 0}

    served = [c for c in cells if c.get("train") is not None]
    trains = {placement(c["train"]): c["train"] for c in served}
    counts = Counter(placement(c["train"]) for c in served)
    beside = [{"CPU": 1, "GPU": int(gpus > 0)}] if any(c.get("train") is None for c in cells) else []
    left = {"CPU": cpus, "GPU": gpus}
    sizes = Counter()
    while True:
        added = False
        for key, count in counts.most_common():
            after = {u: left[u] - holds(trains[key])[u] for u in left}
            unserved = beside + [holds(trains[k]) for k in trains if not sizes[k] and k != key]
            fits = all(after[u] >= max([h[u] for h in unserved], default=0) for u in after)
            if sizes[key] < count and fits:
                sizes[key], left, added = sizes[key] + 1, after, True
        if not added:
            return [(trains[k], n) for k, n in sizes.items()]
