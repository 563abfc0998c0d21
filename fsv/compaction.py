"""Reading a study of 10^5 records fast: a compacted copy of the one-file-per-cell records.

The records stay as they are written, one Parquet file per cell (`records/<cell_id>.parquet`,
`fsv.records`); they remain the truth, and `pandas.read_parquet("STUDY/records")` still reads
them in one line. Beside them, `records/_compact/part-<id>.parquet` holds the same rows, each with
the size and modification time its cell's file had when it was compacted (pyarrow, pandas and
fsv's own reader skip `_`-prefixed folders, so the copy is never read twice). `read_compacted`
lists the records folder once and takes a compacted row only while its cell's file is unchanged
(same size and mtime); files that are new or rewritten since, and only those, are read
themselves, so the newest record of a cell always wins and a deleted file drops its cell. When
more than `COMPACT_AT` files were read that way, a new part replacing the old ones is written
(the driver's resume listing and end-of-study summary, and `fsv status`, do this; a reader that
cannot write, e.g. `fsv status` with read-only credentials, just skips it).

While a study runs, the driver adds a part of the records written since the last one every
`COMPACT_AT` finished trials (`compact_new`, from `study.compactor`): each file is read once, in
the background, while trials run, so a resume after the driver dies reads at most the last few
hundred files one by one, not every file the study wrote. `compact_new` reads only the parts'
version columns and never rewrites a part; past `MAX_PARTS` parts it merges them into one.

Measured (benchmarks/scale.py, 2 shared cores, moto S3): reading 10^4 one-file records took
~67 s locally and ~99 s on S3, 9-14x the time of 10^3, i.e. one GET/open per file; a study of
10^5 would spend its resume listing in minutes of GETs. With the compacted copy a read is one
listing (1000 names per request on S3) plus a few large files.
"""

from __future__ import annotations

import uuid

import pyarrow as pa
import pyarrow.parquet as pq

from fsv.records import SCHEMA, _fs

COMPACT = "_compact"
COMPACT_AT = 500  # files read one by one before a new compacted part is written
MAX_PARTS = 32  # parts `compact_new` adds before it merges them into one
VERSION = [("_size", pa.int64()), ("_mtime_ns", pa.int64())]


def _listing(filesystem, base: str) -> dict[str, tuple[int, int]]:
    """{file name: (size, mtime_ns)} of the per-cell record files."""
    from pyarrow import fs

    infos = filesystem.get_file_info(fs.FileSelector(f"{base}/records", allow_not_found=True))
    return {i.base_name: (i.size, i.mtime_ns or 0) for i in infos  # any other file there is checked, so named
            if i.type == fs.FileType.File and i.base_name[0] not in "._"}


def _parts(filesystem, base: str) -> list[str]:
    from pyarrow import fs

    infos = filesystem.get_file_info(fs.FileSelector(f"{base}/records/{COMPACT}", allow_not_found=True))
    return sorted(i.path for i in infos if i.base_name.startswith("part-") and i.base_name.endswith(".parquet"))


def read_compacted(study_dir, refresh: bool = True):
    """All good records of a study as a DataFrame, read through the compacted copy (a damaged file's
    cell counts as without a record; `fsv.records.scan_records` names it)."""
    return read_checked(study_dir, refresh)[0]


def read_checked(study_dir, refresh: bool = True):
    """(good records as a DataFrame, damaged files): the compacted parts' rows whose files are
    unchanged, and every other file checked (`fsv.records.scan_files`); `refresh`: write a new
    compacted part when many files were read one by one."""
    filesystem, base = _fs(study_dir)
    files = _listing(filesystem, base)
    table, damaged, fresh = _read_all(filesystem, base, files)
    if refresh and fresh >= COMPACT_AT:
        try:
            _write_part(filesystem, base, table, files)
        except OSError:  # read-only credentials, a full disk: the read itself is still right
            pass
    return table.to_pandas(), damaged


def _read_all(filesystem, base: str, files: dict) -> tuple[pa.Table, list, int]:
    """(every good record, damaged files, how many files were read one by one)."""
    from fsv.records import scan_files

    kept, covered = [], set()
    for part in _parts(filesystem, base):
        try:
            table = pq.read_table(part, filesystem=filesystem)
        except (OSError, pa.ArrowInvalid):  # replaced meanwhile: its cells are read one by one below
            continue
        mask = _unchanged(table, files, covered)
        covered.update(n for n, m in zip(_names(table), mask) if m)
        kept.append(table.filter(pa.array(mask, pa.bool_())).select(SCHEMA.names))
    fresh = sorted(set(files) - covered)
    read, damaged = scan_files(filesystem, [f"{base}/records/{n}" for n in fresh])
    return pa.concat_tables([*kept, read]), damaged, len(fresh)


def _names(table: pa.Table) -> list[str]:
    return [f"{c}.parquet" for c in table["cell_id"].to_pylist()]


def _unchanged(table: pa.Table, files: dict, covered: set) -> list[bool]:
    """Per row of a part: its cell's file is as it was compacted (and no earlier part took it)."""
    versions = zip(table["_size"].to_pylist(), table["_mtime_ns"].to_pylist())
    return [files.get(n) == v and n not in covered for n, v in zip(_names(table), versions)]


def compact_new(study_dir, at_least: int = COMPACT_AT) -> int:
    """Add a part holding the records whose files no part holds as they are now, once there are
    `at_least` of them; returns how many files it compacted (0: too few yet). Reads only the
    parts' version columns and those files, and rewrites no part -- except past `MAX_PARTS`
    parts, when every part and file is merged into one."""
    from fsv.records import scan_files

    filesystem, base = _fs(study_dir)
    files, parts = _listing(filesystem, base), _parts(filesystem, base)
    covered: set[str] = set()
    for part in parts:
        try:
            table = pq.read_table(part, columns=["cell_id", "_size", "_mtime_ns"], filesystem=filesystem)
        except (OSError, pa.ArrowInvalid):  # merged away meanwhile: its files count as new
            continue
        covered.update(n for n, m in zip(_names(table), _unchanged(table, files, covered)) if m)
    fresh = sorted(set(files) - covered)
    if len(fresh) < at_least:
        return 0
    if len(parts) >= MAX_PARTS:
        _write_part(filesystem, base, _read_all(filesystem, base, files)[0], files)
    else:  # a damaged file stays out of the part: it is named by every read until it is set aside
        _write_part(filesystem, base, scan_files(filesystem, [f"{base}/records/{n}" for n in fresh])[0], files,
                    replace=False)
    return len(fresh)


def _write_part(filesystem, base: str, table: pa.Table, files: dict, replace: bool = True) -> None:
    """One new part holding `table` with each row's file version; with `replace`, the older parts
    removed after."""
    old = _parts(filesystem, base) if replace else []
    versions = [files.get(f"{c}.parquet", (-1, -1)) for c in table["cell_id"].to_pylist()]
    table = table.append_column(pa.field(*VERSION[0]), pa.array([v[0] for v in versions], pa.int64()))
    table = table.append_column(pa.field(*VERSION[1]), pa.array([v[1] for v in versions], pa.int64()))
    filesystem.create_dir(f"{base}/records/{COMPACT}", recursive=True)
    part = f"part-{uuid.uuid4().hex[:12]}.parquet"
    staging = f"{base}/records/{COMPACT}/.{part}.tmp"  # a local file appears whole (a PUT does anyway)
    with filesystem.open_output_stream(staging) as out:
        pq.write_table(table, out)
    filesystem.move(staging, f"{base}/records/{COMPACT}/{part}")
    for path in old:
        filesystem.delete_file(path)
