"""The study config: a YAML file becomes a typed, validated `StudyConfig` before anything launches.

Every refusal names the field, the value and what is accepted (`fsv.errors.ConfigError`).
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fsv.errors import ConfigError, did_you_mean
from fsv.train.precision import PRECISIONS
from fsv.world.config import PRESETS as WORLD_PRESETS

DESCRIPTIONS = ["none", "model", "human"]
IN_CONTEXT = ("zero_shot", "few_shot")
TRAINING = ("sft", "prompt_tuning", "instruction_tuning", "rlhf")
REGIMES = IN_CONTEXT + TRAINING


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _unique_positive(values: list[int], minimum: int) -> list[int]:
    if len(set(values)) != len(values):
        raise ValueError(f"duplicate values in {values}; each axis value must appear once")
    bad = [v for v in values if v < minimum]
    if bad:
        raise ValueError(f"{bad[0]} is below {minimum}; accepted: integers >= {minimum}")
    return values


class WorldSection(Strict):
    preset: str = Field("quick", description="world preset: " + ", ".join(WORLD_PRESETS))
    seed: int = Field(0, ge=0)

    @field_validator("preset")
    @classmethod
    def _known(cls, v):
        if v not in WORLD_PRESETS:
            raise ValueError(f"unknown world preset {v!r}; {did_you_mean(v, list(WORLD_PRESETS))}")
        return v


class PretrainSection(Strict):
    steps: int = Field(2000, ge=1, description="optimizer steps per ladder model (a fixed budget, not wall time); "
                       "the default is the quick study's, whose models `fsv models` then shows as cached")
    batch: int = Field(32, ge=1, description="documents per step")
    lr: float | None = Field(None, gt=0, description="peak learning rate for every size; default: each size's "
                             "own, inversely proportional to its width (fsv/models/ladder.py)")
    warmup: float = Field(0.05, ge=0, lt=1, description="share of steps with linear warm-up")
    schedule: Literal["wsd", "cosine"] = Field(
        "wsd", description="after warm-up: 'wsd' holds the peak rate, then decays linearly to 0 over the last "
        "`cooldown` share of steps; 'cosine' decays from the first step (measured, world-l, 2000 steps: "
        "k = 16 accuracy .90 with wsd against .69 with cosine; in-context learning grows while the rate is high)"
    )
    cooldown: float = Field(0.2, gt=0, le=1, description="share of steps of the linear decay (schedule 'wsd')")
    seeds: list[int] = Field([0], min_length=1, description="pretraining seeds; each is a replicate model")
    checkpoints: list[int] = Field([], description="steps at which the one pretraining run also saves the model; "
                                   "each checkpoint is a model instance of its own (its own ICL strength and sample need)")
    workers: int = Field(1, ge=1, description="Ray Train workers per pretraining job")
    cpus_per_worker: int = Field(1, ge=1, description="small models train best one thread each, several at once")
    zero_stage: int = Field(0, ge=0, le=3)
    use_gpu: bool = False

    _seeds = field_validator("seeds")(classmethod(lambda cls, v: _unique_positive(v, 0)))
    @field_validator("checkpoints")
    @classmethod
    def _checkpoints_within_run(cls, v, info):
        steps = info.data.get("steps", 0)
        late = [c for c in _unique_positive(v, 1) if c >= steps]
        if late:
            raise ValueError(f"checkpoint {late[0]} is not before the end of pretraining ({steps} steps); "
                             f"accepted: steps 1..{steps - 1} (the finished model is always an instance)")
        return sorted(v)


class PlacementOverride(Strict):
    zero_stage: int | None = Field(None, ge=0, le=3, description="DeepSpeed ZeRO stage for this model")
    workers: int | None = Field(None, ge=1, description="Ray Train workers per trial for this model")
    gpu_fraction: float | None = Field(None, gt=0, le=1, description="share of one GPU per trial of this model")


class TrainSection(Strict):
    """How a training trial runs: Ray Train workers under a DeepSpeed engine. `workers` and
    `zero_stage` left out follow the size table (`fsv/models/placement.py`); `per_model` overrides
    both for one model of the study."""

    workers: int | None = Field(None, ge=1, description="Ray Train workers (data-parallel ranks); default: size table")
    cpus_per_worker: int = Field(1, ge=1)
    use_gpu: bool = False
    zero_stage: int | None = Field(None, ge=0, le=3, description="DeepSpeed ZeRO stage; default: size table")
    per_model: dict[str, PlacementOverride] = Field({}, description="model -> {zero_stage, workers, gpu_fraction}")
    gpu_fraction: float | None = Field(None, gt=0, le=1, description="share of one GPU each single-worker trial "
                                       "asks for (GPU studies); default: by parameter count (fsv/models/placement.py)")
    precision: Literal[PRECISIONS] = Field(
        "fp32", description="fp32 | bf16 (DeepSpeed bf16: bf16 weights, fp32 master copy) | bf16-mixed (fp32 "
        "weights, bf16 matmuls under autocast) | auto (bf16-mixed where the worker's device has native bf16, "
        "else fp32); see fsv/train/precision.py")
    optimizer: Literal["adamw", "sgd"] = "adamw"
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay where a regime does not search it")
    grad_clip: float = Field(1.0, ge=0)
    stack: int | None = Field(None, ge=1, description="adaptations of a trial trained together as one batched "
                              "model (fsv/train/stacked.py); 1: one at a time; default: as many as fit 2^24 "
                              "trainable floats (ZeRO-0, fp32 weights; otherwise one at a time)")
    keep_models: bool = Field(False, description="save every adaptation's weights in its trial's Ray Train "
                              "checkpoint (n levels x seeds x tasks models a trial: large; for inspecting them)")


class ZeroShotSection(Strict):
    descriptions: list[str] = Field(DESCRIPTIONS, min_length=1)

    @field_validator("descriptions")
    @classmethod
    def _known(cls, v):
        return _check_descriptions(v)


class FewShotSection(Strict):
    k: list[int] = Field(..., min_length=1, description="demonstrations in context")
    description: str = "none"
    episodes: int = Field(4, ge=1, description="demonstration draws per task and seed")

    _k = field_validator("k")(classmethod(lambda cls, v: _unique_positive(v, 1)))

    @field_validator("description")
    @classmethod
    def _known(cls, v):
        return _check_descriptions([v])[0]


class Range(Strict):
    """A continuous search range, for `search.method: random | optuna` (log-uniform by default)."""

    low: float = Field(..., gt=0)
    high: float = Field(..., gt=0)
    log: bool = True

    @model_validator(mode="after")
    def _ordered(self):
        if self.low >= self.high:
            raise ValueError(f"low {self.low} >= high {self.high}; accepted: low < high")
        return self


def _as_list(v):
    """A scalar where a list of values is expected means that one value (older study files); a
    mapping is a range, checked here so that its error names the range, not the list it is not."""
    if isinstance(v, dict):
        try:
            return Range.model_validate(v)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(map(str, err["loc"]))
            raise ValueError(f"{where + ': ' if where else ''}{err['msg'].removeprefix('Value error, ')}; "
                             "accepted: {low, high[, log]} with 0 < low < high") from None
    return [v] if isinstance(v, (int, float)) and not isinstance(v, bool) else v


def _positive_values(v):
    if isinstance(v, list):
        if len(set(v)) != len(v):
            raise ValueError(f"duplicate values in {v}; each value must appear once")
        bad = [x for x in v if x <= 0]
        if bad:
            raise ValueError(f"{bad[0]} is not > 0; accepted: values > 0")
    return v


Space = Union[list[float], Range]


class TrainingRegime(Strict):
    """A training regime is measured at its best: its hyperparameters are searched (`lr`,
    `weight_decay`, what the regime adds) on validation tasks, and the length of training is read
    from evaluations inside one run of `max(steps)` steps, so a longer budget costs no extra trial."""

    n: list[int] = Field(..., min_length=1, description="training examples (nested: the first n of a larger draw)")
    steps: list[int] = Field([40], min_length=1, description="training lengths: evaluations at these steps of one run")
    batch: int = Field(8, ge=1, description="sequences per step (all workers)")
    lr: Space = Field([1e-3], description="learning rates searched (a list, or {low, high} for random / optuna)")
    weight_decay: Space = Field([0.0], description="AdamW weight decay values searched")
    warmup: float = Field(0.1, ge=0, lt=1, description="share of the longest run with a linear warm-up; the "
                          "rate is then constant, so every length read from the run is a run of that length (a run "
                          "continued longer by search.widen_steps keeps its warm-up in steps)")
    seeds: list[int] | None = Field(None, min_length=1, description="this regime's seeds (default: the study's)")

    _n = field_validator("n")(classmethod(lambda cls, v: _unique_positive(v, 1)))
    _s = field_validator("seeds")(classmethod(lambda cls, v: v if v is None else _unique_positive(v, 0)))
    _steps = field_validator("steps")(classmethod(lambda cls, v: sorted(_unique_positive(v, 1))))
    _scalars = field_validator("steps", "lr", "weight_decay", mode="before")(classmethod(lambda cls, v: _as_list(v)))
    _lr = field_validator("lr")(classmethod(lambda cls, v: _positive_values(v)))

    @field_validator("lr", "weight_decay")
    @classmethod
    def _non_empty(cls, v):
        if isinstance(v, list) and not v:
            raise ValueError("an empty search space; accepted: at least one value, or {low, high}")
        if isinstance(v, list) and any(x < 0 for x in v):
            raise ValueError(f"{min(v)} is negative; accepted: values >= 0")
        return v

    def spaces(self) -> dict[str, Space]:
        """The hyperparameters this regime searches, name -> values or range."""
        return {name: getattr(self, name) for name in self.searched}

    searched: ClassVar[tuple[str, ...]] = ("lr", "weight_decay")


class SftSection(TrainingRegime):
    layouts: list[Literal["single", "packed"]] = Field(["single"], min_length=1)
    methods: list[Literal["full", "lora"]] = Field(["full"], min_length=1, description="how the weights move: all "
                                                  "of them, or a low-rank update (peft LoRA, rank searched)")
    lora_rank: list[int] = Field([8], min_length=1, description="LoRA ranks searched (method lora)")

    _r = field_validator("lora_rank", mode="before")(classmethod(lambda cls, v: _as_list(v)))
    _rank = field_validator("lora_rank")(classmethod(lambda cls, v: _unique_positive(v, 1)))

    def spaces(self) -> dict[str, Space]:
        spaces = super().spaces()
        return spaces | ({"lora_rank": self.lora_rank} if "lora" in self.methods else {})


class PromptTuningSection(TrainingRegime):
    prompt_tokens: list[int] = Field([8], min_length=1, description="m, virtual tokens")
    lr: Space = Field([3e-2], description="learning rates of the soft prompt searched")

    _m = field_validator("prompt_tokens")(classmethod(lambda cls, v: _unique_positive(v, 1)))


class InstructionTuningSection(TrainingRegime):
    tasks_trained: list[int] = Field([8], min_length=1, description="T, training tasks")
    train_tasks: list[str] | None = Field(None, min_length=1, description="text tasks to train on (by name; "
                                          "default: the study's tasks); the evaluated task is always held out")

    _t = field_validator("tasks_trained")(classmethod(lambda cls, v: _unique_positive(v, 1)))


class RlhfSection(TrainingRegime):
    methods: list[Literal["dpo", "grpo"]] = Field(["dpo"], min_length=1, description="trl preference "
                                                 "optimisation (DPO, from preference pairs) and/or GRPO (a "
                                                 "verifiable reward: the label is correct)")
    noise: float = Field(0.1, ge=0, le=0.5, description="annotator error rate (DPO's simulated preferences)")
    beta: Space = Field([0.1], description="DPO's beta (KL strength) values searched")
    lr: Space = Field([5e-4], description="learning rates searched")
    start: Literal["base", "instruction_tuned"] = Field(
        "base", description="the policy starts from the base model, or from the base instruction-tuned first "
        "(the seed's chain), with `start_hparams`")
    start_hparams: dict[str, float] = Field({"lr": 1e-3, "steps": 40, "tasks_trained": 32, "n": 8, "batch": 16},
                                           description="the instruction tuning that precedes rlhf when "
                                           "start: instruction_tuned (lr, steps, tasks_trained, n, batch)")
    train_tasks: list[str] | None = Field(None, min_length=1, description="text tasks the feedback is on (by "
                                          "name; default: the study's tasks); the evaluated task is always held out")

    _b = field_validator("beta", mode="before")(classmethod(lambda cls, v: _as_list(v)))
    _bp = field_validator("beta")(classmethod(lambda cls, v: _positive_values(v)))
    searched: ClassVar[tuple[str, ...]] = ("lr", "weight_decay", "beta")

    @field_validator("methods", mode="before")
    @classmethod
    def _one_method(cls, v):
        return [v] if isinstance(v, str) else v


class SearchSection(Strict):
    """How each training regime's hyperparameters are searched, with Ray Tune's own searchers and
    schedulers. Whatever the method, the selection rule is the same: per model instance, regime and
    n, the best validation accuracy over every configuration and training length explored."""

    method: Literal["grid", "random", "optuna"] = Field("grid", description="tune.grid_search over the lists; "
                                                        "random sampling; or OptunaSearch (TPE)")
    samples: int | None = Field(None, ge=1, description="configurations per search (random / optuna only)")
    scheduler: Literal["none", "asha"] = Field("none", description="ASHAScheduler: stop configurations behind "
                                               "at the smaller n levels (a selection trial reports after each)")
    widen: int = Field(1, ge=0, le=4, description="rounds of widening: a selection on the edge of a learning-rate "
                       "list adds the next value beyond it (x3) and runs again (grid only)")
    widen_steps: int = Field(0, ge=0, le=4, description="rounds of widening the training length: a selection at "
                             "the longest length its trial ran continues that run to twice its length, for the n levels "
                             "whose choice sat there, from the trial's saved state (grid only)")

    @model_validator(mode="after")
    def _samples_fit_method(self):
        if self.method == "grid" and self.samples is not None:
            raise ValueError(f"samples: {self.samples} with method 'grid' (a grid runs every point); "
                             "accepted: leave samples out, or method random | optuna")
        if self.method != "grid" and self.samples is None:
            raise ValueError(f"method {self.method!r} needs samples (configurations per search); accepted: an integer >= 1")
        if self.method != "grid" and self.widen_steps:
            raise ValueError(f"widen_steps: {self.widen_steps} with method {self.method!r} (a longer run continues a grid "
                             "trial's saved run); accepted: widen_steps 0, or method grid")
        return self


class RegimesSection(Strict):
    zero_shot: ZeroShotSection | None = None
    few_shot: FewShotSection | None = None
    sft: SftSection | None = None
    prompt_tuning: PromptTuningSection | None = None
    instruction_tuning: InstructionTuningSection | None = None
    rlhf: RlhfSection | None = None


class WandbSection(Strict):
    mode: Literal["offline", "online", "disabled"] = "offline"
    project: str = "fsv"
    entity: str | None = None


class StudyConfig(Strict):
    name: str = Field(..., pattern=r"^[A-Za-z0-9_.-]+$", description="study name (a folder name)")
    models: list[str] = Field(..., min_length=1)
    tasks: list[str] = Field(["world"], min_length=1, description="'world' or text tasks (sst2, ag_news, ...)")
    task_sources: dict[str, str] = Field({}, description="text task -> local dataset path (else the hub id)")
    max_eval: int | None = Field(None, ge=1, description="cap on test queries per text-task evaluation")
    seeds: list[int] = Field([0], min_length=1)
    regimes: RegimesSection
    world: WorldSection = WorldSection()
    pretrain: PretrainSection = PretrainSection()
    train: TrainSection = TrainSection()
    wandb: WandbSection = WandbSection()
    search: SearchSection = SearchSection()
    retries: int = Field(1, ge=0, description="extra attempts of a failing trial before it is recorded failed")
    analyze: bool = Field(True, description="run the analysis when the study completes")
    trust_remote_code: bool = Field(False, description="let HF models and tokenizers run code shipped with them")

    _seeds = field_validator("seeds")(classmethod(lambda cls, v: _unique_positive(v, 0)))

    @field_validator("models", "tasks")
    @classmethod
    def _no_duplicates(cls, v):
        if len(set(v)) != len(v):
            raise ValueError(f"duplicate values in {v}; each axis value must appear once")
        return v

    @field_validator("trust_remote_code", mode="before")
    @classmethod
    def _a_boolean(cls, v):
        if not isinstance(v, bool):
            raise ValueError("not a boolean; accepted: true or false (true only if you trust the code "
                             "the study's models ship)")
        return v

    def regime_sections(self) -> dict[str, BaseModel]:
        return {name: sec for name in REGIMES if (sec := getattr(self.regimes, name)) is not None}


def _check_descriptions(values: list[str]) -> list[str]:
    for v in values:
        if v not in DESCRIPTIONS:
            raise ValueError(f"unknown description variant {v!r}; {did_you_mean(v, DESCRIPTIONS)}")
    if len(set(values)) != len(values):
        raise ValueError(f"duplicate values in {values}; each axis value must appear once")
    return values


MAX_BYTES = 1_000_000  # a study file; a hand-written one is a few kB (a 1 MB list takes seconds to parse)
MAX_LIST = 10_000  # values in one list of a study (a grid axis); more is a mistake, not a study
MAX_VALUES = 100_000  # values in a whole study, aliases expanded (a YAML alias bomb stops here)


def load_study(path: str | Path) -> StudyConfig:
    """Parse and validate a study YAML; raise ConfigError naming the field on any problem."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("study", str(path), "give the path of an existing study YAML file")
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise ConfigError("study", f"{path.name} ({size:,} bytes)", f"accepted: a study file of at most {MAX_BYTES:,} bytes")
    try:
        raw = yaml.load(path.read_bytes().decode("utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except UnicodeDecodeError as exc:
        raise ConfigError("yaml", path.name, f"not UTF-8 text (byte {exc.start}: {exc.object[exc.start:exc.start + 1]!r}); "
                          "save the study as UTF-8") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError("yaml", path.name, f"malformed YAML{line}: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(raw, dict):
        raise ConfigError("study", type(raw).__name__, "the file must hold a mapping of study keys", str(path))
    return parse_study(raw, source=str(path))


def _check_size(raw, source: str | None) -> None:
    """Refuse a study too large to be meant before validating it: a list of more than MAX_LIST
    values, or more than MAX_VALUES values in all once YAML aliases are expanded (walked with a
    budget, so a billion-laughs file costs MAX_VALUES steps, not a billion)."""
    seen, stack = 0, [("", raw)]
    while stack:
        where, node = stack.pop()
        seen += 1
        if seen > MAX_VALUES:
            raise ConfigError("yaml", f"> {MAX_VALUES:,} values", "a study this large is not accepted "
                              "(YAML aliases that expand?); accepted: a study file as written by hand", source)
        if isinstance(node, list):
            if len(node) > MAX_LIST:
                raise ConfigError(where or "study", f"a list of {len(node):,} values",
                                  f"accepted: at most {MAX_LIST:,} values per list", source)
            stack.extend((f"{where}[{i}]", v) for i, v in enumerate(node))
        elif isinstance(node, dict):
            stack.extend((f"{where}.{k}" if where else str(k), v) for k, v in node.items())


def parse_study(raw: dict, source: str | None = None) -> StudyConfig:
    _check_size(raw, source)
    try:
        study = StudyConfig.model_validate(raw)
    except ValidationError as exc:
        raise _config_error(exc, raw, source) from None
    from fsv.grid import check_study  # registry-level checks: models, tasks, context windows

    check_study(study, source)
    return study


def _config_error(exc: ValidationError, raw: dict, source: str | None) -> ConfigError:
    err = exc.errors()[0]
    loc = [str(p) for p in err["loc"] if not str(p).startswith("function-")]
    field = ".".join(p if not p.isdigit() else f"[{p}]" for p in loc).replace(".[", "[")
    value = err.get("input")
    if err["type"] == "extra_forbidden":
        parent, mapping_key = StudyConfig, False
        for part in loc[:-1]:
            if mapping_key:  # the key of a dict field (e.g. a model under train.per_model)
                mapping_key = False
                continue
            ann = parent.model_fields[part].annotation
            mapping_key = getattr(ann, "__origin__", None) is dict
            parent = next(a for a in getattr(ann, "__args__", (ann,)) if isinstance(a, type) and issubclass(a, BaseModel))
        return ConfigError(field, loc[-1], f"unknown key; {did_you_mean(loc[-1], list(parent.model_fields))}", source)
    if err["type"] == "missing":
        return ConfigError(field, None, "this key is required", source)
    msg = err["msg"].removeprefix("Value error, ")
    return ConfigError(field, value, msg, source)
