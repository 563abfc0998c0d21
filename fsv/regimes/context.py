"""What a regime needs from its trial: the world, the base model, the place to train."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from fsv.models.cache import instance_dir, is_cached, ladder_dir
from fsv.models.registry import resolve_model
from fsv.world import World, preset


@dataclass
class TrialContext:
    cell: dict
    study_dir: str  # where records live (local path or URI)
    scratch: Path  # a local folder of this trial's own
    bayes: dict  # {k: bayes_accuracy} for the study's world, computed once by the driver
    attempt: int = 1
    trust_remote_code: bool = False  # the study's permission for models that ship their own code

    @property
    def train_storage(self) -> str:
        """Ray Train's storage for this study's training runs (checkpoints travel through it)."""
        return f"{self.study_dir}/train"

    @cached_property
    def world(self) -> World:
        w = self.cell["world"]
        return World(preset(w["preset"], seed=w["seed"]))

    @property
    def world_config(self) -> dict | None:
        return self.world.config.model_dump() if self.cell["world"] is not None else None

    @cached_property
    def model_path(self) -> str:
        spec = resolve_model(self.cell["model"])
        if not spec.is_world:
            return spec.name
        root = ladder_dir(spec.name, self.world_config, self.cell["pretrain"], self.cell["pretrain_seed"])
        step = self.cell.get("checkpoint")
        if not is_cached(root, [step] if step else []):
            raise RuntimeError(f"ladder model {self.cell.get('instance', spec.name)} is not in the cache at "
                               f"{instance_dir(root, step)}; `fsv run` pretrains it before the trials start")
        return str(instance_dir(root, step))

    def load_base(self):
        return self.load_base_with_tokenizer()[0]

    def load_base_with_tokenizer(self):
        return self.load(self.model_path)

    def load(self, path: str, tokenizer: bool = True):
        """A model (the base, or one a regime trained) and its tokenizer: bf16 straight onto the
        GPU where there is one, fp32 on CPU."""
        import torch

        from fsv.models.load import load_causal_lm, load_model

        gpu = torch.cuda.is_available()
        args = (path, torch.bfloat16 if gpu else torch.float32, self.trust_remote_code, "cuda" if gpu else None)
        return load_causal_lm(*args) if tokenizer else (load_model(*args), None)

    @cached_property
    def text_task(self):
        from fsv.tasks import get_task

        return get_task(self.cell["task"])

    @cached_property
    def text_splits(self):
        from fsv.tasks import load_splits

        return load_splits(self.text_task, self.cell.get("task_source"))
