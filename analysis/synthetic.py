"""Synthetic studies with planted laws: for testing the analysis and for power analysis.

`SyntheticSpec` plants, per model, an ICL strength S (acc(k) = acc_k1 + S log2 k for k >= 1,
chance at k = 0) and, per training series, a sample need N* = prefactor * S ** exponent; acc(n)
follows the saturating family of analysis.laws with its midpoint placed so that the curve reaches
the target chance-normalised accuracy exactly at N*. Each pretraining seed of a model is an
instance whose S is the model's times a log-normal factor (`instance_sd`) and whose N* follows the
law at that S times another (`law_sd`); each training seed perturbs both (`strength_sd`,
`need_sd`); each task's accuracy is a binomial draw over `n_eval` test examples. Records follow
`fsv.records.SCHEMA` as the study writes them: in-context records one per task, training records
one per (instance, series, n, seed) with `task_accuracy` over the tasks, `label_logprob`,
`hparams`, and (with `select`) phase "select" records of a learning-rate search with `val_curve`.

    truth = write_synthetic_study(tmp / "syn", SyntheticSpec(), seed=3)   # records/ + cells.json
    analyze(tmp / "syn")                                                   # recovers truth["law"]
    law_power(SyntheticSpec(seeds=(0, 1)), generator_seeds=range(20))      # how often it is found
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.laws import accuracy_at_normalised, logit, saturating_accuracy


@dataclass(frozen=True)
class SyntheticSpec:
    models: tuple[str, ...] = ("syn-xs", "syn-s", "syn-m", "syn-l", "syn-xl")
    params: tuple[int, ...] = (100_000, 400_000, 1_600_000, 6_400_000, 25_600_000)
    strengths: tuple[float, ...] = (0.03, 0.045, 0.065, 0.095, 0.14)  # accuracy per doubling of k
    laws: tuple[tuple[str, float, float], ...] = (("sft", 2.0, -1.0),)  # (series, prefactor, exponent)
    ks: tuple[int, ...] = (0, 1, 2, 4, 8, 16)
    ns: tuple[int, ...] = (2, 4, 8, 16, 32, 64, 128, 256, 512)
    seeds: tuple[int, ...] = (0, 1, 2)
    tasks: tuple[str, ...] = ("task-a", "task-b")
    pretrain_seeds: tuple[int, ...] = (0,)
    instance_sd: float = 0.0  # log-normal spread of S across pretraining instances of one model
    law_sd: float = 0.0  # log-normal scatter of an instance's N* about the law at its own S
    select: bool = True  # write phase "select" records of a learning-rate search
    lrs: tuple[float, ...] = (1e-4, 3e-4, 1e-3, 3e-3)
    unfit: tuple[str, ...] = ()  # series whose search never fits its training objective (loss near chance)
    chance: float = 0.25
    acc_k1: float = 0.30  # accuracy at k = 1
    upper: float = 0.97  # fine-tuning ceiling
    slope: float = 1.5  # logistic slope per doubling of n
    target_normalised_accuracy: float = 0.5  # where N* is planted (match the analysis setting)
    strength_sd: float = 0.08  # log-normal replicate spread of S
    need_sd: float = 0.12  # log-normal replicate spread of N*
    n_eval: int = 400
    descriptions: bool = True  # zero-shot model/human rows and acc_* columns after IT / RLHF
    bayes: bool = True  # record a Bayes-optimal accuracy (as on the world)
    study: str = "synthetic"
    fsv_version: str = "0.1.0"


def planted_truth(spec: SyntheticSpec) -> dict:
    """The planted S per model, N* per model and series, and each series' law."""
    models = {}
    for name, params, strength in zip(spec.models, spec.params, spec.strengths):
        need = {series: prefactor * strength**exponent for series, prefactor, exponent in spec.laws}
        models[name] = {"model_params": params, "icl_strength": strength, "sample_need": need}
    laws = {series: {"prefactor": c, "exponent": b} for series, c, b in spec.laws}
    return {"models": models, "law": laws}


def synthetic_records(spec: SyntheticSpec, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    records = []
    for model, params, strength in zip(spec.models, spec.params, spec.strengths):
        for pretrain in spec.pretrain_seeds:
            s_instance = strength * np.exp(rng.normal(0, spec.instance_sd))
            laws = {series: c * s_instance**b * np.exp(rng.normal(0, spec.law_sd)) for series, c, b in spec.laws}
            base = {"model": model, "model_params": params, "pretrain_seed": pretrain,
                    "instance": f"{model}/p{pretrain}/final"}
            for replicate in spec.seeds:
                s = s_instance * np.exp(rng.normal(0, spec.strength_sd))
                needs = {series: need * np.exp(rng.normal(0, spec.need_sd)) for series, need in laws.items()}
                records += _icl_records(spec, rng, base | {"seed": replicate}, s)
                for series, need in needs.items():
                    records += _training_records(spec, rng, base | {"seed": replicate}, series, need, s_instance)
            if spec.select:
                records += _select_records(spec, rng, base | {"seed": spec.seeds[0]}, laws)
    return records


def _row(spec: SyntheticSpec, rng, base: dict, task, probability: float, **fields) -> dict:
    probability = float(np.clip(probability, 0.0, 1.0))
    row = {"study": spec.study, "fsv_version": spec.fsv_version, "status": "ok", "task": task,
           "n_eval": spec.n_eval, "chance": spec.chance, "world": "synthetic", **base, **fields,
           "accuracy": rng.binomial(spec.n_eval, probability) / spec.n_eval,
           "label_logprob": _logprob(spec, rng, probability)}
    row["cell_id"] = cell_id(row)
    return row


def _logprob(spec: SyntheticSpec, rng, probability: float) -> float:
    """The label's mean log-likelihood: log(chance) at chance accuracy, 0 at perfect, with noise."""
    normalised = (probability - spec.chance) / (1 - spec.chance)
    return float(min((1 - normalised) * np.log(spec.chance) + rng.normal(0, 0.02), 0.0))


def cell_id(row: dict) -> str:
    keys = ("study", "model", "regime", "task", "description", "k", "n", "seed", "pretrain_seed", "layout",
            "prompt_tokens", "tasks_trained", "phase", "hparams")
    text = json.dumps({k: row.get(k) for k in keys}, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def _bayes(spec: SyntheticSpec, k: int) -> float | None:
    return float(1 - (1 - spec.chance) * 0.5**k) if spec.bayes else None


def _icl_records(spec, rng, base, strength) -> list[dict]:
    rows = []
    for task in spec.tasks:
        for k in spec.ks:
            p = spec.chance if k == 0 else spec.acc_k1 + strength * np.log2(k)
            regime = "zero_shot" if k == 0 else "few_shot"
            rows.append(_row(spec, rng, base, task, p, regime=regime, k=k, description="none",
                             bayes_accuracy=_bayes(spec, k)))
        if spec.descriptions:
            for variant, p in (("model", _model_view(spec, strength)), ("human", spec.chance + 0.02)):
                rows.append(_row(spec, rng, base, task, p, regime="zero_shot", k=0, description=variant,
                                 bayes_accuracy=_bayes(spec, 0)))
    return rows


def _model_view(spec, strength) -> float:
    return spec.chance + (1 - spec.chance) * min(0.9, 4 * strength)


def _midpoint(spec: SyntheticSpec, need: float) -> float:
    target = accuracy_at_normalised(spec.target_normalised_accuracy, spec.chance)
    return np.log2(need) - logit((target - spec.chance) / (spec.upper - spec.chance)) / spec.slope


HPARAMS = json.dumps({"lr": 1e-3, "steps": 50, "weight_decay": 0.0})


def _training_records(spec, rng, base, series, need, strength) -> list[dict]:
    midpoint = _midpoint(spec, need)
    fields = series_fields(series)
    rows = []
    for n in spec.ns:
        p = float(saturating_accuracy(np.log2(n), spec.upper, midpoint, spec.slope, spec.chance))
        per_task = {task: rng.binomial(spec.n_eval, p) / spec.n_eval for task in spec.tasks}
        extra = _description_columns(spec, rng, fields["regime"], p, strength)
        row = _row(spec, rng, base, None, p, n=n, k=0, train_examples=n, n_distinct=n, phase="measure",
                   hparams=HPARAMS, selected_on=json.dumps(["val-a"]),
                   selection=json.dumps({"on_edge": [], "val_accuracy": round(p, 3)}), **fields, **extra)
        row |= {"accuracy": float(np.mean(list(per_task.values()))), "task_accuracy": json.dumps(per_task)}
        rows.append(row)
    return rows


def _select_records(spec, rng, base, laws: dict) -> list[dict]:
    """A learning-rate search at the largest n on a validation task: best at lr 1e-3, falling off either side."""
    rows, n = [], max(spec.ns)
    for series, need in laws.items():
        fields = series_fields(series)
        best = float(saturating_accuracy(np.log2(n), spec.upper, _midpoint(spec, need), spec.slope, spec.chance))
        for lr in spec.lrs:
            value = spec.chance + (best - spec.chance) * np.exp(-0.5 * (np.log10(lr / 1e-3) / 0.6) ** 2)
            curve = {str(n): {str(steps): float(np.clip(value * share + rng.normal(0, 0.01), 0, 1))
                              for steps, share in ((10, 0.9), (50, 1.0))}}
            row = _row(spec, rng, base, "val-a", value, n=n, k=0, phase="select", val_curve=json.dumps(curve),
                       hparams=json.dumps({"lr": lr, "steps": 50}), **fields)
            rows.append(row | {"accuracy": None} | _training_loss(spec, series, lr))
    return rows


def _training_loss(spec, series: str, lr: float) -> dict:
    """The trial's training loss at its longest length: falling with the rate to a tenth of chance at
    the highest, or staying near chance for a series in `spec.unfit`."""
    chance_loss = float(np.log(1 / spec.chance))
    share = 0.9 if series in spec.unfit else min(1.0, 0.1 * (max(spec.lrs) / lr) ** 0.5)
    return {"final_train_loss": chance_loss * share, "train_loss_chance": chance_loss}


def series_fields(series: str) -> dict:
    """Record fields of a series name (see analysis.series): 'sft:packed' -> layout packed, etc."""
    regime, *suffixes = series.split(":")
    fields = {"regime": regime, "layout": "single", "method": "prompt" if regime == "prompt_tuning" else "full",
              "description": "human" if regime in ("instruction_tuning", "rlhf") else "none"}
    if regime == "prompt_tuning":
        fields["prompt_tokens"] = 8
    if regime == "instruction_tuning":
        fields["tasks_trained"] = 8
    for suffix in suffixes:
        if suffix.startswith("m="):
            fields["prompt_tokens"] = int(suffix[2:])
        elif suffix.startswith("T="):
            fields["tasks_trained"] = int(suffix[2:])
        else:
            fields["layout"] = suffix
    return fields


def _description_columns(spec, rng, regime, accuracy, strength) -> dict:
    if not spec.descriptions or regime not in ("instruction_tuning", "rlhf"):
        return {}
    draw = lambda p: rng.binomial(spec.n_eval, float(np.clip(p, 0, 1))) / spec.n_eval  # noqa: E731
    return {"acc_none": draw(spec.chance + 0.05), "acc_model": draw(max(accuracy, _model_view(spec, strength))),
            "acc_human": draw(accuracy)}


def cells_listing(spec: SyntheticSpec, records: list[dict]) -> dict:
    keys = ("cell_id", "regime", "model", "k", "n", "seed", "pretrain_seed", "task", "description", "layout",
            "prompt_tokens", "tasks_trained")
    return {"study": spec.study, "fsv_version": spec.fsv_version,
            "cells": [{k: r.get(k) for k in keys} for r in records]}


def write_synthetic_study(study_dir: str | Path, spec: SyntheticSpec | None = None, seed: int = 0) -> dict:
    """Write records/*.parquet and cells.json under study_dir (a folder or an s3:// / gs:// URI);
    return the planted truth."""
    from fsv.records import write_record, write_text

    spec = spec or SyntheticSpec()
    records = synthetic_records(spec, seed)
    for record in records:
        write_record(study_dir, record)
    write_text(study_dir, "cells.json", json.dumps(cells_listing(spec, records), indent=1))
    return planted_truth(spec)


def records_frame(spec: SyntheticSpec, seed: int = 0) -> pd.DataFrame:
    """The records as a DataFrame with every column of fsv.records.SCHEMA, without touching disk."""
    from fsv.records import COLUMNS

    frame = pd.DataFrame(synthetic_records(spec, seed))
    return frame.reindex(columns=COLUMNS)


def law_power(spec: SyntheticSpec, generator_seeds, settings=None, analysis_seed: int = 0) -> dict:
    """Fraction of synthetic studies whose law comes out supported / contradicted / inconclusive."""
    from analysis.pipeline import measure_study
    from analysis.settings import coerce_settings

    settings = coerce_settings(settings)
    generator_seeds = list(generator_seeds)
    verdicts: dict[str, dict[str, int]] = {}
    for seed in generator_seeds:
        measures = measure_study(records_frame(spec, seed), settings, analysis_seed)
        for series, law in measures.law.items():
            verdicts.setdefault(series, {}).setdefault(law.verdict, 0)
            verdicts[series][law.verdict] += 1
    total = len(generator_seeds)
    return {s: {v: c / total for v, c in counts.items()} for s, counts in verdicts.items()}
