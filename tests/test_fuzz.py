"""Fuzzed study YAMLs (a seeded subset of benchmarks/fuzz.py): every mutation of a shipped study ends
in `valid` or exit 2 naming the field -- never a traceback, a hang or a write -- and `fsv run` with
hostile YAML (a python tag, an alias bomb, non-UTF-8 bytes) exits 2 without creating its storage."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.fuzz import check, mutations  # noqa: E402

CASES = list(mutations(40, seed=1))


@pytest.mark.parametrize("case", range(len(CASES)), ids=[f"{i}-{c[0]}-{c[1]}" for i, c in enumerate(CASES)])
def test_mutated_study_is_valid_or_refused_naming_the_field(case, tmp_path):
    kind, source, mutated = CASES[case]
    outcome, output = check(mutated, tmp_path)
    assert outcome in ("valid", "refused"), (kind, source, outcome)


HOSTILE = {
    "python_tag": "name: x\nmodels: !!python/object/apply:os.system ['touch pwned']\nregimes: {zero_shot: {}}\n",
    "alias_bomb": "a: &a [0, 0, 0, 0, 0, 0, 0, 0, 0, 0]\n" + "".join(
        f"a{i}: &a{i} [{', '.join(['*a' if i == 1 else f'*a{i - 1}'] * 10)}]\n" for i in range(1, 9))
        + "name: x\nmodels: [world-xs]\nseeds: *a8\nregimes: {zero_shot: {}}\n",
    "non_utf8": b"name: x\xff\nmodels: [world-xs]\nregimes: {zero_shot: {}}\n",
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_fsv_run_refuses_hostile_yaml_with_exit_2_and_writes_nothing(name, tmp_path):
    study = tmp_path / "s.yaml"
    text = HOSTILE[name]
    study.write_bytes(text if isinstance(text, bytes) else text.encode())
    proc = subprocess.run([sys.executable, "-m", "fsv.cli", "run", str(study), "--storage", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2 and "is not accepted" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml"]  # no storage, no pwned


def test_a_grid_too_large_to_be_meant_is_refused_before_expanding():
    from fsv.config import parse_study
    from fsv.errors import ConfigError
    from fsv.grid import MAX_CELLS, expand

    study = {"name": "big", "models": ["world-xs", "world-s"], "seeds": list(range(9)),
             "regimes": {"zero_shot": {"descriptions": ["none", "model"]}, "few_shot": {"k": [1, 2, 4]}}}
    assert len(expand(parse_study(study))) == 2 * 9 * (2 + 3)  # the size the check computes
    study["seeds"] = list(range(2200))
    study["regimes"] = {"zero_shot": {"descriptions": ["none", "model", "human"]}, "few_shot": {"k": list(range(1, 21))}}
    assert 2 * 2200 * (3 + 20) > MAX_CELLS
    with pytest.raises(ConfigError, match=r"study: 'a grid of 101,200 cells' is not accepted"):
        parse_study(study)
