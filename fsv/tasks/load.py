"""Loading a text task into its three splits.

Where the rows come from (`source`):
  None                 the hub: `datasets.load_dataset(task.dataset, task.config)` (the HF cache
                       serves it offline when `HF_DATASETS_OFFLINE=1` and it was fetched before)
  a `save_to_disk` folder   a DatasetDict (its split names are used) or a single Dataset
  a folder of files    train.jsonl / validation.jsonl / test.jsonl (also .json, .csv, .tsv,
                       .parquet; `dev`/`valid`/`val` mean validation; `train-00000-of-00001.parquet`
                       style shards are joined), at the top or under `<config>/` or `data/`
  a file               .json / .jsonl / .csv / .tsv / .parquet: one table (a `split` column, if
                       present, names each row's split), or for .json a mapping split -> rows

The splits (`TextSplits`):
  test      the first of `task.test_splits` the source has; a single-table source without a
            `split` column holds out a seeded `test_fraction` of its rows instead
  few_shot  the demonstration pool: a seeded subset (`pool_size`, at most half) of the train split
  train     the rest of the train split: the examples fine-tuning draws from
Train rows whose text also appears in the test split are dropped, so a test example can never be a
demonstration or a fine-tuning example, even when a dataset repeats a sentence across splits.
Rows without a label (GLUE's hidden test labels, -1) are dropped and counted.
Columns are found under the task's canonical names or their aliases (RTE's premise/hypothesis or
GLUE's sentence1/sentence2); labels may be class ids, booleans or class names / label words.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fsv.errors import ConfigError
from fsv.tasks.registry import TextTask, get_task

SPLIT_ALIASES = {"dev": "validation", "valid": "validation", "val": "validation", "eval": "validation"}
FILE_TYPES = (".jsonl", ".json", ".csv", ".tsv", ".parquet")
SOURCE_HELP = ("give a datasets save_to_disk folder, a .json/.jsonl/.csv/.tsv/.parquet file, or a folder "
               "of such files named by split (train.jsonl, validation.jsonl, test.jsonl)")


@dataclass(frozen=True)
class Example:
    fields: dict  # canonical text field -> text
    label: int
    split: str  # the source split the row came from
    index: int  # its row number in that split

    @property
    def key(self) -> tuple[str, int]:
        return (self.split, self.index)


@dataclass
class TextSplits:
    task: TextTask
    train: list[Example]  # fine-tuning pool (disjoint from few_shot and test)
    few_shot: list[Example]  # demonstration pool (disjoint from train and test)
    test: list[Example]
    source: str  # "hub:<id>[/<config>]" or the local path
    test_split: str  # which source split the test examples came from ("holdout" when held out)
    dropped: dict = field(default_factory=dict)  # {"unlabelled": n, "overlap": n}

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "few_shot": len(self.few_shot), "test": len(self.test)}


def load_splits(task: TextTask | str, source: str | Path | None = None, *, pool_size: int = 256,
                split_seed: int = 0, test_fraction: float = 0.2, field: str | None = None) -> TextSplits:
    """The task's train / few-shot / test splits from the hub (`source=None`) or a local copy.
    `field` names the config key errors point at (default `task_sources.<task>`)."""
    task = get_task(task) if isinstance(task, str) else task
    field = field or f"task_sources.{task.name}"
    tables, class_names, where = _read(task, source, field)
    tables = _canonical_splits(tables, field, where)
    dropped = {"unlabelled": 0, "overlap": 0}

    def examples(split: str) -> list[Example]:
        rows = tables[split]
        out = []
        if not rows:
            return out
        cols = {f: _column(task, f, rows[0], field, where) for f in task.text_fields}
        label_col = _column(task, task.label_field, rows[0], field, where)
        names = class_names.get(split)
        for i, row in enumerate(rows):
            y = _label(row.get(label_col), task, names, field, where, split, i)
            if y is None:
                dropped["unlabelled"] += 1
                continue
            out.append(Example({f: _text(row.get(c)) for f, c in cols.items()}, y, split, i))
        return out

    test_split = next((s for s in task.test_splits if s in tables), None)
    if test_split is not None:
        if task.train_split not in tables:
            raise ConfigError(field, where, f"it has splits {sorted(tables)} but no {task.train_split!r} split; {SOURCE_HELP}")
        train_all, test = examples(task.train_split), examples(test_split)
    elif len(tables) == 1:  # one table: hold out a seeded share as the test split
        (only,) = tables
        rows = examples(only)
        order = np.random.default_rng([split_seed, 31337]).permutation(len(rows))
        n_test = max(1, int(math.ceil(test_fraction * len(rows))))
        test = sorted((rows[i] for i in order[:n_test]), key=lambda e: e.index)
        train_all = sorted((rows[i] for i in order[n_test:]), key=lambda e: e.index)
        test_split = "holdout"
    else:
        raise ConfigError(field, where, f"it has splits {sorted(tables)}; task {task.name} evaluates on the first of "
                                        f"{list(task.test_splits)} and trains on {task.train_split!r}")
    if not test:
        raise ConfigError(field, where, f"its {test_split!r} split has no labelled rows; task {task.name} needs labelled test rows")

    seen = {_content(e) for e in test}
    kept = [e for e in train_all if _content(e) not in seen]
    dropped["overlap"] = len(train_all) - len(kept)
    if len(kept) < 2:
        raise ConfigError(field, where, f"it has {len(kept)} usable training rows for task {task.name}; at least 2 are needed")
    pool_n = min(pool_size, len(kept) // 2)
    order = np.random.default_rng([split_seed, 4099]).permutation(len(kept))
    pool_ids = set(order[:pool_n].tolist())
    few_shot = [kept[i] for i in sorted(pool_ids)]
    train = [e for i, e in enumerate(kept) if i not in pool_ids]
    return TextSplits(task, train, few_shot, test, where, test_split, dropped)


def draw_train(splits: TextSplits, n: int, seed: int) -> list[Example]:
    """n fine-tuning examples drawn (without replacement, seeded) from the train split."""
    if n > len(splits.train):
        raise ConfigError("n", n, f"task {splits.task.name} has {len(splits.train)} training examples "
                                  f"(from {splits.source}); accepted: n <= {len(splits.train)}")
    idx = np.random.default_rng([seed, n, 6007]).choice(len(splits.train), size=n, replace=False)
    return [splits.train[i] for i in idx]


# --- reading sources ---------------------------------------------------------------------------


def _read(task: TextTask, source, field: str) -> tuple[dict[str, list[dict]], dict[str, list[str]], str]:
    """Rows per split, ClassLabel names per split (where the source has them), and where they came from."""
    if source is None:
        import datasets

        where = f"hub:{task.dataset}" + (f"/{task.config}" if task.config else "")
        try:
            dd = datasets.load_dataset(task.dataset, task.config)
        except Exception as exc:  # offline, not cached, renamed...: say what to do instead
            raise ConfigError(field, None, f"loading {task.dataset!r} (config {task.config!r}) from the hub failed "
                                           f"({type(exc).__name__}: {exc}); {SOURCE_HELP}") from None
        return _from_datasets(dd, task)
    path = Path(source).expanduser()
    where = str(path)
    if not path.exists():
        raise ConfigError(field, where, f"no such file or folder; {SOURCE_HELP}")
    if path.is_dir() and ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file()):
        import datasets

        tables, names, _ = _from_datasets(datasets.load_from_disk(str(path)), task)
        return tables, names, where
    if path.is_file():
        return _split_column(_read_file(path, field)), {}, where
    files = _split_files(path, task)
    if not files:
        raise ConfigError(field, where, f"the folder holds no save_to_disk dataset and no data files; {SOURCE_HELP}")
    tables: dict[str, list[dict]] = {}
    for split, paths in files.items():
        for p in paths:
            got = _read_file(p, field)
            if isinstance(got, dict):
                raise ConfigError(field, str(p), "a file inside a split folder must hold one table of rows")
            tables.setdefault(split, []).extend(got)
    return tables, {}, where


def _from_datasets(obj, task: TextTask):
    import datasets

    where = f"hub:{task.dataset}" + (f"/{task.config}" if task.config else "")
    splits = dict(obj) if isinstance(obj, datasets.DatasetDict) else {"all": obj}
    tables, names = {}, {}
    for split, ds in splits.items():
        for col in task.columns(task.label_field):
            feat = ds.features.get(col)
            if isinstance(feat, datasets.ClassLabel):
                names[split] = list(feat.names)
                break
        tables[split] = ds.to_list()
    if not isinstance(obj, datasets.DatasetDict):
        grouped = _split_column(tables["all"])
        return grouped, {s: names.get("all") for s in grouped if names.get("all")}, where
    return tables, names, where


def _split_column(rows) -> dict[str, list[dict]]:
    if isinstance(rows, dict):  # a JSON mapping split -> rows
        return {str(k): list(v) for k, v in rows.items()}
    if rows and "split" in rows[0]:
        out: dict[str, list[dict]] = {}
        for r in rows:
            out.setdefault(str(r["split"]).strip().lower(), []).append(r)
        return out
    return {"all": rows}


def _read_file(path: Path, field: str):
    suffix = path.suffix.lower()
    try:
        if suffix in (".json", ".jsonl"):
            text = path.read_text(encoding="utf-8")
            try:
                data = json.loads(text)
                if isinstance(data, dict) and all(isinstance(v, list) for v in data.values()):
                    return data
                if isinstance(data, list):
                    return data
                return [data]
            except json.JSONDecodeError:
                return [json.loads(line) for line in text.splitlines() if line.strip()]
        import pandas as pd

        if suffix in (".csv", ".tsv"):
            df = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", keep_default_na=False)
        elif suffix == ".parquet":
            df = pd.read_parquet(path)
        else:
            raise ConfigError(field, str(path), f"unknown file type {suffix!r}; {SOURCE_HELP}")
        return df.to_dict("records")
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(field, str(path), f"could not read it ({type(exc).__name__}: {exc}); {SOURCE_HELP}") from None


def _split_of(stem: str) -> str | None:
    stem = stem.lower()
    for name in ("train", "validation", "test", *SPLIT_ALIASES):
        if stem == name or (stem.startswith(name) and not stem[len(name)].isalpha()):
            return SPLIT_ALIASES.get(name, name)
    return None


def _split_files(folder: Path, task: TextTask) -> dict[str, list[Path]]:
    for base in [folder, *([folder / task.config] if task.config else []), folder / "data"]:
        files: dict[str, list[Path]] = {}
        if base.is_dir():
            for p in sorted(base.iterdir()):
                split = _split_of(p.name.split(".")[0]) if p.is_file() and p.suffix.lower() in FILE_TYPES else None
                if split:
                    files.setdefault(split, []).append(p)
        if files:
            return files
    return {}


def _canonical_splits(tables: dict[str, list[dict]], field: str, where: str) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for name, rows in tables.items():
        key = str(name).strip().lower()
        key = SPLIT_ALIASES.get(key, key)
        if key in out:
            raise ConfigError(field, where, f"split {key!r} is given twice (as {name!r} too)")
        out[key] = rows
    return out


# --- rows --------------------------------------------------------------------------------------


def _column(task: TextTask, canonical: str, row: dict, field: str, where: str) -> str:
    for col in task.columns(canonical):
        if col in row:
            return col
    raise ConfigError(field, where, f"task {task.name} needs a {canonical!r} column (accepted names: "
                                    f"{list(task.columns(canonical))}); its columns are {sorted(row)}")


def _text(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def _content(e: Example) -> tuple:
    return tuple(" ".join(e.fields[f].split()).lower() for f in sorted(e.fields))


def _label(value, task: TextTask, class_names, field, where, split, row) -> int | None:
    """A row's label as a class id of `task`, or None when the row is unlabelled."""
    lookup = {n.lower(): i for i, n in enumerate(task.label_names)}
    lookup.update({w.strip().lower(): i for i, w in enumerate(task.label_words)})
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, (bool, np.bool_)):
        idx = int(value)
    elif isinstance(value, (int, np.integer)) or (isinstance(value, float) and value.is_integer()):
        idx = int(value)
        if idx < 0:
            return None
        if class_names is not None and idx < len(class_names):
            named = lookup.get(str(class_names[idx]).lower())
            if named is not None:
                return named  # the source's own class order, matched by name
            if len(class_names) != task.num_labels:
                raise ConfigError(field, where, f"its label classes {class_names} do not match task {task.name}'s "
                                                f"{list(task.label_names)}")
    elif isinstance(value, str):
        s = value.strip()
        if not s:
            return None
        if s.lstrip("-").isdigit():
            return _label(int(s), task, class_names, field, where, split, row)
        idx = lookup.get(s.lower())
        if idx is None:
            raise ConfigError(field, where, f"{split} row {row}: label {value!r} is not a class of task {task.name}; "
                                            f"accepted: ids 0..{task.num_labels - 1} or {list(task.label_names)}")
        return idx
    else:
        raise ConfigError(field, where, f"{split} row {row}: label {value!r} ({type(value).__name__}) is not a class id or name")
    if not 0 <= idx < task.num_labels:
        raise ConfigError(field, where, f"{split} row {row}: label {idx} is out of range for task {task.name}; "
                                        f"accepted: 0..{task.num_labels - 1} ({', '.join(task.label_names)})")
    return idx
