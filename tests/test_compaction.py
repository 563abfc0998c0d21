"""The compacted copy of a study's records, on a local folder and on S3 (moto): the same rows as
the one-file-per-cell records, the newest record of a cell wins, a deleted file drops its cell,
and `pandas.read_parquet` of the records folder still reads every record once."""

from __future__ import annotations

import time

import pandas as pd
import pytest

import fsv.compaction as compaction
from fsv.compaction import COMPACT, read_compacted
from fsv.records import _fs, list_names, ok_cell_ids, write_record
from test_remote_storage import BUCKET, s3  # noqa: F401 - the moto S3 server fixture


@pytest.mark.parametrize("where", ["local", "s3"])
def test_the_compacted_copy_follows_the_records(where, tmp_path, request, monkeypatch):
    if where == "s3":
        for key, value in request.getfixturevalue("s3").items():
            monkeypatch.setenv(key, value)
    monkeypatch.setattr(compaction, "COMPACT_AT", 3)
    study = str(tmp_path / "study") if where == "local" else f"s3://{BUCKET}/compact-{tmp_path.name}"
    for i in range(5):
        write_record(study, {"cell_id": f"c{i}", "study": "x", "status": "failed" if i == 0 else "ok", "accuracy": i / 8})
    assert sorted(read_compacted(study).cell_id) == [f"c{i}" for i in range(5)]
    assert len(list_names(study, f"records/{COMPACT}")) == 1  # five files read one by one: compacted

    time.sleep(1.1)  # S3 keeps modification times to the second
    write_record(study, {"cell_id": "c0", "study": "x", "status": "ok", "accuracy": 0.875})  # a re-run cell
    filesystem, base = _fs(study)
    filesystem.delete_file(f"{base}/records/c4.parquet")  # a record removed by hand: its cell runs again
    frame = read_compacted(study).set_index("cell_id")
    assert sorted(frame.index) == ["c0", "c1", "c2", "c3"] and frame.loc["c0", "accuracy"] == 0.875
    assert ok_cell_ids(study) == {"c0", "c1", "c2", "c3"}
    if where == "local":
        assert sorted(pd.read_parquet(f"{study}/records").cell_id) == ["c0", "c1", "c2", "c3"]  # one line, once each


@pytest.mark.parametrize("where", ["local", "s3"])
def test_parts_added_while_a_study_runs_hold_each_record_once(where, tmp_path, request, monkeypatch):
    """`compact_new` (the driver's, every 500 finished trials): a part of only the files no part
    holds yet, none rewritten, merged into one past MAX_PARTS; reads see every record once."""
    if where == "s3":
        for key, value in request.getfixturevalue("s3").items():
            monkeypatch.setenv(key, value)
    monkeypatch.setattr(compaction, "MAX_PARTS", 2)
    study = str(tmp_path / "study") if where == "local" else f"s3://{BUCKET}/grow-{tmp_path.name}"
    parts = lambda: sorted(list_names(study, f"records/{COMPACT}"))  # noqa: E731

    def write(ids):
        for i in ids:
            write_record(study, {"cell_id": f"c{i}", "study": "x", "status": "ok", "accuracy": i / 16})

    write(range(4))
    assert compaction.compact_new(study, at_least=3) == 4 and len(parts()) == 1
    write(range(4, 6))
    assert compaction.compact_new(study, at_least=3) == 0 and len(parts()) == 1  # two new files: not yet
    write(range(6, 9))
    first = parts()
    assert compaction.compact_new(study, at_least=3) == 5 and len(parts()) == 2 and first[0] in parts()
    assert sorted(read_compacted(study, refresh=False).cell_id) == sorted(f"c{i}" for i in range(9))
    write(range(9, 12))
    assert compaction.compact_new(study, at_least=3) == 3 and len(parts()) == 1  # MAX_PARTS: merged into one
    frame = read_compacted(study, refresh=False)
    assert sorted(frame.cell_id) == sorted(f"c{i}" for i in range(12)) and frame.cell_id.is_unique
    filesystem, base = _fs(study)
    merged = pd.read_parquet(filesystem.open_input_file(f"{base}/records/{COMPACT}/{parts()[0]}"))
    assert sorted(merged.cell_id) == sorted(f"c{i}" for i in range(12))  # the merged part holds them all
