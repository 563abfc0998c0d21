"""Trials start as soon as their own model is ready: a Ray Tune searcher that hands out the study's
cells in order, each once its model instance has been pretrained (or its pretraining has failed, so
the trial records why), while the other ladder models are still pretraining.

A grid over the cells (`tune.grid_search`) would fix every trial up front, so nothing could start
before the whole ladder was pretrained; on 2 cores that left one core idle for the ~10 minutes the
largest model pretrains alone. Tune asks a searcher for the next trial whenever it has room, and a
searcher may answer "nothing yet" (None) -- so this is Tune's own extension point, not a scheduler
of our own. Its state is the records (a resumed study lists only cells without an ok record), so
it keeps nothing to save.

It finishes as soon as every model its cells still wait for is ready, leaving those cells to the
driver's next experiment, which reuses its trial actors. While models pretrain an idle cached actor
would hold a CPU the pretraining waits for, so here every trial starts a fresh worker process: ~5 s
of imports on a laptop against ~2.5 s of work (measured on the default study: 16 in-context trials a
minute on 2 cores), which reuse saves once nothing pretrains.
"""

from __future__ import annotations

from typing import Callable

from ray.tune.search import Searcher


class ReadyCells(Searcher):
    def __init__(self, cells: list[dict], settled: Callable[[dict], bool]):
        super().__init__(metric="status_ok", mode="max")
        self.pending = list(cells)
        self.settled = settled

    def suggest(self, trial_id: str) -> dict | None:
        if all(map(self.settled, self.pending)):
            return Searcher.FINISHED  # nothing pretrains any more: the rest run with reused actors
        for i, cell in enumerate(self.pending):
            if self.settled(cell):
                return {"cell_id": self.pending.pop(i)["cell_id"]}
        return None

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        pass

    def __getstate__(self) -> dict:
        """Tune pickles its searcher with the experiment (for a restore fsv never uses: the records
        are the state); the live pretraining jobs behind `settled` stay out of that copy."""
        return {**self.__dict__, "settled": None}

    def save(self, checkpoint_path: str) -> None:  # the records are the state: nothing to save
        pass

    def restore(self, checkpoint_path: str) -> None:
        pass
