"""How true the progress line's ETA was, replayed from a finished study's records: the first round
of its selection trials (the phase the default study waits longest on) is replayed in the order its
trials finished, each with the seconds it took (a record's `wall_s`, ending at its file's time), and
at every finish the ETA that `study.progress.CostModel` gives is set against the time that was
really left. The baseline, in the same run: the ETA that counts every cell alike (elapsed x cells
left / cells done). Reports the median and the 10th / 90th percentiles of ETA / time left over the
phase's trials (the last eight left out: a few seconds left make any ratio noise); 1 is the truth.

    python benchmarks/eta_replay.py RESULTS/quick [--trials 128]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from study.progress import CostModel  # noqa: E402

TAIL = 8


def first_round(study_dir: str, trials: int) -> pd.DataFrame:
    """The first `trials` selection trials to start, in the order they finished."""
    rows = []
    for path in sorted((Path(study_dir) / "records").glob("*.parquet")):
        record = pd.read_parquet(path, columns=["cell_id", "phase", "wall_s", "config"]).iloc[0].to_dict()
        if record["phase"] == "select":
            rows.append({**record, "end": os.path.getmtime(path)})
    frame = pd.DataFrame(rows)
    frame["start"] = frame["end"] - frame["wall_s"]
    return frame.sort_values("start").head(trials).sort_values("end").reset_index(drop=True)


def replay(frame: pd.DataFrame) -> tuple[list[float], list[float]]:
    """(model ETA / time left, counting ETA / time left) at each finish but the last TAIL."""
    cells = [json.loads(c) for c in frame["config"]]
    costs, done = CostModel(), set()
    t0, last = frame["start"].min(), frame["end"].max()
    model, counting = [], []
    for row, cell in zip(frame.itertuples(), cells):
        costs.add(cell, row.wall_s)
        done.add(row.cell_id)
        if len(done) > len(cells) - TAIL:
            break
        elapsed, left = row.end - t0, last - row.end
        spent = sum(costs.cost(c) for c in cells if c["cell_id"] in done)
        ahead = sum(costs.cost(c) for c in cells if c["cell_id"] not in done)
        model.append(elapsed * ahead / spent / left)
        counting.append(elapsed * (len(cells) - len(done)) / len(done) / left)
    return model, counting


def summary(ratios: list[float]) -> dict:
    ordered = sorted(ratios)
    return {"median": round(statistics.median(ordered), 2), "p10": round(ordered[len(ordered) // 10], 2),
            "p90": round(ordered[9 * len(ordered) // 10], 2)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("study_dir")
    parser.add_argument("--trials", type=int, default=128, help="trials in the first round (study/quick.yaml: 128)")
    args = parser.parse_args()
    model, counting = replay(first_round(args.study_dir, args.trials))
    print(json.dumps({"study": args.study_dir, "trials": len(model) + TAIL, "eta_over_time_left": summary(model),
                      "counting_eta_over_time_left": summary(counting)}))


if __name__ == "__main__":
    main()
