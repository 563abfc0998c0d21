"""Model instances, the rows each measure reads, and the columns the analysis refuses to guess.

A model instance is one pretrained network: (`model`, `pretrain_seed`, `checkpoint`), written
"MODEL/p<seed>/<step or final>" (the record's own `instance` where it carries one). ICL strength and
sample need are read per instance, never per size: the same config and seed gave world-m ICL
efficiency .43 on one machine and .80 on another, so a size is a stratum of instances, not a unit.

- `measured(records)`: the scored records (`phase` "measure"; null counts as measure). Records of
  `phase` "select" are hyperparameter-search trials on validation tasks: never scored, read only by
  the "trained to its best" figure.
- `task_rows(rows)`: one row per (record, task), from `task_accuracy` JSON where a record adapted to
  several tasks, else the record's own task and accuracy: the bootstrap's lowest level.
- `check_columns(records, folder)`: a null where a measure cannot do without a value (model, regime,
  a scored record's accuracy, a few-shot record's k) or a JSON column that does not parse is refused
  with a `TrustError` naming the column and the record files.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from fsv.errors import FsvError

JSON_COLUMNS = ("task_accuracy", "hparams", "val_curve", "selected_on", "selection")
EXAMPLES = 3


def text_of(values: pd.Series) -> pd.Series:
    """Integers as '3', nulls as '-', anything else as its text (pandas-3 safe: no Int64 -> str casts)."""
    def one(value) -> str:
        if value is None or (not isinstance(value, str) and pd.isna(value)):
            return "-"
        if isinstance(value, (int, float, np.integer, np.floating)) and float(value) == int(value):
            return str(int(value))
        return str(value)
    return values.map(one).astype(object)


def instance_key(rows: pd.DataFrame) -> pd.Series:
    """'MODEL/p<pretrain_seed>/<checkpoint or final>' per row; the record's own `instance` wins."""
    checkpoint = text_of(rows["checkpoint"]).replace("-", "final")
    built = rows["model"].astype(object).map(str) + "/p" + text_of(rows["pretrain_seed"]) + "/" + checkpoint
    own = rows["instance"] if "instance" in rows else pd.Series(None, index=rows.index)
    return own.astype(object).where(own.notna(), built).map(str)


def with_instances(records: pd.DataFrame) -> pd.DataFrame:
    """Every column of fsv.records.SCHEMA (null where a frame lacks one), and each row's instance."""
    from fsv.records import COLUMNS

    missing = [c for c in COLUMNS if c not in records.columns]
    records = records.assign(**{c: pd.Series(None, index=records.index, dtype=object) for c in missing})
    return records.assign(instance=instance_key(records))


def measured(records: pd.DataFrame) -> pd.DataFrame:
    phase = records["phase"].astype(object).where(records["phase"].notna(), "measure")
    return records[phase == "measure"]


def selection_rows(records: pd.DataFrame) -> pd.DataFrame:
    return records[records["phase"].astype(object) == "select"]


def instance_order(records: pd.DataFrame) -> tuple[list[str], dict[str, float], dict[str, str]]:
    """Instances ordered by parameter count, model, pretraining seed, checkpoint; params and model each."""
    first = records.groupby("instance").agg(
        params=("model_params", "median"), model=("model", "first"),
        pretrain=("pretrain_seed", "first"), checkpoint=("checkpoint", "first"))
    def key(name):
        row = first.loc[name]
        params = float(row["params"]) if pd.notna(row["params"]) else np.inf
        seed = float(row["pretrain"]) if pd.notna(row["pretrain"]) else -1.0
        step = float(row["checkpoint"]) if pd.notna(row["checkpoint"]) else np.inf
        return params, str(row["model"]), seed, step, name
    order = sorted(first.index, key=key)
    params = {i: float(first.loc[i, "params"]) if pd.notna(first.loc[i, "params"]) else np.nan for i in order}
    return order, params, {i: str(first.loc[i, "model"]) for i in order}


def task_rows(rows: pd.DataFrame, value: str = "accuracy") -> pd.DataFrame:
    """One row per (record, task): `task_accuracy` expanded where present (for `value` accuracy)."""
    if value != "accuracy" or rows.empty or rows["task_accuracy"].isna().all():
        return rows.assign(task=text_of(rows["task"]))
    split = rows["task_accuracy"].notna()
    expanded = []
    for index, text in rows.loc[split, "task_accuracy"].items():
        for task, accuracy in json.loads(text).items():
            expanded.append((index, str(task), float(accuracy) if accuracy is not None else np.nan))
    index, tasks, accuracies = zip(*expanded) if expanded else ((), (), ())
    many = rows.loc[list(index)].assign(task=list(tasks), accuracy=list(accuracies))
    single = rows[~split].assign(task=text_of(rows.loc[~split, "task"]))
    return pd.concat([single, many], ignore_index=True)


def check_columns(records: pd.DataFrame, folder) -> None:
    """Refuse (TrustError) a null a measure needs, or a JSON column that does not parse."""
    ok = records[records["status"] == "ok"]
    scored = measured(ok)
    _refuse_nulls(ok, "model", folder, "every record names its model")
    _refuse_nulls(ok, "regime", folder, "every record names its regime")
    _refuse_nulls(scored, "accuracy", folder, "a scored (phase measure) ok record holds its accuracy")
    _refuse_nulls(scored[scored["regime"] == "few_shot"], "k", folder, "a few-shot record holds its k")
    for column in JSON_COLUMNS:
        bad = [cell for cell, text in zip(ok["cell_id"], ok[column]) if isinstance(text, str) and not _parses(text)]
        if bad:
            raise _refusal(column, bad, folder, "does not parse as JSON")
    bad = [cell for cell, text in zip(ok["cell_id"], ok["task_accuracy"])
           if isinstance(text, str) and not _task_map(json.loads(text))]
    if bad:
        raise _refusal("task_accuracy", bad, folder, "is not a JSON object {task: accuracy}")


def _task_map(value) -> bool:
    return isinstance(value, dict) and all(v is None or isinstance(v, (int, float)) for v in value.values())


def _parses(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def _refuse_nulls(rows: pd.DataFrame, column: str, folder, why: str) -> None:
    null = rows[rows[column].isna()]
    if len(null):
        raise _refusal(column, list(null["cell_id"]), folder, f"is null ({why})")


def _refusal(column: str, cells: list, folder, what: str) -> FsvError:
    from analysis.load import TrustError

    files = ", ".join(f"{folder}/records/{cell}.parquet" for cell in cells[:EXAMPLES])
    more = f" and {len(cells) - EXAMPLES} more" if len(cells) > EXAMPLES else ""
    return TrustError(f"column {column!r} {what} in {len(cells)} record(s): {files}{more}")
