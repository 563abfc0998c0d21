"""A longer run that goes on from its shorter run's saved state (`fsv.train.resume`) equals a run of
the longer length from step 0, on real DeepSpeed engines (ZeRO-0, one gloo rank in this process):
its rows at the new length match the fresh run's (training loss over the whole curve, accuracy,
label log-likelihood, tokens), and the fresh run's rows at the shorter lengths are the shorter
run's; stacked and one job at a time, for full fine-tuning, LoRA, soft prompts, instruction tuning and
DPO. A missing or damaged state is named, and the job trains from step 0 to the same rows."""

from __future__ import annotations

import importlib

import pytest
from test_stacked import config_for

pytestmark = pytest.mark.usefixtures("process_group")

LEVELS = {"sft": [1, 3], "prompt_tuning": [1, 3], "instruction_tuning": [1, 3], "dpo": [2]}
METHOD = {"sft": "full", "prompt_tuning": "prompt", "instruction_tuning": "full", "dpo": "dpo"}


def rows_of(regime: str, config: dict, out) -> tuple[list[dict], int]:
    """(evaluation rows, jobs that went on from a saved state) of a trial's jobs, as the worker trains them."""
    from fsv.train.worker import train_jobs

    jobs = importlib.import_module(f"fsv.regimes.{regime}").build_job(config, 0, 1)
    done, _ = train_jobs(jobs, config, 0, 1, str(out))
    return [row for d in done for row in d["evals"]], sum(d["resumed"] for d in done)


def by_key(rows: list[dict]) -> dict:
    return {(r["task"], r["n"], r["seed"], r["steps"]): r for r in rows}


def assert_same(a: dict, b: dict) -> None:
    assert a["tokens"] == b["tokens"] and a["accuracy"] == b["accuracy"]
    assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
    assert a["label_logprob"] == pytest.approx(b["label_logprob"], abs=1e-4)
    assert a.get("reward_margin") == pytest.approx(b.get("reward_margin"), abs=1e-5)


def configs(world_model: str, regime: str, stack, state, method: str | None = None) -> tuple[dict, dict, dict]:
    """The shorter run (keeping its state), the longer run going on from it (its last level only,
    as a longer run trains the levels whose choice sat at the end), and the longer run from step 0."""
    levels = LEVELS[regime]
    common = dict(n_levels=levels, warmup_steps=1, method=method or METHOD[regime], noise=0.1, start="base")
    short = config_for(world_model, stack, lengths=[3, 6], state_out=str(state), **common)
    going_on = config_for(world_model, stack, lengths=[3, 6, 12], state_in=str(state), resume_at=6,
                          **{**common, "n_levels": levels[-1:]})
    fresh = config_for(world_model, stack, lengths=[3, 6, 12], **common)
    return short, going_on, fresh


@pytest.mark.parametrize("stack", [None, 1], ids=["stacked", "one-at-a-time"])
@pytest.mark.parametrize("regime,method", [("sft", "full"), ("sft", "lora"), ("prompt_tuning", "prompt"),
                                           ("instruction_tuning", "full"), ("dpo", "dpo")])
def test_a_longer_run_goes_on_from_the_shorter_runs_state(regime, method, stack, world_model, tmp_path):
    short, going_on, fresh = configs(world_model, regime, stack, tmp_path / "state", method)
    short_rows, _ = rows_of(regime, short, tmp_path / "short")
    saved = sorted(p.name for p in (tmp_path / "state").iterdir())
    assert saved and all(name.endswith(".pt") for name in saved)  # one state a job
    rows, resumed = rows_of(regime, going_on, tmp_path / "going-on")
    fresh_rows, fresh_resumed = rows_of(regime, fresh, tmp_path / "fresh")
    assert resumed > 0 and fresh_resumed == 0
    assert {r["steps"] for r in rows} == {12} and {r["n"] for r in rows} == set(LEVELS[regime][-1:])
    fresh_by = by_key(fresh_rows)
    for key, row in by_key(rows).items():  # steps 7..12 after the saved state are steps 7..12 from step 0
        assert_same(row, fresh_by[key])
    for key, row in by_key(short_rows).items():  # and the first 6 steps of the longer run are the shorter run's
        assert_same(row, fresh_by[key])


def test_a_missing_or_damaged_state_is_named_and_the_job_trains_from_step_0(world_model, tmp_path, capfd):
    short, going_on, fresh = configs(world_model, "sft", None, tmp_path / "state")
    rows_of("sft", short, tmp_path / "short")
    states = sorted(p for p in (tmp_path / "state").iterdir() if p.name.startswith("n3-"))  # the level run longer
    states[0].write_bytes(b"not a state")  # damaged
    states[1].unlink()  # missing
    rows, resumed = rows_of("sft", going_on, tmp_path / "going-on")
    err = capfd.readouterr().err
    assert f"the saved state {states[0]} is unreadable" in err and f"no saved state at {states[1]}" in err
    assert resumed == len(rows) - 2
    fresh_by = by_key(rows_of("sft", fresh, tmp_path / "fresh")[0])
    for key, row in by_key(rows).items():  # the same rows either way; those from step 0 cost their whole run
        assert_same(row, fresh_by[key])
