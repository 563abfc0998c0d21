"""Per-trial overhead of a training trial: a real Tune -> Train -> DeepSpeed trial of the sft
regime on world-xs, timed from the trial's own records: launch -> first step ("setup") and
last step -> record ("teardown"), against the training and evaluation work itself.

    python benchmarks/trial_overhead.py [--trials 6]

Prints one JSON line per trial and a summary; the first trial pays one-off costs (imports, the
DeepSpeed op JIT) and is reported apart.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=6)
    args = parser.parse_args()
    os.environ.setdefault("FSV_WANDB_MODE", "disabled")
    import yaml

    from study.driver import run_study

    tmp = Path(tempfile.mkdtemp(prefix="fsv-bench-"))
    study = {
        "name": "overhead", "models": ["world-xs"], "seeds": list(range(args.trials)),
        "pretrain": {"steps": 30, "batch": 16}, "analyze": False,
        "regimes": {"sft": {"n": [8], "steps": 10, "batch": 8}},
        "wandb": {"mode": "disabled"},
    }
    path = tmp / "overhead.yaml"
    path.write_text(yaml.safe_dump(study))
    t0 = time.time()
    run_study(str(path), str(tmp / "results"))
    total = time.time() - t0
    from fsv.records import read_records

    frame = read_records(tmp / "results" / "overhead").sort_values("seed")
    frame["overhead_s"] = frame.wall_s - frame.train_s - frame.eval_s
    for _, r in frame.iterrows():
        print(json.dumps({"seed": int(r.seed), "wall_s": round(r.wall_s, 2), "train_s": round(r.train_s, 2),
                          "eval_s": round(r.eval_s, 2), "overhead_s": round(r.overhead_s, 2)}))
    steady = frame.overhead_s.iloc[1:] if len(frame) > 1 else frame.overhead_s
    print(json.dumps({"trials": len(frame), "study_wall_s": round(total, 1),
                      "first_trial_overhead_s": round(frame.overhead_s.iloc[0], 2),
                      "median_overhead_s": round(float(steady.median()), 2)}))


if __name__ == "__main__":
    main()
