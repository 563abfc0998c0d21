"""The trial record: one row per trial, written once, atomically, as one Parquet file per cell.

`DIR/STUDY/records/<cell_id>.parquet` holds the latest record of a cell. A cell that is re-run
(a retry after a failure, or a trial that ran again after the driver was killed) overwrites its own
file with an atomic rename, so a study never holds two records of one cell and never a torn one;
`pandas.read_parquet("DIR/STUDY/records")` returns every record.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

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
        ("train_flops", pa.float64()),  # 6 * params * tokens
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
    ]
)
COLUMNS = SCHEMA.names


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
    One dataset scan, not one read per file: a study holds thousands of one-row files."""
    import pyarrow.dataset as ds
    from pyarrow import fs

    filesystem, base = _fs(study_dir)
    info = filesystem.get_file_info(f"{base}/records")
    if info.type != fs.FileType.Directory:
        return SCHEMA.empty_table().to_pandas()
    dataset = ds.dataset(f"{base}/records", format="parquet", filesystem=filesystem, schema=SCHEMA,
                         ignore_prefixes=[".", "_"])
    return dataset.to_table().to_pandas()


def ok_cell_ids(study_dir: str | Path) -> set[str]:
    frame = read_records(study_dir)
    return set(frame.loc[frame["status"] == "ok", "cell_id"])


@contextmanager
def local_view(study_dir: str | Path):
    """A local folder with the study's `records/` and `cells.json`, for readers of local files (the
    analysis): the folder itself, or for `s3://` / `gs://` a scratch copy whose `analysis/`, if one
    was written into it, is uploaded beside the records on exit."""
    if "://" not in str(study_dir):
        yield Path(study_dir)
        return
    from pyarrow import fs

    remote, base = _fs(study_dir)
    local = fs.LocalFileSystem()
    with tempfile.TemporaryDirectory(prefix="fsv-study-") as tmp:
        for name in ("records", "cells.json"):
            kind = remote.get_file_info(f"{base}/{name}").type
            if kind == fs.FileType.Directory:
                Path(tmp, name).mkdir()
            if kind != fs.FileType.NotFound:
                fs.copy_files(f"{base}/{name}", f"{tmp}/{name}", source_filesystem=remote, destination_filesystem=local)
        yield Path(tmp)
        if (Path(tmp) / "analysis").is_dir():
            fs.copy_files(f"{tmp}/analysis", f"{base}/analysis", source_filesystem=local, destination_filesystem=remote)
