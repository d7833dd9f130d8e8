"""Metric writers: where a run's numbers and pictures go (results.csv, the console, TensorBoard).

Every writer has the same four methods (``MetricWriter``): ``write_scalars(step, {tag: value})``,
``write_images(step, {tag: RGB uint8 (H, W, 3)})``, ``flush()`` and ``close()``. What ``step`` counts is the
caller's choice per writer: the CSV is keyed by the 1-based epoch, the console by the global iteration,
TensorBoard takes both (epoch scalars at the epoch, per-iteration scalars at the iteration).

``AsyncWriter`` moves a writer's calls to one background thread (in call order), so the training loop never
waits for a file, an event encoding or a device read; a failing call is reported as one warning line and never
stops training. ``MultiWriter`` hands each call to several writers.

A training run's TensorBoard: ``open_board`` (the run's one background writer), ``iteration_scalars`` (a train
step's losses and learning rates, every ``log_every`` iterations) and ``epoch_scalars`` (the results row and the
throughput, at the 1-based epoch).
"""
from __future__ import annotations

import concurrent.futures
import pathlib
import sys
from typing import Any, Callable, Mapping, Protocol, Sequence, TextIO

import numpy as np

from yolojax.report.results import DETECT_LOSS_NAMES, CsvWriter, format_epoch_header, format_progress
from yolojax.report.tensorboard import TensorBoardLogger

__all__ = ["MetricWriter", "CsvWriter", "ConsoleWriter", "TensorBoardWriter", "AsyncWriter", "MultiWriter",
           "open_board", "iteration_scalars", "epoch_scalars"]

LR_KEYS = ("lr/pg0", "lr/pg1", "lr/pg2")  # the train step's learning rates, per parameter group


class MetricWriter(Protocol):
    """What every writer does; tags are the names the values keep in every output (``metrics/mAP50(B)``)."""

    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None: ...

    def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


class ConsoleWriter:
    """The training loop's console lines in Ultralytics' format: an epoch header, then progress lines.

    ``write_scalars(step, scalars)`` prints the progress line of global iteration ``step`` (0-based; epoch
    ``step // batches_per_epoch``): ``scalars`` holds the running mean of each of ``loss_names``, ``instances`` and
    ``gpu_mem`` (GB, default 0). On a terminal (``tty``) each line redraws the previous one (``\\r``) and the epoch's
    last line ends it; elsewhere every line ends with a newline, so the loop calls it once per epoch for a log file.
    ``epochs`` may be changed while the run goes (a time budget re-plans the run's length)."""

    def __init__(self, *, epochs: int, batches_per_epoch: int, imgsz: int,
                 loss_names: Sequence[str] = DETECT_LOSS_NAMES, tty: bool = False, stream: TextIO | None = None):
        self.epochs, self.batches_per_epoch, self.imgsz = int(epochs), max(1, int(batches_per_epoch)), int(imgsz)
        self.loss_names, self.tty, self._stream = tuple(loss_names), bool(tty), stream

    @property
    def stream(self) -> TextIO:
        return self._stream or sys.stdout  # looked up per call: a redirected stdout is honoured

    def header(self) -> None:
        print(format_epoch_header(self.loss_names), file=self.stream, flush=True)

    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        missing = [k for k in (*self.loss_names, "instances") if k not in scalars]
        if missing:
            raise KeyError(f"ConsoleWriter: the progress line needs {missing}; got {sorted(scalars)}")
        epoch, i = divmod(int(step), self.batches_per_epoch)
        losses = [float(scalars[k]) for k in self.loss_names]
        line = format_progress(epoch, self.epochs, float(scalars.get("gpu_mem", 0.0)), losses,
                               int(scalars["instances"]), self.imgsz) + f" {i + 1}/{self.batches_per_epoch}"
        done = i + 1 == self.batches_per_epoch
        print(("\r" if self.tty else "") + line, end="\n" if done or not self.tty else "", file=self.stream,
              flush=True)

    def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
        """A console shows no pictures."""

    def flush(self) -> None:
        self.stream.flush()

    def close(self) -> None:
        self.flush()


class TensorBoardWriter:
    """Scalars and images as TensorBoard events in ``log_dir`` (``yolojax.report.tensorboard``); tags kept exactly.

    Not thread-safe: give it to one thread (an ``AsyncWriter``)."""

    def __init__(self, log_dir, *, flush_secs: int = 30):
        self.logger = TensorBoardLogger(log_dir, flush_secs=flush_secs)

    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        self.logger.scalars(scalars, step)

    def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
        for tag, rgb in images.items():
            self.logger.image(tag, rgb, step)

    def flush(self) -> None:
        self.logger.flush()

    def close(self) -> None:
        self.logger.close()


class MultiWriter:
    """Each call goes to every writer, in order; a writer that raises does not starve the ones after it (the first
    error is raised once all were called)."""

    def __init__(self, writers: Sequence[MetricWriter]):
        self.writers = list(writers)

    def _each(self, method: str, *args) -> None:
        error = None
        for w in self.writers:
            try:
                getattr(w, method)(*args)
            except Exception as e:  # noqa: BLE001 - re-raised below, after the other writers
                error = error or e
        if error is not None:
            raise error

    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        self._each("write_scalars", step, scalars)

    def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
        self._each("write_images", step, images)

    def flush(self) -> None:
        self._each("flush")

    def close(self) -> None:
        self._each("close")


def host_value(x: Any) -> Any:
    """A device or NumPy scalar as a float (waits for the device); anything that is not a number is returned as is.
    On multi-host runs only this process's copy of a replicated array is read (a global array that is not fully
    addressable cannot be fetched whole)."""
    if getattr(x, "is_fully_addressable", True) is False:
        x = x.addressable_data(0)
    try:
        return float(np.asarray(x))
    except (TypeError, ValueError):
        return x


class AsyncWriter:
    """``writer``'s calls, run in call order on one background thread.

    A call only copies its arguments (a mapping's items, images as NumPy arrays) and queues a job, so the caller
    never waits: scalar values may be device arrays, read on the worker (``host_value``). ``call(what, fn, ...)``
    queues any other job (drawing a picture) on the same thread, in the same order; such a job may use
    ``self.writer`` directly. A failing job is recorded in ``failures`` and reported by one warning line the first
    time each ``what`` fails; it never raises into the caller. ``flush()`` waits for every queued job, then
    flushes the writer; ``close()`` also closes it and stops the thread."""

    def __init__(self, writer: MetricWriter):
        self.writer = writer
        self.failures: list[str] = []
        self._warned: set[str] = set()
        self._pool: concurrent.futures.ThreadPoolExecutor | None = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="yolojax-writer")
        self._pending: list[concurrent.futures.Future] = []

    def call(self, what: str, fn: Callable, *args, **kwargs) -> None:
        if self._pool is None:
            raise RuntimeError(f"AsyncWriter is closed: cannot queue {what}")
        self._pending = [f for f in self._pending if not f.done()]
        self._pending.append(self._pool.submit(self._run, what, fn, *args, **kwargs))

    def _run(self, what: str, fn: Callable, *args, **kwargs) -> None:
        try:
            fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - reporting must never stop training
            self.failures.append(f"{what}: {e!r}")
            if what not in self._warned:
                self._warned.add(what)
                print(f"WARNING: {what} failed: {e!r}", file=sys.stderr, flush=True)

    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        items = dict(scalars)
        self.call("write_scalars", lambda: self.writer.write_scalars(step, {k: host_value(v)
                                                                            for k, v in items.items()}))

    def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
        copies = {k: np.array(v) for k, v in images.items()}
        self.call("write_images", self.writer.write_images, step, copies)

    def wait(self) -> None:
        """Wait for every job queued so far."""
        concurrent.futures.wait(self._pending)
        self._pending = []

    def flush(self) -> None:
        self.call("flush", self.writer.flush)
        self.wait()

    def close(self) -> None:
        if self._pool is None:
            return
        self.call("close", self.writer.close)
        self.wait()
        self._pool.shutdown(wait=True)
        self._pool = None


# ----------------------------------------------------------------------------------------------- a run's TensorBoard


def open_board(log_dir, tensorboard: bool = True) -> tuple[AsyncWriter, bool]:
    """(the run's background writer, whether it writes TensorBoard). The writer wraps a ``TensorBoardWriter`` on
    ``log_dir`` when ``tensorboard`` is on and tensorboardX is installed (else one warning line, and no writer
    inside); its thread also draws the run's pictures (``yolojax.report.run_pictures``)."""
    writers: list[MetricWriter] = []
    if tensorboard:
        try:
            writers.append(TensorBoardWriter(log_dir))
            print(f"TensorBoard: start with 'tensorboard --logdir {pathlib.Path(log_dir).parent}', view at "
                  "http://localhost:6006/", flush=True)
        except ImportError as e:
            print(f"WARNING: TensorBoard logging is off: {e}. Install tensorboardX to enable it.", file=sys.stderr,
                  flush=True)
    return AsyncWriter(MultiWriter(writers)), bool(writers)


def loss_keys(metrics: Mapping[str, Any]) -> tuple[str, ...]:
    """The per-item losses among a train step's metrics (``box_loss``, ``cls_loss``, ``dfl_loss`` for detection);
    a task whose step reports only a total gives ``("loss",)``."""
    items = tuple(k for k in metrics if k.endswith("_loss"))
    return items or tuple(k for k in metrics if k == "loss")


def iteration_scalars(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """A train step's TensorBoard scalars: ``train_iter/<loss>`` for each of ``loss_keys`` and
    ``train_iter/lr_pgN`` for each learning rate. Values are passed through as they are (device arrays too: an
    ``AsyncWriter`` reads them on its thread)."""
    losses = {f"train_iter/{k}": metrics[k] for k in loss_keys(metrics)}
    return {**losses, **{f"train_iter/{k.replace('/', '_')}": metrics[k] for k in LR_KEYS if k in metrics}}


def epoch_scalars(row: Mapping[str, float], images_per_second: float) -> dict[str, float]:
    """An epoch's TensorBoard scalars: its results row without ``epoch`` (the scalars' step) and the training
    throughput as ``speed/images_per_second``."""
    return {**{k: v for k, v in row.items() if k != "epoch"}, "speed/images_per_second": float(images_per_second)}
