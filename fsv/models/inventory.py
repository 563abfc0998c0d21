"""What `fsv models` shows: each registered model, its parameter count and its cache state."""

from __future__ import annotations

from fsv.config import PretrainSection, StudyConfig
from fsv.models.cache import is_cached, ladder_dir, pretrain_lr
from fsv.models.ladder import LADDER, llama_config
from fsv.models.placement import default_placement
from fsv.models.registry import HF_SUITES, nominal_params
from fsv.world import World, preset


def ladder_params(name: str, world: World) -> int:
    from transformers import LlamaForCausalLM

    cfg = llama_config(LADDER[name], len(world.vocab), world.config.context, 0, 1)
    return sum(p.numel() for p in LlamaForCausalLM(cfg).parameters())


def inventory(world_preset: str = "quick", study: StudyConfig | None = None) -> list[dict]:
    """Every registered model. Ladder models are looked up in the cache under `study`'s world and
    pretraining section (its seeds and the first five), else under the preset and the defaults."""
    if study is not None:
        from fsv.grid import world_of

        world, pretrain = world_of(study), study.pretrain
    else:
        world, pretrain = World(preset(world_preset)), PretrainSection()
    dims, world_dims = pretrain.model_dump(exclude={"seeds"}), world.config.model_dump()
    candidates = sorted(set(range(5)) | set(pretrain.seeds))
    rows = []
    for name, size in LADDER.items():
        seeds = [s for s in candidates if is_cached(ladder_dir(name, world_dims, dims, s))]
        rows.append({"name": name, "kind": "world", "params": ladder_params(name, world),
                     "layers": size.n_layers, "d_model": size.d_model, "lr": pretrain_lr(name, dims),
                     "cached": f"pretrain seeds {seeds}" if seeds else "no"})
    for name in HF_SUITES:
        placed = default_placement(nominal_params(name))
        rows.append({"name": name, "kind": "hf", "params": nominal_params(name),
                     "cached": f"hub id (params: the size in its name); trains on ZeRO-{placed.zero_stage} x {placed.workers} worker(s) by default"})
    return rows
