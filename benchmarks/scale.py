"""How the study-level commands grow with the number of records: `fsv validate` (a study whose
grid has N cells), `fsv status`, resume (the listing of done cells, `fsv.records.ok_cell_ids`, what
`fsv run` reads before launching anything; `resume-cold` is the first read, before any compacted
copy exists, which writes one (`fsv.compaction`); `resume` a later one) and `fsv analyze`, on synthetic studies of N one-file-
per-cell records (analysis/synthetic.py, replicate seeds scaled to reach N), on a local folder and
on a local S3 server (moto, in its own process, over HTTP).

    python -m benchmarks.scale --sizes 1000 10000 --where local s3
    python -m benchmarks.scale --sizes 100000 --where local --commands status resume
    python -m benchmarks.scale --sizes 100000 --where s3 --compact-every 500 --commands resume-cold resume

`--compact-every 500` writes the records as a running study leaves them (a part every 500 files,
`study.compactor`): resume-cold is then the listing after the driver died mid-study.

Prints one row per (N, storage, command) with seconds and the growth against the previous N
(10x records: a ratio of ~10 is linear, more is worse than linear). The records are written
straight through pyarrow, several uploads at once, which is how many trials write them at once.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
          "AWS_EC2_METADATA_DISABLED": "true"}


def synthetic(n: int):
    """A synthetic study's records (a pyarrow Table in fsv's schema) and its cells.json payload."""
    import pyarrow as pa

    from analysis.synthetic import SyntheticSpec, cells_listing, records_frame, synthetic_records
    from fsv.records import SCHEMA

    per_seed = len(synthetic_records(SyntheticSpec(seeds=(0,))))
    spec = SyntheticSpec(seeds=tuple(range(max(1, round(n / per_seed)))))
    frame = records_frame(spec)
    cells = cells_listing(spec, frame.to_dict("records"))
    return pa.Table.from_pandas(frame, schema=SCHEMA, preserve_index=False), cells


def write_study(uri: str, table, cells: dict, compact_every: int = 0) -> tuple[float, float]:
    """URI/cells.json, then one Parquet file per record under URI/records; with `compact_every`, a
    compacted part added after each `compact_every` files, as the driver does while trials run
    (`study.compactor`; the trials interrupted before the last part: the remainder). Returns the
    seconds of writing and of compacting."""
    import pyarrow.parquet as pq

    from fsv.compaction import compact_new
    from fsv.records import _fs, write_text

    filesystem, base = _fs(uri)
    filesystem.create_dir(f"{base}/records", recursive=True)
    write_text(uri, "cells.json", json.dumps(cells, default=str))  # first, as the driver writes it at launch
    t0, compacting = time.perf_counter(), 0.0

    def put(i: int) -> None:
        row = table.slice(i, 1)
        with filesystem.open_output_stream(f"{base}/records/{row['cell_id'][0].as_py()}.parquet") as out:
            pq.write_table(row, out)

    step = compact_every or table.num_rows
    with ThreadPoolExecutor(16) as pool:
        for start in range(0, table.num_rows, step):
            list(pool.map(put, range(start, min(start + step, table.num_rows))))
            if compact_every:
                t = time.perf_counter()
                compact_new(uri, at_least=compact_every)
                compacting += time.perf_counter() - t
    return time.perf_counter() - t0 - compacting, compacting


def study_yaml(n: int, folder: Path) -> Path:
    """A world study whose grid has ~n cells (zero-shot, 3 descriptions x n/3 seeds)."""
    import yaml

    path = folder / f"grid{n}.yaml"
    path.write_text(yaml.safe_dump({"name": f"grid{n}", "models": ["world-xs"], "seeds": list(range(max(1, n // 3))),
                                    "regimes": {"zero_shot": {}}}))
    return path


def timed(args: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "fsv.cli", *args], env=env, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"fsv {' '.join(args)}: exit {proc.returncode}\n{proc.stderr[-2000:]}")
    return time.perf_counter() - t0


def timed_listing(uri: str, env: dict) -> float:
    """ok_cell_ids in a fresh process (as `fsv run` does it), minus that process's import time."""
    code = ("import time, fsv.records as r; t=time.perf_counter(); ids=r.ok_cell_ids({!r}); "
            "print(time.perf_counter()-t, len(ids))").format(uri)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode:
        raise RuntimeError(proc.stderr[-2000:])
    return float(proc.stdout.split()[0])


def moto_server() -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.2)
    return proc, endpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--where", nargs="+", default=["local", "s3"], choices=["local", "s3"])
    parser.add_argument("--commands", nargs="+", default=["validate", "resume-cold", "status", "resume", "analyze"])
    parser.add_argument("--compact-every", type=int, default=0,
                        help="add a compacted part every N files written, as the driver does while trials run")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="fsv-scale-"))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "offline"}
    server = None
    if "s3" in args.where:
        from pyarrow import fs

        server, endpoint = moto_server()
        env.update(S3_ENV, AWS_ENDPOINT_URL=endpoint)
        os.environ.update(S3_ENV, AWS_ENDPOINT_URL=endpoint)
        fs.S3FileSystem(endpoint_override=endpoint, access_key="testing", secret_key="testing", region="us-east-1",
                        allow_bucket_creation=True).create_dir("scale")
    rows, previous = [], {}
    try:
        for n in args.sizes:
            table, cells = synthetic(n)
            for where in args.where:
                uri = str(tmp / f"s{n}") if where == "local" else f"s3://scale/s{n}"
                wrote, compacted = write_study(uri, table, cells, args.compact_every)
                print(f"# {table.num_rows} records written to {where} in {wrote:.1f} s"
                      + (f", compacted every {args.compact_every} in {compacted:.1f} s in all" if args.compact_every else ""),
                      flush=True)
                for command in args.commands:
                    if command == "validate" and where != "local":
                        continue
                    seconds = {"validate": lambda: timed(["validate", str(study_yaml(n, tmp))], env),
                               "status": lambda: timed(["status", uri], env),
                               "resume-cold": lambda: timed_listing(uri, env),  # no compacted copy yet: writes one
                               "resume": lambda: timed_listing(uri, env),
                               "analyze": lambda: timed(["analyze", uri, "--allow-partial", "--out", str(tmp / "a")], env),
                               }[command]()
                    key = (where, command)
                    growth = f"{seconds / previous[key][1]:.1f}x for {n / previous[key][0]:.0f}x records" if key in previous else ""
                    previous[key] = (n, seconds)
                    rows.append((n, where, command, seconds, growth))
                    print(f"{table.num_rows:>7} {where:5} {command:8} {seconds:8.2f} s  {growth}", flush=True)
    finally:
        if server:
            server.terminate()
    print("\n| records | storage | command | seconds | growth |\n| --- | --- | --- | --- | --- |")
    for n, where, command, seconds, growth in rows:
        print(f"| {n} | {where} | {command} | {seconds:.2f} | {growth} |")


if __name__ == "__main__":
    main()
