"""The world ladder: Llama-style decoders (rotary positions) built in code from one base config.

Rotary positions are not a detail: GPT-2-style learned absolute positions stayed at chance on
every CPU run of this world, the same-size Llama-style model learned it (DESIGN.md).
`fsv models --dump` prints the resolved configs side by side.

Each size pretrains at its own peak learning rate, inversely proportional to its width (the
muP rule for Adam on hidden weights; Pythia and GPT-3 also lower the rate as models grow), anchored
where world-l learned fastest. Measured in a bare loop on 2 CPU cores (same seed and data, 3000-step
cosine schedule), held-out accuracy at k = 16: world-l left chance at ~1250 steps at 2e-3 and at
3e-3, at ~750 at 1e-3 (.84 by step 2000, against .57 at 2e-3); world-m at step 1750: .72 at 2e-3,
.95 at 1e-3. The rule is not tuned per size beyond that anchor. `pretrain.lr` in a study overrides it;
`pretrain.schedule` (fsv/config.py) sets the shape of the rate over the steps.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import LlamaConfig


@dataclass(frozen=True)
class LadderSize:
    n_layers: int
    d_model: int
    head_dim: int = 16
    mlp_ratio: int = 4

    @property
    def n_heads(self) -> int:
        return max(1, self.d_model // self.head_dim)

    @property
    def lr(self) -> float:
        """Peak pretraining learning rate: LR_AT_WIDTH_128 scaled by 128 / d_model."""
        return LR_AT_WIDTH_128 * 128 / self.d_model


LR_AT_WIDTH_128 = 1e-3


BASE = LadderSize(n_layers=1, d_model=32)
LADDER: dict[str, LadderSize] = {
    "world-xs": BASE,  # ~17k parameters
    "world-s": replace(BASE, n_layers=2, d_model=64),  # ~0.1M
    "world-m": replace(BASE, n_layers=3, d_model=96),  # ~0.35M
    "world-l": replace(BASE, n_layers=4, d_model=128),  # ~0.8M
    "world-xl": replace(BASE, n_layers=6, d_model=256),  # ~4.8M, for GPUs
    "world-xxl": replace(BASE, n_layers=8, d_model=512, head_dim=64),  # ~25M, for GPUs
}


def llama_config(
    size: LadderSize, vocab_size: int, context: int, pad_id: int, bos_id: int
) -> LlamaConfig:
    from transformers import LlamaConfig  # here, not at the top: the registry (every trial, the driver) needs
    # the ladder's sizes, not transformers and torch (~200 MB of a process's own memory)

    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=size.d_model,
        intermediate_size=size.mlp_ratio * size.d_model,
        num_hidden_layers=size.n_layers,
        num_attention_heads=size.n_heads,
        num_key_value_heads=size.n_heads,
        max_position_embeddings=4 * context,
        tie_word_embeddings=True,
        pad_token_id=pad_id,
        bos_token_id=bos_id,
        eos_token_id=None,
    )


def dump() -> list[dict]:
    return [{"name": name, **asdict(size), "n_heads": size.n_heads, "lr": size.lr} for name, size in LADDER.items()]
