"""What a regime needs from its trial: the world, the base model, the place to train."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from fsv.models.cache import is_cached, ladder_dir
from fsv.models.registry import resolve_model
from fsv.world import World, WorldConfig, preset


@dataclass
class TrialContext:
    cell: dict
    study_dir: str  # where records live (local path or URI)
    scratch: Path  # a local folder of this trial's own
    bayes: dict  # {k: bayes_accuracy} for the study's world, computed once by the driver
    attempt: int = 1

    @property
    def train_storage(self) -> str:
        """Ray Train's storage for this study's training runs (checkpoints travel through it)."""
        return f"{self.study_dir}/train"

    @cached_property
    def world(self) -> World:
        w = self.cell["world"]
        return World(preset(w["preset"], seed=w["seed"]))

    @property
    def world_config(self) -> dict:
        return self.world.config.model_dump()

    @cached_property
    def model_path(self) -> str:
        spec = resolve_model(self.cell["model"])
        if not spec.is_world:
            return spec.name
        path = ladder_dir(spec.name, self.world_config, self.cell["pretrain"], self.cell["pretrain_seed"])
        if not is_cached(path):
            raise RuntimeError(f"ladder model {spec.name} (pretrain seed {self.cell['pretrain_seed']}) is not "
                               f"in the cache at {path}; `fsv run` pretrains it before the trials start")
        return str(path)

    def load_base(self):
        from fsv.models.load import load_causal_lm

        model, _ = load_causal_lm(self.model_path)
        return model
