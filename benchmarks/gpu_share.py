"""Small trials sharing a GPU, and a large model's training inside a trial, on a lent GPU.

1. Trials per hour, packed against one per GPU: the same world study (in-context and SFT cells of
   world-s) run twice on this machine's GPUs by `fsv run`'s driver, once with each trial asking for
   its model's share of a GPU (the size table: 1/8 for the world ladder) and once with
   `train.gpu_fraction: 1.0`. Goal: packed >= 4x.
2. A >= 100M-parameter model (a Llama-style decoder of 12 x 768 on the world's vocabulary, ~85M
   non-embedding parameters + embeddings, random init: throughput does not depend on the weights)
   trained inside a trial (Ray Train worker, DeepSpeed engine, bf16) against a bare bf16 PyTorch
   loop on the same GPU, data and batch. Goal: >= 0.9x. MFU = 6 x params x tokens/s / the GPU's
   peak dense bf16 FLOP/s.

    python -m benchmarks.gpu_share [--cells-only | --throughput-only] [--steps 50]

Needs a CUDA GPU. Not run on the 2-core CPU machine this was written on (no GPU was lent to it):
no figures from it exist yet.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "A10G": 70e12}  # dense, per GPU


def peak_flops() -> float:
    import torch

    name = torch.cuda.get_device_name()
    return next((v for k, v in PEAK_BF16.items() if k in name), float("nan"))


def cells_per_hour(fraction: float | None, tmp: Path) -> float:
    import yaml

    from study.driver import run_study

    train = {"use_gpu": True, **({"gpu_fraction": fraction} if fraction else {})}
    study = {"name": f"share-{fraction or 'table'}", "models": ["world-s"], "seeds": list(range(8)),
             "pretrain": {"steps": 200, "use_gpu": True}, "train": train, "analyze": False,
             "regimes": {"few_shot": {"k": [1, 4, 16]}, "sft": {"n": [8, 32], "steps": 40}}, "wandb": {"mode": "disabled"}}
    path = tmp / f"{study['name']}.yaml"
    path.write_text(yaml.safe_dump(study))
    run_study(str(path), str(tmp / "results"))  # pretrains once (both runs share the cache), warms up
    t0 = time.time()
    summary = run_study(str(path), str(tmp / "results-timed"))
    return summary["ok"] / (time.time() - t0) * 3600


def big_model(tmp: Path) -> tuple[Path, dict]:
    from fsv.models.ladder import LadderSize, llama_config
    from fsv.models.tokenizer import world_tokenizer
    from fsv.world import World, preset
    from transformers import LlamaForCausalLM

    world_cfg = preset("quick")
    world = World(world_cfg)
    tokenizer = world_tokenizer(world)
    config = llama_config(LadderSize(n_layers=12, d_model=768, head_dim=64), len(tokenizer), world_cfg.context,
                          tokenizer.pad_token_id, tokenizer.bos_token_id)
    config.tie_word_embeddings = False
    model = LlamaForCausalLM(config)
    path = tmp / "llama-12x768"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path, world_cfg.model_dump()


def throughput(tmp: Path, steps: int) -> dict:
    import ray
    import torch

    from benchmarks.common import bare_steps
    from fsv.models.load import param_count
    from fsv.regimes.sft import build_job
    from fsv.train.launch import fit
    from fsv.train.worker import deepspeed_config

    path, world = big_model(tmp)
    train = {"workers": 1, "cpus_per_worker": 4, "use_gpu": True, "zero_stage": 0, "precision": "bf16",
             "optimizer": "adamw", "weight_decay": 0.0, "grad_clip": 1.0}
    config = {"job": "fsv.regimes.sft:build_job", "model_path": str(path), "world": world, "seed": 0, "n": 4096,
              "steps": steps, "batch": 64, "lr": 1e-4, "train": train, "layout": "packed"}
    ray.init(ignore_reinit_error=True, include_dashboard=False, log_to_driver=False)
    metrics = fit(config, str(tmp / "ray"), "big", tmp / "out")
    in_trial = metrics["train_tokens"] / metrics["train_s"]
    job = next(iter(build_job({**config, "deepspeed": deepspeed_config(train, config["batch"])}, 0, 1)))
    job.model.to("cuda", torch.bfloat16)
    params = param_count(job.model)
    real_batches = job.batches
    job.batches = ({k: v.to("cuda") for k, v in b.items()} for b in real_batches)
    bare_steps(job, config, 5)  # warm-up
    seconds, tokens = bare_steps(job, config, steps)
    bare = tokens / seconds
    peak = peak_flops()
    return {"params": params, "trial_tokens_per_s": round(in_trial), "bare_tokens_per_s": round(bare),
            "ratio": round(in_trial / bare, 3), "mfu_trial": round(6 * params * in_trial / peak, 3),
            "mfu_bare": round(6 * params * bare / peak, 3), "gpu": __import__("torch").cuda.get_device_name()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cells-only", action="store_true")
    parser.add_argument("--throughput-only", action="store_true")
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="fsv-gpu-share-"))
    out = {}
    if not args.throughput_only:
        packed, whole = cells_per_hour(None, tmp), cells_per_hour(1.0, tmp)
        out["cells_per_hour"] = {"packed": round(packed), "one_per_gpu": round(whole), "ratio": round(packed / whole, 2)}
    if not args.cells_only:
        out["throughput"] = throughput(tmp, args.steps)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
