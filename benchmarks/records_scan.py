"""The damaged-record checks cost nothing measurable: `fsv.records.scan_records` (one dataset scan plus
a schema and cell-id check per file) against a bare pyarrow dataset scan of the same records, in CPU
seconds (the machine may be shared), as a ratio.

    python benchmarks/records_scan.py [--files 2000]
"""

from __future__ import annotations

import argparse
import tempfile
import time


def main(argv=None) -> None:
    import pyarrow.dataset as ds

    from fsv.records import SCHEMA, scan_records, write_record

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000)
    args = parser.parse_args(argv)
    folder = tempfile.mkdtemp(prefix="fsv-scan-")
    for i in range(args.files):
        write_record(folder, {"cell_id": f"c{i:06d}", "study": "s", "status": "ok", "accuracy": 0.5})
    for rep in range(3):
        t = time.process_time()
        frame, damaged = scan_records(folder)
        checked = time.process_time() - t
        t = time.process_time()
        ds.dataset(f"{folder}/records", format="parquet", schema=SCHEMA, ignore_prefixes=[".", "_"]).to_table().to_pandas()
        bare = time.process_time() - t
        assert len(frame) == args.files and not damaged
        print(f"{args.files} records, rep {rep}: checked scan / bare scan = {checked / bare:.2f} (CPU s)")


if __name__ == "__main__":
    main()
