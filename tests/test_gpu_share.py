"""The share of a GPU a trial asks for: by parameter count, overridable per study and per model,
whole GPUs for multi-worker trials; a fraction outside (0, 1] is refused before launch."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from fsv.config import TrainSection
from fsv.models.placement import gpu_fraction


def test_the_share_follows_the_model_size_and_the_study():
    train = TrainSection(use_gpu=True)
    assert gpu_fraction(None, train, "world-s") == 0.125  # the world ladder
    assert gpu_fraction(int(160e6), train, "EleutherAI/pythia-160m") == 0.25
    assert gpu_fraction(int(410e6), train, "EleutherAI/pythia-410m") == 0.5
    assert gpu_fraction(int(1.4e9), train, "EleutherAI/pythia-1.4b") == 1.0  # ZeRO-2 over 2 whole GPUs
    assert gpu_fraction(None, TrainSection(use_gpu=True, gpu_fraction=0.5), "world-s") == 0.5
    per_model = TrainSection(use_gpu=True, gpu_fraction=0.5, per_model={"world-s": {"gpu_fraction": 0.2}})
    assert gpu_fraction(None, per_model, "world-s") == 0.2 and gpu_fraction(None, per_model, "world-m") == 0.5
    assert gpu_fraction(None, TrainSection(use_gpu=True, workers=2, gpu_fraction=0.25), "world-s") == 1.0


def test_gpu_cells_carry_their_share_and_cpu_cells_keep_their_ids():
    from fsv.config import parse_study
    from fsv.grid import expand

    raw = {"name": "g", "models": ["world-xs"], "regimes": {"sft": {"n": [4]}}}
    cpu = expand(parse_study(raw))[0]
    gpu = expand(parse_study({**raw, "train": {"use_gpu": True, "gpu_fraction": 0.25}}))[0]
    assert "gpu_fraction" not in cpu["train"] and gpu["train"]["gpu_fraction"] == 0.25


@pytest.mark.parametrize("value", [0, 1.5])
def test_a_fraction_outside_zero_one_is_refused_with_exit_2(value, tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"name": "g", "models": ["world-xs"], "regimes": {"zero_shot": {}},
                                    "train": {"use_gpu": True, "gpu_fraction": value}}))
    proc = subprocess.run([sys.executable, "-m", "fsv.cli", "validate", str(path)], capture_output=True, text=True)
    assert proc.returncode == 2 and "train.gpu_fraction" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
