"""Load a study's stored records and decide whether they can be trusted.

Input: `DIR/STUDY/records/*.parquet` (schema `fsv.records.SCHEMA`, one row per trial) and, when
present, `DIR/STUDY/cells.json` written by the driver at launch -- DIR a local folder or an `s3://`
/ `gs://` URI, read where it lies (`fsv.records.read_records`: the compacted parts, then one scan
per chunk of the files written since), never copied a file at a time:
`{"study": str, "fsv_version": str, "cells": [{"cell_id", "regime", "model", "k", "n", "seed",
"task", "description", ...}, ...]}`.

Refused with `TrustError` (always): no records; records from more than one fsv version or study;
two records of one cell; a cells.json that fsv did not write or that belongs to another study. Refused unless `allow_partial`: cells listed in cells.json without a record
(missing) and records whose status is not "ok" (failed). Noted: records whose cell is not in
cells.json (left out of the analysis unless settings.include_unlisted_records; phase "select" search
trials, which a study need not list, are kept: they are never scored), a cells.json from
another fsv version, records that disagree with their cell, and an absent cells.json.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from analysis.instances import check_columns
from analysis.settings import AnalysisSettings
from fsv.errors import FsvError

EXAMPLES_IN_MESSAGES = 5
COMPARED_CELL_KEYS = ("model", "regime", "task", "description", "k", "n", "seed", "pretrain_seed", "layout",
                      "prompt_tokens", "tasks_trained")


class TrustError(FsvError):
    """The stored records cannot be analysed as one study; the message says which and why.

    An FsvError, so the fsv CLI and the study driver report it like any refusal (no traceback)."""


@dataclass
class StudyRecords:
    study: str
    study_dir: str | Path  # a local folder or an s3:// / gs:// URI
    fsv_version: str | None
    records: pd.DataFrame  # ok records in scope: what the analysis uses
    total_records: int
    cells_listed: int | None  # None when cells.json is absent
    missing: pd.DataFrame  # cells.json entries without a record (cell_id, regime, model, ...)
    failed: pd.DataFrame  # records in scope whose status is not ok
    unlisted: list[str]
    allow_partial: bool
    notes: list[str] = field(default_factory=list)

    def counts(self) -> dict:
        by_regime = self.records.groupby("regime").size().sort_index()
        return {
            "study": self.study,
            "fsv_version": self.fsv_version,
            "records": self.total_records,
            "analysed": len(self.records),
            "cells_listed": self.cells_listed,
            "missing": len(self.missing),
            "failed": len(self.failed),
            "unlisted": len(self.unlisted),
            "cells_json": self.cells_listed is not None,
            "allow_partial": self.allow_partial,
            "analysed_by_regime": {str(k): int(v) for k, v in by_regime.items()},
        }


def load_study(
    study_dir: str | Path, allow_partial: bool = False, settings: AnalysisSettings | None = None
) -> StudyRecords:
    from fsv.records import read_records

    settings = settings or AnalysisSettings()
    remote = "://" in str(study_dir)
    study_dir = str(study_dir).rstrip("/") if remote else Path(study_dir)
    if not remote and not study_dir.is_dir():
        raise TrustError(f"no study folder at {study_dir}")
    records = _read(study_dir, read_records)
    if records.empty:
        raise TrustError(f"no records under {study_dir}/records: nothing to analyse")
    check_columns(records, study_dir)
    _refuse_mixed(records, "fsv_version", "fsv versions", "re-run the study's cells with one fsv version")
    _refuse_mixed(records, "study", "studies", "keep one study per folder")
    _refuse_duplicates(records)
    cells, notes = read_cells(study_dir, records)
    return _assess(study_dir, records, cells, notes, allow_partial, settings)


def _read(study_dir: str | Path, read_records) -> pd.DataFrame:
    """All records; a file that does not fit fsv.records.SCHEMA is refused by name (a remote study's
    damaged files are named by `fsv.records.read_records` itself)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from fsv.records import SCHEMA

    try:
        return read_records(study_dir)
    except (pa.ArrowException, OSError, ValueError) as error:
        for path in sorted(Path(study_dir, "records").glob("*.parquet")) if isinstance(study_dir, Path) else []:
            try:
                table = pq.read_table(path)
                wanted = pa.schema([SCHEMA.field(name) for name in table.column_names if name in SCHEMA.names])
                table.select(wanted.names).cast(wanted)
            except (pa.ArrowException, OSError, ValueError) as bad:
                raise TrustError(f"{path} cannot be read as an fsv record ({bad}); "
                                 "write records with fsv.records.SCHEMA") from None
        raise TrustError(f"the records under {study_dir}/records cannot be read together ({error})") from None


def read_cells(study_dir: str | Path, records: pd.DataFrame) -> tuple[pd.DataFrame | None, list[str]]:
    """cells.json as a frame (None when absent, with a note). One that fsv did not write, or that
    belongs to another study than the records', is refused naming the file
    (`fsv.records.check_cells_json`, given the records already read: no second listing)."""
    from fsv.records import check_cells_json

    listing = check_cells_json(study_dir, study_name=records["study"].iloc[0])
    if listing is None:
        return None, [f"{study_dir}/cells.json is absent: the records were trusted as the whole study "
                      "(missing cells cannot be detected)."]
    cells = pd.DataFrame(listing["cells"], columns=None if listing["cells"] else ["cell_id"])
    notes = []
    version = listing.get("fsv_version")
    record_version = records["fsv_version"].iloc[0]
    if version is not None and version != record_version:
        notes.append(f"cells.json was written by fsv {version}, the records by fsv {record_version}.")
    return cells, notes


def _assess(study_dir, records, cells, notes, allow_partial, settings) -> StudyRecords:
    if cells is None:
        in_scope, unlisted, missing = records, [], records.iloc[0:0][["cell_id", "regime", "model"]]
    else:
        listed = set(cells["cell_id"])
        search = records["phase"].astype(object) == "select"  # search trials: never scored, kept for a figure
        is_listed = records["cell_id"].isin(listed) | search
        unlisted = sorted(records.loc[~is_listed, "cell_id"])
        in_scope = records if settings.include_unlisted_records else records[is_listed]
        missing = cells[~cells["cell_id"].isin(set(records["cell_id"]))]
        notes += _unlisted_note(unlisted, settings) + _disagreement_notes(records[is_listed], cells)
    failed = in_scope[in_scope["status"] != "ok"]
    if (len(missing) or len(failed)) and not allow_partial:
        raise TrustError(_incomplete_message(study_dir, missing, failed))
    return StudyRecords(
        study=str(records["study"].iloc[0]),
        study_dir=study_dir,
        fsv_version=records["fsv_version"].iloc[0],
        records=in_scope[in_scope["status"] == "ok"].reset_index(drop=True),
        total_records=len(records),
        cells_listed=None if cells is None else len(cells),
        missing=missing.reset_index(drop=True),
        failed=failed.reset_index(drop=True),
        unlisted=unlisted,
        allow_partial=allow_partial,
        notes=notes,
    )


def _refuse_mixed(records: pd.DataFrame, column: str, what: str, remedy: str) -> None:
    values = records[column].fillna("<null>")
    if values.nunique() <= 1:
        return
    parts = []
    for value, group in records.groupby(values, sort=True):
        parts.append(f"{value!s} ({len(group)} records, e.g. {describe_cells(group, total=False)})")
    raise TrustError(f"records come from {values.nunique()} {what}: " + "; ".join(parts) + f". {remedy}.")


def _refuse_duplicates(records: pd.DataFrame) -> None:
    doubled = records[records["cell_id"].duplicated(keep=False)]
    if len(doubled):
        raise TrustError(f"{doubled['cell_id'].nunique()} cells have more than one record: "
                         f"{describe_cells(doubled.drop_duplicates('cell_id'))}")


def describe_cells(cells: pd.DataFrame, total: bool = True, errors: bool = False) -> str:
    """'N cells (regime/model: count, ...), e.g. id (regime, model), ...' for a message."""
    examples = []
    for _, cell in cells.head(EXAMPLES_IN_MESSAGES).iterrows():
        error = f": {str(cell.get('error')).splitlines()[0][:120]}" if errors and _present(cell.get("error")) else ""
        examples.append(f"{cell['cell_id']} ({cell.get('regime')}, {cell.get('model')}{error})")
    more = f", ... {len(cells) - EXAMPLES_IN_MESSAGES} more" if len(cells) > EXAMPLES_IN_MESSAGES else ""
    if not total:
        return ", ".join(examples) + more
    groups = cells.groupby([cells["regime"].astype(str), cells["model"].astype(str)]).size()
    by_group = ", ".join(f"{regime}/{model}: {count}" for (regime, model), count in groups.items())
    return f"{len(cells)} ({by_group}), e.g. " + ", ".join(examples) + more


def _incomplete_message(study_dir: str | Path, missing: pd.DataFrame, failed: pd.DataFrame) -> str:
    parts = []
    if len(missing):
        parts.append(f"missing cells (listed in cells.json, no record): {describe_cells(missing)}")
    if len(failed):
        parts.append(f"failed cells: {describe_cells(failed, errors=True)}")
    return (f"study {study_dir} is incomplete: " + "; ".join(parts)
            + ". Re-run the study to fill them, or analyse what is there with allow_partial / --allow-partial.")


def _unlisted_note(unlisted: list[str], settings: AnalysisSettings) -> list[str]:
    if not unlisted:
        return []
    use = "included" if settings.include_unlisted_records else "left out of the analysis"
    shown = ", ".join(unlisted[:EXAMPLES_IN_MESSAGES]) + (" ..." if len(unlisted) > EXAMPLES_IN_MESSAGES else "")
    return [f"{len(unlisted)} records have a cell_id not in cells.json ({use}): {shown}"]


def _disagreement_notes(records: pd.DataFrame, cells: pd.DataFrame) -> list[str]:
    keys = [k for k in COMPARED_CELL_KEYS if k in cells.columns]
    joined = records[["cell_id", *keys]].merge(cells[["cell_id", *keys]], on="cell_id", suffixes=("", "_cell"))
    notes = []
    for key in keys:
        differs = [not _same(a, b) for a, b in zip(joined[key], joined[f"{key}_cell"])]
        bad = joined[differs]
        if len(bad):
            example = bad.iloc[0]
            notes.append(f"{len(bad)} records disagree with their cell on {key!r}, e.g. {example['cell_id']}: "
                         f"record {example[key]!r}, cells.json {example[f'{key}_cell']!r}")
    return notes


def _present(value) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value)) and value is not pd.NA


def _same(a, b) -> bool:
    if not _present(a) or not _present(b):
        return True  # a key a cell leaves unset (e.g. k for sft) is not a disagreement
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return str(a) == str(b)
