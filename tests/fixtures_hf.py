"""Offline stand-ins for the real-dataset path: tiny models of the real architectures (GPT-NeoX as
Pythia, Qwen2 as Qwen2.5, Llama as SmolLM2), a byte-level BPE tokenizer trained here on the tiny
datasets' own text, and tiny datasets of every registered task's schema written in every local
format `fsv.tasks.load_splits` reads. Nothing is downloaded.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fsv.tasks import TASKS, TextTask

SPECIALS = {"bos_token": "<|bos|>", "eos_token": "<|eos|>", "pad_token": "<|pad|>", "unk_token": "<|unk|>"}
WORDS = ("the film a story was very not quite good bad plot actor scene city team market price "
         "river who what where when how many said new old game company science data people "
         "year found time long short music great dull bright world house").split()

# --- tiny datasets -----------------------------------------------------------------------------


def source_columns(task: TextTask, alternate: bool = False) -> dict[str, str]:
    """Canonical field -> the column name written (the canonical name, or its last alias)."""
    fields = [*task.text_fields, task.label_field]
    return {f: (task.columns(f)[-1] if alternate else f) for f in fields}


def make_rows(task: TextTask, n: int, seed: int, alternate: bool = False, label_as: str = "id") -> list[dict]:
    """n rows in the task's schema: random words with the class name as a cue in the first field.
    `label_as`: "id" (int), "name" (class name string) or "bool" (for two-class tasks)."""
    rng = np.random.default_rng(seed)
    cols = source_columns(task, alternate)
    rows = []
    for i in range(n):
        y = int(rng.integers(task.num_labels))
        row = {}
        for j, f in enumerate(task.text_fields):
            words = list(rng.choice(WORDS, size=int(rng.integers(5, 11))))
            if j == 0:
                words.insert(int(rng.integers(len(words))), task.label_names[y].lower())
            row[cols[f]] = f"{' '.join(words)} {seed}-{i}"  # the suffix keeps every row unique
        row[cols[task.label_field]] = {"id": y, "name": task.label_names[y], "bool": bool(y)}[label_as]
        rows.append(row)
    return rows


def task_texts(n_train: int = 40, n_test: int = 20) -> list[str]:
    """Every string the tokenizer should know: rows, templates, descriptions, label words."""
    out = []
    for task in TASKS.values():
        for row in make_rows(task, n_train + n_test, 0):
            out.append(task.render({f: row[f] for f in task.text_fields}, row[task.label_field]))
        out += [task.human, task.description("model"), *task.label_words]
    return out


def write_formats(task: TextTask, root: Path, n_train: int = 40, n_test: int = 20) -> dict[str, Path]:
    """The task's tiny dataset in every local format; returns format name -> path.
    Train rows are seeded 1, test rows 2 (so they are disjoint)."""
    import datasets

    root = Path(root) / task.name
    root.mkdir(parents=True, exist_ok=True)
    test_split = task.test_splits[0]
    train, test = make_rows(task, n_train, 1), make_rows(task, n_test, 2)
    out: dict[str, Path] = {}

    features = None
    if task.label_field == "label" or task.name == "trec":  # a ClassLabel column, like the hub's
        feats = {c: datasets.Value("string") for c in task.text_fields}
        feats[task.label_field] = datasets.ClassLabel(names=list(task.label_names))
        features = datasets.Features(feats)
    dd = datasets.DatasetDict({
        "train": datasets.Dataset.from_list(train, features=features),
        test_split: datasets.Dataset.from_list(test, features=features),
    })
    out["disk_dict"] = root / "disk_dict"
    dd.save_to_disk(str(out["disk_dict"]))

    both = [{**r, "split": "train"} for r in train] + [{**r, "split": test_split} for r in test]
    out["disk_dataset"] = root / "disk_dataset"
    datasets.Dataset.from_list(both).save_to_disk(str(out["disk_dataset"]))

    alt_train, alt_test = make_rows(task, n_train, 1, alternate=True), make_rows(task, n_test, 2, alternate=True)
    out["jsonl_dir"] = root / "jsonl_dir"  # alias column names (e.g. sentence1/sentence2), `dev` for validation
    out["jsonl_dir"].mkdir(exist_ok=True)
    _jsonl(out["jsonl_dir"] / "train.jsonl", alt_train)
    _jsonl(out["jsonl_dir"] / f"{'dev' if test_split == 'validation' else test_split}.jsonl", alt_test)

    out["json_file"] = root / "splits.json"  # one JSON mapping split -> rows
    out["json_file"].write_text(json.dumps({"train": train, test_split: test}))

    out["json_single"] = root / "all.json"  # one JSON list without splits: the loader holds out a test share
    out["json_single"].write_text(json.dumps(train + test))

    label_as = "bool" if task.name == "boolq" else "name"  # labels as names / booleans in CSV
    out["csv_dir"] = root / "csv_dir"
    out["csv_dir"].mkdir(exist_ok=True)
    _csv(out["csv_dir"] / "train.csv", make_rows(task, n_train, 1, label_as=label_as))
    _csv(out["csv_dir"] / f"{test_split}.csv", make_rows(task, n_test, 2, label_as=label_as))

    out["csv_file"] = root / "all.csv"  # one CSV with a split column
    _csv(out["csv_file"], both)

    out["parquet_dir"] = root / "snapshot"  # a hub-style snapshot: data/<split>-00000-of-00001.parquet
    (out["parquet_dir"] / "data").mkdir(parents=True, exist_ok=True)
    import pandas as pd

    pd.DataFrame(train).to_parquet(out["parquet_dir"] / "data" / "train-00000-of-00001.parquet")
    pd.DataFrame(test).to_parquet(out["parquet_dir"] / "data" / f"{test_split}-00000-of-00001.parquet")
    return out


def disk_sources(tasks, root: Path) -> dict[str, str]:
    """A `save_to_disk` snapshot of each named task under `root`, as a study's `task_sources`."""
    import datasets

    from fsv.tasks import get_task

    datasets.disable_progress_bars()
    return {t: str(write_formats(get_task(t), root)["disk_dict"]) for t in tasks}


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _csv(path: Path, rows: list[dict]) -> None:
    import pandas as pd

    pd.DataFrame(rows).to_csv(path, index=False)


# --- tokenizer and models ----------------------------------------------------------------------


def build_tokenizer(texts: list[str], vocab_size: int = 320, add_bos: bool = True):
    """A byte-level BPE (GPT-2 style, as Pythia / Qwen / SmolLM2 use) trained on `texts`, wrapped as a
    `PreTrainedTokenizerFast` with bos/eos/pad/unk. A small vocabulary keeps label words multi-token.
    `add_bos`: prepend <|bos|> when special tokens are added (Llama-style); off = Pythia-style."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIALS.values()),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    core.train_from_iterator(texts, trainer)
    if add_bos:
        bos = SPECIALS["bos_token"]
        core.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, core.token_to_id(bos))])
    tok = PreTrainedTokenizerFast(tokenizer_object=core, **SPECIALS)
    return tok


ARCHS = ("gpt_neox", "qwen2", "llama")


def tiny_config(arch: str, tokenizer, context: int = 512, hidden: int = 32, layers: int = 2):
    from transformers import GPTNeoXConfig, LlamaConfig, Qwen2Config

    ids = {"vocab_size": len(tokenizer), "bos_token_id": tokenizer.bos_token_id,
           "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id,
           "max_position_embeddings": context, "hidden_size": hidden, "intermediate_size": 2 * hidden,
           "num_hidden_layers": layers, "num_attention_heads": 4, "initializer_range": 0.2}
    if arch == "gpt_neox":  # Pythia: parallel residual, partial rotary, untied head
        return GPTNeoXConfig(**ids, rotary_pct=0.25, use_parallel_residual=True, tie_word_embeddings=False)
    if arch == "qwen2":  # Qwen2.5: GQA, qkv bias, tied embeddings (small sizes)
        return Qwen2Config(**ids, num_key_value_heads=2, tie_word_embeddings=True)
    if arch == "llama":  # SmolLM2: GQA, tied embeddings
        return LlamaConfig(**ids, num_key_value_heads=2, tie_word_embeddings=True)
    raise ValueError(arch)


def save_tiny_model(arch: str, dest: Path, texts: list[str], context: int = 512, seed: int = 0) -> Path:
    """A tiny randomly initialised `arch` model and its tokenizer saved in `dest`, loadable with
    `AutoModelForCausalLM.from_pretrained(dest)` / `AutoTokenizer.from_pretrained(dest)`."""
    import torch
    from transformers import AutoModelForCausalLM

    tok = build_tokenizer(texts, add_bos=arch != "gpt_neox")
    tok.model_max_length = context
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(arch, tok, context))
    dest = Path(dest)
    model.save_pretrained(dest, safe_serialization=True)
    tok.save_pretrained(dest)
    return dest


# --- a model that ships its own code ----------------------------------------------------------

REMOTE_CODE = {
    "configuration_fsv_tiny.py": "from transformers import LlamaConfig\n\n\n"
                                 "class FsvTinyConfig(LlamaConfig):\n    model_type = 'fsv_tiny'\n",
    "modeling_fsv_tiny.py": "from transformers import LlamaForCausalLM\n\n"
                            "from .configuration_fsv_tiny import FsvTinyConfig\n\n\n"
                            "class FsvTinyForCausalLM(LlamaForCausalLM):\n    config_class = FsvTinyConfig\n",
    "tokenization_fsv_tiny.py": "from transformers import PreTrainedTokenizerFast\n\n\n"
                                "class FsvTinyTokenizerFast(PreTrainedTokenizerFast):\n    pass\n",
}


def save_remote_code_model(dest: Path, texts: list[str], context: int = 512) -> Path:
    """A tiny Llama whose config, model and tokenizer classes live in files beside the weights
    (`auto_map`), as a hub repo with custom code ships them: it loads only with trust_remote_code."""
    dest = save_tiny_model("llama", dest, texts, context)
    for name, code in REMOTE_CODE.items():
        (dest / name).write_text(code)
    cfg = json.loads((dest / "config.json").read_text())
    cfg.update(model_type="fsv_tiny", architectures=["FsvTinyForCausalLM"],
               auto_map={"AutoConfig": "configuration_fsv_tiny.FsvTinyConfig",
                         "AutoModelForCausalLM": "modeling_fsv_tiny.FsvTinyForCausalLM"})
    (dest / "config.json").write_text(json.dumps(cfg, indent=1))
    tok = json.loads((dest / "tokenizer_config.json").read_text())
    tok.update(tokenizer_class="FsvTinyTokenizerFast",
               auto_map={"AutoTokenizer": [None, "tokenization_fsv_tiny.FsvTinyTokenizerFast"]})
    (dest / "tokenizer_config.json").write_text(json.dumps(tok, indent=1))
    return dest
