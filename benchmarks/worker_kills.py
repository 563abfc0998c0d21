"""Ray Train workers die: SIGKILL a real worker process of running training cells (8 adaptations of 400 steps, so that the kill lands while it trains) (about one cell in
five, every attempt of it), by pid, from outside. Each such cell is retried up to `retries` and then
recorded `failed` with its error; the rest of the study completes; a re-run runs only the failed
cells, and they end `ok`.

The study: world-xs (the smoke study's world and pretraining, so its model is cached after one smoke
run), one zero-shot cell and N sft selection trials (one per learning rate), one training trial at a
time (a worker takes both CPUs) and each in a Ray Train fit of its own (`FSV_TRAIN_SERVICE=0`; a
killed worker of the long-lived training service re-runs its cell instead, tests/test_train_service.py),
so every new `RayTrainWorker` process in the driver's tree is the next attempt of the next cell.

    python benchmarks/worker_kills.py [--cells 10] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.kills import SMOKE, _alive, _tree, fsv_command  # noqa: E402


def training_study(folder: Path, cells: int, retries: int = 1) -> Path:
    smoke = yaml.safe_load(SMOKE.read_text())
    study = {"name": "worker-kills", "models": ["world-xs"], "tasks": ["world"], "seeds": [0],
             "world": smoke["world"], "pretrain": smoke["pretrain"], "retries": retries, "analyze": False,
             # one selection trial per learning rate: N training trials, run one at a time in order
             "regimes": {"zero_shot": {"descriptions": ["none"]},
                         "sft": {"n": [2], "seeds": [0], "steps": [400], "batch": 4,  # x 8 held-out tasks
                                 "lr": [round(1e-3 * (i + 1), 6) for i in range(cells)]}},
             "train": {"workers": 1, "cpus_per_worker": os.cpu_count() or 1, "zero_stage": 0},
             "wandb": {"mode": "disabled"}}
    path = folder / "worker-kills.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def doomed_attempts(cells: int, doomed: list[int], retries: int) -> set[int]:
    """Ordinals (1-based) of the worker processes to kill: every attempt of the doomed cells (the
    cells run one at a time, in order, an ok cell in one attempt, a doomed one in 1 + retries)."""
    ordinals, n = set(), 0
    for cell in range(cells):
        attempts = 1 + retries if cell in doomed else 1
        if cell in doomed:
            ordinals |= set(range(n + 1, n + attempts + 1))
        n += attempts
    return ordinals


# A worker is killed once it has spent this much CPU time of its own: past Ray Train's worker-group
# start-up (about 1.3 s of CPU: Ray Train V2 retries a worker that dies there inside the same fit,
# without limit, so the kill would not fail the attempt), well inside its training (6.7-10.6 s of CPU
# at exit). CPU time, not wall time: a loaded machine stretches the start-up's wall time past any
# fixed delay, not its CPU time.
KILL_AFTER_CPU_S = (3.5, 4.5)


def _cpu_seconds(proc) -> float | None:
    try:
        times = proc.cpu_times()
    except Exception:  # noqa: BLE001 - gone already
        return None
    return times.user + times.system


def run_killing_workers(study: Path, storage: Path, env: dict, kill: set[int], rng: random.Random,
                        timeout: float = 1800) -> tuple[int, list[dict], str]:
    """Run the study; SIGKILL the worker processes whose ordinal is in `kill` once each has used
    KILL_AFTER_CPU_S of CPU (drawn per worker); (exit status, what was killed, stderr)."""
    with tempfile.TemporaryFile("w+") as err:
        driver = subprocess.Popen(fsv_command(study, storage), cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                  stderr=err, start_new_session=True)
        seen, doomed, killed, deadline = {}, {}, [], time.time() + timeout
        while driver.poll() is None and time.time() < deadline:
            for proc in _alive(_tree(driver.pid)):
                try:
                    title = " ".join(proc.cmdline())
                except Exception:  # noqa: BLE001
                    continue
                if "RayTrainWorker" in title and proc.pid not in seen:
                    seen[proc.pid] = len(seen) + 1
                    if seen[proc.pid] in kill:
                        doomed[proc.pid] = (proc, rng.uniform(*KILL_AFTER_CPU_S))
            for pid, (proc, after) in list(doomed.items()):
                cpu = _cpu_seconds(proc)
                if cpu is None:  # it ended before the kill: the attempt stands
                    del doomed[pid]
                elif cpu >= after:
                    proc.kill()
                    killed.append({"worker": seen[pid], "pid": pid, "cpu_s": round(cpu, 2)})
                    del doomed[pid]
            time.sleep(0.1)
        driver.wait(timeout=60)
        err.seek(0)
        return driver.returncode, killed, err.read()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    from fsv.records import read_records

    rng = random.Random(args.seed)
    doomed = sorted(rng.sample(range(args.cells), max(1, round(args.cells / 5))))
    with tempfile.TemporaryDirectory(prefix="fsv-worker-kills-") as tmp:
        tmp = Path(tmp)
        env = dict(os.environ, FSV_CACHE=os.environ.get("FSV_CACHE", str(tmp / "cache")), WANDB_MODE="offline",
                   FSV_TRAIN_SERVICE="0")
        study = training_study(tmp, args.cells)
        t0 = time.time()
        rc, killed, err = run_killing_workers(study, tmp, env, doomed_attempts(args.cells, doomed, 1), rng)
        frame = read_records(tmp / "worker-kills")
        sft = frame[frame.phase == "select"].assign(lr=lambda f: f.config.map(lambda c: json.loads(c)["hparams"]["lr"]))
        sft = sft.sort_values("lr")
        print(f"first run: exit {rc}, {time.time() - t0:.0f} s; doomed trials (0-based, by lr): {doomed}; killed {killed}")
        for _, r in sft.iterrows():
            error = r.error.strip().splitlines()[-1][:140] if isinstance(r.error, str) else ""
            print(f"  lr={r.lr:g} {r.status:6} attempts={r.attempts} {error}")
        rerun = subprocess.run(fsv_command(study, tmp), capture_output=True, text=True, cwd=ROOT, env=env)
        after = read_records(tmp / "worker-kills")
        ran = [line for line in rerun.stderr.splitlines() if "to run" in line]
        print(f"re-run: exit {rerun.returncode}; {ran}; now {int((after.status == 'ok').sum())} ok of {len(after)}")
        failed_first = set(sft.loc[sft.status == "failed", "lr"])
        expected = {sorted(sft.lr)[i] for i in doomed}
        good = failed_first == expected and (after.status == "ok").all() and f"{len(expected)} to run" in " ".join(ran)
        print(json.dumps({"doomed_lr": sorted(expected), "failed_lr": sorted(failed_first), "pass": bool(good)}))
        return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())
