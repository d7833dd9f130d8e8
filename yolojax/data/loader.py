"""Grain loaders: deterministic, resumable training batches and exhaustive validation batches.

Entry point for the trainer::

    from yolojax.data import DetectionDataset, TrainLoader, ValLoader
    train_ds = DetectionDataset.from_config("coco128", "train", imgsz=640)
    loader = TrainLoader(train_ds, batch_size=16, seed=0, hyp=config, workers=4,
                         close_mosaic_epoch=epochs - config.close_mosaic)     # None: never close mosaic
    it = loader.iterator(start_epoch, start_step, end_epoch=epochs)  # one Grain DataLoader (and worker set) per run
    for epoch in range(start_epoch, epochs):
        for step in range(it.step, loader.num_batches):
            batch = next(it)  # a dict of numpy arrays in loader.layout (yolojax.augment.batch): the targets
                              # boxes (B,M,4) float32 pixel xyxy, classes (B,M) int32, mask (B,M) bool (M = smallest
                              # of `buckets` >= the batch's largest box count, default buckets from where this
                              # dataset's batches usually are), and images (Layout.IMAGES), or BGR images + HSV
                              # tables (hsv_on_device=True: Layout.HSV), or sources + warp plans (warp_on_device=True:
                              # Layout.WARP; sources numbered in the global batch: process p's start at p * B_local)
            ...
            # checkpoint: it.get_state() (JSON bytes {epoch, step} of the next batch), or in an Orbax Composite:
            # data=grain.checkpoint.CheckpointSave(it) / CheckpointRestore(loader.iterator(...)) restores in place
    it.close()                 # stops the worker processes

``loader.epoch_iterator(epoch, start_step)`` gives one epoch only (new workers each time).

Determinism: epoch ``e`` visits ``permutation(seed, e)``; the sample at position ``p`` is built from
``np.random.default_rng([seed, e, p])`` (mosaic partners included), and each *batch* is one Grain record built by one
worker (``yolojax.data.transforms``). So batches do not depend on the worker count, and an iterator restored at step
``k`` yields exactly the batches ``k..`` that an uninterrupted run would have seen.

Rectangular training (``rect=True``): the images in aspect-ratio order every epoch (no shuffling), each batch
letterboxed into its own (h, w) (pad 0.0, ``batching.rect_batch_shapes``), no mosaic or mixup. The batches have at
most ``2·imgsz/32 − 1`` distinct shapes (one compile each).

Multi-scale training (``multi_scale=True``): each batch is resized on the device to a long side drawn per (seed,
epoch, step) among ``batching.MULTI_SCALE_BUCKETS`` sizes; the batch carries ``scale_rows``/``scale_cols``.

Batch count: ``num_batches = ceil(n / B)`` as in Ultralytics; jit needs a fixed batch size, so the last batch is
completed with the first images of the same epoch's permutation (as distributed samplers pad) instead of being
short. With fewer images than ``batch_size``, B = n (Ultralytics' ``min(batch, len(dataset))``).

Validation (``ValLoader``): rectangular batches sorted by aspect ratio (pad 0.5, stride 32) or square letterbox;
every image exactly once; the last batch is padded with blank images flagged ``image_valid=False``; each batch also
carries ``ratio_pad`` (B,2,2) float64, ``ori_shape`` (B,2) and ``index`` (B,) (dataset index, −1 for padding).
"""
from __future__ import annotations

import json
import math
from typing import Any, Iterator, Mapping, Sequence

import grain.python as grain
import numpy as np

from yolojax.augment.batch import Layout
from yolojax.augment.sample import augment_hyp
from yolojax.data.batching import (BUCKETS, box_bucket, epoch_order, multi_scale_shape, multi_scale_size,
                                   multi_scale_sizes, rect_batch_shapes, usual_box_bucket, whole_batches)
from yolojax.data.dataset import DetectionDataset
from yolojax.data.prefetch import ThreadPrefetch
from yolojax.data.sources import RecordList, close_iterator, mark_flags_parsed, owned
from yolojax.data.transforms import BuildTrainBatch, BuildValBatch


def grain_iter(records: Sequence[dict] | grain.RandomAccessDataSource, op: grain.MapTransform, workers: int,
               prefetch: int):
    """``op`` over ``records`` in order, by ``workers`` processes (0: this one, then ``prefetch`` items ahead in a
    thread), ``prefetch`` batches ahead per worker."""
    if workers > 0:
        mark_flags_parsed()
    loader = grain.DataLoader(
        data_source=records if isinstance(records, grain.RandomAccessDataSource) else RecordList(records),
        sampler=grain.IndexSampler(num_records=len(records), shard_options=grain.NoSharding(), shuffle=False,
                                   num_epochs=1, seed=0),
        operations=[op], worker_count=workers, worker_buffer_size=max(1, prefetch),
        read_options=grain.ReadOptions(num_threads=1, prefetch_buffer_size=max(1, prefetch)))
    if workers == 0 and prefetch > 0:
        return ThreadPrefetch(iter(loader), prefetch)
    return iter(loader)


class _TrainPlan(grain.RandomAccessDataSource):
    """Record ``i`` = the i-th batch from (start_epoch, start_step) on: computed lazily, so a plan spanning the whole
    run costs nothing and one set of worker processes serves every epoch."""

    def __init__(self, loader: "TrainLoader", start_epoch: int, start_step: int, end_epoch: int):
        self.n, self.seed, self.nb = len(loader.dataset), loader.seed, loader.num_batches
        self.global_batch, self.batch_size, self.process_index = (loader.global_batch, loader.batch_size,
                                                                  loader.process_index)
        self.close_mosaic_epoch = loader.close_mosaic_epoch
        self.rect_order, self.batch_shapes = loader.rect_order, loader.batch_shapes
        self.imgsz, self.stride, self.scale_sizes = loader.dataset.imgsz, loader.stride, loader.multi_scale_sizes
        self.shared = loader.workers > 0  # records are read and built in Grain's worker processes
        self.first = start_epoch * self.nb + start_step
        self.length = max(0, end_epoch * self.nb - self.first)
        self._order_epoch, self._order = None, None

    def __len__(self) -> int:
        return self.length

    def order(self, epoch: int) -> np.ndarray:
        if self.rect_order is not None:
            return self.rect_order
        if self._order_epoch != epoch:  # one permutation per epoch, cached (records arrive in order)
            self._order = epoch_order(self.n, self.global_batch, self.seed, epoch)
            self._order_epoch = epoch
        return self._order

    def __getitem__(self, i):
        epoch, step = divmod(self.first + int(i), self.nb)
        lo = step * self.global_batch + self.process_index * self.batch_size
        pos = np.arange(lo, lo + self.batch_size)
        mosaic = self.close_mosaic_epoch is None or epoch < self.close_mosaic_epoch
        rec = {"epoch": epoch, "positions": pos, "indices": self.order(epoch)[pos], "mosaic": mosaic,
               "shared": self.shared}
        if self.batch_shapes is not None:
            rec["shape"] = tuple(int(v) for v in self.batch_shapes[step])
        if self.scale_sizes:
            rng = np.random.default_rng([self.seed, epoch, step, 0x5CA1E])
            hw = rec.get("shape", (self.imgsz, self.imgsz))
            new = multi_scale_shape(hw, multi_scale_size(rng, self.imgsz, self.stride, self.scale_sizes), self.stride)
            if new != tuple(hw):
                rec["resize"] = new
        return rec


class BatchIterator:
    """Training batches from (epoch, step) up to the end of ``end_epoch - 1``; ``epoch``/``step`` name the next batch.

    State = JSON bytes ``{"epoch", "step", ...}``. Duck-types the Grain iterator interface used by
    ``grain.checkpoint.CheckpointSave/CheckpointRestore`` (``get_state() -> bytes``, ``set_state(bytes)``,
    ``start_prefetch()``), so it can sit in an Orbax Composite next to the train state.
    """

    def __init__(self, loader: "TrainLoader", epoch: int, step: int, end_epoch: int):
        self._loader, self.epoch, self.step, self.end_epoch = loader, int(epoch), int(step), int(end_epoch)
        self._it = None

    def __iter__(self) -> "BatchIterator":
        return self

    def __len__(self) -> int:
        return max(0, self.end_epoch * self._loader.num_batches - (self.epoch * self._loader.num_batches + self.step))

    def start_prefetch(self) -> None:
        if self._it is None and len(self):
            plan = _TrainPlan(self._loader, self.epoch, self.step, self.end_epoch)
            self._it = grain_iter(plan, self._loader.transform, self._loader.workers, self._loader.prefetch)

    def __next__(self) -> dict[str, np.ndarray]:
        if not len(self):
            self.close()
            raise StopIteration
        self.start_prefetch()
        batch = next(self._it)
        if self._loader.workers:  # in-process batches are plain arrays already: no 20 MB copy per step
            batch = owned(batch)
        self.step += 1
        if self.step == self._loader.num_batches:
            self.epoch, self.step = self.epoch + 1, 0
        return batch

    def get_state(self) -> bytes:
        return json.dumps({"epoch": self.epoch, "step": self.step, "end_epoch": self.end_epoch,
                           "seed": self._loader.seed, "num_batches": self._loader.num_batches}).encode()

    def set_state(self, state: bytes | str | Mapping) -> None:
        s = json.loads(state) if isinstance(state, (bytes, str)) else dict(state)
        if s.get("seed", self._loader.seed) != self._loader.seed or s.get("num_batches") not in (
                None, self._loader.num_batches):
            raise ValueError(f"Data iterator state {s} was saved for another dataset/seed (this loader: seed "
                             f"{self._loader.seed}, {self._loader.num_batches} batches per epoch); resume with the "
                             "same data, batch size and seed.")
        self.close()
        self.epoch, self.step = int(s["epoch"]), int(s["step"])
        self.end_epoch = int(s.get("end_epoch", self.epoch + 1))

    def close(self) -> None:
        if self._it is not None:
            close_iterator(self._it)
            self._it = None

    def __del__(self):
        self.close()


class TrainLoader:
    """Training batches of ``train_sample`` outputs in ``self.layout`` (``yolojax.augment.batch.Layout``, from
    ``hsv_on_device`` / ``warp_on_device`` and what the device can draw); see the module docstring."""

    def __init__(self, dataset: DetectionDataset, *, batch_size: int, seed: int = 0, hyp: Mapping | None = None,
                 workers: int = 0, prefetch: int = 2, close_mosaic_epoch: int | None = None, compat: str = "v8",
                 buckets: Sequence[int] | None = None, process_index: int = 0, process_count: int = 1,
                 hsv_on_device: bool = False, warp_on_device: bool = False, rect: bool = False, stride: int = 32,
                 multi_scale: bool = False):
        if len(dataset) == 0:
            raise ValueError("TrainLoader needs a non-empty dataset.")
        self.dataset = dataset
        self.global_batch = min(int(batch_size), len(dataset))
        if self.global_batch % process_count:
            raise ValueError(f"batch {self.global_batch} does not divide over {process_count} processes.")
        self.batch_size = self.global_batch // process_count  # per process
        self.process_index, self.process_count = process_index, process_count
        self.seed, self.workers, self.prefetch, self.compat = int(seed), int(workers), int(prefetch), compat
        self.hyp = augment_hyp(hyp)
        self.close_mosaic_epoch = close_mosaic_epoch
        self.num_batches = math.ceil(len(dataset) / self.global_batch)
        self.rect, self.stride = bool(rect), int(stride)
        self.multi_scale_sizes = multi_scale_sizes(dataset.imgsz, self.stride) if multi_scale else ()
        self.rect_order = self.batch_shapes = None
        if self.rect:  # Ultralytics' rect training: pad 0.0, no shuffling, no mosaic or mixup
            self.hyp.update(mosaic=0.0, mixup=0.0)
            order, self.batch_shapes = rect_batch_shapes(dataset.shapes, self.global_batch, dataset.imgsz, stride,
                                                         pad=0.0)
            self.rect_order = whole_batches(order, self.global_batch)
        if buckets is None:  # start where this dataset's batches usually are (see usual_box_bucket)
            floor = usual_box_bucket([len(lb) for lb in dataset.labels], self.batch_size, self.hyp["mosaic"],
                                     self.hyp["mixup"], self.seed)
            buckets = tuple(b for b in BUCKETS if b >= floor) or (floor,)
        self.buckets = tuple(buckets)
        if dataset.ram_cache is None and not dataset.buffer_size:  # keep recent decodes, as Ultralytics' buffer
            dataset.buffer_size = min(len(dataset), 8 * self.batch_size, 1000)
        # The mosaic + warp + flips move to the train step where it can draw them: the partners come from the batch
        # (at least 8 images), no mixup (a blend of two warps) and no perspective warp (see warp_obstacle).
        self.requested_warp_on_device = bool(warp_on_device)
        self.warp_on_device = self.requested_warp_on_device and not self.warp_obstacle()
        # The HSV jitter moves to the train step only when there is one (all gains 0: only the channel order).
        self.hsv_on_device = ((bool(hsv_on_device) or self.warp_on_device)
                              and any(self.hyp[k] for k in ("hsv_h", "hsv_s", "hsv_v")))
        self.layout = Layout.WARP if self.warp_on_device else Layout.HSV if self.hsv_on_device else Layout.IMAGES
        self.transform = BuildTrainBatch(dataset, self.hyp, self.seed, compat, self.buckets, self.layout,
                                         source_offset=process_index * self.batch_size)

    def warp_obstacle(self) -> str:
        """Why the device cannot draw this loader's samples ("" when it can)."""
        if self.rect:
            return "rect=True (batches of several shapes)"
        if self.hyp["mixup"] > 0:
            return "mixup > 0"
        if self.hyp["perspective"]:
            return "perspective > 0"
        if self.batch_size < 8:
            return f"a batch of {self.batch_size} per process (mosaic partners come from the batch from 8 up)"
        return ""

    def epoch_order(self, epoch: int) -> np.ndarray:
        """Dataset indices of epoch ``epoch`` in visiting order, (num_batches · global_batch,)."""
        if self.rect_order is not None:
            return self.rect_order
        return epoch_order(len(self.dataset), self.global_batch, self.seed, epoch)

    def iterator(self, start_epoch: int = 0, start_step: int = 0, end_epoch: int | None = None) -> BatchIterator:
        """Batches from (start_epoch, start_step) to the end of epoch ``end_epoch - 1`` (default: one epoch), with
        one set of worker processes for all of them."""
        end = start_epoch + 1 if end_epoch is None else end_epoch
        return BatchIterator(self, start_epoch, start_step, end)

    def epoch_iterator(self, epoch: int, start_step: int = 0) -> BatchIterator:
        """The remaining batches of one epoch (new worker processes each time: prefer ``iterator`` for long runs)."""
        return BatchIterator(self, epoch, start_step, epoch + 1)

    def restore_iterator(self, state: bytes | str | Mapping) -> BatchIterator:
        it = BatchIterator(self, 0, 0, 1)
        it.set_state(state)
        return it

    def max_boxes_bound(self) -> int:
        """A static upper bound of boxes per sample (4 mosaic tiles × 2 with mixup): use as the only bucket when all
        processes must agree on M without communicating (multi-host)."""
        mx = max((len(lb) for lb in self.dataset.labels), default=0)
        return box_bucket(max(1, mx * 4 * (2 if self.hyp["mixup"] > 0 else 1)), self.buckets)


class ValLoader:
    """Validation batches; see the module docstring. ``shapes`` lists the distinct (h, w) batch shapes."""

    def __init__(self, dataset: DetectionDataset, *, batch_size: int, rect: bool = True, stride: int = 32,
                 pad: float = 0.5, workers: int = 0, prefetch: int = 2, compat: str = "v8",
                 buckets: Sequence[int] = BUCKETS):
        self.dataset, self.workers, self.prefetch = dataset, int(workers), int(prefetch)
        self.batch_size = int(batch_size)
        n, s = len(dataset), dataset.imgsz
        if rect:
            self.order, self.batch_shapes = rect_batch_shapes(dataset.shapes, self.batch_size, s, stride, pad)
        else:
            self.order = np.arange(n)
            self.batch_shapes = np.tile([[s, s]], (math.ceil(n / self.batch_size), 1))
        self.num_batches = len(self.batch_shapes)
        self.shapes = sorted({tuple(int(v) for v in x) for x in self.batch_shapes})
        self.transform = BuildValBatch(dataset, compat, buckets)
        self._stream, self._pass_open = None, False

    def __len__(self) -> int:
        return self.num_batches

    def records(self) -> list[dict]:
        padded = np.full(self.num_batches * self.batch_size, -1, np.int64)
        padded[: len(self.order)] = self.order
        return [{"indices": padded[b * self.batch_size:(b + 1) * self.batch_size],
                 "shape": tuple(int(v) for v in self.batch_shapes[b])} for b in range(self.num_batches)]

    def shape_batches(self) -> list[dict[str, Any]]:
        """The first batch of each distinct image shape of a pass, built in this process (no workers, no pass
        opened): what the validation step compiles for."""
        records, first = self.records(), {}
        for b, rec in enumerate(records):
            first.setdefault(tuple(rec.get("shape", ())), b)
        return [self.transform.map(records[b]) for b in sorted(first.values())]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """One validation pass. With ``workers``, every pass of this loader is served by the same worker processes
        (started on the first pass, stopped by ``close``): a pass costs no process start-up, which is most of a
        small validation set's time (about 1.5 s per pass for 4 spawned workers). Between passes the workers hold
        ``prefetch`` batches of the next pass each."""
        if not self.workers:
            it = grain_iter(self.records(), self.transform, 0, self.prefetch)
            try:
                yield from it
            finally:
                close_iterator(it)
            return
        if not self.num_batches:
            return
        if self._stream is None or self._pass_open:  # first pass, or the last one was left unfinished
            self.close()
            self._stream = grain_iter(_ValPasses(self.records(), _VAL_PASSES), self.transform, self.workers,
                                       self.prefetch)
        self._pass_open = True
        for _ in range(self.num_batches):
            yield owned(next(self._stream))
        self._pass_open = False

    def close(self) -> None:
        """Stop the worker processes (a later pass starts new ones)."""
        if self._stream is not None:
            close_iterator(self._stream)
            self._stream = None

    def __del__(self):
        self.close()


_VAL_PASSES = 10**6  # passes one worker set can serve (records are computed lazily, so this costs nothing)


class _ValPasses(grain.RandomAccessDataSource):
    """Record ``i`` = batch ``i % nb`` of the validation records, repeated ``passes`` times."""

    def __init__(self, records: list[dict], passes: int):
        self._records, self._passes = records, int(passes)

    def __len__(self) -> int:
        return len(self._records) * self._passes

    def __getitem__(self, i):  # read in Grain's worker processes: the batch is built in shared memory
        return dict(self._records[int(i) % len(self._records)], shared=True)
