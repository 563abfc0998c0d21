"""One Ray Tune trial = one cell: run its regime (retrying as configured), write its one record,
log it to W&B, report it to Tune. A trial that fails every attempt is recorded `failed` with its
error, and the study goes on."""

from __future__ import annotations

import json
import tempfile
import time
import traceback
from pathlib import Path

import fsv
from fsv.records import write_record

RECORD_KEYS = ("model", "regime", "task", "description", "k", "n", "seed", "pretrain_seed", "layout",
               "prompt_tokens", "tasks_trained", "cell_id", "checkpoint", "instance", "phase", "method", "fold")


def base_record(cell: dict, study: str) -> dict:
    record = {key: cell.get(key) for key in RECORD_KEYS}
    train = cell.get("train") or {}
    world = cell.get("world")
    record.update(
        study=study, world=world["preset"] if world else None, fsv_version=fsv.__version__,
        zero_stage=train.get("zero_stage"), workers=train.get("workers"),
        config=json.dumps(cell, sort_keys=True, default=str),
    )
    return record


def attempt(cell: dict, env: dict) -> dict:
    """Run the cell's regime, retrying as configured; return its record (status ok or failed)."""
    from fsv.regimes import regime_module
    from fsv.regimes.context import TrialContext
    from fsv.tracking import Tracker

    record = base_record(cell, env["study"])
    tracker = Tracker(env["wandb"], env["study"], env["study_dir"])
    started = time.time()
    for attempt in range(1, env["retries"] + 2):
        with tempfile.TemporaryDirectory(prefix="fsv-trial-") as scratch:
            ctx = TrialContext(cell, env["study_dir"], Path(scratch), env["bayes"], attempt,
                               env.get("trust_remote_code", False), env.get("models"))
            try:
                with tracker.trial(cell, attempt) as run:
                    fields = regime_module(cell["regime"]).run(cell, ctx)
                    if run is not None:
                        run.log({k: v for k, v in fields.items() if isinstance(v, (int, float))})
                record.update(fields, status="ok", error=None)
                break
            except Exception:  # noqa: BLE001 - any failure of the trial is recorded, then retried
                record.update(status="failed", error=traceback.format_exc(limit=20)[-4000:])
    record.update(attempts=attempt, wall_s=time.time() - started)
    record["device"] = record.get("device") or "cpu"
    return record


def run_trial(config: dict, cells: dict, env: dict) -> None:
    """The Tune trial function. `config["cell_id"]` picks the cell; `env` is the study's runtime
    facts (study name and folder, Bayes table, W&B section, retries)."""
    from ray import tune

    started = time.time()
    record = attempt(cells[config["cell_id"]], env)
    write_record(env["study_dir"], record)
    tune.report({"status_ok": int(record["status"] == "ok"), "accuracy": record.get("accuracy") or float("nan"),
                 "trial_start": started, "trial_end": time.time()})  # when it held its resources
