"""Compacting a study's records while it runs (`fsv.compaction.compact_new`): every `COMPACT_AT`
finished trials (`FSV_COMPACT_EVERY` overrides), a background thread of the driver adds a part holding the records written since
the last part. Each file is read once, while trials run; a resume after the driver dies, and the
end-of-study summary, read the parts and at most the files of the last few hundred trials one by
one -- at 10^5 cells on S3 that is seconds of reads, not a GET per cell (benchmarks/scale.py).

A failed compaction costs nothing but speed: the record files stay the truth, and the next read
reads whatever no part holds. It is said once and not retried until more trials finish.
"""

from __future__ import annotations

import os
import threading

from ray.tune import Callback


class CompactAsItGoes(Callback):
    def __init__(self, root: str, every: int | None = None):
        from fsv.compaction import COMPACT_AT

        self.root = root
        self.every = every or int(os.environ.get("FSV_COMPACT_EVERY") or COMPACT_AT)  # tests set it low
        self.finished_since = 0
        self.thread: threading.Thread | None = None
        self.compacted = 0
        self.failure: str | None = None

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._finished()

    def on_trial_error(self, iteration, trials, trial, **info):
        self._finished()

    def _finished(self) -> None:
        self.finished_since += 1
        if self.finished_since >= self.every and not (self.thread and self.thread.is_alive()):
            self.finished_since = 0
            self.thread = threading.Thread(target=self._compact, daemon=True, name="fsv-compact")
            self.thread.start()

    def _compact(self) -> None:
        from fsv.compaction import compact_new

        try:
            self.compacted += compact_new(self.root, at_least=self.every)
        except Exception as exc:  # noqa: BLE001 - speed only: the record files stay the truth
            if self.failure is None:
                from study.progress import say

                say(f"compacting records in the background failed ({exc}); reads go file by file until it works")
            self.failure = str(exc)

    def on_experiment_end(self, trials, **info):
        """Let a compaction under way finish: the summary that follows reads its part whole."""
        if self.thread is not None:
            self.thread.join()
