"""Where a run stands: ``Progress`` (epoch, step, best fitness, the early stopper, the epoch's train-loss sums, the
results rows) is the training loop's state besides the ``TrainState``, and exactly the checkpoint's metadata:
``Progress.from_meta(ckpt.read_meta(), config).to_meta()`` gives the metadata back, so a run killed at any step
resumes where it stood.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from yolojax import config as cfgmod


class EarlyStopping:
    """Stop when fitness has not improved for ``patience`` epochs (v8: ties count as improvement)."""

    def __init__(self, patience: int, compat: str = "v8"):
        self.patience = patience or float("inf")
        self.best_fitness, self.best_epoch, self.compat = 0.0, 0, compat

    def __call__(self, epoch: int, fitness: float | None) -> bool:
        if fitness is None:
            return False
        improved = fitness >= self.best_fitness if self.compat == "v8" else (fitness > self.best_fitness
                                                                             or self.best_fitness == 0)
        if improved:
            self.best_epoch, self.best_fitness = epoch, fitness
        return (epoch - self.best_epoch) >= self.patience

    def possible_stop(self, epoch: int) -> bool:
        return (epoch - self.best_epoch) >= self.patience - 1

    def stopped_early(self, epoch: int) -> bool:
        """Whether the stop after ``epoch`` (0-based, finished) is patience's."""
        return self.patience != float("inf") and (epoch + 1 - self.best_epoch) >= self.patience

    def state(self) -> dict:
        return {"best_fitness": self.best_fitness, "best_epoch": self.best_epoch}

    def load(self, s: dict) -> None:
        self.best_fitness, self.best_epoch = float(s["best_fitness"]), int(s["best_epoch"])


@dataclasses.dataclass
class Progress:
    """The loop's progress. ``epoch`` is 0-based; ``step_in_epoch`` batches of it are done (``num_batches``: the
    epoch is trained, its validation and row included). ``loss_sum`` / ``loss_count``: the epoch's train-loss
    sums (one per loss name of the task) over its steps so far. ``results``: one row per finished epoch.
    ``close_mosaic_epoch``: the epoch mosaic closes at, as the run planned it (None: never)."""

    config: Any
    stopper: EarlyStopping
    epoch: int = 0
    step_in_epoch: int = 0
    best_fitness: float | None = None
    loss_sum: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))
    loss_count: int = 0
    results: list[dict] = dataclasses.field(default_factory=list)
    close_mosaic_epoch: int | None = None
    finished: bool = False

    @classmethod
    def start(cls, config, n_losses: int, close_mosaic_epoch: int | None = None) -> "Progress":
        """A new run's progress."""
        return cls(config, EarlyStopping(int(config.patience or 0), config.compat), loss_sum=np.zeros(n_losses),
                   close_mosaic_epoch=close_mosaic_epoch)

    def to_meta(self) -> dict:
        """The checkpoint's metadata (plain JSON values)."""
        return {"epoch": self.epoch, "step_in_epoch": self.step_in_epoch, "best_fitness": self.best_fitness,
                "close_mosaic_epoch": self.close_mosaic_epoch, "stopper": self.stopper.state(),
                "results": self.results, "tloss_sum": list(map(float, self.loss_sum)),
                "tloss_count": int(self.loss_count), "config": cfgmod.to_plain(self.config),
                "finished": bool(self.finished),
                "data_iterator": {"epoch": self.epoch, "step": self.step_in_epoch}}

    @classmethod
    def from_meta(cls, meta: dict, config, close_mosaic_epoch: int | None = None) -> "Progress":
        """The progress a checkpoint's ``meta`` stored, continued under ``config`` (the resumed run's: patience
        may differ). ``close_mosaic_epoch`` applies when the metadata predates the key."""
        stopper = EarlyStopping(int(config.patience or 0), config.compat)
        stopper.load(meta["stopper"])
        return cls(config, stopper, epoch=int(meta["epoch"]), step_in_epoch=int(meta["step_in_epoch"]),
                   best_fitness=meta.get("best_fitness"), loss_sum=np.asarray(meta["tloss_sum"], float),
                   loss_count=int(meta["tloss_count"]), results=list(meta["results"]),
                   close_mosaic_epoch=meta.get("close_mosaic_epoch", close_mosaic_epoch),
                   finished=bool(meta.get("finished", False)))

    def record_fitness(self, fitness: float | None) -> bool:
        """Whether ``fitness`` (None: not validated) is the best so far (v8: also after a best of exactly 0);
        if so it becomes ``best_fitness``."""
        best = self.best_fitness
        if fitness is None or not (best is None or best < fitness or (self.config.compat == "v8" and best == 0)):
            return False
        self.best_fitness = fitness
        return True

    def next_epoch(self) -> None:
        """Move to the start of the next epoch: its loss sums start at zero."""
        self.epoch, self.step_in_epoch = self.epoch + 1, 0
        self.loss_sum, self.loss_count = np.zeros_like(self.loss_sum), 0
