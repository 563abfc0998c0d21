"""The model registry: world-ladder names and HF suites by id (or a local directory)."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

from fsv.errors import ConfigError, did_you_mean
from fsv.models.ladder import LADDER

# HF suites the paper studies: id -> context window (tokens). Recorded parameter counts are read from
# the loaded model; before loading, the size in the id (`nominal_params`) places the trial
# (`fsv.models.placement`).
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
    params: int | None = None  # parameters known before loading: the id's size, or a local dir's weights
    remote_code: bool = False  # a local dir whose config or tokenizer maps to code it ships (auto_map)

    @property
    def is_world(self) -> bool:
        return self.kind == "world"


def split_revision(name: str) -> tuple[str, str | None]:
    """`SUITE_ID@REVISION` (a hub revision, e.g. Pythia's intermediate checkpoints `@step1000`) ->
    (id, revision); anything else -> (name, None)."""
    base, _, revision = str(name).partition("@")
    return (base, revision) if revision and base in HF_SUITES else (str(name), None)


def revision_step(name: str) -> int | None:
    """The training step a hub revision names (`step1000` -> 1000), the model instance's checkpoint."""
    revision = split_revision(name)[1]
    match = re.fullmatch(r"step(\d+)", revision or "")
    return int(match.group(1)) if match else None


def resolve_model(name: str, field: str = "models") -> ModelSpec:
    if name in LADDER:
        return ModelSpec(name, "world")
    base, revision = split_revision(name)
    if base in HF_SUITES:
        return ModelSpec(name, "hf", HF_SUITES[base], nominal_params(base))
    local = Path(name).expanduser()
    if (local / "config.json").is_file():
        cfg = json.loads((local / "config.json").read_text())
        ctx = cfg.get("max_position_embeddings") or cfg.get("n_positions")
        return ModelSpec(str(local.resolve()), "hf", ctx, stored_params(local), ships_code(local))
    raise ConfigError(
        field,
        name,
        f"unknown model; {did_you_mean(name, [*LADDER, *HF_SUITES])}, or a local directory with a config.json "
        "(a suite's hub revision as ID@REVISION, e.g. EleutherAI/pythia-70m@step1000)",
    )


def all_models() -> list[str]:
    return [*LADDER, *HF_SUITES]


def ships_code(path: Path) -> bool:
    """Whether a local model's config or tokenizer config maps to code of its own (`auto_map`)."""
    return any("auto_map" in json.loads(f.read_text())
               for f in (path / "config.json", path / "tokenizer_config.json") if f.is_file())


def nominal_params(hf_id: str) -> int:
    """The size an id states (`pythia-1.4b`, `Qwen2.5-0.5B`, `SmolLM2-135M`) as a parameter count."""
    match = re.search(r"-(\d+(?:\.\d+)?)([mMbB])$", hf_id)
    if not match:
        raise ValueError(f"{hf_id}: no size suffix like -70m or -1.5B")
    return int(float(match.group(1)) * (1e6 if match.group(2).lower() == "m" else 1e9))


def stored_params(path: Path) -> int | None:
    """Parameters in a local model's safetensors, read from the file headers alone (nothing is
    loaded, no model code runs; tied weights are stored, so counted, once). None without safetensors."""
    from safetensors import safe_open

    files = sorted(Path(path).glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for file in files:
        with safe_open(str(file), "pt") as f:
            total += sum(math.prod(f.get_slice(key).get_shape()) for key in f.keys())
    return total
