"""The real-dataset path offline: tiny GPT-NeoX / Qwen2 / Llama models and tiny datasets of every
registered task, in every local format, built by `fixtures_hf` (nothing is downloaded)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fixtures_hf import ARCHS, make_rows, save_tiny_model, task_texts, write_formats
from fsv.errors import ConfigError
from fsv.hf_eval import (PromptTooLongError, build_prompts, check_context, context_window, evaluate_text,
                         label_token_ids, max_k, max_prompt_tokens, tokenize_prompts)
from fsv.scoring import score_naive
from fsv.tasks import DESCRIPTIONS, TASKS, draw_train, get_task, load_splits

FORMATS = ("disk_dict", "disk_dataset", "jsonl_dir", "json_file", "json_single", "csv_dir", "csv_file", "parquet_dir")
CONTEXT = 512


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread; on a busy machine, more threads only wait on each other."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    import datasets

    datasets.disable_progress_bars()
    base = tmp_path_factory.mktemp("hf-path")
    texts = task_texts()
    for arch in ARCHS:
        save_tiny_model(arch, base / "models" / arch, texts, context=CONTEXT)
    data = {name: write_formats(task, base / "data") for name, task in TASKS.items()}
    return {"base": base, "models": base / "models", "data": data}


@pytest.fixture(scope="module")
def loaded(root):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = {}
    for arch in ARCHS:
        path = root["models"] / arch
        out[arch] = (AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path))
    return out


@pytest.mark.parametrize("arch", ARCHS)
def test_tiny_architectures_load_like_hub_models(root, loaded, arch):
    from fsv.models.registry import resolve_model

    model, tok = loaded[arch]
    assert model.config.model_type == arch and context_window(model) == CONTEXT
    spec = resolve_model(str(root["models"] / arch))
    assert spec.kind == "hf" and spec.context == CONTEXT
    assert tok.pad_token_id is not None and tok.bos_token_id is not None
    starts_with_bos = tok("Review: good")["input_ids"][0] == tok.bos_token_id
    assert starts_with_bos == (arch != "gpt_neox")  # Pythia-style tokenizers add no BOS
    ids = label_token_ids(tok, get_task("trec"))
    assert all(len(t) > 1 for t in ids) and tok.bos_token_id not in sum(ids, [])
    assert tok.decode(ids[0]) == " abbreviation"  # a continuation, its leading space kept


@pytest.mark.parametrize("name", list(TASKS))
def test_every_task_renders_in_every_description_variant(name):
    task = TASKS[name]
    row = make_rows(task, 3, 5)
    demos = [({f: r[f] for f in task.text_fields}, r[task.label_field]) for r in row[:2]]
    query = {f: row[2][f] for f in task.text_fields}
    tail = task.template.rsplit("}", 1)[-1]
    for variant in DESCRIPTIONS:
        text = task.prompt(demos, query, variant)
        assert text.endswith(tail) and not text.endswith(" ")
        assert all(str(query[f]) in text for f in task.text_fields)
        assert text.count(task.separator) == 2 + (variant != "none")
        for fields, y in demos:
            assert task.render(fields, y) in text and task.render(fields, y).endswith(task.label_words[y])
    assert task.description("model") == "Options: " + ", ".join(w.strip() for w in task.label_words) + "."
    assert task.human and task.human != task.description("model") and task.description("none") == ""
    assert task.prompt([], query, "human").startswith(task.human + task.separator)
    assert len(task.label_words) == len(set(task.label_words)) == task.num_labels
    with pytest.raises(ConfigError, match="did you mean 'human'"):
        task.description("humans")


def test_registry_covers_the_required_tasks_and_their_verbalizers():
    assert {"sst2", "ag_news", "trec", "rte"} <= set(TASKS) and len(TASKS) >= 6
    assert TASKS["trec"].label_words == (" abbreviation", " entity", " description", " human", " location", " number")
    assert TASKS["rte"].text_fields == ("premise", "hypothesis") and " Sci/Tech" in TASKS["ag_news"].label_words
    assert TASKS["sst2"].test_splits[0] == "validation" and TASKS["ag_news"].test_splits[0] == "test"


@pytest.mark.parametrize("name", list(TASKS))
def test_every_local_format_loads_into_disjoint_splits(root, name):
    task = TASKS[name]
    expected_test = [r[task.label_field] for r in make_rows(task, 20, 2)]
    for fmt in FORMATS:
        splits = load_splits(task, root["data"][name][fmt], pool_size=16)
        keys = [{e.key for e in part} for part in (splits.train, splits.few_shot, splits.test)]
        assert not (keys[0] & keys[1] or keys[0] & keys[2] or keys[1] & keys[2]), fmt
        if fmt == "json_single":  # one table, no split column: a seeded 20% holdout
            assert splits.test_split == "holdout" and splits.sizes() == {"train": 32, "few_shot": 16, "test": 12}
            continue
        assert splits.test_split == task.test_splits[0], fmt
        assert splits.sizes() == {"train": 24, "few_shot": 16, "test": 20}, fmt
        assert [e.label for e in splits.test] == [int(y) for y in expected_test], fmt  # ids, names, booleans
        assert set(splits.test[0].fields) == set(task.text_fields)  # aliases mapped to canonical fields


def test_split_roles_are_seeded_and_dirty_rows_are_handled(root, tmp_path):
    task = get_task("sst2")
    src = root["data"]["sst2"]["jsonl_dir"]
    a, b = load_splits(task, src, pool_size=8), load_splits(task, src, pool_size=8)
    other = load_splits(task, src, pool_size=8, split_seed=1)
    assert [e.key for e in a.few_shot] == [e.key for e in b.few_shot] != [e.key for e in other.few_shot]
    assert len(a.few_shot) == 8 and len(a.train) == 32
    picked = draw_train(a, 5, seed=3)
    assert [e.key for e in picked] == [e.key for e in draw_train(a, 5, seed=3)]
    assert not {e.key for e in picked} & {e.key for e in a.few_shot}
    with pytest.raises(ConfigError, match="n <= 32"):
        draw_train(a, 33, seed=0)

    # GLUE-like: hidden test labels (-1), a repeated sentence across splits, string split names
    train, val = make_rows(task, 30, 1), make_rows(task, 10, 2)
    train[4] = dict(val[3])
    hidden = [{**r, "label": -1} for r in make_rows(task, 5, 3)]
    (tmp_path / "glue.json").write_text(json.dumps({"train": train, "dev": val, "test": hidden}))
    s = load_splits(task, tmp_path / "glue.json")
    assert s.test_split == "validation" and s.dropped == {"unlabelled": 0, "overlap": 1}
    test_texts = {e.fields["sentence"] for e in s.test}
    assert not any(e.fields["sentence"] in test_texts for e in s.train + s.few_shot)
    (tmp_path / "hidden.json").write_text(json.dumps({"train": train, "test": hidden}))
    with pytest.raises(ConfigError, match="no labelled rows"):
        load_splits(task, tmp_path / "hidden.json")

    (tmp_path / "bad_label.json").write_text(json.dumps([{**val[0], "label": "great"}]))
    with pytest.raises(ConfigError, match="'great' is not a class of task sst2"):
        load_splits(task, tmp_path / "bad_label.json")
    (tmp_path / "no_col.json").write_text(json.dumps([{"review": "x", "label": 0}] * 5))
    with pytest.raises(ConfigError, match="needs a 'sentence' column") as err:
        load_splits(task, tmp_path / "no_col.json")
    assert err.value.field == "task_sources.sst2"
    with pytest.raises(ConfigError, match="no such file or folder"):
        load_splits(task, tmp_path / "missing")


def test_hub_path_loads_by_dataset_id(root, monkeypatch):
    import datasets

    calls = []

    def fake_load(path, name=None, **kw):
        calls.append((path, name))
        return datasets.load_from_disk(str(root["data"]["rte"]["disk_dict"]))

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    s = load_splits("rte", pool_size=16)
    assert calls == [("nyu-mll/glue", "rte")] and s.source == "hub:nyu-mll/glue/rte" and len(s.test) == 20

    def offline(path, name=None, **kw):
        raise ConnectionError("offline")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(ConfigError, match="from the hub failed .*offline"):
        load_splits("ag_news")


@pytest.mark.parametrize("fmt", ["disk_dict", "json_single"])
def test_test_examples_are_never_demonstrations(root, fmt):
    task = get_task("trec")
    splits = load_splits(task, root["data"]["trec"][fmt], pool_size=16)
    test_keys = {e.key for e in splits.test}
    test_texts = {e.fields["text"] for e in splits.test}
    pool = {e.index: e for e in splits.few_shot}
    for seed in range(5):
        texts, truth, demos = build_prompts(task, splits, len(pool), "human", seed=seed, episodes=3)
        assert len(demos) == 3 and len(texts) == len(truth) == 3 * len(splits.test)
        for _, shots in demos:
            assert len(set(shots)) == len(pool) and set(shots) <= set(pool)
            assert not {pool[i].key for i in shots} & test_keys
            assert not {pool[i].fields["text"] for i in shots} & test_texts
    again = build_prompts(task, splits, 4, "none", seed=1, episodes=2)[2]
    assert again == build_prompts(task, splits, 4, "none", seed=1, episodes=2)[2]
    assert again != build_prompts(task, splits, 4, "none", seed=2, episodes=2)[2]
    with pytest.raises(ConfigError, match="k <= 16"):
        build_prompts(task, splits, 17)


@pytest.mark.parametrize("arch", ARCHS)
def test_multi_token_scoring_through_evaluate_text_equals_naive(root, loaded, arch):
    model, tok = loaded[arch]
    naive = lambda m, p, c, **kw: score_naive(m, p, c)  # noqa: E731
    for name in ("trec", "rte"):  # six multi-token label words; a two-field template
        task = get_task(name)
        splits = load_splits(task, root["data"][name]["csv_dir"], pool_size=16)
        assert all(len(t) > 1 for t in label_token_ids(tok, task))
        fast = evaluate_text(model, tok, task, splits, k=2, variant="model", seed=0, episodes=2, max_eval=2, batch_size=3)
        slow = evaluate_text(model, tok, task, splits, k=2, variant="model", seed=0, episodes=2, max_eval=2, scorer=naive)
        assert fast.loglik.shape == (4, task.num_labels)
        assert np.abs(fast.loglik - slow.loglik).max() < 1e-5
        assert (fast.accuracy, fast.accuracy_norm, fast.demos) == (slow.accuracy, slow.accuracy_norm, slow.demos)
        lengths = np.array([len(t) for t in label_token_ids(tok, task)])
        norm_pred = (fast.loglik / lengths).argmax(axis=1)
        assert fast.accuracy_norm == pytest.approx(float((norm_pred == fast.labels).mean()))
        assert fast.n_eval == 4 and fast.chance == pytest.approx(1 / task.num_labels)


def test_too_long_prompt_raises_instead_of_truncating(root, loaded):
    model, tok = loaded["llama"]
    task = get_task("boolq")
    splits = load_splits(task, root["data"]["boolq"]["disk_dict"], pool_size=16)
    fits = evaluate_text(model, tok, task, splits, k=1, seed=0, episodes=1, max_eval=3)
    worst1 = max_prompt_tokens(tok, task, splits, 1)
    assert fits.max_tokens <= worst1 <= CONTEXT
    texts = build_prompts(task, splits, 1, seed=0, episodes=1, max_eval=3)[0]
    assert max(len(p) for p in tokenize_prompts(tok, texts)) <= max_prompt_tokens(tok, task, splits, 1, with_label=False)

    k = 16
    assert max_prompt_tokens(tok, task, splits, k) > CONTEXT
    with pytest.raises(PromptTooLongError, match=rf"k={k}\b.* is \d+ tokens.*context window of {CONTEXT}") as err:
        evaluate_text(model, tok, task, splits, k=k, episodes=1, max_eval=3)
    assert err.value.k == k and err.value.length + err.value.label_tokens > CONTEXT
    kmax = max_k(tok, task, splits, "none", CONTEXT)
    assert 0 < kmax < k and err.value.k_fits == kmax
    assert max_prompt_tokens(tok, task, splits, kmax) <= CONTEXT < max_prompt_tokens(tok, task, splits, kmax + 1)
    with pytest.raises(ConfigError, match=rf"accepted: k <= {kmax}") as cfg:
        check_context(tok, task, splits, [1, k], "none", CONTEXT)
    assert cfg.value.field == "regimes.few_shot.k[1]" and cfg.value.value == k
    check_context(tok, task, splits, [1, kmax], "none", CONTEXT)
    with pytest.raises(PromptTooLongError):  # an explicit (smaller) window is honoured too
        evaluate_text(model, tok, task, splits, k=0, max_eval=3, context=20)


def test_unknown_task_name_is_a_config_error_with_a_suggestion():
    with pytest.raises(ConfigError, match="did you mean 'sst2'") as err:
        get_task("sst3")
    assert err.value.field == "tasks" and err.value.value == "sst3"
    with pytest.raises(ConfigError, match="did you mean 'ag_news'"):
        load_splits("agnews", "/nonexistent")
    with pytest.raises(ConfigError, match="did you mean 'rotten_tomatoes'"):
        get_task("rotten_tomato", field="tasks[2]")
    assert get_task("AG-News") is TASKS["ag_news"] and get_task("SST2").name == "sst2"
