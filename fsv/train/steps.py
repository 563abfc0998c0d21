"""Live step counts of running training jobs (pretraining a ladder model, e.g.), for the progress
line: rank 0 of a job sends (label, step, total) to a named board actor the driver owns, at most
once a second, fire-and-forget; without a board (tests, benchmarks) nothing is sent."""

from __future__ import annotations

import time

NAMESPACE = "fsv"


def board_name() -> str:
    import ray

    return f"fsv-steps-{ray.get_runtime_context().get_job_id()}"


class StepBoard:
    """{label: (step, total)} of the jobs that reported."""

    def __init__(self):
        self.steps: dict[str, tuple[int, int]] = {}

    def set(self, label: str, step: int, total: int) -> None:
        self.steps[label] = (step, total)

    def get(self) -> dict[str, tuple[int, int]]:
        return dict(self.steps)


def start_board():
    import ray

    return ray.remote(num_cpus=0)(StepBoard).options(name=board_name(), namespace=NAMESPACE).remote()


def reporter(config: dict, rank: int, total: int):
    """tick(step) for a job's loop: sends to the board when there is one and this is rank 0. A job
    is labelled by `config["progress_label"]`, else by its ladder model and seed (pretraining)."""
    label = config.get("progress_label") or (f"{config['model']} (seed {config['seed']})" if "model" in config else None)
    board = _find_board() if rank == 0 and label else None
    if board is None:
        return lambda step: None
    last = [0.0]

    def tick(step: int) -> None:
        if time.time() - last[0] >= 1.0 or step == total:
            last[0] = time.time()
            board.set.remote(label, step, total)

    return tick


def _find_board():
    import ray

    try:
        return ray.get_actor(board_name(), namespace=NAMESPACE)
    except ValueError:
        return None
