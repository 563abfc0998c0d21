"""The progress line: an ETA that weighs cells by kind, and selection / measurement trials apart."""

import time

import pytest

from study.progress import CostModel, Progress, adaptations, guess

TRAIN = {"workers": 1, "cpus_per_worker": 1, "use_gpu": False, "zero_stage": 0}


def in_context(i, k=4):
    return {"cell_id": f"ic{i}", "regime": "few_shot", "model": "world-xs", "k": k, "train": None}


def training(i, steps=30, phase=None, model="world-xs"):
    return {"cell_id": f"tr{i}-{steps}-{model}", "regime": "sft", "model": model, "k": 0, "train": TRAIN,
            "settings": {"steps": [steps // 2, steps]}, "n_levels": [4, 16], "seeds": [0], "phase": phase}


def test_measured_cells_correct_their_kind_and_their_family():
    costs = CostModel()
    costs.add(training(0), 40.0)
    assert costs.cost(training(1)) == 40.0  # same kind: its measured mean
    other = training(2, steps=60, model="world-s")  # unmeasured training kind: its guess, scaled as sft measured
    assert costs.cost(other) == pytest.approx(guess(other) * 40.0 / guess(training(0)))
    # a family with nothing measured yet goes at the pace the machine showed on the others
    assert costs.cost(in_context(0)) == pytest.approx(guess(in_context(0)) * 40.0 / guess(training(0)))


def test_an_unmeasured_kind_goes_at_its_own_regimes_pace_before_its_familys():
    """sft measured at its guess, instruction tuning at 4x its guess: another instruction-tuning kind
    is priced at 4x, not at the training family's median; a regime not measured at all at the
    family's median."""
    costs = CostModel()
    sft, tuned = training(0), {**training(1), "regime": "instruction_tuning"}
    for cell, ratio in ((sft, 1.0), (training(2, steps=60), 1.0), (tuned, 4.0)):
        costs.add(cell, ratio * guess(cell))
    larger = {**training(3, model="world-l"), "regime": "instruction_tuning"}
    assert costs.cost(larger) == pytest.approx(4.0 * guess(larger))
    unseen = {**training(4, model="world-l"), "regime": "rlhf"}
    assert costs.cost(unseen) == pytest.approx(1.0 * guess(unseen))


def test_a_training_guess_grows_with_batch_and_parameters_over_a_fixed_step_cost():
    from study.progress import STEP_FIXED_M, params_m

    def steps_part(cell):  # the guess less what a cell of no steps costs (start-up, evaluation)
        return guess(cell) - guess({**cell, "settings": {**cell["settings"], "steps": [0]}})

    small, large = training(0), training(1, model="world-l")
    doubled = {**small, "settings": {**small["settings"], "batch": 16}}
    ratio = (STEP_FIXED_M + params_m("world-l")) / (STEP_FIXED_M + params_m("world-xs"))
    assert steps_part(large) / steps_part(small) == pytest.approx(ratio) and ratio > 10
    assert steps_part(doubled) == pytest.approx(2 * steps_part(small))


def test_a_multi_task_regime_adapts_one_model_per_n_and_seed_not_per_task():
    world = {"preset": "quick", "seed": 0}
    sft = {**training(0), "world": world}
    tuned = {**training(1), "regime": "instruction_tuning", "tasks_trained": 32, "world": world}
    rlhf = {**training(2), "regime": "rlhf", "world": world}
    assert adaptations(sft) == 2 * 1 * 8  # n levels x seeds x held-out tasks
    assert adaptations(tuned) == adaptations(rlhf) == 2 * 1  # one model per (n, seed), on all its tasks
    assert adaptations(training(3)) == 2  # a text task: one task


def test_eta_counts_the_training_cells_left_after_quick_in_context_cells():
    cells = [in_context(i) for i in range(20)] + [training(i, steps=300, model="world-l") for i in range(10)]
    progress = Progress(cells)
    progress.first_start = time.time() - 20  # 20 in-context cells in 20 s
    for cell in cells[:20]:
        progress.begun[cell["cell_id"]] = time.time() - 1
        progress._finish(cell["cell_id"])
    per_cell = 20 / 20
    naive = per_cell * 10  # what counting cells alike would say
    assert progress.eta() > 2 * naive  # training cells are expected to cost more than in-context ones


def test_selection_and_measurement_trials_are_counted_apart():
    cells = [training(0, phase="select"), training(1, phase="select"), training(2, phase="measure"), in_context(0)]
    progress = Progress(cells)
    progress._finish(cells[0]["cell_id"])
    progress._finish(cells[3]["cell_id"])
    assert progress.phases() == "select 1/2, measure 1/2"
    assert "2/4 cells done (select 1/2, measure 1/2)" in progress.line()


def test_time_before_the_first_trial_does_not_count_as_the_trials_pace():
    """Models pretrain for minutes before the first trial: the ETA runs from that trial's start."""
    cells = [in_context(i) for i in range(4)]
    progress = Progress(cells)
    progress.started = time.time() - 600  # ten minutes of pretraining
    assert progress.eta() is None  # nothing measured yet: '?' rather than a guess
    progress.on_trial_start(0, [], _Trial(cells[0]))
    progress.first_start -= 2  # its trial took 2 s
    progress.begun[cells[0]["cell_id"]] -= 2
    progress._finish(cells[0]["cell_id"])
    assert progress.eta() == pytest.approx(3 * 2, rel=0.1)  # three more like it, not 600 s each


class _Trial:
    def __init__(self, cell):
        self.config = {"cell_id": cell["cell_id"]}
