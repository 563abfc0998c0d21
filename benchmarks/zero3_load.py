"""Host memory of loading an HF model in each training worker: ZeRO-0 (every worker materialises the
whole model) against ZeRO-3 (`fsv.models.load.zero3_init`: partitioned as it is built, only rank 0
reads the checkpoint). Two gloo ranks on CPU, a randomly initialised GPT-NeoX saved in fp32 to a
scratch folder; one JSON line per (stage, rank): resident memory before the load, the peak during
it, what stays resident after it, the parameters the rank holds. On CPU (DS_ACCELERATOR=cpu) the
"device" zero.Init builds each layer on is host memory itself, so the peak shows the transient of
building a layer whole before partitioning it; on a GPU that transient is GPU memory.

    python benchmarks/zero3_load.py [--hidden 1024] [--layers 12] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def reset_peak() -> None:
    """Start the process's peak resident memory (VmHWM) afresh, so the peak is the load's own."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def peak_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024


def save_model(dest: Path, hidden: int, layers: int) -> int:
    import torch
    from transformers import AutoModelForCausalLM, GPTNeoXConfig

    cfg = GPTNeoXConfig(vocab_size=50304, hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers,
                        num_attention_heads=hidden // 64, max_position_embeddings=2048, tie_word_embeddings=False)
    with torch.device("cpu"):
        model = AutoModelForCausalLM.from_config(cfg)
    model.save_pretrained(dest, safe_serialization=True)
    return sum(p.numel() for p in model.parameters())


def rank_main(rank: int, world: int, path: str, stage: int, port: int, out: str) -> None:
    os.environ.update(DS_ACCELERATOR="cpu", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    import deepspeed
    import torch
    import torch.distributed as dist

    from fsv.models.load import load_model, partition_stats, zero3_init
    from fsv.train.worker import deepspeed_config

    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    deepspeed.init_distributed()
    train = {"zero_stage": stage, "grad_clip": 1.0, "precision": "fp32"}
    before = rss_mb()
    reset_peak()
    with zero3_init(deepspeed_config(train, 1)):
        model = load_model(path)
    dist.barrier()
    row = {"zero_stage": stage, "rank": rank, "rss_before_mb": round(before), "load_peak_mb": round(peak_mb() - before),
           "held_after_mb": round(rss_mb() - before), **partition_stats(model)}
    Path(out, f"{stage}-{rank}.json").write_text(json.dumps(row))
    dist.destroy_process_group()


def main() -> None:
    import torch.multiprocessing as mp

    parser = argparse.ArgumentParser()
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    # fixed malloc thresholds in the ranks: glibc otherwise keeps freed large blocks (its dynamic mmap
    # threshold), and resident memory would show what was once allocated, not what is held
    os.environ.update(MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    with tempfile.TemporaryDirectory(prefix="fsv-bench-zero3-") as tmp:
        params = save_model(Path(tmp) / "model", args.hidden, args.layers)
        print(json.dumps({"params": params, "checkpoint_mb": round(params * 4 / 2**20)}), flush=True)
        for port, stage in enumerate((0, 3), start=29731):  # each stage in fresh processes: peaks are per process
            mp.spawn(rank_main, args=(args.workers, str(Path(tmp) / "model"), stage, port, tmp), nprocs=args.workers)
            for rank in range(args.workers):
                print(Path(tmp, f"{stage}-{rank}.json").read_text(), flush=True)


if __name__ == "__main__":
    main()
