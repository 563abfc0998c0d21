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
