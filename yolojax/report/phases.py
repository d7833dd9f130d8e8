"""Where a training run's time goes: wall-clock seconds per phase, per epoch and per run.

``PhaseTimer`` only reads a host clock: it never waits for a device. The train step is dispatched
asynchronously, so what the loop measures is where the *host* waits. The trainer defines the phases so that
they tile its epoch loop (see ``yolojax.train``): ``data`` is the time spent waiting for the next batch,
``step`` the time dispatching steps plus the wait for the epoch's last step to finish (device time that
did not overlap with the data wait), ``compile`` the first call of each new step shape; the rest are the
epoch-end phases, each timed around its own call.
"""
from __future__ import annotations

import contextlib
import time
from typing import Callable, Iterator

# Every phase the trainer reports, in the order of an epoch; the labels are what the table and the line print.
PHASES = {
    "data": "waiting for data",
    "step": "train step (dispatch + wait)",
    "compile": "compiling the train step",
    "val_data": "validation: loading",
    "val_forward": "validation: forward + NMS",
    "val_matching": "validation: matching",
    "val_metrics": "validation: AP metrics",
    "checkpoint": "checkpoint",
    "export": "weight export (.npz)",
    "report": "results.csv, TensorBoard, plots",
    "final_val": "final validation",
}


class PhaseTimer:
    """Seconds per phase, for the current epoch and for the whole run.

    ``with timer.phase("step"): ...`` or ``timer.add("step", seconds)`` accumulate; ``end_epoch()`` folds
    the epoch's totals into the run's and starts a new epoch. ``clock`` (default ``time.perf_counter``) is
    injectable for tests. Unknown phase names are an error, so a typo cannot hide time."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter):
        self.clock = clock
        self.epoch: dict[str, float] = dict.fromkeys(PHASES, 0.0)
        self.run: dict[str, float] = dict.fromkeys(PHASES, 0.0)
        self.calls: dict[str, int] = dict.fromkeys(PHASES, 0)

    def add(self, name: str, seconds: float) -> None:
        if name not in PHASES:
            raise KeyError(f"unknown phase {name!r}; phases are {tuple(PHASES)}")
        self.epoch[name] += float(seconds)
        self.calls[name] += 1

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        t0 = self.clock()
        try:
            yield
        finally:
            self.add(name, self.clock() - t0)

    def end_epoch(self) -> dict[str, float]:
        """The finished epoch's seconds per phase (added to the run's totals); the next epoch starts at zero."""
        done = self.epoch
        for k, v in done.items():
            self.run[k] += v
        self.epoch = dict.fromkeys(PHASES, 0.0)
        return done

    def totals(self) -> dict[str, float]:
        """The run's seconds per phase, the current (unfinished) epoch included."""
        return {k: self.run[k] + self.epoch[k] for k in PHASES}


def phase_table(seconds: dict[str, float], wall: float, title: str) -> list[str]:
    """The per-phase table: one line per phase that took any time, with its share of ``wall`` seconds, then
    the unaccounted rest (``wall`` minus the phases, never negative)."""
    lines = [f"{title}: {wall:.2f}s", f"{'phase':>34s} {'seconds':>9s} {'share':>7s}"]
    for k, label in PHASES.items():
        if seconds.get(k, 0.0) > 0:
            lines.append(f"{label:>34s} {seconds[k]:9.3f} {100 * seconds[k] / max(wall, 1e-9):6.1f}%")
    rest = max(wall - sum(seconds.values()), 0.0)
    lines.append(f"{'other':>34s} {rest:9.3f} {100 * rest / max(wall, 1e-9):6.1f}%")
    return lines


def summary_line(seconds: dict[str, float], wall: float) -> str:
    """One line for the run: ``Time: 41.0s total, data 1.2s, step 30.1s, ... other 0.3s``."""
    parts = [f"{k} {v:.1f}s" for k, v in seconds.items() if v > 0]
    rest = max(wall - sum(seconds.values()), 0.0)
    return f"Time: {wall:.1f}s total, " + ", ".join([*parts, f"other {rest:.1f}s"])
