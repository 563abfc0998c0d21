"""World configuration and its presets.

The quick preset is the one whose ladder learns in minutes on 2 CPU cores; the harder presets add
features (more tasks, more symbols) so that size still separates models on a GPU, where the quick
world saturates.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class WorldConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    preset: str = Field("quick", description="name of the preset this config came from")
    seed: int = Field(0, ge=0, description="draws feature-value names, the held-out split, descriptions")
    n_features: int = Field(2, ge=2, le=4, description="features per symbol; a task reads one")
    n_values: int = Field(4, ge=2, le=6, description="values per feature = labels per task")
    maps: Literal["functions", "permutations"] = Field(
        "functions", description="a task maps feature values to labels by any function, or only by "
        "permutations (measured: with the 40 training permutations, models memorised the training "
        "tasks instead of learning in context: .41 at k = 16 on held-out tasks for world-s)"
    )
    separator: bool = Field(
        False, description="write '=' between a symbol and its label (measured: with it, no ladder model "
        "left the copy plateau within 1.5k steps on 2 CPU cores; without it, ICL emerged by ~900 steps)"
    )
    context: int = Field(
        48, ge=16, description="pretraining document length in tokens (measured: 48 rather than 80 cut a step's "
        "cost by ~40%, and fewer examples per document leave fewer copyable repeats)"
    )
    desc_prob: float = Field(0.5, ge=0, le=1, description="share of documents with a model-view description")
    skew_prob: float = Field(0.5, ge=0, le=1, description="share of documents with skewed symbol draws")
    skew_alpha: float = Field(0.3, gt=0, description="Dirichlet concentration of skewed documents")
    repeat_weight: float = Field(
        0.3, ge=0, le=1, description="loss weight of a label whose symbol already appeared in its document "
        "(copyable) against 1 for a first appearance (inferable only from the task). Measured on world-s, "
        "2 CPU cores: 1.0 left the copy plateau late or never; 0 (first appearances only) stalled every model"
    )

    @model_validator(mode="after")
    def _even_values(self):
        if self.n_values % 2:
            raise ValueError(
                f"n_values={self.n_values}: must be even (the train/test split of symbols is balanced "
                "per feature value by coordinate parity)"
            )
        return self

    @property
    def n_symbols(self) -> int:
        return self.n_values**self.n_features


PRESETS: dict[str, dict] = {
    # 16 symbols (the 4 x 4 grid of two 4-valued features), 2 x 4^4 = 512 tasks, 8 held out: ICL
    # emerges on 2 CPU cores within a few thousand steps of a rotary-position model.
    "quick": {},
    # 64 symbols, 768 tasks: for GPUs, where the quick world saturates every size.
    "hard": {"n_features": 3, "context": 96},
    # 256 symbols, 1024 tasks.
    "harder": {"n_features": 4, "context": 112},
}


def preset(name: str, **overrides) -> WorldConfig:
    if name not in PRESETS:
        raise ValueError(f"world preset {name!r} unknown; accepted: {sorted(PRESETS)}")
    return WorldConfig(preset=name, **{**PRESETS[name], **overrides})
