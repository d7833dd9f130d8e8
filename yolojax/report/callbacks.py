"""The run's built-in callbacks (Ultralytics event names -> functions of a ``yolojax.report.events.TrainEvent``).

Only process 0 attaches them. ``RunReporter`` writes TensorBoard events (every results.csv scalar per
epoch, images/s, per-iteration losses and learning rates, sample pictures) and, with ``plots=True``, the
Ultralytics pictures. Everything slow (device reads, drawing, event encoding) runs on one
background worker thread: a callback only copies the host data it needs (a few small arrays) and queues a
job, so the train step is never waiting on matplotlib. ``on_train_end`` waits for the queue, so every file
exists when ``train_and_evaluate`` returns. A failing picture is reported as a warning and never stops a
run.
"""
from __future__ import annotations

import concurrent.futures
import functools
import pathlib
import sys
import traceback
from typing import Callable

import numpy as np

LOSS_KEYS = ("box_loss", "cls_loss", "dfl_loss")
LR_KEYS = ("lr/pg0", "lr/pg1", "lr/pg2")
TRAIN_BATCH_PLOTS = 3  # train_batch0..2.jpg: the first iterations (and again after close_mosaic)


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


def _host_scalar(x) -> float:
    """A replicated device scalar as a float; on multi-host runs only this process's copy is read (a global
    array that is not fully addressable cannot be fetched whole)."""
    if getattr(x, "is_fully_addressable", True) is False:
        x = x.addressable_data(0)
    return float(np.asarray(x))


def _warn(msg: str) -> None:
    print(f"WARNING: {msg}", file=sys.stderr, flush=True)


class RunReporter:
    """TensorBoard + pictures for one run; ``callbacks()`` maps event names to its bound methods."""

    def __init__(self, *, tensorboard: bool = True, plots: bool = True, log_every: int = 10):
        self.want_tb, self.plots, self.log_every = tensorboard, plots, max(1, int(log_every))
        self.tb = None
        self.save_dir: pathlib.Path | None = None
        self.names: dict[int, str] = {}
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._jobs: list[concurrent.futures.Future] = []
        self._close_epoch: int | None = None  # the epoch mosaic closes at (its first batches are drawn too)
        self._close_step: int | None = None
        self._images_per_second: float | None = None
        self.failures: list[str] = []

    def callbacks(self) -> dict[str, list[Callable]]:
        return {"on_pretrain_routine_end": [self.on_pretrain_routine_end],
                "on_train_batch_end": [self.on_train_batch_end],
                "on_train_epoch_end": [self.on_train_epoch_end],
                "on_fit_epoch_end": [self.on_fit_epoch_end],
                "on_train_end": [self.on_train_end]}

    # ------------------------------------------------------------------------------------------- plumbing

    def _submit(self, what: str, fn: Callable, *args) -> None:
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="yolojax-report")
        self._jobs = [j for j in self._jobs if not j.done()]
        self._jobs.append(self._pool.submit(self._run, what, fn, *args))

    def _run(self, what: str, fn: Callable, *args) -> None:
        try:
            fn(*args)
        except Exception as e:  # noqa: BLE001 - a picture must never stop training
            self.failures.append(f"{what}: {e!r}")
            _warn(f"{what} failed: {e!r}\n{traceback.format_exc(limit=3)}")

    def join(self) -> None:
        """Wait for every queued job, then stop the worker."""
        if self._pool is not None:
            concurrent.futures.wait(self._jobs)
            self._pool.shutdown(wait=True)
            self._pool, self._jobs = None, []

    def _tb(self, fn: Callable[..., None], *args) -> None:
        """Queue a TensorBoard write (``fn`` uses ``self.tb``), when TensorBoard is on."""
        if self.tb is not None:
            self._submit("TensorBoard", fn, *args)

    # ------------------------------------------------------------------------------------------- events

    def on_pretrain_routine_end(self, ctx) -> None:
        self.save_dir = pathlib.Path(ctx.save_dir)
        self.names = dict(ctx.names)
        if self.want_tb:
            try:
                from yolojax.report.tensorboard import TensorBoardLogger

                self.tb = TensorBoardLogger(self.save_dir)
                print(f"TensorBoard: start with 'tensorboard --logdir {self.save_dir.parent}', view at "
                      "http://localhost:6006/", flush=True)
            except ImportError as e:
                _warn(f"TensorBoard logging is off: {e}. Install tensorboardX to enable it.")
        # the first iterations, and again the first of the epoch mosaic closes at (what the last epochs look like)
        close_mosaic = int(_get(ctx.config, "close_mosaic", 0) or 0)
        close_at = int(ctx.epochs) - close_mosaic if close_mosaic > 0 else None
        self._close_epoch = close_at if close_at is not None and 0 < close_at < int(ctx.epochs) else None
        if self.plots and ctx.train_labels is not None:
            from yolojax.report import plots

            labels = [np.array(lb, np.float32) for lb in ctx.train_labels]
            self._submit("labels.jpg", plots.plot_labels, self.save_dir / "labels.jpg", labels, dict(self.names))

    def on_train_batch_end(self, ctx) -> None:
        step = int(ctx.step)
        if self._close_step is None and self._close_epoch is not None and int(ctx.epoch) >= self._close_epoch:
            self._close_step = step
        plot = step < TRAIN_BATCH_PLOTS or (self._close_step is not None
                                           and step < self._close_step + TRAIN_BATCH_PLOTS)
        if self.plots and plot and ctx.batch is not None:
            keys = ("images", "boxes", "classes", "mask", "hsv_tables", "hsv_to_rgb", "sources", "warp_tiles",
                    "warp_cols", "warp_rows")
            batch = {k: np.array(ctx.batch[k]) for k in keys if k in ctx.batch}
            self._submit(f"train_batch{step}.jpg", self._draw_train_batch, step, batch)
        m = ctx.batch_metrics
        if self.tb is not None and m is not None and step % self.log_every == 0:
            # Device arrays go to the worker, which waits for them there: the loop never blocks on a read.
            picked = {k: m[k] for k in (*LOSS_KEYS, *LR_KEYS) if k in m}
            self._tb(self._log_iteration, picked, step)

    def on_train_epoch_end(self, ctx) -> None:
        self._images_per_second = float(ctx.images_per_second)

    def on_fit_epoch_end(self, ctx) -> None:
        row = dict(ctx.row or {})
        epoch = int(row.pop("epoch", ctx.epoch + 1))
        if self._images_per_second is not None:
            row["speed/images_per_second"] = self._images_per_second
        self._tb(lambda: self.tb.scalars(row, epoch))

    def on_train_end(self, ctx) -> None:
        try:
            self._final_pictures(ctx)
        finally:
            if self.tb is not None:
                self._submit("TensorBoard close", self.tb.close)
            self.join()
            self.tb = None

    # ------------------------------------------------------------------------------------------- jobs

    def _log_iteration(self, picked: dict, step: int) -> None:
        values = {(f"train_iter/{k}" if k in LOSS_KEYS else f"train_iter/{k.replace('/', '_')}"): _host_scalar(v)
                  for k, v in picked.items()}
        self.tb.scalars(values, step)

    def _draw_train_batch(self, step: int, batch: dict) -> None:
        from yolojax.data.augment import apply_hsv_tables, render_warp_plan
        from yolojax.report import plots

        images = batch.get("images")
        if "warp_tiles" in batch:  # the train step composes the images: draw the same plans with OpenCV here
            # (this worker thread stays off JAX, which the training loop is using)
            images = [render_warp_plan(batch["sources"], *plan)
                      for plan in zip(batch["warp_tiles"], batch["warp_cols"], batch["warp_rows"])]
        if "hsv_to_rgb" in batch:  # the jitter (or only the channel order) is the train step's: the same here
            tables = batch.get("hsv_tables", [None] * len(images))
            images = np.stack([apply_hsv_tables(im, t, bool(rgb))
                               for im, t, rgb in zip(images, tables, batch["hsv_to_rgb"])])
        grid = plots.plot_batch(self.save_dir / f"train_batch{step}.jpg", images, batch["boxes"],
                                batch["classes"], batch["mask"], self.names)
        if self.tb is not None:
            self.tb.image(f"train_batch{step}", grid, step)

    def _final_pictures(self, ctx) -> None:
        from yolojax.report import plots
        from yolojax.report.results import read_results_csv

        if not self.plots or self.save_dir is None:
            return
        csv = self.save_dir / "results.csv"
        if csv.is_file():
            self._submit("results.png", lambda: plots.plot_results(self.save_dir / "results.png",
                                                                   read_results_csv(csv)))
        val = ctx.final if ctx.final is not None else ctx.val
        if val is None:
            return
        last_epoch = int((ctx.row or {}).get("epoch", ctx.epochs))
        for k, fb in enumerate(val.first_batches):
            b, p = fb["batch"], fb["pred"]
            valid = np.asarray(b.get("image_valid", np.ones(len(b["images"]), bool)), bool)
            batch = {key: np.array(b[key])[valid] for key in ("images", "boxes", "classes", "mask")}
            pred = {key: np.array(p[key])[valid] for key in ("boxes", "scores", "classes", "valid")}
            self._submit(f"val_batch{k} pictures", self._draw_val_batch, k, batch, pred, last_epoch)
        cm = getattr(val.accumulator, "confusion_matrix", None)
        if cm is not None:
            matrix = np.array(cm.matrix)
            for normalize, name in ((False, "confusion_matrix.png"), (True, "confusion_matrix_normalized.png")):
                self._submit(name, functools.partial(plots.plot_confusion_matrix, normalize=normalize),
                             self.save_dir / name, matrix, dict(self.names))
        stats = {k: np.array(v) for k, v in val.accumulator.stats().items()}
        self._submit("PR/F1/P/R curves", lambda: plots.plot_detection_curves(
            self.save_dir, plots.detection_curves(val.metrics, stats, self.names)))

    def _draw_val_batch(self, k: int, batch: dict, pred: dict, step: int) -> None:
        from yolojax.report import plots

        plots.plot_batch(self.save_dir / f"val_batch{k}_labels.jpg", batch["images"], batch["boxes"],
                         batch["classes"], batch["mask"], self.names)
        grid = plots.plot_batch(self.save_dir / f"val_batch{k}_pred.jpg", batch["images"], pred["boxes"],
                                pred["classes"], pred["valid"], self.names, scores=pred["scores"])
        if self.tb is not None:
            self.tb.image(f"val_batch{k}_pred", grid, step)
