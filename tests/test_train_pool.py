"""How many training servers a run gets: never so many that an in-context trial or a placement left
without a server could not run beside them."""

from fsv.train.service import pool_sizes

ONE = {"workers": 1, "cpus_per_worker": 1, "use_gpu": False, "zero_stage": 0}
TWO = {"workers": 2, "cpus_per_worker": 1, "use_gpu": False, "zero_stage": 3}


def cells(regime: str, train: dict | None, count: int) -> list[dict]:
    return [{"regime": regime, "train": train}] * count


def servers(pools) -> dict:
    return {(t["workers"], t["zero_stage"]): n for t, n in pools}


def test_two_cores_of_training_cells_get_two_servers():
    assert servers(pool_sizes(cells("sft", ONE, 5), cpus=2, gpus=0)) == {(1, 0): 2}
    assert servers(pool_sizes(cells("sft", ONE, 1), cpus=2, gpus=0)) == {(1, 0): 1}  # never more than cells


def test_in_context_cells_keep_a_cpu():
    mixed = cells("sft", ONE, 5) + cells("few_shot", None, 3) + cells("rlhf", ONE, 1)
    assert servers(pool_sizes(mixed, cpus=2, gpus=0)) == {(1, 0): 1}


def test_rlhf_cells_are_served_like_the_other_training_cells():
    assert servers(pool_sizes(cells("rlhf", ONE, 3), cpus=2, gpus=0)) == {(1, 0): 2}
    assert servers(pool_sizes(cells("sft", ONE, 2) + cells("rlhf", ONE, 3), cpus=2, gpus=0)) == {(1, 0): 2}


def test_a_placement_that_cannot_fit_beside_a_server_gets_none():
    both = cells("sft", ONE, 5) + cells("sft", TWO, 1)
    assert pool_sizes(both, cpus=2, gpus=0) == []  # a server for either would starve the other
    assert servers(pool_sizes(both, cpus=4, gpus=0)) == {(1, 0): 2, (2, 3): 1}
