"""The embedded world: determinism, the held-out split, descriptions and the exact Bayes reference."""

import itertools
import math

import numpy as np
import pytest

from fsv.world import World, preset
from fsv.world.bayes import bayes_accuracy, distinct_count_probs


def test_world_is_deterministic_from_its_seed():
    a, b, c = World(preset("quick", seed=3)), World(preset("quick", seed=3)), World(preset("quick", seed=4))
    assert np.array_equal(a.features, b.features) and a.heldout_tasks == b.heldout_tasks
    ids_a = a.pretraining_batch(np.random.default_rng(0), 4)[0]
    ids_b = b.pretraining_batch(np.random.default_rng(0), 4)[0]
    assert np.array_equal(ids_a, ids_b)
    assert not np.array_equal(a.features, c.features) or a.heldout_tasks != c.heldout_tasks


def test_heldout_tasks_never_appear_in_pretraining():
    world = World(preset("quick"))
    heldout = {t.name for t in world.heldout_tasks}
    assert heldout and not heldout & {t.name for t in world.train_tasks}
    rng = np.random.default_rng(0)
    ids, labels, _ = world.pretraining_batch(rng, 256)
    lookup = {tuple(world.symbol_tokens([s])[0]): s for s in range(world.config.n_symbols)}
    # every document's (symbol, label) pairs must be explained by some training task, and by no
    # held-out task alone
    for doc, lab in zip(ids, labels):
        pos = np.flatnonzero(lab != -100)
        symbols = [lookup[tuple(doc[p - world.example_width + 1 : p - world.example_width + 2])] for p in pos]
        ys = lab[pos] - world.ids["L0"]
        fits = [t for t in world.tasks if np.array_equal(world.labels(t, symbols), ys)]
        assert any(t.name not in heldout for t in fits)


def test_copyable_repeats_weigh_less_than_first_appearances():
    world = World(preset("quick", repeat_weight=0.3))
    ids, labels, weights = world.pretraining_batch(np.random.default_rng(0), 64)
    assert np.all((weights > 0) == (labels != -100)), "weights exactly on label tokens"
    for doc, lab, wt in zip(ids, labels, weights):
        pos = np.flatnonzero(lab != -100)
        symbols = doc[pos - 1]
        first = [s not in symbols[:i] for i, s in enumerate(symbols)]
        assert np.allclose(wt[pos], np.where(first, 1.0, 0.3))
    assert np.any(weights == 0.3) and np.any(weights == 1.0)


def test_split_is_balanced_so_zero_shot_is_at_chance():
    world = World(preset("quick"))
    assert set(world.test_symbols).isdisjoint(world.train_symbols)
    V = world.config.n_values
    for maps in ("functions", "permutations"):
        world = World(preset("quick", maps=maps))
        for f in range(world.config.n_features):
            counts = np.zeros((V, V))  # (value, label) over training tasks
            for t in world.train_tasks:
                if t.feature == f:
                    for v in range(V):
                        counts[v, t.perm[v]] += 1
            assert np.all(counts == counts[0, 0]), "training-task prior must not favour any label"


def test_descriptions_have_the_same_meaning_in_two_surfaces():
    world = World(preset("quick"))
    t = world.heldout_tasks[0]
    model, human = world.description(t, "model"), world.description(t, "human")
    assert len(model) == len(human) and set(model).isdisjoint(human[1:-1])
    vocab = world.vocab
    model_labels = [vocab[i] for i in model if vocab[i].startswith("L")]
    human_labels = [vocab[i] for i in human if vocab[i].startswith("H")]
    assert [m[1:] for m in model_labels] == [h[1:] for h in reversed(human_labels)]


def _brute_force_bayes(world: World, k: int) -> float:
    """Enumerate every demonstration sequence and every task: no shortcut shared with bayes.py."""
    pool, V = world.train_symbols, world.config.n_values
    table = np.stack([world.labels(t, np.arange(world.config.n_symbols)) for t in world.tasks])
    total = 0.0
    for true in world.heldout_tasks:
        row = world.labels(true, np.arange(world.config.n_symbols))
        for seq in itertools.product(pool, repeat=k):
            seq = list(seq)
            consistent = np.all(table[:, seq] == row[seq], axis=1)
            for q in world.test_symbols:
                votes = np.bincount(table[consistent, q], minlength=V)
                best = np.flatnonzero(votes == votes.max())
                total += (1 / len(best) if row[q] in best else 0.0) / len(pool) ** k
    return total / (len(world.heldout_tasks) * len(world.test_symbols))


@pytest.mark.parametrize("maps", ["functions", "permutations"])
@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_bayes_matches_brute_force_enumeration(k, maps):
    world = World(preset("quick", maps=maps))
    exact, is_exact = bayes_accuracy(world, k)
    assert is_exact
    assert exact == pytest.approx(_brute_force_bayes(world, k), abs=1e-12)


def test_bayes_rises_with_k_from_chance_to_one():
    world = World(preset("quick"))
    accs = [bayes_accuracy(world, k)[0] for k in (0, 1, 4, 16)]
    assert accs[0] == pytest.approx(0.25) and accs == sorted(accs) and accs[-1] > 0.99


def test_distinct_count_probabilities_sum_to_one():
    for n, k in [(8, 1), (8, 5), (8, 16), (3, 7)]:
        p = distinct_count_probs(n, k)
        assert p.sum() == pytest.approx(1.0) and p[min(n, k) + 1 :].sum() == 0
    assert distinct_count_probs(8, 2)[1] == pytest.approx(1 / 8)
    assert math.isclose(distinct_count_probs(8, 0)[0], 1.0)


def test_each_ladder_size_pretrains_at_its_own_rate_unless_the_study_sets_one():
    from fsv.config import PretrainSection
    from fsv.models.cache import ladder_dir
    from fsv.models.ladder import LADDER
    from fsv.models.load import pretrain_config

    world = preset("quick").model_dump()
    default = PretrainSection().model_dump(exclude={"seeds"})
    rates = {name: pretrain_config(name, world, default, 0)["lr"] for name in LADDER}
    assert all(rates[n] * LADDER[n].d_model == pytest.approx(rates["world-l"] * 128) for n in LADDER)
    assert rates["world-xs"] > rates["world-s"] > rates["world-m"] > rates["world-l"]
    fixed = {**default, "lr": 2e-3}
    assert pretrain_config("world-l", world, fixed, 0)["lr"] == 2e-3
    assert ladder_dir("world-l", world, fixed, 0) != ladder_dir("world-l", world, default, 0)


def test_ladder_pretraining_holds_its_peak_rate_then_cools_down_linearly():
    from fsv.config import PretrainSection
    from fsv.models.load import pretrain_config
    from fsv.train.worker import TrainJob, lr_factor

    default = PretrainSection(steps=1000).model_dump(exclude={"seeds"})
    config = pretrain_config("world-s", preset("quick").model_dump(), default, 0)
    assert (config["schedule"], config["warmup"], config["cooldown"]) == ("wsd", 0.05, 0.2)
    wsd = TrainJob(model=None, batches=iter(()), steps=1000, save=None, lr_schedule="wsd", warmup=0.05, cooldown=0.2)
    assert lr_factor(wsd, 0) == pytest.approx(1 / 50)  # linear warm-up over 50 steps
    assert [lr_factor(wsd, s) for s in (49, 400, 800)] == [1.0, 1.0, 1.0]  # held at the peak
    assert [lr_factor(wsd, s) for s in (900, 999, 1000)] == pytest.approx([0.5, 0.005, 0.0])  # linear to 0
    cosine = TrainJob(model=None, batches=iter(()), steps=1000, save=None, lr_schedule="cosine", warmup=0.05)
    assert lr_factor(cosine, 500) == pytest.approx(0.5) and lr_factor(cosine, 400) < lr_factor(wsd, 400)
