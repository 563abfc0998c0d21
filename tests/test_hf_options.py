"""Study options of the HF path, checked before anything launches: where each training trial runs
(ZeRO stage and workers by model size, overridable per model), `trust_remote_code`, and the training
tasks of instruction tuning and rlhf on text (the evaluated task held out)."""

from __future__ import annotations

import numpy as np
import pytest

from fixtures_hf import save_remote_code_model, save_tiny_model, disk_sources, task_texts
from fsv.config import parse_study
from fsv.errors import ConfigError
from fsv.grid import cell_id, expand
from fsv.models.placement import SIZE_TABLE, default_placement
from fsv.models.registry import HF_SUITES, nominal_params, resolve_model
from fsv.tasks import get_task

TASKS = ("sst2", "ag_news", "trec")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    base = tmp_path_factory.mktemp("hf-options")
    texts = task_texts()
    models = {"neox": save_tiny_model("gpt_neox", base / "neox", texts),
              "remote": save_remote_code_model(base / "remote", texts)}
    sources = disk_sources(TASKS, base / "data")
    return {"models": {k: str(v) for k, v in models.items()}, "sources": sources}


def _study(root, **changes) -> dict:
    sources = {t: root["sources"][t] for t in ("sst2", "ag_news")}
    study = {"name": "opts", "models": [root["models"]["neox"]], "tasks": ["sst2", "ag_news"],
             "task_sources": sources, "regimes": {"sft": {"n": [4]}}}
    return {**study, **changes}


def test_size_table_keeps_every_suite_model_within_a_gpu_budget():
    bounds = [row[0] for row in SIZE_TABLE]
    assert bounds == sorted(bounds) and [r[1] for r in SIZE_TABLE] == sorted(r[1] for r in SIZE_TABLE)
    for name in HF_SUITES:
        params = nominal_params(name)
        row = default_placement(params)
        per_gpu = 16 * params / row.workers if row.zero_stage == 3 else (2 + 14 / row.workers) * params
        assert per_gpu <= 40e9, (name, row)  # 16 B/param of AdamW mixed precision, half an 80 GB GPU
    assert (default_placement(nominal_params("EleutherAI/pythia-410m")).zero_stage, default_placement(70e6).workers) == (0, 1)
    assert default_placement(nominal_params("EleutherAI/pythia-1.4b")) == default_placement(2.8e9)
    assert (default_placement(1.4e9).zero_stage, default_placement(1.4e9).workers) == (2, 2)
    assert (default_placement(7e9).zero_stage, default_placement(72e9).workers) == (3, 32)
    assert default_placement(None).zero_stage == 0  # the world ladder: all far below 1B


def test_a_local_model_is_sized_from_its_weights(root):
    from fsv.models.load import load_model, param_count

    spec = resolve_model(root["models"]["neox"])
    assert spec.params == param_count(load_model(spec.name)) and spec.params > 10_000
    assert not spec.remote_code and resolve_model(root["models"]["remote"]).remote_code


def test_train_section_overrides_the_table_per_model_and_records_the_choice(root):
    from study.trial import base_record

    small, big = "EleutherAI/pythia-70m", "EleutherAI/pythia-2.8b"
    plan = lambda s: {c["model"]: (c["train"]["zero_stage"], c["train"]["workers"]) for c in expand(parse_study(s))}  # noqa: E731
    models = [small, big, root["models"]["neox"]]
    assert plan(_study(root, models=models)) == {small: (0, 1), big: (2, 2), root["models"]["neox"]: (0, 1)}
    assert plan(_study(root, models=models, train={"zero_stage": 1})) == {small: (1, 1), big: (1, 2), root["models"]["neox"]: (1, 1)}
    overrides = {"zero_stage": 1, "per_model": {big: {"zero_stage": 3, "workers": 4}, small: {"workers": 2}}}
    assert plan(_study(root, models=models, train=overrides)) == {small: (1, 2), big: (3, 4), root["models"]["neox"]: (1, 1)}
    cells = expand(parse_study(_study(root, models=models, train=overrides)))
    record = base_record(next(c for c in cells if c["model"] == big), "opts")
    assert (record["zero_stage"], record["workers"]) == (3, 4)
    # a study that spells out what the table picks has the same cells, so it resumes the same records
    explicit = _study(root, train={"zero_stage": 0, "workers": 1})
    assert [cell_id(c) for c in expand(parse_study(explicit))] == [cell_id(c) for c in expand(parse_study(_study(root)))]


@pytest.mark.parametrize("train, field, fragment", [
    ({"per_model": {"EleutherAI/pythia-7b": {"workers": 2}}}, "train.per_model.EleutherAI/pythia-7b", "not a model of this study"),
    ({"per_model": {"M": {"worker": 2}}}, "train.per_model.M.worker", "did you mean 'workers'"),
    ({"per_model": {"M": {"zero_stage": 4}}}, "train.per_model.M.zero_stage", "less than or equal to 3"),
    ({"workers": 0}, "train.workers", "greater than or equal to 1"),
])
def test_bad_placement_is_refused_naming_the_field(root, train, field, fragment):
    model = root["models"]["neox"]
    train = {k: ({model if m == "M" else m: v for m, v in val.items()} if k == "per_model" else val) for k, val in train.items()}
    with pytest.raises(ConfigError, match=fragment) as err:
        parse_study(_study(root, train=train))
    assert err.value.field == field.replace(".M", f".{model}")


def test_trust_remote_code_is_off_by_default_and_reaches_the_loader(root, tmp_path):
    from fsv.regimes.context import TrialContext

    remote = root["models"]["remote"]
    with pytest.raises(ConfigError, match="trust_remote_code: true") as err:
        parse_study(_study(root, models=[remote]))
    assert err.value.field == "models[0]" and err.value.value == remote
    for bad in ("yes", 1, None):
        with pytest.raises(ConfigError, match="accepted: true or false") as err:
            parse_study(_study(root, models=[remote], trust_remote_code=bad))
        assert err.value.field == "trust_remote_code" and err.value.value == bad
    study = parse_study(_study(root, models=[remote], trust_remote_code=True, regimes={"zero_shot": {}}))
    cell = expand(study)[0]
    trusted = TrialContext(cell, str(tmp_path), tmp_path, {}, trust_remote_code=True)
    model, tokenizer = trusted.load_base_with_tokenizer()
    assert type(model).__name__ == "FsvTinyForCausalLM" and type(tokenizer).__name__ == "FsvTinyTokenizerFast"
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        TrialContext(cell, str(tmp_path), tmp_path, {}).load_base_with_tokenizer()


def test_multi_task_regimes_on_text_train_on_the_other_tasks(root):
    regimes = {"instruction_tuning": {"n": [4], "tasks_trained": [1, 2], "train_tasks": list(TASKS)},
               "rlhf": {"n": [8]}}
    cells = expand(parse_study(_study(root, seeds=[0, 1], regimes=regimes, task_sources=root["sources"])))
    for c in cells:
        names = [name for name, _ in c["train_tasks"]]
        assert c["task"] not in names and all(src == root["sources"][n] for n, src in c["train_tasks"])
        if c["regime"] == "instruction_tuning":
            assert len(names) == c["tasks_trained"] and c["description"] == "human"
        else:  # rlhf: feedback on every other task of the study
            assert names == [t for t in ("sst2", "ag_news") if t != c["task"]]
    it = {(c["task"], c["seed"], c["tasks_trained"]): [n for n, _ in c["train_tasks"]] for c in cells if c["tasks_trained"]}
    for task in ("sst2", "ag_news"):
        for seed in (0, 1):
            assert it[task, seed, 2][:1] == it[task, seed, 1]  # T = 1 is within T = 2


@pytest.mark.parametrize("regimes, field, fragment", [
    ({"instruction_tuning": {"n": [4], "tasks_trained": [2]}}, "regimes.instruction_tuning.tasks_trained[0]", "T <= 1"),
    ({"rlhf": {"n": [4], "train_tasks": ["sst3"]}}, "regimes.rlhf.train_tasks[0]", "did you mean 'sst2'"),
    ({"rlhf": {"n": [4], "train_tasks": ["sst2"]}}, "regimes.rlhf.train_tasks", "leaves no task to train on"),
])
def test_bad_training_tasks_are_refused_naming_the_field(root, regimes, field, fragment):
    with pytest.raises(ConfigError, match=fragment) as err:
        parse_study(_study(root, regimes=regimes))
    assert err.value.field == field


def test_text_instruction_rows_and_feedback_use_human_descriptions(root):
    from transformers import AutoTokenizer

    from fsv.regimes.instruction_tuning import text_rows
    from fsv.regimes.rlhf import text_feedback

    tok = AutoTokenizer.from_pretrained(root["models"]["neox"])
    train_tasks = [["ag_news", root["sources"]["ag_news"]], ["trec", root["sources"]["trec"]]]
    rows = text_rows({"train_tasks": train_tasks}, tok, 6, 0)
    assert len(rows) == 12
    texts = [tok.decode(ids) for ids, _ in rows]
    assert sum(t.startswith(get_task("ag_news").human) for t in texts) == 6
    assert sum(t.startswith(get_task("trec").human) for t in texts) == 6
    for ids, labels in rows:  # loss on the label word only, at the end
        kept = [i for i, y in zip(ids, labels) if y != -100]
        assert kept and ids[-len(kept):] == kept
    pairs = text_feedback(train_tasks, 400, noise=0.2, seed=0)
    assert all(p["prompt"].startswith((get_task("ag_news").human, get_task("trec").human)) for p in pairs)
    assert all(p["chosen"] != p["rejected"] for p in pairs)
    truthful = text_feedback(train_tasks, 400, noise=0.0, seed=0)  # same draws, no errors
    assert [p["prompt"] for p in truthful] == [p["prompt"] for p in pairs]
    flipped = np.mean([p["chosen"] != t["chosen"] for p, t in zip(pairs, truthful)])
    assert 0.12 < flipped < 0.28  # the annotator errs at its noise rate
    assert pairs == text_feedback(train_tasks, 400, noise=0.2, seed=0)
