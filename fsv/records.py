"""The trial record: one row per trial, written once, atomically, as one Parquet file per cell.

`DIR/STUDY/records/<cell_id>.parquet` holds the latest record of a cell. A cell that is re-run
(a retry after a failure, or a trial that ran again after the driver was killed) overwrites its own
file with an atomic rename, so a study never holds two records of one cell and never a torn one;
`pandas.read_parquet("DIR/STUDY/records")` returns every record.

A study folder is also a thing people copy, edit and cut short, so every reader checks what it
finds: a file in `records/` that is not a readable Parquet file, that has a column SCHEMA does not
know or a column of another type, or whose `cell_id` differs from its file name or from the hash of
its own `config` is *damaged*. `read_records` refuses (an `FsvError` naming each path: exit 2 in the
CLI, never a pyarrow traceback); `fsv run` moves damaged files to `records/.damaged/` (never
deleting them) so their cells run again (`quarantine_damaged`).

Timing-dependent fields: `wall_s`, `train_s`, `eval_s` (seconds measured), and `attempts` and
`error` where a trial failed for a reason outside its inputs (a killed worker, a lost node). Every
other column is a function of the cell's config and the model's weights: the same cell run twice on
one machine gives the same values (tests/test_faults.py checks it after `kill -9` and resume).
"""

from __future__ import annotations

import os
import tempfile
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from fsv.errors import FsvError

# Column -> Arrow type. Every record has every column (null where it does not apply), so the
# dataset has one schema whatever mix of regimes a study holds.
SCHEMA = pa.schema(
    [
        ("study", pa.string()),
        ("cell_id", pa.string()),
        ("model", pa.string()),  # registry name, e.g. "world-s" or "EleutherAI/pythia-70m"
        ("model_params", pa.int64()),  # counted from the loaded model
        ("pretrain_seed", pa.int64()),  # world ladder only
        ("world", pa.string()),  # world preset (null for HF tasks)
        ("regime", pa.string()),
        ("task", pa.string()),
        ("description", pa.string()),  # description variant of the main evaluation
        ("k", pa.int64()),  # demonstrations in the evaluation prompt
        ("n", pa.int64()),  # training examples (per task, for instruction tuning)
        ("tasks_trained", pa.int64()),  # T, instruction tuning only
        ("prompt_tokens", pa.int64()),  # m, prompt tuning only
        ("layout", pa.string()),  # how training examples are laid out: "single" / "packed"
        ("seed", pa.int64()),
        ("accuracy", pa.float64()),
        ("accuracy_norm", pa.float64()),  # length-normalised scoring (multi-token labels)
        ("n_eval", pa.int64()),
        ("chance", pa.float64()),
        ("bayes_accuracy", pa.float64()),  # null off the world
        ("acc_none", pa.float64()),  # zero-shot accuracy per description variant, where measured
        ("acc_model", pa.float64()),
        ("acc_human", pa.float64()),
        ("task_accuracy", pa.string()),  # JSON {task: accuracy}: where one trial adapts to each held-out task
        ("demo_indices", pa.string()),  # JSON: the demonstrations drawn, per evaluation episode
        ("train_examples", pa.int64()),
        ("train_tokens", pa.int64()),  # tokens one adaptation trained on (per task where a trial adapts to each)
        ("train_flops", pa.float64()),  # training_flops(params, tokens)
        ("final_train_loss", pa.float64()),
        ("wall_s", pa.float64()),
        ("train_s", pa.float64()),
        ("eval_s", pa.float64()),
        ("zero_stage", pa.int64()),
        ("workers", pa.int64()),
        ("device", pa.string()),
        ("status", pa.string()),  # "ok" / "failed"
        ("error", pa.string()),
        ("attempts", pa.int64()),
        ("fsv_version", pa.string()),
        ("config", pa.string()),  # JSON of the cell's normalised config
        # -- model instances and the hyperparameter search (a trained regime measured at its best) --
        ("checkpoint", pa.int64()),  # pretraining step of the model instance (null: the finished model)
        ("instance", pa.string()),  # the model instance: "MODEL/p<pretrain_seed>/<checkpoint or final>"
        ("phase", pa.string()),  # "measure" (scored, default) or "select" (a search trial on validation tasks)
        ("method", pa.string()),  # how weights move: "full" / "lora" (sft), "prompt" (prompt tuning)
        ("hparams", pa.string()),  # JSON: the hyperparameters this record ran with (lr, steps, ...)
        ("selected_on", pa.string()),  # JSON list: the validation tasks that chose `hparams` (never this record's)
        ("selection", pa.string()),  # JSON: the selection that chose `hparams` (search space, edge flags, score)
        ("val_curve", pa.string()),  # JSON: validation accuracy per training length, where a trial measured it
        ("n_distinct", pa.int64()),  # distinct inputs among the n training examples
        ("label_logprob", pa.float64()),  # mean log-likelihood of the correct label (a continuous measure)
        ("train_loss_chance", pa.float64()),  # the training objective's chance level (ln C, ln 2 for DPO)
        ("reward_margin", pa.float64()),  # rlhf: mean chosen-minus-rejected reward on held-out pairs
        ("fold", pa.string()),  # world: the cross-fitting fold a scored record covers (the feature its tasks read)
        ("curves", pa.string()),  # JSON rows on select records: every adaptation's measures at every length
        ("precision", pa.string()),  # training records: what the trial trained in ("auto" resolved; fsv/train/precision.py)
        ("resumed_jobs", pa.int64()),  # select records of a longer run: adaptations that went on from the shorter run's state
    ]
)
COLUMNS = SCHEMA.names
TIMING_FIELDS = ("wall_s", "train_s", "eval_s")  # measured seconds: differ between two runs of one cell
DAMAGED = ".damaged"  # records/.damaged/: where `fsv run` moves files it cannot trust


@dataclass(frozen=True)
class Damaged:
    path: str  # the file, as the filesystem names it
    reason: str


class DamagedRecords(FsvError):
    """Files in `records/` that cannot be trusted as records; the message names each one."""

    def __init__(self, damaged: list[Damaged]):
        self.damaged = damaged
        lines = "\n".join(f"  {d.path}: {d.reason}" for d in damaged)
        super().__init__(f"{len(damaged)} file(s) in records/ cannot be trusted:\n{lines}\n"
                         f"`fsv run` on the same study moves them to records/{DAMAGED}/ and runs their cells again; "
                         "or move them away yourself")


def _fs(study_dir: str | Path):
    """(filesystem, path) for a local folder or an `s3://` / `gs://` URI."""
    from pyarrow import fs

    text = str(study_dir)
    if "://" in text:
        return fs.FileSystem.from_uri(text)
    return fs.LocalFileSystem(), str(Path(text).expanduser().resolve())


def write_text(study_dir: str | Path, name: str, text: str) -> None:
    """A small file beside the records (e.g. cells.json), written whole: locally via a rename."""
    filesystem, base = _fs(study_dir)
    filesystem.create_dir(base, recursive=True)
    if "://" in str(study_dir):
        with filesystem.open_output_stream(f"{base}/{name}") as out:
            out.write(text.encode())
        return
    tmp = Path(base) / f".{name}.{uuid.uuid4().hex}.tmp"
    tmp.write_text(text)
    os.replace(tmp, Path(base) / name)


def read_text(study_dir: str | Path, name: str) -> str | None:
    filesystem, base = _fs(study_dir)
    from pyarrow import fs

    if filesystem.get_file_info(f"{base}/{name}").type != fs.FileType.File:
        return None
    with filesystem.open_input_stream(f"{base}/{name}") as handle:
        return handle.read().decode()


def list_names(study_dir: str | Path, sub: str) -> list[str]:
    from pyarrow import fs

    filesystem, base = _fs(study_dir)
    selector = fs.FileSelector(f"{base}/{sub}", allow_not_found=True)
    return [info.base_name for info in filesystem.get_file_info(selector)]


def training_flops(params: int, tokens: int | None) -> float | None:
    """A record's `train_flops`: 6 x parameters x tokens (forward 2, backward 4), null without tokens."""
    return None if tokens is None else 6.0 * params * tokens


def write_record(study_dir: str | Path, record: dict[str, Any]) -> str:
    """Write one record atomically to `records/<cell_id>.parquet`: locally a temp file, fsync and
    rename; on an object store a single PUT (atomic there)."""
    unknown = set(record) - set(COLUMNS)
    if unknown:
        raise ValueError(f"record has unknown columns {sorted(unknown)}; known: {COLUMNS}")
    table = pa.table({name: [record.get(name)] for name in COLUMNS}, schema=SCHEMA)
    filesystem, base = _fs(study_dir)
    final = f"{base}/records/{record['cell_id']}.parquet"
    filesystem.create_dir(f"{base}/records", recursive=True)
    if "://" in str(study_dir):
        with filesystem.open_output_stream(final) as out:
            pq.write_table(table, out)
        return final
    tmp = f"{base}/records/.{record['cell_id']}.{uuid.uuid4().hex}.tmp"
    with open(tmp, "wb") as handle:
        pq.write_table(table, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, final)
    return final


def read_records(study_dir: str | Path):
    """All records of a study as a DataFrame (empty, with every column, when there are none).
    Refuses with `DamagedRecords` (naming each file) when any file in `records/` is damaged."""
    frame, damaged = scan_records(study_dir)
    if damaged:
        raise DamagedRecords(damaged)
    return frame


def scan_records(study_dir: str | Path):
    """(records as a DataFrame, damaged files), read through the compacted copy (`fsv.compaction`):
    files it already holds unchanged are not opened again; every other file is checked
    (`scan_files`), so a damaged one is named each time until it is set aside."""
    from fsv.compaction import read_checked

    return read_checked(study_dir)


SCAN_CHUNK = 500  # files per dataset scan (its memory grows with them: 0.2 GB at 500, 0.5 at 2000)


def scan_files(filesystem, paths: list[str]) -> tuple[pa.Table, list[Damaged]]:
    """(the good records among `paths` as one table, the damaged files). One dataset scan per
    `SCAN_CHUNK` files, not one read per file (a study holds thousands of one-row files); only when
    a chunk's scan fails is each of its files read on its own. Chunks bound the memory: one scan
    over 10^5 files held each file's metadata and its one-row table at once (12 GB resident before
    the records were even a DataFrame, benchmarks/scale.py), where the records themselves are ~0.1 GB."""
    tables, damaged = [], []
    for start in range(0, len(paths), SCAN_CHUNK):
        table, bad = _scan_chunk(filesystem, paths[start:start + SCAN_CHUNK])
        tables.append(table)
        damaged += bad
    return (pa.concat_tables(tables) if tables else SCHEMA.empty_table()), sorted(damaged, key=lambda d: d.path)


def _scan_chunk(filesystem, paths: list[str]) -> tuple[pa.Table, list[Damaged]]:
    """One scan: the good rows as one contiguous table (its fragments freed), and the damaged files."""
    import pyarrow.dataset as ds

    dataset = ds.dataset(paths, format="parquet", filesystem=filesystem, schema=SCHEMA)
    damaged, frames = [], []
    try:
        tables = [(b.fragment, pa.Table.from_batches([b.record_batch], SCHEMA)) for b in dataset.scanner().scan_batches()]
    except (pa.ArrowException, OSError):  # a torn file, or a column the scan cannot cast
        tables = list(_read_one_by_one(dataset, filesystem, damaged))
    for fragment, table in tables:
        reason = _schema_problem(fragment) or _content_problem(fragment.path, table)
        (damaged.append(Damaged(fragment.path, reason)) if reason else frames.append(table))
    return (pa.concat_tables(frames).combine_chunks() if frames else SCHEMA.empty_table()), damaged


def _schema_problem(fragment) -> str | None:
    try:
        schema = fragment.physical_schema
    except (pa.ArrowException, OSError) as exc:
        return f"not a readable Parquet file ({str(exc).splitlines()[0][:200]})"
    for field in schema:
        if field.name not in COLUMNS:
            return f"column {field.name!r} is not in fsv.records.SCHEMA (a record of another tool or version?)"
        expected = SCHEMA.field(field.name).type
        if not _compatible(field.type, expected):
            return f"column {field.name!r} has type {field.type}, fsv.records.SCHEMA says {expected}"
    if "cell_id" not in schema.names:
        return "no 'cell_id' column"
    return None


def _compatible(actual, expected) -> bool:
    """The same type, or one the scan casts without loss of meaning (int32 -> int64, large_string -> string)."""
    t = pa.types
    if actual == expected or t.is_null(actual):
        return True
    if t.is_integer(expected):
        return t.is_integer(actual)
    if t.is_floating(expected):
        return t.is_floating(actual) or t.is_integer(actual)
    return t.is_string(expected) and (t.is_string(actual) or t.is_large_string(actual))


def _read_one_by_one(dataset, filesystem, damaged: list[Damaged]):
    for fragment in dataset.get_fragments():
        reason = _schema_problem(fragment)
        if reason:
            damaged.append(Damaged(fragment.path, reason))
            continue
        try:
            with filesystem.open_input_file(fragment.path) as handle:
                yield fragment, pq.read_table(handle, schema=SCHEMA)
        except (pa.ArrowException, OSError) as exc:
            damaged.append(Damaged(fragment.path, f"not a readable Parquet file ({str(exc).splitlines()[0][:200]})"))


def _content_problem(path: str, table: pa.Table) -> str | None:
    """A record's file is named by its cell_id, and its cell_id is the hash of its config."""
    import json

    from fsv.grid import cell_id

    stem = path.rsplit("/", 1)[-1].removesuffix(".parquet")
    if table.num_rows != 1:
        return f"{table.num_rows} rows; a record file holds exactly one"
    row = {name: table.column(name)[0].as_py() for name in ("cell_id", "config")}
    if row["cell_id"] != stem:
        return f"its cell_id {row['cell_id']!r} does not match its file name {stem!r}"
    if row["config"] is not None:
        try:
            cell = {k: v for k, v in json.loads(row["config"]).items() if k != "cell_id"}
        except (ValueError, AttributeError):
            return "its config column is not a JSON object"
        if cell_id(cell) != stem:
            return f"its config hashes to {cell_id(cell)!r}, not to its cell_id {stem!r} (edited by hand?)"
    return None


def quarantine_damaged(study_dir: str | Path) -> list[tuple[Damaged, str]]:
    """Move every damaged file to `records/.damaged/` (its cell then has no record and runs again);
    return (damaged, where it went). Nothing is deleted."""
    filesystem, base = _fs(study_dir)
    _, damaged = scan_records(study_dir)
    moved = []
    if damaged:
        filesystem.create_dir(f"{base}/records/{DAMAGED}", recursive=True)
    for item in damaged:
        name = item.path.rsplit("/", 1)[-1]
        dest = f"{base}/records/{DAMAGED}/{name}.{uuid.uuid4().hex[:8]}"
        filesystem.move(item.path, dest)
        moved.append((item, dest))
    return moved


def check_cells_json(study_dir: str | Path, study_name: str | None = None, records=None) -> dict | None:
    """cells.json, parsed, or None when absent. Refused (FsvError naming the file) when it is not
    fsv's JSON, or belongs to another study than `study_name` (or than the records' study: those of
    `records`, a frame the caller has read already, else read here -- at 10^5 records on S3 a read
    is mostly one listing of the folder, so a caller that reads them anyway passes them)."""
    import json

    text = read_text(study_dir, "cells.json")
    if text is None:
        return None
    where = f"{str(study_dir).rstrip('/')}/cells.json"
    try:
        payload = json.loads(text)
        cells = payload["cells"]
        ids = [c["cell_id"] for c in cells]
        owner = payload.get("study")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise FsvError(f"{where} is not a cells.json that fsv wrote ({type(exc).__name__}: {exc}); "
                       "move it away and run the study again to rewrite it") from None
    if study_name is None:
        frame = records if records is not None else scan_records(study_dir)[0]
        study_name = frame["study"].iloc[0] if len(frame) and frame["study"].nunique() == 1 else None
    if study_name is not None and owner != study_name:
        raise FsvError(f"{where} belongs to study {owner!r}, not to {study_name!r} (copied from another study?); "
                       "move it away: `fsv run` of this study writes its own")
    return {**payload, "cells": cells, "ids": ids}


def ok_cell_ids(study_dir: str | Path) -> set[str]:
    """The cells with an `ok` record: what a re-run skips (read through the compacted copy)."""
    from fsv.compaction import read_compacted

    frame = read_compacted(study_dir)
    return set(frame.loc[frame["status"] == "ok", "cell_id"])


@contextmanager
def analysis_output(study_dir: str | Path, out: str | Path | None = None):
    """The local folder the analysis writes into: `out` if given, else STUDY/analysis, or for an
    `s3://` / `gs://` study a scratch folder uploaded to STUDY/analysis on exit (the analysis reads
    the records where they lie: `analysis.load.load_study`)."""
    if out is not None or "://" not in str(study_dir):
        yield Path(out) if out is not None else Path(study_dir) / "analysis"
        return
    from pyarrow import fs

    remote, base = _fs(study_dir)
    with tempfile.TemporaryDirectory(prefix="fsv-analysis-") as tmp:
        yield Path(tmp)
        fs.copy_files(tmp, f"{base}/analysis", source_filesystem=fs.LocalFileSystem(), destination_filesystem=remote)
