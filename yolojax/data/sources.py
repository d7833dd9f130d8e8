"""Grain plumbing: record lists as Grain sources, batch arrays in shared memory and their lifecycle, iterators.

A Grain worker process builds a batch's largest array (images, or the device warp's sources) directly in shared memory
(``batch_array``); Grain hands that block to the main process as it is instead of copying it. Ownership: the worker's
array removes its block unless Grain read its metadata (handed over: the main process's array removes it then); a
batch that fails while it is filled removes its block at once (``removed_on_error``). The main process copies each
batch out (``owned``) so the blocks go right away, and ``close_iterator`` stops the workers and waits until the blocks
of the batches they dropped are removed (``wait_for_block_removals``).
"""
from __future__ import annotations

import contextlib
import gc

import grain.python as grain
import numpy as np


def mark_flags_parsed() -> None:
    """Grain 0.2.x workers read absl flags and crash if they are not parsed."""
    try:
        from absl import flags

        if not flags.FLAGS.is_parsed():
            flags.FLAGS.mark_as_parsed()
    except Exception:  # pragma: no cover
        pass


class RecordList(grain.RandomAccessDataSource):
    """A Grain source whose records are small dicts describing one batch each (built by the transform)."""

    def __init__(self, records: list[dict]):
        self._records = records

    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, i):
        return self._records[i]


if hasattr(grain, "SharedMemoryArray"):  # grain.python exports it (0.2.x)
    class _WorkerBlock(grain.SharedMemoryArray):
        """A batch array built in shared memory by a Grain worker. Grain hands it to the main process by reading its
        ``metadata`` (the main process then owns the block and removes it when it drops the array); one the worker
        drops without handing it over - a batch its own read-ahead built when the loader stopped, or one that
        failed - removes its block."""

        @property
        def metadata(self):
            self._unlink_on_del = False  # handed over: the main process's to remove
            return super().metadata
else:  # pragma: no cover - an older grain: batches are built on the heap and Grain copies them
    _WorkerBlock = None


@contextlib.contextmanager
def removed_on_error(arr: np.ndarray):
    """Filling a batch's shared block: on an error (an unreadable image) the block is removed at once, not when
    the traceback (which holds ``arr``) lets it go."""
    try:
        yield arr
    except BaseException:
        if getattr(arr, "_unlink_on_del", False):
            arr._unlink_on_del = False
            arr.shm.unlink()
        raise


def batch_array(shape: tuple[int, ...], dtype, shared: bool) -> np.ndarray:
    """An empty array for a batch's images. ``shared`` (a Grain worker process builds the batch): in shared memory,
    which Grain hands to the main process as it is instead of copying the batch into a new block (79 MB for b64
    @640)."""
    if not shared or _WorkerBlock is None:
        return np.empty(shape, dtype)
    arr = _WorkerBlock(shape, dtype)
    arr._unlink_on_del = True  # until handed over
    return arr


def owned(batch: dict) -> dict:
    """Copy a batch out of Grain's shared memory (plain ndarrays; the shared blocks are freed right away)."""
    return {k: np.array(v) for k, v in batch.items()}


def close_iterator(it) -> None:
    """Stop a Grain iterator's worker processes now (avoids 'handle is closed' noise at exit), then let the shared
    blocks of the batches it dropped be removed (``wait_for_block_removals``)."""
    inner = getattr(it, "_iterator", it)
    if hasattr(inner, "close"):
        inner.close()
    wait_for_block_removals()


def wait_for_block_removals() -> None:
    """Return once Grain has removed the shared blocks of the batch arrays dropped so far in this process.

    Once a Grain loader has run, a dropped batch array's block is removed on Grain's background thread pool (one
    thread, requests in order); a process that exits before that thread ran leaves the block to Python's resource
    tracker, which warns of a leak. A closed Grain iterator's read-ahead arrays sit in reference cycles, so they are
    collected first; then a no-op request that has returned means every earlier one ran. Without the pool (removal
    is synchronous, or another grain) there is nothing to wait for."""
    pool = getattr(grain.SharedMemoryArray, "_del_thread_pool", None) if hasattr(grain, "SharedMemoryArray") else None
    if pool is not None:
        gc.collect()
        try:
            pool.apply(int)
        except ValueError:  # the pool was already terminated (interpreter exit): removals ran synchronously since
            pass
