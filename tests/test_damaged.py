"""Foreign and damaged files in a study folder, on real files: each is named by its path, and either
set aside so its cell runs again (`fsv run`) or refused with exit 2 (`fsv status`, `fsv analyze`) --
never a pyarrow traceback, never silently used. Fast: no Ray, records written by fsv's own writer."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from fsv.cli import main
from fsv.grid import cell_id
from fsv.records import (DamagedRecords, check_cells_json, quarantine_damaged, read_records, scan_records,
                         write_record)
from fsv.errors import FsvError


def _cell(i: int) -> dict:
    cell = {"model": "world-xs", "regime": "few_shot", "task": "world", "k": i + 1, "seed": 0}
    return {**cell, "cell_id": cell_id(cell)}


@pytest.fixture
def study(tmp_path) -> Path:
    root = tmp_path / "s"
    cells = [_cell(i) for i in range(4)]
    for cell in cells:
        write_record(root, {"cell_id": cell["cell_id"], "study": "s", "status": "ok", "accuracy": 0.5,
                            "model": cell["model"], "regime": cell["regime"], "k": cell["k"], "seed": 0,
                            "fsv_version": "0.1.0", "config": json.dumps(cell, sort_keys=True)})
    (root / "cells.json").write_text(json.dumps({"study": "s", "fsv_version": "0.1.0", "cells": cells}))
    return root


def _files(root: Path) -> list[Path]:
    return sorted((root / "records").glob("*.parquet"))


def _damage(root: Path) -> dict[str, str]:
    """Four kinds of damage; returns {file name: a fragment of its reason}."""
    files = _files(root)
    files[0].write_bytes(files[0].read_bytes()[:100])  # torn
    (root / "records" / "notes.parquet").write_text("not parquet")  # foreign
    files[1].rename(root / "records" / "0000000000000000.parquet")  # renamed: name and cell_id differ
    table = pq.read_table(files[2])  # edited by hand: content no longer hashes to its id
    config = json.loads(table["config"][0].as_py()) | {"k": 99}
    pq.write_table(table.set_column(table.schema.get_field_index("config"), "config",
                                    pa.array([json.dumps(config)])), files[2])
    return {files[0].name: "not a readable Parquet file", "notes.parquet": "not a readable Parquet file",
            "0000000000000000.parquet": "does not match its file name", files[2].name: "hashes to"}


def test_every_damaged_file_is_named_with_its_reason(study):
    expected = _damage(study)
    frame, damaged = scan_records(study)
    assert len(frame) == 1  # the one intact record is still read
    assert {Path(d.path).name: d.reason for d in damaged}.keys() == expected.keys()
    for d in damaged:
        assert expected[Path(d.path).name] in d.reason
    with pytest.raises(DamagedRecords) as refused:
        read_records(study)
    for name in expected:
        assert str(study / "records" / name) in str(refused.value)


def test_status_and_analyze_refuse_with_exit_2_naming_the_file(study):
    _damage(study)
    runner = CliRunner()
    for command in ("status", "analyze"):
        result = runner.invoke(main, [command, str(study)])
        assert result.exit_code == 2, (command, result.output, result.exception)
        assert "notes.parquet" in result.output and "Traceback" not in result.output


def test_quarantine_moves_damaged_files_aside_and_deletes_nothing(study):
    expected = _damage(study)
    moved = quarantine_damaged(study)
    assert sorted(Path(d.path).name for d, _ in moved) == sorted(expected)
    aside = sorted(p.name.rsplit(".", 1)[0] for p in (study / "records" / ".damaged").iterdir())
    assert aside == sorted(expected)
    frame, damaged = scan_records(study)
    assert damaged == [] and len(frame) == 1  # the cells of the moved files have no record: they re-run


def test_records_of_another_schema_are_refused_naming_the_column(study):
    path = study / "records" / "x1.parquet"
    pq.write_table(pa.table({"cell_id": ["x1"], "accuracy": ["high"]}), path)
    with pytest.raises(DamagedRecords, match=r"x1.parquet: column 'accuracy' has type string"):
        read_records(study)
    pq.write_table(pa.table({"cell_id": ["x1"], "score": [0.5]}), path)
    with pytest.raises(DamagedRecords, match=r"column 'score' is not in fsv.records.SCHEMA"):
        read_records(study)
    pq.write_table(pa.table({"cell_id": ["x1"], "k": pa.array([3], pa.int32()), "accuracy": pa.array([0.5], pa.float32())}),
                   path)  # narrower types of the same kind (pandas may write them) are read as SCHEMA's
    assert read_records(study).set_index("cell_id").loc["x1", "k"] == 3
    path.unlink()
    assert len(read_records(study)) == 4  # records written with SCHEMA are accepted


def test_a_cells_json_of_another_study_is_refused(study):
    assert check_cells_json(study)["study"] == "s"
    (study / "cells.json").write_text(json.dumps({"study": "other", "cells": []}))
    for name in (None, "s"):
        with pytest.raises(FsvError, match=r"cells.json belongs to study 'other', not to 's'"):
            check_cells_json(study, name)
    result = CliRunner().invoke(main, ["status", str(study)])
    assert result.exit_code == 2 and str(study / "cells.json") in result.output
    (study / "cells.json").write_text("{ torn")
    result = CliRunner().invoke(main, ["analyze", str(study)])
    assert result.exit_code == 2 and "is not a cells.json that fsv wrote" in result.output


def test_fsv_run_refuses_a_foreign_cells_json_before_writing(study, tmp_path):
    (study / "cells.json").write_text(json.dumps({"study": "other", "cells": []}))
    yaml_path = tmp_path / "s.yaml"
    yaml_path.write_text("name: s\nmodels: [world-xs]\nregimes: {zero_shot: {descriptions: [none]}}\n")
    before = sorted(p.name for p in study.rglob("*"))
    result = CliRunner().invoke(main, ["run", str(yaml_path), "--storage", str(study.parent)])
    assert result.exit_code == 2 and "belongs to study 'other'" in result.output
    assert sorted(p.name for p in study.rglob("*")) == before
