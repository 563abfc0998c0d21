"""Where models live on a node: `$FSV_CACHE/models/<name>-s<seed>-<hash>/`, the hash over (world,
model, pretraining) configs and the pretraining seed; a pretraining checkpoint used as a model
instance is the same key plus its step (`<name>-s<seed>-<hash>-step<N>`). A model directory is
complete only when its marker `fsv-model.json` exists (written last), so an interrupted pretraining
is never mistaken for a model, and the marker holds the SHA-256 and size of every file beside it,
so a directory whose weights do not match their marker (a torn copy, a damaged disk, a file edited
by hand) is detected and named instead of loaded (`verify`).

A marker written before checksums existed is trusted once: its checksums are added on first
verification (the directory was complete by the marker rule), and checked from then on."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path

from fsv.models.ladder import LADDER

MARKER = "fsv-model.json"
CHUNK = 1 << 22


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


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def digests(path: Path) -> dict[str, dict]:
    """{relative name: {"sha256", "bytes"}} of every file of a model directory but its marker."""
    files = sorted(p for p in Path(path).rglob("*") if p.is_file() and p.name != MARKER)
    return {str(p.relative_to(path)): {"sha256": file_digest(p), "bytes": p.stat().st_size} for p in files}


def write_marker(path: Path, marker: dict) -> dict:
    """Complete a model directory: its marker, with the checksum of every file, written last."""
    marker = {**marker, "files": digests(path)}
    tmp = Path(path) / f".{MARKER}.tmp"
    tmp.write_text(json.dumps(marker, indent=1))
    os.replace(tmp, Path(path) / MARKER)
    return marker


def mismatch(path: Path, files: dict[str, dict]) -> str | None:
    """What in `path` differs from the checksums `files` (None: nothing)."""
    for name, want in files.items():
        file = Path(path) / name
        if not file.is_file():
            return f"{name} is missing"
        if file.stat().st_size != want["bytes"]:
            return f"{name} has {file.stat().st_size} bytes, its marker says {want['bytes']}"
        if file_digest(file) != want["sha256"]:
            return f"{name} does not match the SHA-256 in its marker"
    return None


def verify(path: Path) -> str | None:
    """None if `path` is a complete model whose files match its marker; else what is wrong."""
    path = Path(path)
    if not is_cached(path):
        return f"no {MARKER} in {path} (never finished, or not there)"
    try:
        marker = read_marker(path)
    except (OSError, ValueError) as exc:
        return f"{path / MARKER} is unreadable ({exc})"
    if "files" not in marker:  # an older marker: trusted once, checked from now on
        write_marker(path, marker)
        return None
    return mismatch(path, marker["files"])
