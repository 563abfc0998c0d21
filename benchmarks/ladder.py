"""The ladder's measurements from a finished study's records (issue targets of the embedded world):
pretraining wall time per model (from the cache markers), held-out accuracy at each k, ICL
efficiency at the largest k ((acc - chance) / (Bayes - chance)), zero-shot per description.

    python benchmarks/ladder.py results/quick
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(study_dir: str) -> None:
    from fsv.models.cache import is_cached, ladder_dir, read_marker
    from fsv.records import read_records
    from fsv.world import preset

    frame = read_records(study_dir)
    frame = frame[frame.status == "ok"]
    cells = json.loads((Path(study_dir) / "cells.json").read_text())["cells"]
    markers = {}
    for c in cells:
        key = (c["model"], c.get("pretrain_seed"))
        if key[1] is None or key in markers:
            continue
        world = preset(c["world"]["preset"], seed=c["world"]["seed"]).model_dump()
        path = ladder_dir(c["model"], world, c["pretrain"], c["pretrain_seed"])
        if is_cached(path):
            markers[key] = read_marker(path)
    for (model, seed), m in sorted(markers.items(), key=lambda kv: kv[1]["params"]):
        print(json.dumps({"model": model, "pretrain_seed": seed, "params": m["params"], "lr": m.get("lr"),
                          "pretrain_wall_s": round(m["wall_s"]), "final_loss": round(m["final_loss"], 3)}))
    ic = frame[(frame.regime.isin(["zero_shot", "few_shot"])) & (frame.description == "none")]
    kmax = int(ic.k.max()) if len(ic) else 0
    for (model, pseed), rows in ic.groupby(["model", "pretrain_seed"]):
        curve = rows.groupby("k").agg(acc=("accuracy", "mean"), bayes=("bayes_accuracy", "first"),
                                      chance=("chance", "first"))
        top = curve.loc[kmax] if kmax in curve.index else None
        eff = None if top is None else (top.acc - top.chance) / (top.bayes - top.chance)
        print(json.dumps({"model": model, "pretrain_seed": int(pseed),
                          "acc_by_k": {int(k): round(r.acc, 3) for k, r in curve.iterrows()},
                          "icl_efficiency_at_kmax": None if eff is None else round(eff, 3), "kmax": kmax}))
    top = ic[ic.k == kmax].groupby(["pretrain_seed", "model"]).accuracy.mean().unstack()
    params = {m: v["params"] for (m, _), v in markers.items()}
    for pseed, row in top.iterrows():
        order = sorted(row.index, key=lambda m: params.get(m, 0))
        print(json.dumps({"pretrain_seed": int(pseed), f"acc_at_k{kmax}_by_size": {m: round(row[m], 3) for m in order},
                          "ordered_by_size": bool(all(row[a] <= row[b] for a, b in zip(order, order[1:])))}))
    zs = frame[frame.regime == "zero_shot"].groupby(["model", "pretrain_seed", "description"]).accuracy.mean().unstack()
    print(zs.round(3).to_string())


if __name__ == "__main__":
    main(sys.argv[1])
