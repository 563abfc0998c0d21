"""The hyperparameter search's pure parts: nested draws, the choice on validation rows only (a
scored task never influences its own selection), edges and widening, and the scored records a
group's selection trials become."""

import json

import numpy as np
import pandas as pd
import pytest

from fsv.config import parse_study
from fsv.grid import cell_id, expand
from fsv.regimes.training import curve_fields, draw_examples, fold_of
from fsv.search.select import Trial, choose, for_fold, is_scored, is_validation, longer_runs, widened_points
from fsv.search.space import edges, grid_points
from fsv.world import World, preset

WORLD = World(preset("quick"))


def test_world_draws_are_nested_and_count_distinct_inputs():
    for task in WORLD.heldout_tasks[:3]:
        for seed in (0, 1):
            big = draw_examples(WORLD, task, 16, seed)
            for n in (1, 2, 4, 6, 8):
                small = draw_examples(WORLD, task, n, seed)
                assert list(small) == list(big[:n])  # the examples at n are the first n of those at 2n
                assert len(set(small.tolist())) == min(n, len(WORLD.train_symbols))
            assert set(big.tolist()) <= set(WORLD.train_symbols.tolist())  # never a test symbol
    assert list(draw_examples(WORLD, WORLD.heldout_tasks[0], 8, 0)) != list(draw_examples(WORLD, WORLD.heldout_tasks[0], 8, 1))


def test_text_draws_are_nested():
    from types import SimpleNamespace

    from fsv.regimes.training import nested_draw

    splits = SimpleNamespace(train=list(range(50)), task=SimpleNamespace(name="t"))
    assert nested_draw(splits, 8, 3) == nested_draw(splits, 16, 3)[:8]


def _table(rng, tasks, lrs=(1e-4, 1e-3, 1e-2), lengths=(5, 10, 20), ns=(1, 4), seeds=(0, 1)):
    trials = []
    for i, lr in enumerate(lrs):
        rows = [{"task": t.name, "fold": fold_of(t), "split": "test", "n": n, "seed": s, "steps": L,
                 "accuracy": float(rng.random())} for t in tasks for n in ns for s in seeds for L in lengths]
        trials.append(Trial(f"trial{i}", {"lr": lr, "weight_decay": 0.0}, rows))
    return trials


def test_the_choice_is_the_best_on_validation():
    trials = _table(np.random.default_rng(0), WORLD.heldout_tasks)
    for fold in ("f0", "f1"):
        for n in (1, 4):
            chosen, length, score = choose(trials, n, fold)
            best = max(np.mean([r["accuracy"] for r in t.rows if r["n"] == n and r["steps"] == L and r["fold"] != fold])
                       for t in trials for L in (5, 10, 20))
            assert score == pytest.approx(best)


def test_a_scored_task_never_influences_its_own_selection():
    """Whatever the scored fold's rows say, the configuration chosen for it stays the same."""
    rng = np.random.default_rng(1)
    for _ in range(20):
        trials = _table(rng, WORLD.heldout_tasks)
        before = {(f, n): choose(trials, n, f)[:2] for f in ("f0", "f1") for n in (1, 4)}
        for fold in ("f0", "f1"):
            for t in trials:
                for row in t.rows:
                    if is_scored(row, fold):
                        row["accuracy"] = float(rng.random())  # rewrite every scored row of this fold
            for n in (1, 4):
                chosen, length = choose(trials, n, fold)[:2]
                assert (chosen.cell_id, length) == (before[(fold, n)][0].cell_id, before[(fold, n)][1])
            for t in trials:  # and back, for the next fold's check
                for row in t.rows:
                    if is_scored(row, fold):
                        row["accuracy"] = 0.0
            before = {(f, n): choose(trials, n, f)[:2] for f in ("f0", "f1") for n in (1, 4)}


def test_text_selection_reads_the_dev_split_only():
    rows = [{"task": "sst2", "split": split, "n": 4, "seed": 0, "steps": 10, "accuracy": acc}
            for split, acc in (("dev", 0.6), ("test", 0.9))]
    trials = [Trial("a", {"lr": 1e-3}, rows), Trial("b", {"lr": 1e-2}, [dict(r, accuracy=1 - r["accuracy"]) for r in rows])]
    chosen, _, score = choose(trials, 4, None)
    assert chosen.cell_id == "a" and score == 0.6  # dev .6 > .4, whatever test says
    assert all(is_validation(r, None) == (r["split"] == "dev") for r in rows)


def test_edges_and_widening():
    spaces = {"lr": [1e-4, 1e-3, 1e-2], "weight_decay": [0.0]}
    assert grid_points(spaces) == [{"lr": lr, "weight_decay": 0.0} for lr in spaces["lr"]]
    assert edges(spaces, {"lr": 1e-2, "weight_decay": 0.0}) == ["lr"]  # a one-value list is not searched
    assert edges(spaces, {"lr": 1e-3, "weight_decay": 0.0}) == []
    trials = [Trial(str(i), p, []) for i, p in enumerate(grid_points(spaces))]
    assert widened_points(spaces, trials, [{"lr": 1e-2}], rounds_left=1) == [{"lr": 0.03, "weight_decay": 0.0}]
    assert widened_points(spaces, trials, [{"lr": 1e-4}], rounds_left=1) == [{"lr": 3.33e-05, "weight_decay": 0.0}]
    assert widened_points(spaces, trials, [{"lr": 1e-3}], rounds_left=1) == []
    wider = trials + [Trial("w", {"lr": 0.03, "weight_decay": 0.0}, [])]
    assert widened_points(spaces, wider, [{"lr": 0.03}], rounds_left=1) == []  # one round beyond the list, no more


def test_a_choice_at_the_longest_length_runs_that_trial_again_twice_as_long():
    def rows(best_at: dict, lengths: list[int], top: float) -> list[dict]:  # validation rows (f1) for scored fold f0
        return [{"n": n, "seed": 0, "fold": "f1", "split": "test", "task": "t", "steps": L,
                 "accuracy": top if L == at else 0.5} for n, at in best_at.items() for L in lengths]

    def trial(cid: str | None, lr: float, best_at: int | dict, lengths: list[int], top: float = 0.6):
        best_at = best_at if isinstance(best_at, dict) else {4: best_at}
        cell = {"group": "g", "phase": "select", "hparams": {"lr": lr}, "settings": {"steps": lengths},
                "n_levels": sorted(best_at)}
        cell["cell_id"] = cid or cell_id(cell)
        return cell, Trial(cell["cell_id"], {"lr": lr}, rows(best_at, lengths, top))

    def picks(done, levels=(4,)):  # the (trial, length, n) scored cells of fold f0 choose, as study/selection asks
        return [(*choose(for_fold(done, "f0"), n, "f0")[:2], n) for n in levels]

    def run_of(cell: dict, best_at: int, top: float = 0.6):  # the record of a longer run: rows at its new length
        return cell, Trial(cell["cell_id"], cell["hparams"], rows({n: best_at for n in cell["n_levels"]}, [best_at], top))

    done = [trial("a", 1e-3, 8, [4, 8]), trial("b", 1e-2, 4, [4, 8])]
    (longer,) = longer_runs(done, picks(done), [4, 8], rounds_left=1)
    assert longer["settings"]["steps"] == [4, 8, 16] and longer["hparams"] == {"lr": 1e-3}
    assert longer["group"] == "g" and longer["cell_id"] not in {"a", "b"} and longer["n_levels"] == [4]
    assert longer["continues"] == {"trial": "a", "steps": 8}  # it goes on from a's state after 8 steps,
    assert longer["settings"]["warmup_steps"] == 0 and "keep_state" not in longer  # with a's warm-up; last doubling
    warm = [({**c, "settings": {**c["settings"], "warmup": 0.2}}, t) for c, t in done]
    (again,) = longer_runs(warm, picks(warm), [4, 8], rounds_left=2)
    assert again["settings"]["warmup_steps"] == 1 and again["keep_state"]  # 20 % of 8 steps; doubled again later
    assert longer_runs(done, picks(done), [4, 8], rounds_left=0) == []
    inside = [trial("a", 1e-3, 4, [4, 8]), trial("b", 1e-2, 4, [4, 8])]
    assert longer_runs(inside, picks(inside), [4, 8], rounds_left=1) == []  # the best lies inside: nothing to run
    ran = done + [run_of(longer, 16)]  # the longer run exists; a at 8 still ties it and wins
    assert longer_runs(ran, picks(ran), [4, 8], rounds_left=1) == []  # run already
    widened = done + [run_of(longer, 16, top=0.7)]  # better still at its own longest length
    assert longer_runs(widened, picks(widened), [4, 8], rounds_left=1) == []  # one doubling beyond the list, no more
    (twice,) = longer_runs(done, picks(done), [4, 8], rounds_left=2)
    widened = done + [run_of(twice, 16, top=0.7)]
    (further,) = longer_runs(widened, picks(widened), [4, 8], rounds_left=2)
    assert further["settings"]["steps"] == [4, 8, 16, 32] and further["continues"] == {"trial": twice["cell_id"], "steps": 16}
    assert "keep_state" not in further


def test_a_longer_run_trains_only_the_levels_whose_choice_sat_at_its_end():
    def trial(best_at: dict, lengths: list[int], top: float = 0.6):  # {n: length of its best}
        cell = {"group": "g", "phase": "select", "hparams": {"lr": 1e-3}, "settings": {"steps": lengths},
                "n_levels": sorted(best_at)}
        cell["cell_id"] = cell_id(cell)
        rows = [{"n": n, "seed": 0, "fold": "f1", "split": "test", "task": "t", "steps": L,
                 "accuracy": top if L == at else 0.5} for n, at in best_at.items() for L in lengths]
        return cell, Trial(cell["cell_id"], {"lr": 1e-3}, rows)

    def picks(done):
        return [(*choose(for_fold(done, "f0"), n, "f0")[:2], n) for n in (1, 2, 4)]

    done = [trial({1: 4, 2: 8, 4: 8}, [4, 8])]  # n = 2 and 4 chose the longest length, n = 1 lay inside
    (longer,) = longer_runs(done, picks(done), [4, 8], rounds_left=1)
    assert longer["n_levels"] == [2, 4] and longer["settings"]["steps"] == [4, 8, 16]
    (twice,) = longer_runs(done, picks(done), [4, 8], rounds_left=2)
    rows = [{"n": n, "seed": 0, "fold": "f1", "split": "test", "task": "t", "steps": 16, "accuracy": acc}
            for n, acc in ((2, 0.7), (4, 0.5))]  # the longer run's rows: n = 4 is best inside now
    ran = done + [(twice, Trial(twice["cell_id"], twice["hparams"], rows))]
    assert longer_runs(ran, picks(ran), [4, 8], rounds_left=1) == []
    assert longer_runs(ran, picks(ran), [4, 8], rounds_left=2)[0]["n_levels"] == [2]  # n = 2 at 16 goes on alone


def test_the_grid_lists_selection_trials_and_the_scored_cells_they_become():
    study = parse_study({"name": "s", "models": ["world-xs"], "seeds": [0, 1, 2],
                         "pretrain": {"steps": 100, "checkpoints": [50]},
                         "regimes": {"sft": {"n": [1, 2, 4], "lr": [1e-4, 1e-3, 1e-2, 3e-2], "steps": [5, 10]}}})
    cells = expand(study)
    select = [c for c in cells if c["phase"] == "select"]
    scored = [c for c in cells if c["phase"] == "measure"]
    assert len(select) == 2 * 4  # 2 instances (the finished model and step 50) x 4 learning rates
    assert len(scored) == 2 * 3 * 3 * 2  # instances x n x seeds x folds
    assert {c["instance"] for c in cells} == {"world-xs/p0/final", "world-xs/p0/step50"}
    assert all(c["n_levels"] == [1, 2, 4] and c["seeds"] == [0, 1, 2] for c in select)
    assert {c["group"] for c in select} == {c["group"] for c in scored}


def test_adaptive_searches_list_one_plan_per_fold():
    study = parse_study({"name": "s", "models": ["world-xs"], "search": {"method": "optuna", "samples": 6,
                                                                         "scheduler": "asha"},
                         "regimes": {"sft": {"n": [1, 2], "lr": {"low": 1e-4, "high": 1e-1}}}})
    plans = [c for c in expand(study) if c["phase"] == "search"]
    assert [(p["fold"], p["samples"]) for p in plans] == [("f0", 6), ("f1", 6)]


def test_scored_records_come_from_their_groups_trials(tmp_path):
    """measure_groups on hand-written selection records: each scored record takes its fold's rows at
    the configuration the other fold chose, names the tasks that chose it, and carries the precision
    its trial trained in (null from a record written before fsv recorded it: a resumed study)."""
    from fsv.records import read_records, write_record
    from study.selection import measure_groups
    from study.trial import base_record

    study = parse_study({"name": "s", "models": ["world-xs"], "seeds": [0], "search": {"widen": 0},
                         "regimes": {"sft": {"n": [2], "lr": [1e-3, 1e-2], "steps": [5, 10]}}})
    cells = expand(study)
    rng = np.random.default_rng(3)
    precision = {}
    for i, cell in enumerate(c for c in cells if c["phase"] == "select"):
        rows = [{"task": t.name, "fold": fold_of(t), "split": "test", "n": 2, "seed": 0, "steps": L, "n_distinct": 2,
                 "accuracy": float(rng.random()), "label_logprob": -1.0, "n_eval": 8, "train_loss": 0.5, "tokens": 100}
                for t in WORLD.heldout_tasks for L in (5, 10)]
        record = base_record(cell, "s") | {"phase": "select", "hparams": json.dumps(cell["hparams"]), "status": "ok",
                                           "curves": json.dumps(rows), "model_params": 1000, "device": "cpu",
                                           "train_loss_chance": float(np.log(4))}
        precision[cell["cell_id"]] = record["precision"] = "bf16-mixed" if i % 2 else None
        write_record(tmp_path, record)
    assert measure_groups(study, str(tmp_path), cells) == []
    frame = read_records(tmp_path)
    scored = frame[frame["phase"] == "measure"]
    assert len(scored) == 2
    for rec in scored.itertuples():
        own = {t.name for t in WORLD.heldout_tasks if fold_of(t) == rec.fold}
        assert set(json.loads(rec.task_accuracy)) == own
        assert own.isdisjoint(json.loads(rec.selected_on))
        assert json.loads(rec.hparams)["steps"] in (5, 10) and rec.train_flops == 6.0 * 1000 * 100
        recorded = rec.precision if isinstance(rec.precision, str) else None  # pandas reads a null string as NaN
        assert recorded == precision[json.loads(rec.selection)["trial"]]
    first = pd.read_parquet(tmp_path / "records")
    measure_groups(study, str(tmp_path), cells)  # deriving again writes the same records
    again = pd.read_parquet(tmp_path / "records")
    key = ["cell_id", "accuracy", "hparams", "selected_on"]
    assert first.sort_values("cell_id")[key].equals(again.sort_values("cell_id")[key])


def test_hub_revisions_are_model_instances_at_their_step():
    study = parse_study({"name": "p", "models": ["EleutherAI/pythia-70m@step1000", "EleutherAI/pythia-70m"],
                         "tasks": ["sst2"], "regimes": {"zero_shot": {"descriptions": ["none"]}}})
    assert [(c["instance"], c["checkpoint"]) for c in expand(study)] == [
        ("EleutherAI/pythia-70m@step1000", 1000), ("EleutherAI/pythia-70m", None)]


def test_grpo_on_a_text_task_is_refused():
    from fsv.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        parse_study({"name": "p", "models": ["EleutherAI/pythia-70m"], "tasks": ["sst2"],
                     "regimes": {"rlhf": {"n": [8], "methods": ["dpo", "grpo"], "train_tasks": ["ag_news"]}}})
    assert "regimes.rlhf.methods" in str(err.value) and "grpo" in str(err.value) and "sst2" in str(err.value)


def test_a_selection_record_keeps_its_evaluation_seconds_out_of_its_curves():
    """`curves` is compared between two runs of a cell (benchmarks/kills.py): seconds go to eval_s."""
    cell = {"world": {"preset": "quick"}, "settings": {"steps": [4, 8]}}
    row = {"task": "f0-0213", "n": 2, "seed": 0, "split": "test", "accuracy": 0.5, "train_loss": 1.0}
    rows = [{**row, "steps": 4, "eval_s": 0.25}, {**row, "steps": 8, "accuracy": 0.75, "eval_s": 0.5}]
    fields = curve_fields(rows, cell)
    assert all("eval_s" not in r for r in json.loads(fields["curves"]))
    assert fields["eval_s"] == 0.75
    assert json.loads(fields["val_curve"]) == {"2": {"4": 0.5, "8": 0.75}} and fields["accuracy"] == 0.75


def test_only_levels_whose_own_best_lies_at_the_end_may_go_on(tmp_path):
    """A trial's level can be chosen at its longest length only where that length beats its shorter
    ones on some validation set (ties go to the shorter); the states of the other levels are removed."""
    from fsv.search.select import may_go_on
    from fsv.train.resume import keep_levels

    def rows(n, accs_f0, accs_f1):  # a fold's rows validate the other fold's choice
        return [{"n": n, "seed": 0, "fold": fold, "split": "test", "task": f"t{fold}", "steps": L, "accuracy": a}
                for fold, accs in (("f0", accs_f0), ("f1", accs_f1)) for L, a in zip((4, 8), accs)]

    trial = rows(1, (0.5, 0.6), (0.5, 0.4)) + rows(2, (0.6, 0.6), (0.7, 0.5)) + rows(4, (0.6, 0.5), (0.4, 0.45))
    assert may_go_on(trial) == {1, 4}  # n = 2: a tie and a loss at 8 steps
    text = [{"n": 1, "seed": 0, "split": split, "task": "t", "steps": L, "accuracy": a}
            for split, L, a in (("dev", 4, 0.5), ("dev", 8, 0.6), ("test", 4, 0.9), ("test", 8, 0.1))]
    assert may_go_on(text) == {1}  # a text task: its dev split alone decides
    for name in ("n1-s0-t", "n2-s0-t", "n16-s0-t"):
        (tmp_path / f"{name}.pt").write_bytes(b"")
    assert keep_levels(str(tmp_path), {1, 16}) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["n1-s0-t.pt", "n16-s0-t.pt"]
    assert keep_levels(str(tmp_path / "absent"), set()) == 0
