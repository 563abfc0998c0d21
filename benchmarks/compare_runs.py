"""How far two runs of one study lie apart, from their stored records and analyses: per training
regime, how many scored cells chose the same configuration (rate and length), the mean and largest
difference of their scored accuracies and the mean training loss each reached; then each run's
verdicts and literature claims side by side. For a change in how trials run (a precision, a thread
count) that should not change what they measure.

    python benchmarks/compare_runs.py RUN_A/quick RUN_B/quick
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

KEY = ["instance", "regime", "method", "n", "seed", "fold"]


def scored(study_dir: str) -> pd.DataFrame:
    frame = pd.read_parquet(Path(study_dir) / "records")
    frame = frame[(frame.phase == "measure") & frame.hparams.notna()].copy()
    if "precision" not in frame:  # records written before fsv recorded it: fp32 was all it had
        frame["precision"] = "fp32 (unrecorded)"
    frame["choice"] = [(json.loads(h)["lr"], json.loads(h)["steps"]) for h in frame.hparams]
    return frame.set_index(KEY)


def regime_rows(a: pd.DataFrame, b: pd.DataFrame) -> list[str]:
    both = a.merge(b, left_index=True, right_index=True, suffixes=("_a", "_b"))
    lines = ["| regime | scored cells | same choice | mean abs acc diff | largest | mean acc A / B | train loss A / B | precision A / B |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for regime, group in both.groupby(level="regime"):
        diff = (group.accuracy_a - group.accuracy_b).abs()
        same = np.mean([x == y for x, y in zip(group.choice_a, group.choice_b)])
        lines.append(f"| {regime} | {len(group)} | {same:.0%} | {diff.mean():.4f} | {diff.max():.4f} | "
                     f"{group.accuracy_a.mean():.4f} / {group.accuracy_b.mean():.4f} | "
                     f"{group.final_train_loss_a.mean():.4f} / {group.final_train_loss_b.mean():.4f} | "
                     f"{','.join(sorted(set(group.precision_a.dropna())))} / {','.join(sorted(set(group.precision_b.dropna())))} |")
    return lines


def verdict_rows(a: str, b: str) -> list[str]:
    fits = [json.loads((Path(d) / "analysis" / "fits.json").read_text()) for d in (a, b)]
    lines = ["| series | A | B |", "| --- | --- | --- |"]
    for series in fits[0]["law"]:
        lines.append(f"| law: {series} | {fits[0]['law'][series].get('verdict')} | {fits[1]['law'].get(series, {}).get('verdict')} |")
    claims = [{c["claim"]: c for c in f["literature_claims"]} for f in fits]
    for claim, c in claims[0].items():
        o = claims[1].get(claim, {})
        lines.append(f"| {claim} | {c['status']} {c['effect']:.3g} [{c['ci_low']:.3g}, {c['ci_high']:.3g}] | "
                     f"{o.get('status')} {o.get('effect', float('nan')):.3g} [{o.get('ci_low', float('nan')):.3g}, "
                     f"{o.get('ci_high', float('nan')):.3g}] |")
    return lines


def main(a: str, b: str) -> None:
    print(f"A: {a}\nB: {b}\n")
    print("\n".join(regime_rows(scored(a), scored(b))))
    print()
    print("\n".join(verdict_rows(a, b)))


if __name__ == "__main__":
    main(*sys.argv[1:3])
