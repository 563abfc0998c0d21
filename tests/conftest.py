import os
from pathlib import Path

import pytest

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
