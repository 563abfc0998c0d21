"""A training server's memory across trials: the default study's first sft and instruction-tuning
selection trials on one model (study/quick.yaml; world-l by default, whose stacks are the largest),
one after the other in one process as a server runs them, with and without
`fsv.train.worker.release_memory` after each group of jobs (the baseline replaces it by a no-op).
Each variant runs in a fresh process of the same command, so neither inherits the other's heap.
Reports, per variant, the peak resident memory (sampled every 20 ms) and the resident memory after
each trial, with the training seconds beside them. `--stack-floats 25 24` also runs, with
release_memory, each further stack budget given (`fsv.train.stacked.STACK_FLOATS` = 2^E trainable
floats a stack; the first is the baseline). `--regimes prompt_tuning --copied-base` runs a
prompt-tuning trial with its frozen base shared by the trial's soft prompts
(`fsv.regimes.training.frozen_base`) against a copy of the base for each (`fresh_models`, the
baseline), and says whether the two left identical evaluations.

    python benchmarks/trial_memory.py [--model world-l] [--stack-floats 25 24]
    python benchmarks/trial_memory.py --regimes prompt_tuning --copied-base
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))



def resident_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS"))


def one_variant(model: str, regimes: list[str], release: bool, floats_exponent: int, copied_base: bool) -> dict:
    import fsv.train.stacked as stacked
    import fsv.train.worker as worker
    from benchmarks.stacked_trial import one_rank, run_trial, trial_config, unpretrained_model
    from fsv.config import load_study
    from fsv.world import preset

    if not release:
        worker.release_memory = lambda: None
    if copied_base:
        import fsv.regimes.prompt_tuning as prompt_tuning
        from fsv.regimes.training import fresh_models

        prompt_tuning.frozen_base = fresh_models
    stacked.STACK_FLOATS = 2**floats_exponent
    one_rank(29535)
    study = load_study("study/quick.yaml")
    world = preset(study.world.preset, seed=study.world.seed).model_dump()
    path = unpretrained_model(study, model, world)
    peak = [resident_mb()]

    def sample():
        while True:
            peak[0] = max(peak[0], resident_mb())
            time.sleep(0.02)

    threading.Thread(target=sample, daemon=True).start()
    out = {"model": model, "release_memory": release, "stack_floats": f"2^{floats_exponent}",
           "base": "copied" if copied_base else "shared", "start_mb": round(resident_mb())}
    evals = []
    for regime in regimes:
        train_s, _, rows = run_trial(regime, trial_config(study, regime, path, world), stack=None)
        out[f"after_{regime}_mb"], out[f"{regime}_train_s"] = round(resident_mb()), round(train_s, 1)
        evals += [{k: r[k] for k in ("steps", "accuracy", "label_logprob", "train_loss") if k in r} for r in rows]
    time.sleep(0.05)
    return {**out, "peak_mb": round(peak[0]), "evals": evals}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="world-l")
    parser.add_argument("--stack-floats", type=int, nargs="+", default=[24], metavar="E",
                        help="stack budgets 2^E to compare (the first is the baseline's)")
    parser.add_argument("--regimes", nargs="+", default=["sft", "instruction_tuning"])
    parser.add_argument("--copied-base", action="store_true",
                        help="baseline: a copy of the frozen base for each soft prompt, against one shared base")
    parser.add_argument("--variant", help=argparse.SUPPRESS)  # release|keep:E:shared|copied, one variant here
    args = parser.parse_args()
    if args.variant:
        release, exponent, base = args.variant.split(":")
        result = one_variant(args.model, args.regimes, release == "release", int(exponent), base == "copied")
        print("RESULT " + json.dumps(result), flush=True)
        return
    budget = args.stack_floats[0]
    if args.copied_base:
        variants = [f"release:{budget}:copied", f"release:{budget}:shared"]
    else:
        variants = [f"keep:{budget}:shared", f"release:{budget}:shared"]
    variants += [f"release:{e}:shared" for e in args.stack_floats[1:]]
    results = []
    for variant in variants:
        run = subprocess.run([sys.executable, __file__, "--model", args.model, "--regimes", *args.regimes,
                              "--variant", variant],
                             capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parents[1])
        results.append(json.loads(next(line[7:] for line in run.stdout.splitlines() if line.startswith("RESULT "))))
        print(json.dumps({k: v for k, v in results[-1].items() if k != "evals"}), flush=True)
    for result in results[1:]:
        same = result["evals"] == results[0]["evals"]
        print(f"{result['base']} base, {result['stack_floats']}: evaluations identical to the baseline's: {same}")


if __name__ == "__main__":
    main()
