"""Static checks of the cluster configs in clusters/ (offline, no cloud calls).

The launcher configs go through Ray's own offline preparation and validation
(``prepare_config`` merges the provider defaults, ``validate_config`` checks the result
against the JSON schema shipped in the ray package), then through fsv's own rules:
pinned image == pinned Ray == installed Ray, CPU-only head, spot GPU workers offering
``fsv_trial_driver``, token auth on, no secrets in the files.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTERS = Path(__file__).resolve().parent.parent / "clusters"
LAUNCHER_FILES = ["aws.yaml", "gcp.yaml"]
KUBERAY_FILE = "kuberay-rayjob.yaml"
ALL_FILES = LAUNCHER_FILES + [KUBERAY_FILE]
RAY_SCHEMA = Path(ray.__file__).parent / "autoscaler" / "ray-schema.json"
IMAGE_RE = re.compile(r"^rayproject/ray:(?P<version>\d+\.\d+\.\d+)(?P<suffix>-[\w.-]+)?$")
RAY_PIN_RE = re.compile(r"ray\[[^\]]*\]==(?P<version>\d+\.\d+\.\d+)")
TRIAL_DRIVER = "fsv_trial_driver"


def _load(name: str) -> dict:
    return yaml.safe_load((CLUSTERS / name).read_text())


def _image_version(image: str) -> str:
    match = IMAGE_RE.match(image)
    assert match, f"image {image!r} is not a pinned rayproject/ray:X.Y.Z[-suffix] tag"
    assert "latest" not in image, image
    return match["version"]


def _ray_pins(text: str) -> set[str]:
    return {m["version"] for m in RAY_PIN_RE.finditer(text)}


def _worker_types(config: dict) -> dict:
    head = config["head_node_type"]
    return {k: v for k, v in config["available_node_types"].items() if k != head}


def _is_spot(provider: str, node_config: dict) -> bool:
    if provider == "aws":
        return node_config.get("InstanceMarketOptions", {}).get("MarketType") == "spot"
    scheduling = node_config.get("scheduling", {})
    # Ray's own GCP examples write scheduling as a list of one-key dicts.
    if isinstance(scheduling, list):
        scheduling = {k: v for item in scheduling for k, v in item.items()}
    return scheduling.get("provisioningModel") == "SPOT" or scheduling.get("preemptible") is True


# --------------------------------------------------------------------------- launcher


@pytest.fixture(params=LAUNCHER_FILES)
def launcher(request) -> tuple[str, dict]:
    return request.param, _load(request.param)


def test_raw_file_matches_ray_schema(launcher):
    _, config = launcher
    schema = json.loads(RAY_SCHEMA.read_text())
    jsonschema.validate(config, schema)


def test_ray_prepares_and_validates_offline(launcher):
    _, config = launcher
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    # The merged config still carries fsv's setup and start commands.
    assert any("pip install -e /home/ray/fsv" in c for c in prepared["worker_setup_commands"])
    assert any("ray start --head" in c for c in prepared["head_start_ray_commands"])


def test_ray_validation_is_live(launcher):
    """A broken node type must be rejected, or the test above proves nothing."""
    _, config = launcher
    broken = copy.deepcopy(config)
    del broken["available_node_types"][broken["head_node_type"]]["node_config"]
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(broken))


def test_image_and_ray_pins_agree_with_installed_ray(launcher):
    name, config = launcher
    docker = config["docker"]
    images = [docker["image"]] + [docker[k] for k in ("head_image", "worker_image") if k in docker]
    for node_type in config["available_node_types"].values():
        images += [v for k, v in node_type.get("docker", {}).items() if k.endswith("image")]
    versions = {_image_version(image) for image in images}
    pins = _ray_pins("\n".join(config["setup_commands"]))
    assert pins, f"{name}: setup_commands must pin ray[...]==X.Y.Z"
    assert versions == pins == {ray.__version__}, (versions, pins, ray.__version__)


def test_setup_installs_the_project(launcher):
    _, config = launcher
    mounts = config["file_mounts"]
    assert mounts.get("/home/ray/fsv") == ".", "the checkout must be mounted for pip install -e"
    setup = "\n".join(config["setup_commands"])
    assert "pip install -e /home/ray/fsv" in setup
    assert "--upgrade" not in setup and " -U " not in setup, "would replace the image's torch"


def test_cluster_limits(launcher):
    _, config = launcher
    assert isinstance(config["idle_timeout_minutes"], (int, float))
    assert config["idle_timeout_minutes"] > 0
    assert isinstance(config["max_workers"], int) and config["max_workers"] > 0
    for node_type in _worker_types(config).values():
        assert node_type["min_workers"] == 0, "GPU workers must scale from zero"
        assert 0 < node_type["max_workers"] <= config["max_workers"]


def test_every_node_type_declares_resources(launcher):
    _, config = launcher
    for name, node_type in config["available_node_types"].items():
        assert node_type.get("resources"), f"{name} has no resources"


def test_head_runs_no_work(launcher):
    _, config = launcher
    head = config["available_node_types"][config["head_node_type"]]
    assert head["resources"].get("CPU") == 0
    assert not head["resources"].get("GPU")
    assert not _is_spot(config["provider"]["type"], head["node_config"]), "head must not be spot"


def test_gpu_workers_are_spot_and_host_trial_drivers(launcher):
    _, config = launcher
    provider = config["provider"]["type"]
    workers = _worker_types(config)
    assert len(workers) >= 2, "expected a small and a big GPU worker type"
    for name, node_type in workers.items():
        assert _is_spot(provider, node_type["node_config"]), f"{name} is not spot/preemptible"
        assert node_type["resources"].get(TRIAL_DRIVER, 0) > 0, f"{name} lacks {TRIAL_DRIVER}"
        if provider == "gcp":  # GCP does not auto-detect CPU/GPU for the autoscaler
            assert node_type["resources"].get("GPU", 0) >= 1, name
            assert node_type["resources"].get("CPU", 0) >= 1, name
        shm = node_type.get("docker", {}).get("worker_run_options", [])
        assert any(opt.startswith("--shm-size=") for opt in shm), f"{name} sets no shm size"


def test_token_auth_on_and_no_cpu_accelerator(launcher):
    name, config = launcher
    options = " ".join(config["docker"]["run_options"])
    assert "RAY_AUTH_MODE=token" in options
    assert "RAY_AUTH_TOKEN_PATH=/home/ray/.fsv-secrets/" in options
    assert config["file_mounts"].get("/home/ray/.fsv-secrets") == "~/.fsv/cluster-secrets"
    assert "DS_ACCELERATOR" not in yaml.safe_dump(config), f"{name}: let DeepSpeed detect CUDA"


def test_wandb_key_loaded_from_secret_file_only(launcher):
    _, config = launcher
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        commands = "\n".join(config[key])
        assert "export WANDB_API_KEY=\"$(cat /home/ray/.fsv-secrets/wandb_api_key)\"" in commands
        assert "ray start" in commands


# --------------------------------------------------------------------------- KubeRay


@pytest.fixture(scope="module")
def rayjob() -> dict:
    return _load(KUBERAY_FILE)


def _containers(rayjob: dict) -> list[tuple[str, dict]]:
    cluster = rayjob["spec"]["rayClusterSpec"]
    out = [("head", c) for c in cluster["headGroupSpec"]["template"]["spec"]["containers"]]
    for group in cluster["workerGroupSpecs"]:
        out += [(group["groupName"], c) for c in group["template"]["spec"]["containers"]]
    return out


def test_rayjob_kind_and_entrypoint(rayjob):
    assert rayjob["apiVersion"] == "ray.io/v1"
    assert rayjob["kind"] == "RayJob"
    spec = rayjob["spec"]
    assert spec["entrypoint"].startswith("fsv run ")
    assert re.search(r"--storage (s3|gs)://", spec["entrypoint"])
    assert spec["shutdownAfterJobFinishes"] is True
    assert isinstance(spec["ttlSecondsAfterFinished"], int) and spec["ttlSecondsAfterFinished"] >= 0


def test_rayjob_versions_pinned(rayjob):
    cluster = rayjob["spec"]["rayClusterSpec"]
    assert cluster["rayVersion"] == ray.__version__
    for _, container in _containers(rayjob):
        assert _image_version(container["image"]) == cluster["rayVersion"]
    runtime_env = yaml.safe_load(rayjob["spec"]["runtimeEnvYAML"])
    assert runtime_env["working_dir"]
    assert _ray_pins("\n".join(runtime_env["pip"])) == {cluster["rayVersion"]}


def test_rayjob_head_and_gpu_workers(rayjob):
    cluster = rayjob["spec"]["rayClusterSpec"]
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    assert cluster["authOptions"]["mode"] == "token"
    assert cluster["enableInTreeAutoscaling"] is True
    assert cluster["workerGroupSpecs"], "no worker group"
    for group in cluster["workerGroupSpecs"]:
        assert group["minReplicas"] == 0 and group["maxReplicas"] > 0
        driver = json.loads(json.loads(group["rayStartParams"]["resources"]))
        assert driver[TRIAL_DRIVER] > 0
        spec = group["template"]["spec"]
        assert any(t["key"] == "nvidia.com/gpu" for t in spec["tolerations"])
        for container in spec["containers"]:
            assert int(container["resources"]["limits"]["nvidia.com/gpu"]) >= 1
            assert any(m["mountPath"] == "/dev/shm" for m in container["volumeMounts"])


def test_rayjob_wandb_key_from_secret(rayjob):
    for group, container in _containers(rayjob):
        env = {e["name"]: e for e in container.get("env", [])}
        assert "WANDB_API_KEY" in env, f"{group}: WANDB_API_KEY not passed"
        entry = env["WANDB_API_KEY"]
        assert "value" not in entry, f"{group}: literal WANDB_API_KEY"
        assert entry["valueFrom"]["secretKeyRef"]["name"]
        assert entry["valueFrom"]["secretKeyRef"]["key"]
    runtime_env = yaml.safe_load(rayjob["spec"]["runtimeEnvYAML"])
    assert "WANDB_API_KEY" not in runtime_env.get("env_vars", {})


# --------------------------------------------------------------------------- all files


@pytest.mark.parametrize("name", ALL_FILES)
def test_no_secrets_in_files(name):
    text = (CLUSTERS / name).read_text()
    # A W&B key is 40 hex characters; so is a git commit id, which URLs may carry.
    without_urls = re.sub(r"https?://\S+", "", text)
    assert not re.search(r"\b[0-9a-f]{40}\b", without_urls), "looks like a W&B API key"
    assert not re.search(r"WANDB_API_KEY\s*[=:]\s*['\"]?[A-Za-z0-9]", text)
    assert not re.search(r"RAY_AUTH_TOKEN\s*[=:]", text), "the Ray token must come from a file or Secret"
    assert not re.search(r"AKIA[0-9A-Z]{16}", text), "AWS access key"
    assert "aws_secret_access_key" not in text.lower()


@pytest.mark.parametrize("name", ALL_FILES)
def test_every_top_level_key_has_a_comment(name):
    lines = (CLUSTERS / name).read_text().splitlines()
    previous = ""
    missing = []
    for line in lines:
        if re.match(r"^[A-Za-z_][\w.-]*\s*:", line) and not previous.lstrip().startswith("#"):
            missing.append(line.split(":")[0])
        if line.strip():
            previous = line
    assert not missing, f"{name}: top-level keys without a comment above them: {missing}"
