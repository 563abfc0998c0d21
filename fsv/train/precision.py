"""The precision a training trial runs in, resolved on the worker that trains it.

- `fp32`: weights, gradients, AdamW state and arithmetic in fp32.
- `bf16`: DeepSpeed's bf16 mode: the model in bf16, fp32 master weights in the optimizer (GPU studies).
- `bf16-mixed`: weights, gradients and AdamW state stay fp32; the forward's matmuls run in bf16 under
  `torch.autocast` (DeepSpeed's own `torch_autocast` section). Evaluations call the module, not the
  engine, so they stay fp32.
- `auto`: `bf16-mixed` where the worker's device multiplies bf16 natively (a CPU with AVX512-BF16 or
  AMX, a CUDA GPU with bf16), `fp32` elsewhere (without a hardware path, bf16 matmuls are converted
  in software and there is nothing to gain).

On a 2-core CPU with AVX512-BF16, a world-l selection trial trains 1.26x (sft), 2.0x (prompt tuning)
and 1.62x (instruction tuning) faster under autocast than in fp32 (`python benchmarks/autocast_trial.py
world-l REGIME`), and the default study's 168 selection trials train 1.42x faster, its warm run 1.26x
(benchmarks/results/quick-2026-12-07-precision.md, which also says what the rounding changes in the
results). `auto` is resolved where the trial trains, not where the study is launched (a
cluster's nodes may differ from the laptop that launched it), and each record says what its trial
trained in (`precision`).
"""

from __future__ import annotations

RESOLVED = ("fp32", "bf16", "bf16-mixed")  # what a worker trains in
PRECISIONS = (*RESOLVED, "auto")  # what a study may ask for (fsv.config.TrainSection.precision)


def keeps_fp32_weights(precision: str) -> bool:
    """Whether the weights (and so the optimizer's state and a stack's batched parameters) stay fp32:
    true of every precision but DeepSpeed's `bf16`, whatever `auto` resolves to."""
    return precision != "bf16"


def native_bf16(use_gpu: bool) -> bool:
    """Whether this process's device multiplies bf16 in hardware."""
    import torch

    if use_gpu:
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def resolve(train: dict) -> dict:
    """`train` with its precision as this worker trains it (`auto` made `bf16-mixed` or `fp32`)."""
    if train["precision"] != "auto":
        return train
    return {**train, "precision": "bf16-mixed" if native_bf16(train["use_gpu"]) else "fp32"}


def deepspeed_sections(precision: str) -> dict:
    """The DeepSpeed config's sections for a resolved precision."""
    if precision not in RESOLVED:
        raise ValueError(f"train.precision={precision!r} reached DeepSpeed unresolved; accepted: {RESOLVED} "
                         "(fsv.train.precision.resolve turns 'auto' into one of them on the worker)")
    sections = {"bf16": {"enabled": precision == "bf16"}}
    if precision == "bf16-mixed":
        sections["torch_autocast"] = {"enabled": True, "dtype": "bfloat16"}
    return sections
