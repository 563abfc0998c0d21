"""Where ladder models live: `$FSV_CACHE/models/<name>-<hash>/`, the hash over (world, model,
pretraining) configs and the pretraining seed. A model directory is complete only when its
`fsv-model.json` exists (written last), so an interrupted pretraining is never mistaken for a model."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path

from fsv.models.ladder import LADDER

MARKER = "fsv-model.json"


def cache_root() -> Path:
    return Path(os.environ.get("FSV_CACHE", Path.home() / ".cache" / "fsv")).expanduser()


def pretrain_lr(name: str, pretrain: dict) -> float:
    """The peak learning rate a ladder model pretrains at: the study's, else its size's own."""
    return pretrain.get("lr") or LADDER[name].lr


def ladder_identity(name: str, world: dict, pretrain: dict, seed: int) -> dict:
    """What decides a ladder model's weights. Checkpoints saved along the way do not: asking for
    another one reuses the same directory (and pretrains again, bit-identically, to add it)."""
    from fsv.world.world import FORMAT

    pretrain = {k: v for k, v in pretrain.items() if k != "checkpoints"}

    return {"model": name, "size": asdict(LADDER[name]), "lr": pretrain_lr(name, pretrain), "world": world,
            "pretrain": pretrain, "seed": seed, "format": FORMAT}


def ladder_dir(name: str, world: dict, pretrain: dict, seed: int) -> Path:
    ident = ladder_identity(name, world, pretrain, seed)
    digest = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:12]
    return cache_root() / "models" / f"{name}-s{seed}-{digest}"


def is_cached(path: Path, checkpoints=()) -> bool:
    """A finished model (its marker is written last), holding every pretraining checkpoint asked for."""
    return (path / MARKER).is_file() and all((instance_dir(path, c) / "config.json").is_file() for c in checkpoints)


def instance_dir(path: Path, checkpoint: int | None) -> Path:
    """A model instance's weights: the finished model, or a checkpoint saved at `checkpoint` steps."""
    return path if checkpoint is None else path / "checkpoints" / f"step{checkpoint}"


def read_marker(path: Path) -> dict:
    return json.loads((path / MARKER).read_text())
