"""The loop's background work: the batch feed (host batches on the devices, two ahead), the weight writer and the
validation step's compile ahead of the first validation."""
from __future__ import annotations

import concurrent.futures
import pathlib

import jax
import numpy as np

from yolojax.data.prefetch import ThreadPrefetch


class Feed:
    """(host batch, device batch) pairs of the loader's iterator from (epoch, step) to ``end_epoch``, two ahead: the
    host copy out of the workers' shared memory and the transfer to the device run in a background thread while
    the device steps (on the GPU they took longer than the step)."""

    def __init__(self, loader, epoch: int, step: int, end_epoch: int, put):
        self.it = loader.iterator(epoch, step, end_epoch=end_epoch)
        self.end_epoch = end_epoch
        self.batches = ThreadPrefetch(_on_device(self.it, put), 2)

    def __next__(self):
        return next(self.batches)

    def close(self) -> None:
        self.batches.close()
        self.it.close()


def _on_device(it, put):
    """(host batch, device batch) for each batch of ``it``; returns once the batch is on the device."""
    for batch in it:
        device_batch = put(batch)
        jax.block_until_ready(device_batch)
        yield batch, device_batch


class WeightWriter:
    """Writes the EMA weights (last.npz, best.npz, ...) on a background thread while the next epoch trains, one
    epoch's files at a time, in order; a write error surfaces at the next ``submit`` or at ``wait``."""

    def __init__(self, run):  # a yolojax.engine.builder.Run: its task writes the files
        self.run = run
        self.pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="yolojax-export")
        self.pending: list[concurrent.futures.Future] = []

    def submit(self, variables, paths: list[pathlib.Path]) -> None:
        ema = jax.tree.map(np.array, jax.device_get(variables))
        self.wait()
        self.pending = [self.pool.submit(self._write, ema, paths)]

    def _write(self, ema, paths) -> None:
        for path in paths:
            self.run.task.save_weights(ema, path, self.run.names, self.run.model)

    def wait(self) -> None:
        for f in self.pending:
            f.result()

    def close(self) -> None:
        self.pool.shutdown(wait=True)


def compiles_ahead(validator) -> bool:
    """Whether ``compile_validation`` can serve ``validator``: it has ``dispatch`` and its ``loader`` has
    ``shape_batches`` (the built-in tasks' validators; a task's own plain function validates as it is)."""
    return callable(getattr(validator, "dispatch", None)) and \
        callable(getattr(getattr(validator, "loader", None), "shape_batches", None))


def compile_validation(validator, variables) -> concurrent.futures.Future:
    """Run ``validator``'s step once on a batch of each image shape of its loader on a background thread and drop
    the results, so the step is compiled for those shapes before the first validation needs them. Started next to the train step's
    first compile, the two compiles share the host's cores instead of running one after the other. The future's
    ``result()`` waits for it and raises its error."""

    def run() -> None:
        for batch in validator.loader.shape_batches():
            jax.block_until_ready(validator.dispatch(variables, batch))

    pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="yolojax-val-compile")
    future = pool.submit(run)
    pool.shutdown(wait=False)  # the thread ends with ``run``
    return future
