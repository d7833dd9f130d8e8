"""A training run's pictures (``plots=True``): train_batchN.jpg, labels.jpg, results.png and the final validation's.

The loop calls ``RunPictures`` with what each picture needs; every picture is drawn on the one background thread of
the run's ``AsyncWriter`` (``yolojax.report.writers``), which also writes them to TensorBoard, so the train step
never waits for matplotlib or OpenCV. A call copies the host data it is given before queueing, so the loop may
reuse its buffers at once. A failing picture is one warning line (the ``AsyncWriter``'s) and never stops a run.
What a picture shows is the task's (``batch_picture``, ``validation_pictures``); which pictures a run draws, and
when, is Ultralytics' rule, the same for every task.
"""
from __future__ import annotations

import pathlib
from typing import Any, Mapping, Sequence

import numpy as np

from yolojax.report import plots
from yolojax.report.results import read_results_csv
from yolojax.report.writers import AsyncWriter

TRAIN_BATCH_PICTURES = 3  # train_batch pictures of the run's first iterations, and of the epoch that closes mosaic


def draws_train_batch(step: int, batches_per_epoch: int, close_mosaic_epoch: int | None) -> bool:
    """Whether global iteration ``step`` (0-based) gets a train_batch picture: the run's first
    ``TRAIN_BATCH_PICTURES`` iterations, and as many from the start of epoch ``close_mosaic_epoch`` (0-based; None:
    mosaic never closes), which shows what the last epochs' batches look like."""
    if step < TRAIN_BATCH_PICTURES:
        return True
    if close_mosaic_epoch is None:
        return False
    first = close_mosaic_epoch * batches_per_epoch
    return first <= step < first + TRAIN_BATCH_PICTURES


class RunPictures:
    """The pictures of one run, written under ``save_dir`` and, as RGB images, to ``board.writer``.

    ``task`` gives what is task-specific (``yolojax.engine.task.Task.batch_picture`` and ``.validation_pictures``);
    ``names`` are the dataset's class names."""

    def __init__(self, board: AsyncWriter, task: Any, names: Mapping[int, str], save_dir):
        self.board, self.task, self.names = board, task, dict(names)
        self.save_dir = pathlib.Path(save_dir)

    def labels(self, labels: Sequence[np.ndarray] | None) -> None:
        """labels.jpg from the training set's per-image (n, 5) rows ``class, x, y, w, h`` (None: no picture)."""
        if labels is None:
            return
        rows = [np.array(lb, np.float32) for lb in labels]
        self.board.call("labels.jpg", plots.plot_labels, self.save_dir / "labels.jpg", rows, self.names)

    def train_batch(self, step: int, batch: Mapping[str, np.ndarray]) -> None:
        """train_batch{step}.jpg of a host train batch (numpy arrays), at iteration ``step`` in TensorBoard."""
        copy = {k: np.array(v) for k, v in batch.items()}
        self.board.call(f"train_batch{step}.jpg", self._draw_train_batch, step, copy)

    def final(self, csv_path, result: Any, step: int) -> None:
        """The run's last pictures: results.png from results.csv at ``csv_path`` (none when the file does not exist;
        read on the writer's thread, after every job queued before), then the task's pictures of the validation
        ``result`` (the final one; None: none), at epoch ``step`` in TensorBoard."""
        csv = pathlib.Path(csv_path)
        if csv.is_file():
            self.board.call("results.png", lambda: plots.plot_results(self.save_dir / "results.png",
                                                                      read_results_csv(csv)))
        if result is not None:
            self.board.call("validation pictures", self._draw_validation, result, step)

    # ------------------------------------------------------------------------------- on the writer's thread

    def _draw_train_batch(self, step: int, batch: dict) -> None:
        picture = self.task.batch_picture(batch, self.names)
        if picture is None:
            return
        plots.save_image(self.save_dir / f"train_batch{step}.jpg", picture)
        self.board.writer.write_images(step, {f"train_batch{step}": picture})

    def _draw_validation(self, result: Any, step: int) -> None:
        shown = self.task.validation_pictures(result, self.names, self.save_dir)
        if shown:
            self.board.writer.write_images(step, {pathlib.Path(name).stem: rgb for name, rgb in shown.items()})
