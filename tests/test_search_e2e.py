"""The hyperparameter search end to end through the driver, on a real local Ray cluster: a grid's
selection trials (widened beyond the edge of their rates, and run longer where the choice was their
longest length, going on from the shorter run's saved state) become scored records whose chosen
configuration is the best on validation, never on their own tasks; an adaptive search (random
sampling with ASHA) runs through Ray Tune's own searcher and scheduler, with `train.precision: auto`
resolved and recorded by the workers; a re-run derives nothing new and starts no trial."""

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import PRETRAIN, WORLD

from fsv.regimes.training import fold_of
from fsv.train.precision import resolve
from fsv.world import World, preset
from study.driver import run_study

pytestmark = pytest.mark.slow

SFT = {"n": [1, 2], "seeds": [0, 1], "steps": [2, 4], "batch": 4}


def _study(tmp_path, name, search, regimes, **extra):
    study = {"name": name, "models": ["world-xs"], "seeds": [0], "world": WORLD, "analyze": False,
             "pretrain": dict(PRETRAIN) | {"seeds": [0]}, "wandb": {"mode": "disabled"},
             "search": search, "regimes": regimes, **extra}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(study))
    return str(path)


def _validation_score(select: pd.DataFrame, n: int, fold: str) -> dict:
    """Each selection trial's best mean validation accuracy at n, over lengths (the other fold's rows);
    a longer run that did not train n has none."""
    out = {}
    for row in select.itertuples():
        rows = [r for r in json.loads(row.curves) if r["n"] == n and r["fold"] != fold]
        by_len = {}
        for r in rows:
            by_len.setdefault(r["steps"], []).append(r["accuracy"])
        if by_len:
            out[row.cell_id] = max(np.mean(v) for v in by_len.values())
    return out


def test_grid_search_selects_on_validation_and_widens_its_edge(tmp_path, ray_cluster, tiny_model):
    path = _study(tmp_path, "grid", {"method": "grid", "widen": 1, "widen_steps": 1}, {"sft": {**SFT, "lr": [1e-3, 3e-3]}})
    summary = run_study(path, str(tmp_path / "results"))
    frame = pd.read_parquet(tmp_path / "results" / "grid" / "records")
    assert summary["failed"] == 0 and summary["missing"] == 0, frame.error.dropna().tolist()[:1]
    select, scored = frame[frame.phase == "select"], frame[frame.phase == "measure"]
    lengths = {row.cell_id: json.loads(row.config)["settings"]["steps"] for row in select.itertuples()}
    rate = {row.cell_id: json.loads(row.hparams)["lr"] for row in select.itertuples()}
    short = [c for c in lengths if lengths[c] == [2, 4]]
    lrs = sorted(rate[c] for c in short)  # with two rates, every choice is on an edge:
    extra = set(lrs) - {1e-3, 3e-3}        # the next rate beyond it runs too, once
    assert {1e-3, 3e-3} <= set(lrs) and extra and extra <= {3.33e-4, 9e-3} and len(lrs) == 2 + len(extra)
    longer = {rate[c] for c in lengths if lengths[c] == [2, 4, 8]}  # a choice at 4 steps ran again, 8 long
    assert longer <= set(lrs) and len(longer) == len(lengths) - len(short)
    levels = {}  # the n levels each rate's longer run trained: those whose choice sat at 4 steps
    for row in select[select.cell_id.isin([c for c in lengths if lengths[c] == [2, 4, 8]])].itertuples():
        config = json.loads(row.config)
        ran, curves = config["n_levels"], json.loads(row.curves)
        assert ran and {r["n"] for r in curves} == set(ran)
        assert config["continues"]["steps"] == 4 and rate[config["continues"]["trial"]] == rate[row.cell_id]
        jobs = {(r["task"], r["n"], r["seed"]) for r in curves}
        assert {r["steps"] for r in curves} == {8} and row.resumed_jobs == len(jobs)  # every job went on
        levels.setdefault(rate[row.cell_id], set()).update(ran)
    assert not (tmp_path / "results" / "grid" / "state").exists() or not any((tmp_path / "results" / "grid" / "state").iterdir())
    assert len(scored) == 2 * 2 * 2  # n x seeds x folds
    assert set(frame.precision) == {"fp32"}  # the default, recorded on selection and scored records alike
    for records in (select, scored):  # one adaptation's compute, on selection and scored records alike
        assert (records.train_tokens > 0).all() and (records.train_flops == 6.0 * records.model_params * records.train_tokens).all()
    world = World(preset(WORLD["preset"], seed=WORLD["seed"]))
    for rec in scored.itertuples():
        selection = json.loads(rec.selection)
        scores = _validation_score(select, rec.n, rec.fold)
        assert scores[selection["trial"]] == pytest.approx(max(scores.values()))  # the best on validation
        assert selection["val_accuracy"] == pytest.approx(max(scores.values()))
        own = {t.name for t in world.heldout_tasks if fold_of(t) == rec.fold}
        assert own.isdisjoint(json.loads(rec.selected_on)) and set(json.loads(rec.task_accuracy)) == own
        chosen = json.loads(rec.hparams)
        assert chosen["steps"] in lengths[selection["trial"]] and rec.n_distinct == rec.n
        if chosen["steps"] == 4 and lengths[selection["trial"]] == [2, 4]:  # the longest of its run: run longer,
            assert chosen["lr"] in longer and rec.n in levels[chosen["lr"]]  # at this n
        assert ("steps" in selection["on_edge"]) == (chosen["steps"] in (2, 8))
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "results" / "grid" / "records").glob("*.parquet")}
    again = run_study(path, str(tmp_path / "results"))
    assert again["ok"] == summary["ok"]
    after = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "results" / "grid" / "records").glob("*.parquet")}
    assert before == after  # nothing re-run, nothing re-derived


def test_adaptive_search_runs_through_tune_with_asha(tmp_path, ray_cluster, tiny_model):
    regimes = {"sft": {**SFT, "seeds": [0], "lr": {"low": 1e-4, "high": 1e-2}}}
    path = _study(tmp_path, "random", {"method": "random", "samples": 2, "scheduler": "asha"}, regimes,
                  train={"precision": "auto"})
    summary = run_study(path, str(tmp_path / "results"))
    frame = pd.read_parquet(tmp_path / "results" / "random" / "records")
    assert summary["failed"] == 0 and summary["missing"] == 0, frame.error.dropna().tolist()[:1]
    select = frame[frame.phase == "select"]
    assert len(select) == 2 * 2  # 2 samples for each fold's search
    assert all(1e-4 <= json.loads(h)["lr"] <= 1e-2 for h in select.hparams)
    native = resolve({"precision": "auto", "use_gpu": False})["precision"]  # this machine's CPU decides
    assert set(frame.precision) == {native} and all(json.loads(c)["train"]["precision"] == "auto" for c in select.config)
    folds = [json.loads(c)["fold"] for c in select.config]
    assert sorted(folds) == ["f0", "f0", "f1", "f1"]
    scored = frame[frame.phase == "measure"]
    for rec in scored.itertuples():  # each fold's cells were chosen by the search run for that fold
        trial = json.loads(rec.selection)["trial"]
        assert json.loads(select.set_index("cell_id").loc[trial, "config"])["fold"] == rec.fold
    assert (tmp_path / "results" / "random" / "tune").is_dir()
