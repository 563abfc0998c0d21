"""Scorer speed on identical requests, one process, one model, one thread: fsv's scorer (each
episode's shared prefix computed once, `fsv.scoring.score_choices`) against lm-evaluation-harness's
in-process `HFLM.loglikelihood` (one forward per context), naive per-choice full-sequence scoring,
and fsv's previous path (full prompts in batches of 256, `score_full_prompts`).

World: a world-l Llama at random init (weights do not change the speed) on the quick world's
held-out tasks at k = 0, 4, 8, 16, 4 single-token choices, the episodes `fsv.evaluate` builds.
Text: ag_news (4 label words, several tokens each under the tiny byte-level BPE of
tests/fixtures_hf.py) with a tiny local Llama, k demonstrations. Every scorer's log-likelihoods are
checked against the naive ones (max |diff| printed); times are the best of `--repeats` runs,
interleaved across the scorers (naive runs once).
lm-eval comes with the `bench` extra (`pip install -e '.[bench]'`); without it that column is skipped.

    python benchmarks/scorer.py [--model world-l] [--ks 0,4,8,16] [--text-k 4] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def best_time(fn, repeats: int):
    """(seconds of the fastest of `repeats` runs, the last result)."""
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def lm_eval_scorer(model, tokenizer, batch_size: int, add_bos: bool):
    """A function (context texts, continuation texts) -> log-likelihoods, via lm-eval's HFLM with
    the model in memory; None when lm-eval is not installed."""
    try:
        from lm_eval.api.instance import Instance
        from lm_eval.models.huggingface import HFLM
    except ImportError:
        return None
    import logging

    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, add_bos_token=add_bos)

    def score(contexts: list[str], continuations: list[str]):
        reqs = [Instance(request_type="loglikelihood", doc={}, arguments=(c, x), idx=0)
                for c, x in zip(contexts, continuations)]
        return [ll for ll, _ in lm.loglikelihood(reqs, disable_tqdm=True)]

    return score


def world_tokenizer(world):
    """A word-level tokenizer over the world's vocabulary (tokens joined by spaces), so lm-eval
    reads the same ids fsv scores."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.WordLevel(vocab={t: i for i, t in enumerate(world.vocab)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", bos_token="<bos>",
                                   eos_token="<eos>", unk_token="<unk>")


def compare(model, prompts, choices, texts, words, lm_eval, repeats: int, pad_id: int) -> dict:
    """Seconds of each scorer on the same requests and each one's max |log-likelihood - naive|."""
    import numpy as np

    from fsv.scoring import score_choices, score_full_prompts, score_naive

    runs = {"fsv": lambda: score_choices(model, prompts, choices, pad_id=pad_id)[0],
            "old": lambda: score_full_prompts(model, prompts, choices, batch_size=256, pad_id=pad_id)[0],
            "naive": lambda: score_naive(model, prompts, choices)[0]}
    if lm_eval is not None:
        contexts = [t for t in texts for _ in words]
        runs["lm_eval"] = lambda: np.array(lm_eval(contexts, list(words) * len(texts))).reshape(len(texts), -1)
    seconds, out = {"naive": float("inf")}, {}
    seconds["naive"], out["naive"] = best_time(runs["naive"], 1)
    for _ in range(repeats):  # interleaved, so a busy moment of the machine hits every scorer alike
        for name in [n for n in runs if n != "naive"]:
            t, out[name] = best_time(runs[name], 1)
            seconds[name] = min(seconds.get(name, t), t)
    diff = {name: float(np.abs(o - out["naive"]).max()) for name, o in out.items() if name != "naive"}
    return {"queries": len(prompts), "choices": len(choices), "seconds": seconds, "max_abs_diff": diff}


def world_rows(args) -> list[dict]:
    import torch
    from transformers import LlamaForCausalLM

    from fsv.evaluate import world_prompts
    from fsv.models.ladder import LADDER, llama_config
    from fsv.world import World, preset

    world = World(preset("quick"))
    torch.manual_seed(0)
    model = LlamaForCausalLM(llama_config(LADDER[args.model], len(world.vocab), world.config.context,
                                          world.ids["<pad>"], world.ids["<bos>"])).eval()
    lm_eval = lm_eval_scorer(model, world_tokenizer(world), args.lm_eval_batch, add_bos=False) if args.lm_eval else None
    choices = [[i] for i in world.label_ids]
    words = [" " + world.vocab[i] for i in world.label_ids]
    rows = []
    for k in args.ks:
        prompts, _, _ = world_prompts(world, world.heldout_tasks, k, "none", seed=0, episodes=args.episodes)
        texts = [" ".join(world.vocab[t] for t in p) for p in prompts]
        rows.append({"task": f"world {args.model}", "k": k,
                     **compare(model, prompts, choices, texts, words, lm_eval, args.repeats, world.ids["<pad>"])})
    return rows


def text_row(args) -> dict:
    import tempfile

    import torch
    from transformers import AutoModelForCausalLM

    from fsv.hf_eval import build_prompts, label_token_ids, tokenize_prompts
    from fsv.tasks import get_task, load_splits
    from tests.fixtures_hf import build_tokenizer, task_texts, tiny_config, write_formats

    task = get_task("ag_news")
    tokenizer = build_tokenizer(task_texts())
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_config("llama", tokenizer, 1024, hidden=128, layers=4)).eval()
    with tempfile.TemporaryDirectory() as tmp:
        splits = load_splits(task, str(write_formats(task, Path(tmp), n_train=80, n_test=40)["disk_dict"]))
    texts, _, _ = build_prompts(task, splits, args.text_k, "model", seed=0, episodes=args.episodes, max_eval=32)
    prompts, choices = tokenize_prompts(tokenizer, texts), label_token_ids(tokenizer, task)
    lm_eval = lm_eval_scorer(model, tokenizer, args.lm_eval_batch, add_bos=True) if args.lm_eval else None
    row = compare(model, prompts, choices, texts, task.label_words, lm_eval, args.repeats, tokenizer.pad_token_id)
    return {"task": "text ag_news tiny-llama", "k": args.text_k,
            "label_tokens": [len(c) for c in choices], "prompt_tokens": max(len(p) for p in prompts), **row}


def table(rows: list[dict]) -> str:
    lines = [f"{'task':<26}{'k':>3}{'queries':>8}  {'fsv s':>7}{'old s':>7}{'naive s':>8}{'lm-eval s':>10}"
             f"{'x lm-eval':>10}{'x naive':>8}{'x old':>7}  max|diff|"]
    for r in rows:
        s = r["seconds"]
        lm = s.get("lm_eval")
        lm_s, lm_x = (f"{lm:.3f}", f"{lm / s['fsv']:.1f}") if lm else ("-", "-")
        lines.append(f"{r['task']:<26}{r['k']:>3}{r['queries']:>8}  {s['fsv']:>7.3f}{s['old']:>7.3f}{s['naive']:>8.3f}"
                     f"{lm_s:>10}{lm_x:>10}{s['naive'] / s['fsv']:>8.1f}{s['old'] / s['fsv']:>7.1f}"
                     f"  {max(r['max_abs_diff'].values()):.1e}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="world-l")
    parser.add_argument("--ks", default="0,4,8,16", type=lambda s: [int(x) for x in s.split(",")])
    parser.add_argument("--episodes", type=int, default=4)
    parser.add_argument("--text-k", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--lm-eval-batch", type=int, default=16)  # its fastest of 8-256 here
    parser.add_argument("--no-lm-eval", dest="lm_eval", action="store_false")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    if args.lm_eval:
        try:
            import lm_eval  # noqa: F401
        except ImportError:
            args.lm_eval = False
            print("lm-eval is not installed (pip install -e '.[bench]'): the lm-eval column is skipped", flush=True)
    rows = world_rows(args) + [text_row(args)]
    for r in rows:
        print(json.dumps(r))
    print(table(rows))


if __name__ == "__main__":
    main()
