"""A compact live progress line (cells done / failed / total, elapsed, ETA) in place of Ray's
verbose tables. On a terminal it rewrites one line; in a log it prints a line every 10 %."""

from __future__ import annotations

import sys
import time

from ray.tune import Callback


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


class Progress(Callback):
    def __init__(self, total: int):
        self.total, self.done, self.failed = total, 0, 0
        self.started = time.time()
        self.tty = sys.stderr.isatty()
        self._last_decile = -1

    @staticmethod
    def say(message: str) -> None:
        print(f"[fsv] {message}", file=sys.stderr, flush=True)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if result.get("status_ok") == 0:
            self.failed += 1

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.done += 1
        self._show()

    def on_trial_error(self, iteration, trials, trial, **info):
        self.done += 1
        self.failed += 1
        self._show()

    def line(self) -> str:
        elapsed = time.time() - self.started
        eta = elapsed / self.done * (self.total - self.done) if self.done else float("nan")
        eta_text = _clock(eta) if self.done else "?"
        return (f"[fsv] {self.done}/{self.total} cells done, {self.failed} failed, "
                f"elapsed {_clock(elapsed)}, ETA {eta_text}")

    def _show(self) -> None:
        if self.tty:
            end = "\n" if self.done == self.total else ""
            print("\r" + self.line(), end=end, file=sys.stderr, flush=True)
            return
        decile = self.done * 10 // max(1, self.total)
        if decile != self._last_decile or self.done == self.total:
            self._last_decile = decile
            print(self.line(), file=sys.stderr, flush=True)
