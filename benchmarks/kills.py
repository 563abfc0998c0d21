"""`kill -9` at random moments of a study, then the same command: every cell ends with exactly one
readable record, no half-written model is loaded, and the records equal an uninterrupted run's
apart from the timing fields (fsv.records.TIMING_FIELDS).

Each kill waits for its stage -- `start` (the command just launched), `pretraining` (the driver said
it pretrains), `trials` (records are appearing), `record_write` (a record's temp file exists: killed
between its write and its rename), `training` (a Ray Train worker of a training trial runs) -- then a
seeded random delay, then SIGKILLs the driver's process group (and any process of its tree that
escaped the group). The baseline is the same study run once, uninterrupted, on another model cache,
so the killed run pretrains its models again and their weights are compared file for file.

The kills come in rounds: each round starts the study afresh (its own storage and model cache), kills
it once at each stage in the order a study passes them, then resumes it with the same command and
compares. A single round of many kills would find the small study finished after a few of them (its
later kills land on nothing), so a kill counts as effective only if the study was still running.

    python benchmarks/kills.py [--kills 12] [--rounds 2] [--seed 0] [--train]

`--train` adds an sft axis to the smoke study so that kills can land in training cells.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "study" / "smoke.yaml"
STAGES = ("start", "pretraining", "trials", "record_write", "training")


def fsv_command(study: Path, storage: Path) -> list[str]:
    return [sys.executable, "-m", "fsv.cli", "run", str(study), "--storage", str(storage), "--no-analyze"]


def run_once(study: Path, storage: Path, env: dict, timeout: float = 1800) -> subprocess.CompletedProcess:
    return subprocess.run(fsv_command(study, storage), capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT, env=env)


def _tree(pid: int) -> list:
    import psutil

    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _reached(stage: str, records: Path, log: Path, pid: int, before: set) -> bool:
    if stage == "start":
        return True
    if stage == "pretraining":
        return log.exists() and "pretraining " in log.read_text()
    names = os.listdir(records) if records.is_dir() else []
    if stage == "trials":
        return any(n.endswith(".parquet") for n in names)
    if stage == "record_write":
        return any(n.endswith(".tmp") and n not in before for n in names)  # a new one: a write under way
    return len(names) > 0 and any("RayTrainWorker" in _title(p) for p in _alive(_tree(pid)))


def _title(proc) -> str:
    """A process's command line; '' for one that ended (or is a zombie) while we looked."""
    try:
        return " ".join(proc.cmdline())
    except Exception:  # noqa: BLE001 - psutil's NoSuchProcess, ZombieProcess, AccessDenied
        return ""


def _alive(procs):
    for proc in procs:
        try:
            if proc.is_running():
                yield proc
        except Exception:  # noqa: BLE001 - gone between the listing and the look
            continue


def kill_at(study: Path, storage: Path, env: dict, stage: str, delay: float, patience: float = 900) -> dict:
    """Launch the study, wait for `stage` (then `delay` s), kill -9 its process group; what was seen."""
    records = storage / study_name(study) / "records"
    with tempfile.NamedTemporaryFile("w", suffix=".log", delete=False) as handle:
        log = Path(handle.name)
    with open(log, "w") as err:
        driver = subprocess.Popen(fsv_command(study, storage), cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                  stderr=err, start_new_session=True)
    before = set(os.listdir(records)) if records.is_dir() else set()  # temp files a killed write left
    t0, deadline, seen = time.time(), time.time() + patience, False
    while time.time() < deadline and driver.poll() is None:
        if _reached(stage, records, log, driver.pid, before):
            seen = True
            break
        time.sleep(0.002 if stage == "record_write" else 0.1)
    if seen and delay:
        time.sleep(delay)
    tree = _tree(driver.pid)
    finished = driver.poll() is not None
    if not finished:
        os.killpg(driver.pid, signal.SIGKILL)
    for proc in _alive(tree):  # a process of its tree that left the group (Ray starts some in new sessions)
        try:
            proc.kill()
        except Exception:  # noqa: BLE001
            pass
    driver.wait()
    done = len([n for n in os.listdir(records) if n.endswith(".parquet")]) if records.is_dir() else 0
    log.unlink()
    return {"stage": stage, "reached": seen, "delay_s": round(delay, 2), "at_s": round(time.time() - t0, 1),
            "killed": not finished, "records_at_kill": done}


def study_name(study: Path) -> str:
    import yaml

    return yaml.safe_load(study.read_text())["name"]


def records_without_timing(study_dir: Path):
    from fsv.records import TIMING_FIELDS, read_records

    frame = read_records(study_dir).drop(columns=list(TIMING_FIELDS))
    return frame.sort_values("cell_id").reset_index(drop=True)


def weights(cache: Path) -> dict[str, str]:
    """{model dir name/file: sha256} of every finished ladder model's safetensors."""
    out = {}
    for path in sorted(cache.glob("models/*/*.safetensors")):
        if (path.parent / "fsv-model.json").is_file():
            out[f"{path.parent.name}/{path.name}"] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def compare(base_dir: Path, killed_dir: Path) -> list[str]:
    """Problems of a resumed study against the uninterrupted one (empty: none)."""
    import pandas as pd

    cells = {c["cell_id"] for c in json.loads((killed_dir / "cells.json").read_text())["cells"]}
    killed, base = records_without_timing(killed_dir), records_without_timing(base_dir)
    problems = []
    if not killed["cell_id"].is_unique or set(killed["cell_id"]) != cells:
        problems.append(f"{len(killed)} records for {len(cells)} cells")
    if not (killed["status"] == "ok").all():
        problems.append(f"not ok: {killed.loc[killed.status != 'ok', 'error'].tolist()[:1]}")
    try:
        pd.testing.assert_frame_equal(killed, base, check_exact=True)
    except AssertionError as exc:
        problems.append(f"records differ from the uninterrupted run's: {str(exc)[:600]}")
    return problems


def train_study(folder: Path) -> Path:
    """The smoke study with one sft axis: two training cells (world-xs, world-s)."""
    import yaml

    study = yaml.safe_load(SMOKE.read_text())
    study["name"] = "smoke-train"
    study["regimes"]["sft"] = {"n": [4], "seeds": [0], "steps": 4, "batch": 4}
    path = folder / "smoke-train.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def plan(kills: int, seed: int, train: bool) -> list[tuple[str, float]]:
    """`kills` (stage, delay) pairs, every stage at least once, in the order a study passes them
    (a pretraining kill after the models are cached would find no pretraining), delays seeded."""
    rng = random.Random(seed)
    stages = [s for s in STAGES if train or s != "training"]
    chosen = sorted((stages * (kills // len(stages) + 1))[:kills], key=STAGES.index)
    delays = {"start": (0, 8), "pretraining": (0, 25), "trials": (0, 3), "record_write": (0, 0), "training": (0, 5)}
    return [(stage, rng.uniform(*delays[stage])) for stage in chosen]


def kill_round(study: Path, tmp: Path, base_dir: Path, base_cache: Path, kills: list, first: int) -> dict:
    """One fresh study folder and model cache: its kills, then the same command, then the comparison."""
    folder = tmp / f"killed-{first}"
    env = dict(os.environ, FSV_CACHE=str(folder / "cache"), WANDB_MODE="offline")
    seen = []
    for i, (stage, delay) in enumerate(kills, start=first):
        seen.append(kill_at(study, folder, env, stage, delay))
        print(f"kill {i}: {json.dumps(seen[-1])}", flush=True)
    final = run_once(study, folder, env)
    problems = compare(base_dir, folder / study_name(study)) if final.returncode == 0 else [final.stderr[-2000:]]
    same = weights(base_cache) == weights(folder / "cache")
    print(f"round from kill {first}: final run exit {final.returncode}; pretrained weights bit-identical to the "
          f"uninterrupted run's: {same}; records: "
          + ("exactly one per cell, equal to the uninterrupted run's apart from timing" if not problems
             else "; ".join(problems)), flush=True)
    return {"ok": not problems and same and final.returncode == 0,
            "effective": sum(s["reached"] and s["killed"] for s in seen)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=2, help="fresh study folders the kills are spread over")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="fsv-kills-") as tmp:
        tmp = Path(tmp)
        study = train_study(tmp) if args.train else SMOKE
        base_env = dict(os.environ, FSV_CACHE=str(tmp / "cache-base"), WANDB_MODE="offline")
        t0 = time.time()
        base = run_once(study, tmp / "base", base_env)
        print(f"uninterrupted run: exit {base.returncode}, {time.time() - t0:.0f} s", flush=True)
        if base.returncode != 0:
            print(base.stderr[-3000:])
            return 1
        first, effective = 1, 0
        for r in range(args.rounds):
            kills = plan(args.kills // args.rounds + (r < args.kills % args.rounds), args.seed + r, args.train)
            result = kill_round(study, tmp, tmp / "base" / study_name(study), tmp / "cache-base", kills, first)
            first += len(kills)
            effective += result["effective"]
            if not result["ok"]:
                return 1
            print(f"effective kills this round (the study was still running): {result['effective']}/{len(kills)}",
                  flush=True)
        print(f"all rounds: {effective}/{args.kills} kills landed on a running study; every resume was complete")
        return 0


if __name__ == "__main__":
    sys.exit(main())
