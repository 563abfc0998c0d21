"""The training service on a real local Ray cluster: long-lived Ray Train worker groups under
DeepSpeed serving cells from a queue, each cell with its own checkpoint and metrics; a real SIGKILL
of a worker; and the per-fit fallback when no service runs."""

import json
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import world_config

pytestmark = pytest.mark.slow

TRAIN = {"workers": 1, "cpus_per_worker": 1, "use_gpu": False, "zero_stage": 0, "precision": "fp32",
         "optimizer": "adamw", "weight_decay": 0.0, "grad_clip": 1.0}


def cell(model, seed: int, steps: int = 4, train: dict = TRAIN) -> dict:
    """A selection trial's training as `train_cell` builds it: sft on the world's held-out tasks."""
    return {"job": "fsv.regimes.sft:build_job", "model_path": str(model), "world": world_config(), "seed": 0,
            "n_levels": [8], "seeds": [seed], "lengths": [steps], "batch": 4, "warmup": 0.0,
            "hparams": {"lr": 1e-3}, "lr": 1e-3, "train": train, "layout": "packed", "method": "full",
            "keep_models": True, "steps": steps}


def fit_all(configs: dict, tmp, storage) -> dict:
    """Every cell through `fit` at once, as concurrent trials would: {key: (metrics, dest)}."""
    from fsv.train.launch import fit

    def one(key):
        return key, (fit(configs[key], storage, key, tmp / key), tmp / key)

    with ThreadPoolExecutor(len(configs)) as pool:
        return dict(pool.map(one, configs))


def curve(dest) -> list[float]:
    return json.loads(next(dest.glob("*/train_curve.json")).read_text())["loss"]


def test_cells_through_one_service_match_their_own_fits(ray_cluster, tiny_model, tmp_path):
    from fsv.train.launch import fit
    from fsv.train.service import TrainService, find_queue

    configs = {f"c{seed}": cell(tiny_model, seed) for seed in range(3)}
    assert find_queue(configs["c0"]) is None  # no service: fit runs a TorchTrainer of its own
    alone = fit(configs["c1"], str(tmp_path / "ray"), "alone", tmp_path / "alone")
    with TrainService([(TRAIN, 1)], str(tmp_path / "ray")) as service:
        results = fit_all(configs, tmp_path, str(tmp_path / "ray"))
        state = ray_get(service.queues[0].state.remote())
    assert state["deliveries"] == {key: 1 for key in configs}
    for key, (metrics, dest) in results.items():
        assert metrics["jobs"] >= 1 and metrics["train_s"] > 0
        assert len(list(dest.iterdir())) == len(list((tmp_path / "alone").iterdir()))  # one folder per adaptation
        assert (next(dest.glob("*/model.safetensors"))).stat().st_size > 10_000
    assert curve(results["c0"][1]) != curve(results["c1"][1])  # each cell its own model and seed
    assert sorted(p.name for p in results["c1"][1].iterdir()) == sorted(p.name for p in (tmp_path / "alone").iterdir())
    assert curve(results["c1"][1]) == pytest.approx(curve(tmp_path / "alone"), rel=1e-4)  # same as a fit alone
    assert results["c1"][0]["final_train_loss"] == pytest.approx(alone["final_train_loss"], rel=1e-4)
    runs = [p for p in (tmp_path / "ray").iterdir() if p.name.startswith("service-")]
    assert len(runs) == 1 and len([p for p in runs[0].glob("checkpoint_*") if p.is_dir()]) == 3  # one Ray Train checkpoint a cell


def dpo_cell(model, seed: int) -> dict:
    """An rlhf selection trial's training as `fsv.regimes.rlhf.run` builds it: trl's DPO loop."""
    return {**cell(model, seed), "job": None, "loop": "fsv.regimes.rlhf:train_loop_per_worker", "n_levels": [4],
            "lengths": [2, 4], "hparams": {"lr": 1e-3, "beta": 0.1}, "method": "dpo", "noise": 0.0, "start": "base",
            "start_hparams": None, "train_tasks": None, "keep_models": False}


def test_rlhf_cells_are_served_between_sft_cells_and_match_their_own_fits(ray_cluster, tiny_model, tmp_path):
    """trl's loop in a long-lived worker: DPO cells and sft cells through one server, one after
    another, each the same as a fit of its own (nothing of one cell's trainer leaks into the next)."""
    from fsv.train.launch import fit
    from fsv.train.service import TrainService, find_queue

    storage = str(tmp_path / "ray")
    configs = {"dpo0": dpo_cell(tiny_model, 0), "sft1": cell(tiny_model, 1), "dpo1": dpo_cell(tiny_model, 1)}
    alone = {key: fit(configs[key], storage, f"alone-{key}", tmp_path / f"alone-{key}") for key in ("dpo1", "sft1")}
    with TrainService([(TRAIN, 1)], storage) as service:
        assert find_queue(configs["dpo0"]) is not None
        served = {}
        for key in configs:  # in turn: the sft cell runs after a DPO cell in the same worker
            served[key] = fit(configs[key], storage, key, tmp_path / key)
        state = ray_get(service.queues[0].state.remote())
    assert state["deliveries"] == {key: 1 for key in configs}
    dpo = {key: json.loads(served[key]["evals"]) for key in ("dpo0", "dpo1")}
    assert [r["steps"] for r in dpo["dpo1"]] == [r["steps"] for r in json.loads(alone["dpo1"]["evals"])]
    assert [r["train_loss"] for r in dpo["dpo1"]] == pytest.approx(
        [r["train_loss"] for r in json.loads(alone["dpo1"]["evals"])], rel=1e-4)
    assert [r["train_loss"] for r in dpo["dpo0"]] != [r["train_loss"] for r in dpo["dpo1"]]  # its own seed
    assert served["sft1"]["final_train_loss"] == pytest.approx(alone["sft1"]["final_train_loss"], rel=1e-4)
    runs = [p for p in (tmp_path / "ray").iterdir() if p.name.startswith("service-")]
    assert len(runs) == 1 and len([p for p in runs[0].glob("checkpoint_*") if p.is_dir()]) == 3


def ray_get(ref):
    import ray

    return ray.get(ref)


@pytest.mark.parametrize("precision", ["fp32", "bf16-mixed"])
def test_zero3_with_two_workers_through_the_service(precision, ray_cluster, tiny_model, tmp_path):
    """ZeRO-3 over two ranks; under bf16-mixed its gradients are reduced in bf16 (DeepSpeed's
    autocast marks the linear layers' weights so) over gloo."""
    from fsv.train.service import TrainService

    zero3 = {**TRAIN, "workers": 2, "zero_stage": 3, "precision": precision}
    configs = {f"z{seed}": cell(tiny_model, seed, train=zero3) for seed in range(2)}
    with TrainService([(zero3, 1)], str(tmp_path / "ray")):
        results = fit_all(configs, tmp_path, str(tmp_path / "ray"))
    for metrics, dest in results.values():
        assert "cpu" in metrics["device"] and metrics["precision"] == precision and len(curve(dest)) == 4
        assert all(loss == loss for loss in curve(dest))  # no NaN from a reduction in bf16
        assert (next(dest.glob("*/model.safetensors"))).stat().st_size > 10_000  # gathered from both ranks


def test_a_killed_worker_reruns_only_the_cell_it_held(ray_cluster, tiny_model, tmp_path):
    import ray

    from fsv.train.service import TrainService

    configs = {"long": cell(tiny_model, 0, steps=400), **{f"short{i}": cell(tiny_model, i + 1) for i in range(3)}}
    with TrainService([(TRAIN, 2)], str(tmp_path / "ray")) as service:
        queue = service.queues[0]
        with ThreadPoolExecutor(1) as pool:
            running = pool.submit(fit_all, configs, tmp_path, str(tmp_path / "ray"))
            pid = wait_for(lambda: ray.get(queue.state.remote())["in_flight"].get("long"))[1]
            time.sleep(3)  # mid-cell: its engine is up and stepping
            os.kill(pid, signal.SIGKILL)
            results = running.result(timeout=600)
        state = ray.get(queue.state.remote())
    assert state["deliveries"] == {"long": 2, "short0": 1, "short1": 1, "short2": 1}
    assert all(len(curve(dest)) == configs[key]["steps"] for key, (_, dest) in results.items())


def wait_for(probe, timeout: float = 300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if value := probe():
            return value
        time.sleep(0.1)
    raise TimeoutError(probe)
