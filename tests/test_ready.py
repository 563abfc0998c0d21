"""The searcher that starts in-context trials while other models still pretrain (study.ready)."""

from ray.tune.search import Searcher

from study.ready import ReadyCells


def cell(i, model):
    return {"cell_id": f"c{i}", "model": model, "pretrain_seed": 0}


def test_hands_out_ready_cells_then_leaves_the_rest_once_nothing_pretrains():
    ready = {"world-xs"}
    cells = [cell(0, "world-l"), cell(1, "world-xs"), cell(2, "world-l"), cell(3, "world-xs")]
    searcher = ReadyCells(cells, lambda c: c["model"] in ready)
    assert searcher.suggest("t0") == {"cell_id": "c1"}  # its model is ready; world-l still pretrains
    assert searcher.suggest("t1") == {"cell_id": "c3"}
    assert searcher.suggest("t2") is None  # only world-l cells left: wait
    ready.add("world-l")
    # nothing pretrains any more: the experiment ends and the driver runs the rest with reused actors
    assert searcher.suggest("t3") == Searcher.FINISHED
    assert [c["cell_id"] for c in searcher.pending] == ["c0", "c2"]
