import os
from pathlib import Path

import pytest

from fsv.config import PretrainSection

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture(scope="session")
def fsv_cache(tmp_path_factory) -> Path:
    """One model cache for the whole test session (ladder models are pretrained once)."""
    path = Path(os.environ.get("FSV_TEST_CACHE") or tmp_path_factory.mktemp("fsv-cache"))
    os.environ["FSV_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session")
def fsv_env(fsv_cache) -> dict:
    env = dict(os.environ, FSV_CACHE=str(fsv_cache), WANDB_MODE="offline")
    env.pop("RAY_ADDRESS", None)
    return env


WORLD = {"preset": "quick", "seed": 0}
PRETRAIN = PretrainSection(steps=40, batch=16, lr=3e-3, warmup=0.1).model_dump(exclude={"seeds"})


def world_config() -> dict:
    from fsv.world import preset

    return preset(WORLD["preset"], seed=WORLD["seed"]).model_dump()


@pytest.fixture(scope="session")
def process_group():
    """One gloo rank in this process for the tests that build DeepSpeed engines in-process: one for
    the session, as DeepSpeed keeps its groups once made (a second process group is not its own)."""
    import socket

    import torch.distributed as dist

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    dist.init_process_group("gloo", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


@pytest.fixture(scope="session")
def ray_cluster(fsv_cache):
    """A real local Ray cluster, shared by the in-process tests; started after FSV_CACHE is set, so
    its workers look for ladder models where the tests pretrain them."""
    import ray

    from study.driver import LOCAL_TRAIN_ENV

    ray.init(num_cpus=2, resources={"fsv_trial_driver": 100}, include_dashboard=False,
             runtime_env={"env_vars": {"DS_ACCELERATOR": "cpu", **LOCAL_TRAIN_ENV}}, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_model(ray_cluster, fsv_cache):
    """world-xs pretrained for a few steps under Ray Train + DeepSpeed (cached for the session)."""
    from fsv.models.load import pretrain_world_model

    return pretrain_world_model("world-xs", world_config(), PRETRAIN, seed=0)


@pytest.fixture(scope="session")
def world_model(tmp_path_factory):
    """An unpretrained world-s (2 layers) saved like a ladder model: what the training paths start from."""
    from fsv.config import PretrainSection
    from fsv.models.load import pretrain_config
    from fsv.models.tokenizer import world_tokenizer
    from fsv.train.pretrain import build
    from fsv.world import World, WorldConfig

    path = tmp_path_factory.mktemp("world-s")
    pretrain = PretrainSection().model_dump(exclude={"seeds", "checkpoints"})
    build(pretrain_config("world-s", world_config(), pretrain, 0), 0, 1).model.save_pretrained(path)
    world_tokenizer(World(WorldConfig(**world_config()))).save_pretrained(path)
    return str(path)
