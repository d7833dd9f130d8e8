"""A background thread that runs an iterator a few items ahead."""
from __future__ import annotations

import queue
import threading

from yolojax.data.sources import close_iterator


class ThreadPrefetch:
    """Run an iterator in a background thread, ``size`` items ahead. The loaders use it without worker processes
    (decoding and augmentation, OpenCV and NumPy release the GIL, overlap the step instead of running between
    steps); the trainer uses it to copy batches to the device while the previous step runs. Same items in the same
    order; an error in the thread is raised by ``next``."""

    def __init__(self, it, size: int):
        self._source, self._queue = it, queue.Queue(maxsize=max(1, int(size)))
        self._stop, self._done = threading.Event(), False
        self._thread = threading.Thread(target=self._run, name="yolojax-prefetch", daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            for batch in self._source:
                if not self._put(("batch", batch)):
                    return
            self._put(("end", None))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            self._put(("error", e))

    def __iter__(self) -> "ThreadPrefetch":
        return self

    def __next__(self):
        if self._done:
            raise StopIteration
        kind, value = self._queue.get()
        if kind == "batch":
            return value
        self._done = True
        if kind == "error":
            raise value
        raise StopIteration

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        close_iterator(self._source)
