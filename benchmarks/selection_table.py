"""What the search chose and what it measured, from a study's records: per model instance and
training regime, the configuration chosen at each n (rate and length, as chosen by each fold), its
validation accuracy, the scored accuracy at each n with a 95% interval over training seeds (the
t interval of the seed means), the training loss reached against the objective's chance level,
and which choices sit on the edge of the space.

    python benchmarks/selection_table.py results/quick
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats


def seed_interval(values: np.ndarray) -> str:
    if len(values) < 2:
        return f"{values.mean():.2f}"
    half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    return f"{values.mean():.2f} [{values.mean() - half:.2f}, {values.mean() + half:.2f}]"


def table(frame: pd.DataFrame) -> list[str]:
    scored = frame[(frame.phase == "measure") & frame.regime.isin(["sft", "prompt_tuning", "instruction_tuning", "rlhf"])]
    lines = ["| instance | regime | n | chosen (lr, steps) by fold | validation | accuracy [95% CI over seeds] | "
             "train loss / chance | on edge |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for (instance, regime, method, n), group in scored.groupby(["instance", "regime", "method", "n"], dropna=False):
        chosen = {}
        for rec in group.itertuples():
            hp = json.loads(rec.hparams)
            chosen[rec.fold] = f"{hp['lr']:g}/{hp['steps']}"
        val = np.mean([json.loads(s)["val_accuracy"] for s in group.selection])
        edges = sorted({e for s in group.selection for e in json.loads(s)["on_edge"]})
        per_seed = group.groupby("seed").accuracy.mean().to_numpy()
        loss = f"{group.final_train_loss.mean():.3f} / {group.train_loss_chance.iloc[0]:.3f}"
        lines.append(f"| {instance} | {regime}-{method} | {int(n)} | "
                     f"{', '.join(f'{k}: {v}' for k, v in sorted(chosen.items(), key=str))} | {val:.2f} | "
                     f"{seed_interval(per_seed)} | {loss} | {', '.join(edges) or '-'} |")
    return lines


def main() -> None:
    study = Path(sys.argv[1])
    from fsv.records import read_records

    frame = read_records(study)
    select = frame[frame.phase == "select"]
    print(f"{len(select)} selection trials, "
          f"{int(select.curves.map(lambda c: len({(r['task'], r['n'], r['seed']) for r in json.loads(c)})).sum())} "
          f"adaptations; {int((frame.phase == 'measure').sum())} scored records")
    print("\n".join(table(frame)))


if __name__ == "__main__":
    main()
