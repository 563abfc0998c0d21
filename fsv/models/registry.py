"""The model registry: world-ladder names and HF suites by id (or a local directory)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from fsv.errors import ConfigError, did_you_mean
from fsv.models.ladder import LADDER

# HF suites the paper studies: id -> context window (tokens). Parameter counts are read from the
# loaded model, never from this table.
HF_SUITES: dict[str, int] = {
    **{f"EleutherAI/pythia-{s}": 2048 for s in ["70m", "160m", "410m", "1b", "1.4b", "2.8b", "6.9b", "12b"]},
    **{f"Qwen/Qwen2.5-{s}": 32768 for s in ["0.5B", "1.5B", "3B", "7B", "14B", "32B", "72B"]},
    **{f"HuggingFaceTB/SmolLM2-{s}": 8192 for s in ["135M", "360M", "1.7B"]},
}


@dataclass(frozen=True)
class ModelSpec:
    name: str
    kind: str  # "world" (pretrained by fsv on the embedded world) or "hf"
    context: int | None = None  # context window in tokens, where known before loading

    @property
    def is_world(self) -> bool:
        return self.kind == "world"


def resolve_model(name: str, field: str = "models") -> ModelSpec:
    if name in LADDER:
        return ModelSpec(name, "world")
    if name in HF_SUITES:
        return ModelSpec(name, "hf", HF_SUITES[name])
    local = Path(name).expanduser()
    if (local / "config.json").is_file():
        cfg = json.loads((local / "config.json").read_text())
        ctx = cfg.get("max_position_embeddings") or cfg.get("n_positions")
        return ModelSpec(str(local.resolve()), "hf", ctx)
    raise ConfigError(
        field,
        name,
        f"unknown model; {did_you_mean(name, [*LADDER, *HF_SUITES])}, or a local directory with a config.json",
    )


def all_models() -> list[str]:
    return [*LADDER, *HF_SUITES]
