"""The run's built-in callbacks: Ultralytics event names -> functions of a ``yolojax.report.events.TrainEvent``.

Only process 0 attaches them. ``RunReporter`` writes TensorBoard events (every results.csv scalar per epoch,
images/s, per-iteration losses and learning rates, sample pictures) and, with ``plots=True``, the Ultralytics
pictures. It reads nothing but the events' fields. Everything slow (device reads, drawing, event encoding) runs
on the one background thread of an ``AsyncWriter``: a callback only copies the host data it needs (a few small
arrays) and queues a job, so the train step never waits for matplotlib. ``on_train_end`` waits for the queue, so
every file exists when training returns. A failing picture is reported as a warning and never stops a run.
"""
from __future__ import annotations

import functools
import pathlib
import sys
from typing import Any, Callable, Mapping

import numpy as np

from yolojax.report import plots
from yolojax.report.results import read_results_csv
from yolojax.report.writers import AsyncWriter, MetricWriter, MultiWriter, TensorBoardWriter

LR_KEYS = ("lr/pg0", "lr/pg1", "lr/pg2")
TRAIN_BATCH_PLOTS = 3  # train_batch pictures of the first iterations (and again when mosaic closes)


def default_callbacks(config) -> dict[str, list]:
    """Callbacks every training run gets (monitoring, plots) on process 0; ``{}`` elsewhere.

    TensorBoard is on unless ``config.tensorboard`` is False (or tensorboardX is missing); pictures follow
    ``config.plots``."""
    import jax

    if jax.process_index() != 0:
        return {}
    reporter = RunReporter(tensorboard=bool(_get(config, "tensorboard", True)), plots=bool(_get(config, "plots", True)),
                           log_every=int(_get(config, "log_every", 10) or 10))
    return reporter.callbacks()


def _get(config, key, default):
    try:
        return config.get(key, default)
    except AttributeError:
        return getattr(config, key, default)


def loss_keys(metrics: Mapping[str, Any]) -> tuple[str, ...]:
    """The per-item losses among a train step's metrics (``box_loss``, ``cls_loss``, ``dfl_loss`` for detection);
    a task whose step reports only a total gives ``("loss",)``."""
    items = tuple(k for k in metrics if k.endswith("_loss"))
    return items or tuple(k for k in metrics if k == "loss")


class RunReporter:
    """TensorBoard + pictures for one run; ``callbacks()`` maps event names to its bound methods."""

    def __init__(self, *, tensorboard: bool = True, plots: bool = True, log_every: int = 10):
        self.want_tb, self.plots, self.log_every = tensorboard, plots, max(1, int(log_every))
        self.save_dir: pathlib.Path | None = None
        self.names: dict[int, str] = {}
        self.queue: AsyncWriter | None = None  # TensorBoard (when on) behind the one background thread
        self.tb_on = False
        self._closing_epoch: int | None = None  # the epoch that closes mosaic, whose first batches are drawn too
        self._closing_drawn = 0
        self._images_per_second: float | None = None

    @property
    def failures(self) -> list[str]:
        return self.queue.failures if self.queue is not None else []

    def callbacks(self) -> dict[str, list[Callable]]:
        return {"on_pretrain_routine_end": [self.on_pretrain_routine_end],
                "on_train_batch_end": [self.on_train_batch_end],
                "on_train_epoch_end": [self.on_train_epoch_end],
                "on_fit_epoch_end": [self.on_fit_epoch_end],
                "on_train_end": [self.on_train_end]}

    def join(self) -> None:
        """Wait for every queued job, then close the writers and stop the worker."""
        if self.queue is not None:
            self.queue.close()

    # ------------------------------------------------------------------------------------------- events

    def on_pretrain_routine_end(self, event) -> None:
        self.save_dir = pathlib.Path(event.save_dir)
        self.names = dict(event.names)
        writers: list[MetricWriter] = []
        if self.want_tb:
            try:
                writers.append(TensorBoardWriter(self.save_dir))
                print(f"TensorBoard: start with 'tensorboard --logdir {self.save_dir.parent}', view at "
                      "http://localhost:6006/", flush=True)
            except ImportError as e:
                _warn(f"TensorBoard logging is off: {e}. Install tensorboardX to enable it.")
        self.queue = AsyncWriter(MultiWriter(writers))
        self.tb_on = bool(writers)
        close_mosaic = int(_get(event.config, "close_mosaic", 0) or 0)
        closing = int(event.epochs) - close_mosaic
        self._closing_epoch = closing if close_mosaic > 0 and 0 < closing < int(event.epochs) else None
        if self.plots and event.task == "detect" and event.train_labels is not None:  # boxes per image
            labels = [np.array(lb, np.float32) for lb in event.train_labels]
            self.queue.call("labels.jpg", plots.plot_labels, self.save_dir / "labels.jpg", labels, dict(self.names))

    def on_train_batch_end(self, event) -> None:
        step = int(event.step)
        if self.plots and event.task == "detect" and event.batch is not None and self._draws_batch(event):
            batch = {k: np.array(v) for k, v in event.batch.items()}
            self.queue.call(f"train_batch{step}.jpg", self._draw_train_batch, step, batch)
        m = event.batch_metrics
        if self.tb_on and m is not None and step % self.log_every == 0:
            # Device values go to the writer's thread, which waits for them there: the loop never blocks on a read.
            losses = {f"train_iter/{k}": m[k] for k in loss_keys(m)}
            lrs = {f"train_iter/{k.replace('/', '_')}": m[k] for k in LR_KEYS if k in m}
            self.queue.write_scalars(step, {**losses, **lrs})

    def _draws_batch(self, event) -> bool:
        """Ultralytics' train_batch pictures: the run's first iterations, and the first of the epoch that closes
        mosaic (to show what the last epochs' batches look like)."""
        if int(event.step) < TRAIN_BATCH_PLOTS:
            return True
        if event.epoch == self._closing_epoch and self._closing_drawn < TRAIN_BATCH_PLOTS:
            self._closing_drawn += 1
            return True
        return False

    def on_train_epoch_end(self, event) -> None:
        self._images_per_second = float(event.images_per_second)

    def on_fit_epoch_end(self, event) -> None:
        row = dict(event.row or {})
        epoch = int(row.pop("epoch", event.epoch + 1))
        if self._images_per_second is not None:
            row["speed/images_per_second"] = self._images_per_second
        if self.tb_on:
            self.queue.write_scalars(epoch, row)

    def on_train_end(self, event) -> None:
        try:
            self._final_pictures(event)
        finally:
            self.join()

    # ------------------------------------------------------------------------------------------- jobs

    def _draw_train_batch(self, step: int, batch: dict) -> None:
        grid = plots.plot_train_batch(self.save_dir / f"train_batch{step}.jpg", batch, self.names)
        self.queue.writer.write_images(step, {f"train_batch{step}": grid})  # on the writer's thread already

    def _draw_val_batch(self, k: int, batch: dict, pred: dict, step: int) -> None:
        grid = plots.plot_val_batch(self.save_dir, k, batch, pred, self.names)
        self.queue.writer.write_images(step, {f"val_batch{k}_pred": grid})

    def _final_pictures(self, event) -> None:
        if not self.plots or self.save_dir is None:
            return
        csv = self.save_dir / "results.csv"
        if csv.is_file():
            self.queue.call("results.png", lambda: plots.plot_results(self.save_dir / "results.png",
                                                                      read_results_csv(csv)))
        val = event.final if event.final is not None else event.val
        if val is None or event.task != "detect":  # the classification pictures: ClassificationTask's
            return
        last_epoch = int((event.row or {}).get("epoch", event.epochs))
        for k, fb in enumerate(val.first_batches):
            b, p = fb["batch"], fb["pred"]
            valid = np.asarray(b.get("image_valid", np.ones(len(b["images"]), bool)), bool)
            batch = {key: np.array(b[key])[valid] for key in ("images", "boxes", "classes", "mask")}
            pred = {key: np.array(p[key])[valid] for key in ("boxes", "scores", "classes", "valid")}
            self.queue.call(f"val_batch{k} pictures", self._draw_val_batch, k, batch, pred, last_epoch)
        cm = getattr(val.accumulator, "confusion_matrix", None)
        if cm is not None:
            matrix = np.array(cm.matrix)
            for normalize, name in ((False, "confusion_matrix.png"), (True, "confusion_matrix_normalized.png")):
                self.queue.call(name, functools.partial(plots.plot_confusion_matrix, normalize=normalize),
                                self.save_dir / name, matrix, dict(self.names))
        stats = {k: np.array(v) for k, v in val.accumulator.stats().items()}
        self.queue.call("PR/F1/P/R curves", lambda: plots.plot_detection_curves(
            self.save_dir, plots.detection_curves(val.metrics, stats, self.names)))


def _warn(msg: str) -> None:
    print(f"WARNING: {msg}", file=sys.stderr, flush=True)
