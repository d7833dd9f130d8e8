"""Grain loaders: deterministic, resumable training batches and exhaustive validation batches.

Entry point for the trainer::

    from yolojax.data import DetectionDataset, TrainLoader, ValLoader
    train_ds = DetectionDataset.from_config("coco128", "train", imgsz=640)
    loader = TrainLoader(train_ds, batch_size=16, seed=0, hyp=config, workers=4,
                         close_mosaic_epoch=epochs - config.close_mosaic)     # None: never close mosaic
    it = loader.iterator(start_epoch, start_step, end_epoch=epochs)  # one Grain DataLoader (and worker set) per run
    for epoch in range(start_epoch, epochs):
        for step in range(it.step, loader.num_batches):
            batch = next(it)  # images (B,S,S,3) uint8 RGB, boxes (B,M,4) float32 pixel xyxy, classes (B,M) int32,
                              # mask (B,M) bool; M = smallest of `buckets` >= the batch's largest box count
                              # (default buckets: 16, 32, ... from where this dataset's batches usually are)
                              # hsv_on_device=True: images BGR before the HSV jitter, plus hsv_tables (B,3,256)
                              # uint8 and hsv_to_rgb (B,) bool for the train step's yolojax.ops.color.hsv_jitter
                              # warp_on_device=True: no images; the batch's decoded images as sources (B,S,S,3)
                              # BGR and a plan per sample, warp_tiles (B,4,7), warp_cols / warp_rows (B,2,S), for
                              # yolojax.ops.warp.warp_tiles (then the jitter, as above); see batch_image_shape.
                              # Sources are numbered in the global batch: process p's start at p * B_local
            ...
            # checkpoint: it.get_state() (JSON bytes {epoch, step} of the next batch), or in an Orbax Composite:
            # data=grain.checkpoint.CheckpointSave(it) / CheckpointRestore(loader.iterator(...)) restores in place
    it.close()                 # stops the worker processes

``loader.epoch_iterator(epoch, start_step)`` gives one epoch only (new workers each time).

Determinism: epoch ``e`` visits ``permutation(seed, e)``; the sample at position ``p`` is built from
``np.random.default_rng([seed, e, p])`` (mosaic partners included), and each *batch* is one Grain record built by one
worker. So batches do not depend on the worker count, and an iterator restored at step ``k`` yields exactly the
batches ``k..`` that an uninterrupted run would have seen.

Rectangular training (``rect=True``): the images in aspect-ratio order every epoch (no shuffling), each batch
letterboxed into its own (h, w) (Ultralytics' batch shapes with stride 32 and pad 0.0; ``rect_batch_shapes``), no
mosaic or mixup. The batches have at most ``2·imgsz/32 − 1`` distinct shapes (one compile each).

Multi-scale training (``multi_scale=True``): each batch is resized, on the device, so that its long side is a size
drawn as Ultralytics draws it (uniform stride multiples in [0.5, 1.5]·imgsz, ``multi_scale_size``) and rounded to
the nearest of ``MULTI_SCALE_BUCKETS`` evenly spaced sizes, so a run compiles at most that many image shapes (per
rect shape). The draw is seeded by (seed, epoch, step). The batch's boxes are scaled here; it carries
``scale_rows`` (B, h') and ``scale_cols`` (B, w') float32, the source coordinates of ``yolojax.ops.resize``.

Batch count: ``num_batches = ceil(n / B)`` as in Ultralytics; jit needs a fixed batch size, so the last batch is
completed with the first images of the same epoch's permutation (as distributed samplers pad) instead of being
short. With fewer images than ``batch_size``, B = n (Ultralytics' ``min(batch, len(dataset))``).

Validation (``ValLoader``): rectangular batches sorted by aspect ratio (pad 0.5, stride 32) or square letterbox;
every image exactly once; the last batch is padded with blank images flagged ``image_valid=False``; each batch also
carries ``ratio_pad`` (B,2,2) float64, ``ori_shape`` (B,2) and ``index`` (B,) (dataset index, −1 for padding).
"""
from __future__ import annotations

import contextlib
import json
import math
import queue
import threading
from typing import Any, Iterator, Mapping, Sequence

import grain.python as grain
import numpy as np

from yolojax.data.augment import PAD_VALUE, rect_batch_shapes
from yolojax.data.dataset import DetectionDataset, augment_hyp, train_sample, val_sample
from yolojax.ops.resize import source_coordinates

BUCKETS = (16, 32, 64, 128, 256, 512, 1024)
MULTI_SCALE_BUCKETS = 5  # image sizes a multi-scale run compiles (at most)


def box_bucket(n: int, buckets: Sequence[int] = BUCKETS) -> int:
    """Smallest bucket ≥ n (beyond the list: the next multiple of the largest). Never smaller than n."""
    for b in buckets:
        if n <= b:
            return int(b)
    top = int(buckets[-1])
    return top * math.ceil(n / top)


def usual_box_bucket(label_counts: Sequence[int], batch_size: int, mosaic: float, mixup: float, seed: int = 0,
                     trials: int = 256, buckets: Sequence[int] = BUCKETS) -> int:
    """The box bucket a training batch usually needs, from the dataset's per-image label counts alone.

    A simulated sample holds its own boxes, its 4 tiles' with probability ``mosaic``, plus a second sample's with
    probability ``mixup`` (an upper bound: augmentation only ever drops boxes); the median over ``trials`` batches
    of the batch's largest sample, bucketed. Starting the buckets there keeps the first batches from growing M
    16 → 32 → 64 one compile at a time (each a whole train-step compile)."""
    counts = np.asarray(label_counts, np.int64)
    if counts.size == 0 or batch_size <= 0:
        return box_bucket(0, buckets)
    rng = np.random.default_rng([int(seed), 0xB0C5])
    shape = (int(trials), int(batch_size))
    tiles = counts[rng.integers(len(counts), size=shape + (4,))]
    per = np.where(rng.random(shape) < mosaic, tiles.sum(-1), tiles[..., 0])
    partner = counts[rng.integers(len(counts), size=shape + (4,))]
    per = per + np.where(rng.random(shape) < mixup,
                         np.where(rng.random(shape) < mosaic, partner.sum(-1), partner[..., 0]), 0)
    return box_bucket(int(np.median(per.max(-1))), buckets)


def multi_scale_sizes(imgsz: int, stride: int = 32, buckets: int = MULTI_SCALE_BUCKETS) -> tuple[int, ...]:
    """The sizes multi-scale batches take: ``buckets`` stride multiples evenly spread over the range Ultralytics
    draws from (e.g. imgsz 640: 320, 480, 640, 800, 960)."""
    lo = max(stride, int(imgsz * 0.5) // stride * stride)
    hi = (int(imgsz * 1.5 + stride) - 1) // stride * stride
    return tuple(sorted({int(round(v / stride)) * stride for v in np.linspace(lo, hi, buckets)}))


def multi_scale_size(rng: np.random.Generator, imgsz: int, stride: int = 32,
                     sizes: Sequence[int] | None = None) -> int:
    """One batch's long side: uniform in [0.5·imgsz, 1.5·imgsz + stride) floored to a stride multiple (Ultralytics),
    then the nearest of ``sizes`` (default ``multi_scale_sizes``; ties: the smaller)."""
    drawn = max(stride, int(rng.integers(int(imgsz * 0.5), int(imgsz * 1.5 + stride))) // stride * stride)
    return min(sizes or multi_scale_sizes(imgsz, stride), key=lambda s: (abs(s - drawn), s))


def multi_scale_shape(hw: tuple[int, int], size: int, stride: int = 32) -> tuple[int, int]:
    """The (h, w) a batch of (h, w) images is resized to for a long side ``size``: each side scaled by
    size / max(h, w) and rounded up to a stride multiple."""
    sf = size / max(hw)
    return tuple(math.ceil(x * sf / stride) * stride for x in hw)


def _resized(batch: dict, hw: tuple[int, int], new_hw: tuple[int, int]) -> dict:
    """``batch`` (images (h, w)) with its boxes scaled to ``new_hw`` and the device's resize coordinates."""
    (h, w), (nh, nw) = hw, new_hw
    n = batch["boxes"].shape[0]
    batch["boxes"] = batch["boxes"] * np.array([nw / w, nh / h, nw / w, nh / h], np.float32)
    batch["scale_rows"] = np.tile(source_coordinates(h, nh), (n, 1))
    batch["scale_cols"] = np.tile(source_coordinates(w, nw), (n, 1))
    return batch


def pad_boxes(boxes: Sequence[np.ndarray], classes: Sequence[np.ndarray], buckets=BUCKETS):
    """Stack per-image (n_i, 4) boxes and (n_i,) classes into zero-padded (B, M, 4), (B, M) and a (B, M) mask."""
    m = box_bucket(max((len(b) for b in boxes), default=0), buckets)
    out_b = np.zeros((len(boxes), m, 4), np.float32)
    out_c = np.zeros((len(boxes), m), np.int32)
    mask = np.zeros((len(boxes), m), bool)
    for i, (b, c) in enumerate(zip(boxes, classes)):
        out_b[i, :len(b)], out_c[i, :len(c)], mask[i, :len(b)] = b, c, True
    return out_b, out_c, mask


def _mark_flags_parsed() -> None:
    """Grain 0.2.x workers read absl flags and crash if they are not parsed."""
    try:
        from absl import flags

        if not flags.FLAGS.is_parsed():
            flags.FLAGS.mark_as_parsed()
    except Exception:  # pragma: no cover
        pass


class _RecordList(grain.RandomAccessDataSource):
    """A Grain source whose records are small dicts describing one batch each (built by the transform)."""

    def __init__(self, records: list[dict]):
        self._records = records

    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, i):
        return self._records[i]


class _BuildTrainBatch(grain.MapTransform):
    def __init__(self, ds: DetectionDataset, hyp: dict, seed: int, compat: str, buckets, hsv_on_device: bool = False,
                 warp_on_device: bool = False, source_offset: int = 0):
        self.ds, self.hyp, self.seed, self.compat, self.buckets = ds, hyp, seed, compat, tuple(buckets)
        self.hsv_on_device, self.warp_on_device = hsv_on_device, warp_on_device
        self.source_offset = source_offset  # where this process's images start in the global batch

    def map(self, rec):
        if self.warp_on_device:
            return self._plans(rec)
        imgs, boxes, classes, tables, to_rgb = [], [], [], [], []
        # Mosaic partners come from this batch's own images when it has at least 8 (like Ultralytics' buffer of
        # recently loaded images: each image is decoded once), else from the whole dataset.
        pool = rec["indices"] if len(rec["indices"]) >= 8 else None
        for pos, idx in zip(rec["positions"], rec["indices"]):
            rng = np.random.default_rng([self.seed, rec["epoch"], int(pos)])
            img, b, c, *hsv = train_sample(self.ds, int(idx), rng, self.hyp, mosaic=rec["mosaic"],
                                           compat=self.compat, pool=pool, hsv_on_device=self.hsv_on_device,
                                           shape=rec.get("shape"))
            imgs.append(img), boxes.append(b), classes.append(c)
            if hsv:
                tables.append(hsv[0]), to_rgb.append(hsv[1])
        b, c, m = pad_boxes(boxes, classes, self.buckets)
        images = batch_array((len(imgs),) + imgs[0].shape, imgs[0].dtype, rec.get("shared", False))
        batch = {"images": np.stack(imgs, out=images), "boxes": b, "classes": c, "mask": m}
        if self.hsv_on_device:
            batch.update(hsv_tables=np.stack(tables), hsv_to_rgb=np.array(to_rgb, bool))
        if "resize" in rec:
            batch = _resized(batch, imgs[0].shape[:2], rec["resize"])
        return batch

    def _plans(self, rec):
        """The batch for the device warp: its own decoded images (the mosaic partners' pool) + one plan per sample."""
        s, n = self.ds.imgsz, len(rec["indices"])
        sources = batch_array((n, s, s, 3), np.uint8, rec.get("shared", False))
        with removed_on_error(sources):
            for k, idx in enumerate(rec["indices"]):
                img = self.ds.load(int(idx))[0]
                h, w = img.shape[:2]
                sources[k, :h, :w] = img
                sources[k, h:] = 0  # never read; zeroed so a batch is a function of its seed
                sources[k, :h, w:] = 0
        tiles, cols, rows, boxes, classes, tables, to_rgb = [], [], [], [], [], [], []
        for k, (pos, idx) in enumerate(zip(rec["positions"], rec["indices"])):
            rng = np.random.default_rng([self.seed, rec["epoch"], int(pos)])
            (t, cx, ry), b, c, tab, rgb = train_sample(self.ds, int(idx), rng, self.hyp, mosaic=rec["mosaic"],
                                                       compat=self.compat, pool=rec["indices"], warp_slot=k)
            t[:, 0] = np.where(t[:, 0] >= 0, t[:, 0] + self.source_offset, -1)  # positions in the global batch
            tiles.append(t), cols.append(cx), rows.append(ry), boxes.append(b), classes.append(c)
            tables.append(tab), to_rgb.append(rgb)
        b, c, m = pad_boxes(boxes, classes, self.buckets)
        batch = {"sources": sources, "warp_tiles": np.stack(tiles), "warp_cols": np.stack(cols),
                 "warp_rows": np.stack(rows), "boxes": b, "classes": c, "mask": m, "hsv_to_rgb": np.array(to_rgb, bool)}
        if self.hsv_on_device:
            batch["hsv_tables"] = np.stack(tables)
        if "resize" in rec:
            batch = _resized(batch, (s, s), rec["resize"])
        return batch


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


def batch_image_shape(batch: Mapping[str, Any]) -> tuple[int, ...]:
    """(B, H, W, 3): the shape of a training batch's images as the model sees them, also when the device composes
    them (``warp_tiles``) or resizes them (``scale_rows``)."""
    if "scale_rows" in batch:
        return (batch["scale_rows"].shape[0], batch["scale_rows"].shape[-1], batch["scale_cols"].shape[-1], 3)
    if "warp_tiles" in batch:
        return (batch["warp_tiles"].shape[0], batch["warp_rows"].shape[-1], batch["warp_cols"].shape[-1], 3)
    return tuple(batch["images"].shape)


class _BuildValBatch(grain.MapTransform):
    def __init__(self, ds: DetectionDataset, compat: str, buckets):
        self.ds, self.compat, self.buckets = ds, compat, tuple(buckets)

    def map(self, rec):
        h, w = rec["shape"]
        n = len(rec["indices"])
        imgs = batch_array((n, h, w, 3), np.uint8, rec.get("shared", False))
        ratio_pad = np.zeros((n, 2, 2), np.float64)
        ori = np.zeros((n, 2), np.int64)
        boxes, classes = [], []
        with removed_on_error(imgs):
            imgs.fill(PAD_VALUE)
            for k, idx in enumerate(rec["indices"]):
                if idx < 0:  # padding image: blank, no boxes, image_valid False
                    boxes.append(np.zeros((0, 4), np.float32)), classes.append(np.zeros((0,), np.int32))
                    continue
                img, b, c, rp, o = val_sample(self.ds, int(idx), (h, w), compat=self.compat)
                imgs[k], ratio_pad[k], ori[k] = img, rp, o
                boxes.append(b), classes.append(c)
        b, c, m = pad_boxes(boxes, classes, self.buckets)
        idx = np.asarray(rec["indices"], np.int64)
        return {"images": imgs, "boxes": b, "classes": c, "mask": m, "image_valid": idx >= 0,
                "ratio_pad": ratio_pad, "ori_shape": ori, "index": idx}


def _grain_iter(records: Sequence[dict] | grain.RandomAccessDataSource, op: grain.MapTransform, workers: int, prefetch: int):
    if workers > 0:
        _mark_flags_parsed()
    loader = grain.DataLoader(
        data_source=records if isinstance(records, grain.RandomAccessDataSource) else _RecordList(records),
        sampler=grain.IndexSampler(num_records=len(records), shard_options=grain.NoSharding(), shuffle=False,
                                   num_epochs=1, seed=0),
        operations=[op], worker_count=workers, worker_buffer_size=max(1, prefetch),
        read_options=grain.ReadOptions(num_threads=1, prefetch_buffer_size=max(1, prefetch)))
    if workers == 0 and prefetch > 0:
        return ThreadPrefetch(iter(loader), prefetch)
    return iter(loader)


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
        _close(self._source)


def _close(it) -> None:
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
    tracker, which warns of a leak. A no-op request that has returned means every earlier one ran. Without the pool
    (removal is synchronous, or another grain) there is nothing to wait for."""
    pool = getattr(grain.SharedMemoryArray, "_del_thread_pool", None) if hasattr(grain, "SharedMemoryArray") else None
    if pool is not None:
        try:
            pool.apply(int)
        except ValueError:  # the pool was already terminated (interpreter exit): removals ran synchronously since
            pass


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


def epoch_order(n: int, global_batch: int, seed: int, epoch: int) -> np.ndarray:
    """Dataset indices visited in ``epoch``: a seeded permutation, completed to a whole number of batches with its
    own first indices. Shape (ceil(n / global_batch) · global_batch,)."""
    return whole_batches(np.random.default_rng([seed, epoch, 0x5EED]).permutation(n), global_batch)


def whole_batches(order: np.ndarray, global_batch: int) -> np.ndarray:
    """``order`` completed to a whole number of batches with its own first indices (``global_batch`` <= its length)."""
    n = len(order)
    need = math.ceil(n / global_batch) * global_batch
    return np.concatenate([order, order[: need - n]]) if need > n else order


def _own(batch: dict) -> dict:
    """Copy a batch out of Grain's shared memory (plain ndarrays; the shared blocks are freed right away)."""
    return {k: np.array(v) for k, v in batch.items()}


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
            self._it = _grain_iter(plan, self._loader.transform, self._loader.workers, self._loader.prefetch)

    def __next__(self) -> dict[str, np.ndarray]:
        if not len(self):
            self.close()
            raise StopIteration
        self.start_prefetch()
        batch = next(self._it)
        if self._loader.workers:  # in-process batches are plain arrays already: no 20 MB copy per step
            batch = _own(batch)
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
            _close(self._it)
            self._it = None

    def __del__(self):
        self.close()


class TrainLoader:
    """Training batches of ``train_sample`` outputs; see the module docstring."""

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
        self.transform = _BuildTrainBatch(dataset, self.hyp, self.seed, compat, self.buckets, self.hsv_on_device,
                                          self.warp_on_device, source_offset=process_index * self.batch_size)

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

    def close_mosaic(self) -> None:
        """Disable mosaic (and mixup) in iterators created from now on (Ultralytics' close_mosaic). Prefer passing
        ``close_mosaic_epoch`` at construction: then a run-long ``iterator`` switches by itself, also on resume."""
        self.close_mosaic_epoch = 0

    def mosaic_enabled(self, epoch: int) -> bool:
        return self.close_mosaic_epoch is None or epoch < self.close_mosaic_epoch

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
        self.transform = _BuildValBatch(dataset, compat, buckets)
        self._stream, self._pass_open = None, False

    def __len__(self) -> int:
        return self.num_batches

    def records(self) -> list[dict]:
        padded = np.full(self.num_batches * self.batch_size, -1, np.int64)
        padded[: len(self.order)] = self.order
        return [{"indices": padded[b * self.batch_size:(b + 1) * self.batch_size],
                 "shape": tuple(int(v) for v in self.batch_shapes[b])} for b in range(self.num_batches)]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """One validation pass. With ``workers``, every pass of this loader is served by the same worker processes
        (started on the first pass, stopped by ``close``): a pass costs no process start-up, which is most of a
        small validation set's time (about 1.5 s per pass for 4 spawned workers). Between passes the workers hold
        ``prefetch`` batches of the next pass each."""
        if not self.workers:
            it = _grain_iter(self.records(), self.transform, 0, self.prefetch)
            try:
                yield from it
            finally:
                _close(it)
            return
        if not self.num_batches:
            return
        if self._stream is None or self._pass_open:  # first pass, or the last one was left unfinished
            self.close()
            self._stream = _grain_iter(_ValPasses(self.records(), _VAL_PASSES), self.transform, self.workers,
                                       self.prefetch)
        self._pass_open = True
        for _ in range(self.num_batches):
            yield _own(next(self._stream))
        self._pass_open = False

    def close(self) -> None:
        """Stop the worker processes (a later pass starts new ones)."""
        if self._stream is not None:
            _close(self._stream)
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
