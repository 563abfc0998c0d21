"""A compact live progress line in place of Ray's verbose tables: cells done / failed / total,
selection (hyperparameter-search) and measurement trials apart, elapsed, and an ETA that weighs
each cell by its kind; and, before the trials, pretraining's steps per ladder model. On a terminal
it rewrites one line; in a log it prints a line every 10 %.

The ETA: every cell has an expected cost from its kind (regime, model size, k or steps); once
cells of a kind finish, their measured mean replaces the guess for that kind, and kinds not yet
seen are scaled by what their regime measured so far against its guess, else their family
(training / in-context), else the others (the machine's pace is shared). A training cell's guess is
its adaptation-steps x batch x (parameters + a per-step cost worth 0.04M of them): a world-xs step is
mostly that fixed cost, a world-l step mostly arithmetic. Against the 2026-12-07 runs' records, the
selection phase's ETA read 0.31 of the time left (median over its trials) with a guess of (1 +
parameters) and the training family's ratio; it reads 0.77 and 0.92 of it on the fp32 and
bf16-mixed runs with the regime's ratio and this guess (10th-90th percentiles 0.56-1.65 and
0.62-1.96; `benchmarks/eta_replay.py`): the default grid runs regime by regime, so instruction
tuning and DPO, 4-7x sft's seconds a step, used to be priced at sft's pace until their own trials
finished. Counting every cell alike reads 0.70 and 0.85 there (0.53-1.14, 0.67-1.33): in a phase of
training trials only, this model's median is closer and its spread wider; it is kept for the phases
that mix quick in-context cells with training cells, where counting promised the end minutes early.
ETA = trial time x (expected cost of the cells left) / (cost of the cells done), where trial time runs
from the first trial's start (not the run's: the minutes a model pretrains before its first trial
said nothing about the trials' pace, and counting them once made a run's first in-context cell
promise 16 hours): a run whose quick in-context cells finish first no longer promises the end while
its training cells are still ahead.
"""

from __future__ import annotations

import statistics
import sys
import threading
import time

from ray.tune import Callback

# a guess (seconds on 2 cores) before any cell of a kind finishes; measured means replace it
IN_CONTEXT_S, TRAIN_FIXED_S, STEP_S_PER_M, STEP_FIXED_M = 2.0, 2.0, 0.02, 0.04
WORLD_HELDOUT = 8  # held-out tasks of the quick world: one adaptation each
SINGLE_TASK = ("sft", "prompt_tuning")  # regimes adapting one model per task


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def say(message: str) -> None:
    print(f"[fsv] {message}", file=sys.stderr, flush=True)


def params_m(model: str) -> float:
    """Millions of parameters of a ladder model (12 L d^2), or 100 for a named checkpoint."""
    from fsv.models.ladder import LADDER

    size = LADDER.get(model)
    return 12 * size.n_layers * size.d_model**2 / 1e6 if size else 100.0


def longest(cell: dict) -> int:
    """A training cell's steps (the longest of its training lengths)."""
    steps = (cell.get("settings") or {}).get("steps") or 0
    return max(steps) if isinstance(steps, (list, tuple)) else steps


def adaptations(cell: dict) -> int:
    """Models a training cell adapts: one per n level and seed, and on the world one per held-out
    task for the regimes that adapt to a single task (sft, prompt tuning). A multi-task regime
    (instruction tuning, rlhf) trains one model per n and seed on all its tasks: counting its 32
    tasks as 32 models made a fresh study's ETA read 3h40m with 35 min of trials left."""
    per_task = WORLD_HELDOUT if cell.get("world") and cell["regime"] in SINGLE_TASK else 1
    return len(cell.get("n_levels") or [1]) * len(cell.get("seeds") or [1]) * per_task


def kind(cell: dict) -> tuple:
    if cell.get("train") is None:
        return ("in-context", cell["regime"], cell["model"], cell.get("k"))
    return ("training", cell["regime"], cell["model"], longest(cell), adaptations(cell))


def guess(cell: dict) -> float:
    """Expected seconds of a cell before any of its kind is measured."""
    size = params_m(cell["model"])
    evaluate = IN_CONTEXT_S * (1 + size / 10) * (1 + (cell.get("k") or 0) / 16)
    if cell.get("train") is None:
        return evaluate
    batch = (cell.get("settings") or {}).get("batch") or 8
    return TRAIN_FIXED_S + longest(cell) * adaptations(cell) * batch / 8 * STEP_S_PER_M * (STEP_FIXED_M + size) + evaluate


class CostModel:
    """Expected seconds per cell by kind, corrected by the measured durations of finished cells."""

    def __init__(self):
        self.measured: dict[tuple, list[float]] = {}
        self.guesses: dict[tuple, float] = {}

    def add(self, cell: dict, seconds: float) -> None:
        self.measured.setdefault(kind(cell), []).append(seconds)
        self.guesses[kind(cell)] = guess(cell)

    def cost(self, cell: dict) -> float:
        key = kind(cell)
        if key in self.measured:
            return statistics.mean(self.measured[key])
        ratios = {k: statistics.mean(v) / self.guesses[k] for k, v in self.measured.items()}
        similar = ([r for k, r in ratios.items() if k[:2] == key[:2]] or [r for k, r in ratios.items() if k[0] == key[0]]
                   or list(ratios.values()))  # its regime, else its family, else this machine's pace
        return guess(cell) * (statistics.median(similar) if similar else 1.0)


class Progress(Callback):
    def __init__(self, cells: list[dict]):
        self.cells = {c["cell_id"]: c for c in cells}
        self.total, self.done, self.failed = len(cells), 0, 0
        self.finished: set[str] = set()
        self.begun: dict[str, float] = {}
        self.costs = CostModel()
        self.started = time.time()
        self.first_start: float | None = None  # the first trial's start: the ETA's clock
        self.tty = sys.stderr.isatty()
        self._last_decile = -1

    say = staticmethod(say)

    def on_trial_start(self, iteration, trials, trial, **info):
        self.begun[trial.config["cell_id"]] = time.time()
        self.first_start = self.first_start or time.time()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if result.get("status_ok") == 0:
            self.failed += 1

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._finish(trial.config["cell_id"])

    def on_trial_error(self, iteration, trials, trial, **info):
        self.failed += 1
        self._finish(trial.config["cell_id"])

    def _finish(self, cell_id: str) -> None:
        self.done += 1
        self.finished.add(cell_id)
        if cell_id in self.begun:
            self.costs.add(self.cells[cell_id], time.time() - self.begun[cell_id])
        self._show()

    def eta(self) -> float | None:
        done = sum(self.costs.cost(self.cells[c]) for c in self.finished)
        left = sum(self.costs.cost(c) for cid, c in self.cells.items() if cid not in self.finished)
        if done <= 0 or self.first_start is None:
            return None
        return (time.time() - self.first_start) * left / done

    def phases(self) -> str:
        """'select 3/10, measure 5/40' (cells without a phase are measured); one phase: 'measure' only."""
        counts: dict[str, list[int]] = {}
        for cid, cell in self.cells.items():
            entry = counts.setdefault(cell.get("phase") or "measure", [0, 0])
            entry[0] += cid in self.finished
            entry[1] += 1
        return ", ".join(f"{p} {d}/{t}" for p, (d, t) in sorted(counts.items(), key=lambda kv: kv[0] != "select"))

    def line(self) -> str:
        eta = self.eta()
        return (f"[fsv] {self.done}/{self.total} cells done ({self.phases()}), {self.failed} failed, "
                f"elapsed {_clock(time.time() - self.started)}, ETA {_clock(eta) if eta is not None else '?'}")

    def _show(self) -> None:
        if self.tty:
            end = "\n" if self.done == self.total else ""
            print("\r" + self.line(), end=end, file=sys.stderr, flush=True)
            return
        decile = self.done * 10 // max(1, self.total)
        if decile != self._last_decile or self.done == self.total:
            self._last_decile = decile
            print(self.line(), file=sys.stderr, flush=True)


class PretrainProgress:
    """While ladder models pretrain: a line of steps done / total per model, from the step board
    the pretraining workers report to (`fsv.train.steps`); every second on a terminal, every 30 s
    in a log."""

    def __init__(self, every_s: float | None = None):
        self.every_s = every_s or (1.0 if sys.stderr.isatty() else 30.0)
        self.stop_event = threading.Event()

    def __enter__(self):
        from fsv.train.steps import start_board

        self.board = start_board()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        import ray

        self.stop_event.set()
        self.thread.join()
        if sys.stderr.isatty():
            print(file=sys.stderr)
        ray.kill(self.board)

    def line(self) -> str:
        import ray

        steps = ray.get(self.board.get.remote())
        return "[fsv] pretraining: " + (", ".join(f"{label} {s}/{t}" for label, (s, t) in sorted(steps.items()))
                                        or "starting")

    def _loop(self) -> None:
        """Print the line when it changed: once every model is pretrained, the trials' line takes over."""
        last = None
        while not self.stop_event.wait(self.every_s):
            line = self.line()
            if line != last:
                print(("\r" if sys.stderr.isatty() else "") + line, end="" if sys.stderr.isatty() else "\n",
                      file=sys.stderr, flush=True)
            last = line
