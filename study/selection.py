"""After the selection trials: write each training group's scored records, and widen a grid whose
choice sits on its edge.

A group (one model instance, regime, task and axes) is measured once every one of its selection
trials has an `ok` record. Its scored records are derived from those records alone
(`fsv.search.select`), so re-running this after a resume writes the same records again. With
`search.method: grid`, a group whose chosen learning rate lies on the edge of the rates explored
gets the next rate beyond it (x3 or /3, `search.widen` rounds at most) as new selection trials, and
one whose choice is the longest length its trial ran gets that trial again, twice as long, for
the n levels whose choice sat there (`search.widen_steps` rounds at most); the group is measured
only when those have run.
"""

from __future__ import annotations

import json

from fsv.config import StudyConfig
from fsv.grid import cell_id
from fsv.records import read_records, training_flops, write_record
from fsv.search.select import choose, for_fold, longer_runs, scored_fields, trials_by_group, widened_points


def known_cells(cells: list[dict], records) -> list[dict]:
    """The study's cells plus the widened selection trials an earlier run added (their records
    hold their cells), so a resumed study knows every trial it has run."""
    ids = {c["cell_id"] for c in cells}
    groups = {c.get("group") for c in cells if c.get("group")}
    extra = []
    for row in records[records["phase"] == "select"].itertuples():
        cell = json.loads(row.config)
        if row.cell_id not in ids and cell.get("group") in groups:
            extra.append(cell)
            ids.add(row.cell_id)
    return cells + extra


def measure_groups(study: StudyConfig, root: str, cells: list[dict]) -> list[dict]:
    """Write the scored records of every group whose search is complete; return the widened
    selection cells still to run (grid search only)."""
    from study.trial import base_record

    records = read_records(root)
    trials = trials_by_group(records)
    facts = records.set_index("cell_id")[["model_params", "train_loss_chance", "device", "precision"]]
    facts = facts.astype(object).where(facts.notna(), None).to_dict("index")  # a null stays null (not NaN) when copied
    existing = records[records["phase"] == "measure"].set_index("cell_id").to_dict("index")
    widened = []
    for group, scored in _scored_by_group(cells).items():
        done = trials.get(group, [])
        if not searched(group, cells, done):
            continue
        section = study.regime_sections()[scored[0]["regime"]]
        new = _widen(study, section, done, scored, {c["cell_id"] for c in cells})
        if new:
            widened += new
            continue
        for cell in scored:
            record = _scored_record(study, cell, section, for_fold(done, cell["fold"]), facts, base_record)
            if _changed(record, existing.get(cell["cell_id"])):  # a re-run leaves an unchanged record alone
                write_record(root, record)
        drop_states(root, [t.cell_id for _, t in done])
    return widened


def drop_states(root: str, trial_ids: list[str]) -> None:
    """The saved states of a measured group's trials (`fsv.train.resume`): no longer run will go on
    from them."""
    from pyarrow.fs import FileType

    from fsv.records import _fs
    from fsv.regimes.training import state_dir

    filesystem, _ = _fs(root)
    for trial_id in trial_ids:
        _, path = _fs(state_dir(root, trial_id))
        if filesystem.get_file_info(path).type == FileType.Directory:
            filesystem.delete_dir(path)


def searched(group: str, cells: list[dict], done: list) -> bool:
    """Whether a group's search is complete: every grid point has a finished trial, or each adaptive
    search plan (one per fold) has as many finished trials as it samples."""
    ids = {t.cell_id for _, t in done}
    grid = [c["cell_id"] for c in cells if c.get("group") == group and c.get("phase") == "select" and "samples" not in c]
    plans = [c for c in cells if c.get("group") == group and c.get("phase") == "search"]
    if plans:
        return all(sum(cell.get("fold") == p["fold"] for cell, _ in done) >= p["samples"] for p in plans)
    return bool(grid) and set(grid) <= ids


DEFINING = ("status", "accuracy", "hparams", "selected_on", "task_accuracy", "label_logprob", "final_train_loss")


def _changed(record: dict, stored: dict | None) -> bool:
    if stored is None:
        return True
    same = lambda a, b: a == b or (a is None or a != a) and (b is None or b != b)  # noqa: E731 - None and NaN alike
    return not all(same(record.get(k), stored.get(k)) for k in DEFINING)


def _scored_by_group(cells: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for c in cells:
        if c.get("phase") == "measure" and c.get("group"):
            out.setdefault(c["group"], []).append(c)
    return out


def _widen(study: StudyConfig, section, done, scored: list[dict], existing: set) -> list[dict]:
    if study.search.method != "grid":
        return []
    choices = [(*choose(for_fold(done, c["fold"]), c["n"], c["fold"])[:2], c["n"]) for c in scored]  # (trial, length, n)
    chosen = [trial.hparams for trial, _, _ in choices]
    template = next(cell for cell, _ in done if cell.get("phase") == "select" and "continues" not in cell)  # a grid point
    spaces = section.spaces()
    trials = [t for _, t in done]
    new = []
    for point in widened_points(spaces, trials, chosen, study.search.widen):
        cell = {k: v for k, v in template.items() if k != "cell_id"} | {"hparams": point}
        cell["cell_id"] = cell_id(cell)
        if cell["cell_id"] not in existing:
            new.append(cell)
    longer = longer_runs(done, choices, list(section.steps), study.search.widen_steps)
    return new + [cell for cell in longer if cell["cell_id"] not in existing]


def _scored_record(study: StudyConfig, cell: dict, section, trials, facts: dict, base_record) -> dict:
    """A scored cell's record: its rows at the configuration and length chosen on validation, with
    the facts of the selection trial they came from (parameters, device, the objective's chance)."""
    trial, length, val_acc = choose(trials, cell["n"], cell["fold"])
    record = base_record(cell, study.name)
    lengths = sorted({row["steps"] for t in trials for row in t.rows} | set(section.steps))  # widened runs too
    fields = scored_fields(cell, trial, length, val_acc, section.spaces(), lengths, trials)
    source = facts[trial.cell_id]
    params = int(source["model_params"])
    record.update(fields, phase="measure", model_params=params, train_examples=cell["n"] * (cell.get("tasks_trained") or 1),
                  train_flops=training_flops(params, fields["train_tokens"]),
                  train_loss_chance=source["train_loss_chance"],
                  chance=chance(cell, study), device=source["device"],
                  precision=source["precision"], status="ok", error=None, attempts=1, wall_s=0.0)
    return record


def chance(cell: dict, study: StudyConfig) -> float:
    """Accuracy of a uniform guess over the task's labels."""
    if cell["world"] is not None:
        from fsv.grid import world_of

        return 1.0 / world_of(study).config.n_values
    from fsv.tasks import get_task

    return get_task(cell["task"]).chance
