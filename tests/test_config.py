"""Bad input is refused before anything launches, naming the field, the value and what is accepted;
the grid expands into cells with stable ids."""

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fsv.config import load_study, parse_study
from fsv.errors import ConfigError
from fsv.grid import cell_id, expand

GOOD = {
    "name": "t",
    "models": ["world-xs", "world-s"],
    "seeds": [0, 1],
    "regimes": {"zero_shot": {"descriptions": ["none", "model"]}, "few_shot": {"k": [1, 4]},
                "sft": {"n": [4, 16]}},
}


def _with(path: str, value):
    study = copy.deepcopy(GOOD)
    *parents, last = path.split(".")
    node = study
    for p in parents:
        node = node.setdefault(p, {})
    if value is _DELETE:
        node.pop(last)
    else:
        node[last] = value
    return study


_DELETE = object()

BAD = [
    # (change, expected fragments of the message)
    (("colour", "red"), ["colour", "unknown key"]),
    (("regimes.few_shot.kk", [1]), ["regimes.few_shot.kk", "did you mean 'k'"]),
    (("world.presett", "quick"), ["world.presett", "did you mean 'preset'"]),
    (("models", ["world-xss"]), ["models[0]", "world-xss", "did you mean 'world-xs'"]),
    (("models", ["gpt-17"]), ["models[0]", "gpt-17", "unknown model"]),
    (("models", ["world-xs", "world-xs"]), ["models", "duplicate"]),
    (("models", []), ["models", "at least 1"]),
    (("models", "world-xs"), ["models", "list"]),
    (("tasks", ["wrld"]), ["tasks[0]", "did you mean 'world'"]),
    (("regimes.few_shot.k", [1, -2]), ["regimes.few_shot.k", "-2", ">= 1"]),
    (("regimes.few_shot.k", [0]), ["regimes.few_shot.k", ">= 1"]),
    (("regimes.few_shot.k", [1.5]), ["regimes.few_shot.k[0]", "1.5", "integer"]),
    (("regimes.few_shot.k", [2, 2]), ["regimes.few_shot.k", "duplicate"]),
    (("regimes.few_shot.k", [24]), ["regimes.few_shot.k[0]", "24", "context window", "k <= 23"]),
    (("regimes.few_shot.k", "four"), ["regimes.few_shot.k", "four", "list"]),
    (("regimes.sft.n", [-1]), ["regimes.sft.n", "-1", ">= 1"]),
    (("regimes.sft.n", [0, 4]), ["regimes.sft.n", ">= 1"]),
    (("regimes.sft.layouts", ["stacked"]), ["regimes.sft.layouts[0]", "stacked", "single", "packed"]),
    (("regimes.zero_shot.descriptions", ["modle"]), ["regimes.zero_shot.descriptions", "did you mean 'model'"]),
    (("regimes.few_shot.description", "humane"), ["regimes.few_shot.description", "did you mean 'human'"]),
    (("regimes.rlhf", {"n": [4], "methods": ["ppo"]}), ["regimes.rlhf.methods[0]", "ppo", "dpo", "grpo"]),
    # the hyperparameter search
    (("regimes.sft", {"n": [4], "lr": []}), ["regimes.sft.lr", "empty search space"]),
    (("regimes.sft", {"n": [4], "lr": [1e-3, 0.0]}), ["regimes.sft.lr", "0.0", "> 0"]),
    (("regimes.sft", {"n": [4], "lr": [-1e-3]}), ["regimes.sft.lr", "> 0"]),
    (("regimes.sft", {"n": [4], "lr": {"low": 1e-2, "high": 1e-4}}), ["regimes.sft.lr", "low < high"]),
    (("regimes.sft", {"n": [4], "steps": [0, 10]}), ["regimes.sft.steps", ">= 1"]),
    (("regimes.sft", {"n": [4], "methods": ["qlora"]}), ["regimes.sft.methods[0]", "qlora", "full", "lora"]),
    (("regimes.sft", {"n": [4], "lr": {"low": 1e-4, "high": 1e-2}}), ["regimes.sft.lr", "range", "grid", "list"]),
    (("search.method", "bayes"), ["search.method", "bayes", "grid", "random", "optuna"]),
    (("search.scheduler", "hyperband"), ["search.scheduler", "hyperband", "none", "asha"]),
    (("search", {"method": "grid", "samples": 8}), ["search", "samples", "grid"]),
    (("search", {"method": "optuna"}), ["search", "optuna", "needs samples"]),
    (("search", {"method": "optuna", "samples": 4, "widen_steps": 1}), ["search", "widen_steps: 1", "optuna", "method grid"]),
    (("pretrain", {"steps": 100, "checkpoints": [50, 100]}), ["pretrain.checkpoints", "100", "steps 1..99"]),
    (("pretrain", {"steps": 100, "checkpoints": [0]}), ["pretrain.checkpoints", ">= 1"]),
    (("regimes.sft", {"n": [4], "lr": {"low": 1e-4}}), ["regimes.sft.lr", "high", "required"]),
    (("regimes.rlhf", {"n": [4], "noise": 0.9}), ["regimes.rlhf.noise", "0.9", "0.5"]),
    (("regimes.dpo", {"n": [4]}), ["regimes.dpo", "unknown key"]),
    (("regimes", {}), ["regimes", "grid is empty"]),
    (("seeds", [0, 0]), ["seeds", "duplicate"]),
    (("seeds", [-1]), ["seeds", ">= 0"]),
    (("train.zero_stage", 4), ["train.zero_stage", "4", "3"]),
    (("train.workers", 0), ["train.workers", "0", "1"]),
    (("train.stack", 0), ["train.stack", "0", "1"]),
    (("world.preset", "hardest"), ["world.preset", "hardest", "did you mean 'harder'"]),
    (("name", "my study!"), ["name", "my study!", "pattern"]),
    (("name", _DELETE), ["name", "required"]),
    (("pretrain.steps", 0), ["pretrain.steps", "0", "1"]),
    (("wandb.mode", "cloud"), ["wandb.mode", "cloud", "offline"]),
]


@pytest.mark.parametrize("change,fragments", BAD, ids=[b[0][0] + "=" + str(b[0][1])[:20] for b in BAD])
def test_bad_study_is_refused_with_field_value_and_accepted(change, fragments):
    with pytest.raises(ConfigError) as err:
        parse_study(_with(*change))
    message = str(err.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def test_malformed_yaml_names_the_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nmodels: [world-xs\nregimes: {}\n")
    with pytest.raises(ConfigError, match=r"malformed YAML at line \d+"):
        load_study(path)


def test_cli_refuses_bad_input_with_exit_2_and_writes_nothing(tmp_path):
    study = tmp_path / "s.yaml"
    study.write_text(yaml.safe_dump(_with("regimes.few_shot.k", [1, -3])))
    out = tmp_path / "results"
    proc = subprocess.run([sys.executable, "-m", "fsv.cli", "run", str(study), "--storage", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "regimes.few_shot.k" in proc.stderr and "-3" in proc.stderr
    assert not out.exists()


def test_cli_refuses_unreachable_address_and_unwritable_storage(tmp_path):
    study = tmp_path / "s.yaml"
    study.write_text(yaml.safe_dump(GOOD))
    cmd = [sys.executable, "-m", "fsv.cli", "run", str(study)]
    proc = subprocess.run(cmd + ["--storage", str(tmp_path / "r"), "--address", "127.0.0.1:1"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--address" in proc.stderr and "127.0.0.1:1" in proc.stderr
    blocker = tmp_path / "file"
    blocker.write_text("")
    proc = subprocess.run(cmd + ["--storage", str(blocker / "sub")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--storage" in proc.stderr
    assert not (tmp_path / "r").exists()


def test_grid_expands_every_axis_with_stable_ids():
    study = parse_study(GOOD)
    cells = expand(study)
    # zero_shot 2 models x 2 seeds x 2 descriptions; few_shot 2x2x2 k; sft per model: 1 selection trial
    # (one point: the default lr and weight decay) and 2 n x 2 seeds x 2 folds scored cells
    assert len(cells) == 8 + 8 + 2 * (1 + 8)
    assert {c["phase"] for c in cells if c["regime"] == "sft"} == {"select", "measure"}
    ids = [c["cell_id"] for c in cells]
    assert len(set(ids)) == len(ids)
    assert ids == [c["cell_id"] for c in expand(parse_study(copy.deepcopy(GOOD)))]
    first = dict(cells[0])
    first.pop("cell_id")
    assert cell_id(first) == cells[0]["cell_id"]


def test_cell_id_ignores_order_and_changes_with_content():
    reordered = copy.deepcopy(GOOD)
    reordered["regimes"] = dict(reversed(list(GOOD["regimes"].items())))
    a = {c["cell_id"] for c in expand(parse_study(GOOD))}
    b = {c["cell_id"] for c in expand(parse_study(reordered))}
    assert a == b
    changed = _with("regimes.few_shot", {"k": [1, 4], "episodes": 8})
    c = {x["cell_id"] for x in expand(parse_study(changed)) if x["regime"] == "few_shot"}
    assert c.isdisjoint(a)


def test_shipped_studies_are_valid():
    for path in sorted(Path(__file__).parents[1].joinpath("study").glob("*.yaml")):
        assert expand(load_study(path)), path
