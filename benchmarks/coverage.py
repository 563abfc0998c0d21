"""Coverage and verdicts of the analysis on planted synthetic studies (analysis.synthetic).

For each setting, GENERATORS synthetic studies (one per generator seed) are measured with the
analysis's own pipeline (analysis.pipeline.measure_claim: every per-instance measure and the law,
without the study-level summaries) and the script prints one JSON line:

  coverage      share of studies whose 95% interval of the power-law exponent holds the planted one
  verdicts      share of studies called supported / contradicted / inconclusive (Kendall's tau test)
  median_width  median width of the exponent's interval

Settings: the planted falling law (exponent -1) with 3 and with 5 training seeds per instance, one
pretraining instance per size; the same with 2 pretraining instances per size that differ in ICL
strength and scatter about the law (the hierarchical case); a flat law (exponent 0: the verdict
should be inconclusive) and a rising law whose strongest models never reach the target within
n = 64 (contradicted), with 3 seeds.

    PYTHONPATH=. python benchmarks/coverage.py                  # 200 generator seeds (100 for flat and
                                                                # rising), 400 resamples, 2 processes
    PYTHONPATH=. python benchmarks/coverage.py --generators 40 --verdict-generators 20   # a quick look

About 2-3 s per study on one core, so the full run takes ~40 core-minutes: too slow for `make bench`
(benchmarks/run_all.py), run it by hand.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import time

import numpy as np

from analysis import AnalysisSettings
from analysis.pipeline import measure_claim
from analysis.synthetic import SyntheticSpec, records_frame

BASE = dict(select=False, descriptions=False)
SETTINGS = {
    "falling, 3 seeds": (SyntheticSpec(seeds=(0, 1, 2), **BASE), -1.0),
    "falling, 5 seeds": (SyntheticSpec(seeds=(0, 1, 2, 3, 4), **BASE), -1.0),
    "falling, 3 seeds, 2 instances/size": (SyntheticSpec(seeds=(0, 1, 2), pretrain_seeds=(0, 1), instance_sd=0.25,
                                                         law_sd=0.1, **BASE), -1.0),
    "flat, 3 seeds": (SyntheticSpec(laws=(("sft", 20.0, 0.0),), ns=(2, 4, 8, 16, 32, 64), **BASE), 0.0),
    "rising with censoring, 3 seeds": (SyntheticSpec(laws=(("sft", 600.0, 1.0),), ns=(2, 4, 8, 16, 32, 64), **BASE),
                                       1.0),
}


def one_study(job) -> tuple[str, float, float]:
    spec, seed, settings = job
    law = measure_claim(records_frame(spec, seed), settings, seed=seed)[0].law["sft"]
    return law.verdict, law.ci_low, law.ci_high


def measure(spec: SyntheticSpec, planted: float, generators: int, settings: AnalysisSettings, pool) -> dict:
    covered, widths, verdicts = [], [], {"supported": 0, "contradicted": 0, "inconclusive": 0}
    started = time.perf_counter()
    for verdict, low, high in pool.map(one_study, [(spec, seed, settings) for seed in range(generators)]):
        verdicts[verdict] += 1
        if np.isfinite(low) and np.isfinite(high):
            covered.append(low <= planted <= high)
            widths.append(high - low)
    return {"coverage": float(np.mean(covered)) if covered else None, "exponent_intervals": len(covered),
            "median_width": float(np.median(widths)) if widths else None,
            "verdicts": {v: c / generators for v, c in verdicts.items()},
            "seconds_per_study_wall": (time.perf_counter() - started) / generators}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generators", type=int, default=200)
    parser.add_argument("--resamples", type=int, default=400)
    parser.add_argument("--verdict-generators", type=int, default=100, help="generator seeds of the flat and "
                        "rising settings, which measure verdicts rather than coverage")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--only", default=None, help="run the settings whose name contains this text")
    args = parser.parse_args()
    settings = AnalysisSettings(bootstrap_resamples=args.resamples, figures=False)
    pool = multiprocessing.Pool(args.processes)
    for name, (spec, planted) in SETTINGS.items():
        if args.only and args.only not in name:
            continue
        generators = args.generators if name.startswith("falling") else args.verdict_generators
        result = measure(spec, planted, generators, settings, pool)
        print(json.dumps({"benchmark": "coverage", "setting": name, "planted_exponent": planted,
                          "generators": generators, "resamples": args.resamples} | result), flush=True)


if __name__ == "__main__":
    main()
