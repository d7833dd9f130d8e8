"""Grain loaders for classification: deterministic, resumable training batches and exhaustive validation batches.

    ds = ClassifyDataset.from_index(cls_index(info["train"], info["names"]), imgsz=224)
    loader = ClassifyTrainLoader(ds, batch_size=64, seed=0, hyp=config, workers=4)
    it = loader.iterator(start_epoch, start_step, end_epoch=epochs)   # the detection TrainLoader's interface
    batch = next(it)   # {"images": (B, S, S, 3) uint8 RGB, "labels": (B,) int32}
    it.close()
    for batch in ClassifyValLoader(val_ds, batch_size=128, crop_fraction=1.0):
        ...            # + "image_valid" (B,) bool (False: padding of the last batch), "index" (B,) int64 (-1: padding)

Training follows Ultralytics' ClassificationTrainer loader: the images are shuffled every epoch, ``num_batches =
ceil(n / B)`` (no ``drop_last``) and ``B = min(batch, n)``. Each sample goes through
``classify_augment.classify_train`` (random resized crop, flips, RandAugment/AutoAugment or colour jitter, random
erasing) with the keywords ``classify_augment.train_kwargs`` derives from the config.

Determinism and resume are the detection loader's (``yolojax.data.loader``): epoch ``e`` visits
``epoch_order(n, B, seed, e)``, completed to whole batches with its own first images (jit needs a fixed batch, so
the last batch is completed instead of short); the sample at position ``p`` draws from
``np.random.default_rng([seed, e, p])``; each batch is one Grain record built by one worker, so batches depend on
neither the worker count nor where a run was resumed. With ``process_count`` > 1, process ``k`` builds positions
``[k·B/P, (k+1)·B/P)`` of every global batch.

Validation: every image once, in dataset order, through ``classify_augment.classify_val`` (short side to
``floor(imgsz / crop_fraction)``, centre crop ``imgsz``); the last batch is padded with blank images flagged
``image_valid=False`` so the compiled eval step sees one shape.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import cv2
import grain.python as grain
import numpy as np

from yolojax.data.classify import ClassificationIndex, cls_index
from yolojax.data.classify_augment import classify_train, classify_val, train_kwargs
from yolojax.data.classify_tfds import TfdsClassifyDataset
from yolojax.data.errors import DatasetError
from yolojax.data.batching import epoch_order
from yolojax.data.loader import BatchIterator, ValLoader
from yolojax.data.npy_cache import prepare_disk_cache, read_cached
from yolojax.data.sources import batch_array, removed_on_error


@dataclasses.dataclass
class ClassifyDataset:
    """Images and class ids of one split: ``files[i]`` (a path, or a name for records), ``labels`` (n,) int32,
    ``names`` {id: name}, ``imgsz`` the square size the loaders produce; ``ram_cache`` the decoded images
    (``cache="ram"``), ``disk_cache`` whether each image is read from its ``.npy`` (``cache="disk"``). Picklable
    (Grain workers)."""

    files: list[str]
    labels: np.ndarray
    names: dict[int, str]
    imgsz: int
    ram_cache: list | None = None
    disk_cache: bool = False

    @classmethod
    def from_index(cls, index: ClassificationIndex, *, imgsz: int, fraction: float = 1.0) -> "ClassifyDataset":
        """The verified samples of ``index``; ``fraction`` < 1 keeps the first ``round(n · fraction)`` (Ultralytics
        trims the training split so)."""
        samples = index.samples
        if fraction < 1.0:
            samples = samples[: max(1, round(len(samples) * fraction))]
        return cls([f for f, _ in samples], np.array([k for _, k in samples], np.int32), dict(index.names),
                   int(imgsz))

    def __len__(self) -> int:
        return len(self.files)

    def with_cache(self, cache, *, compat: str = "v8", prefix: str = "") -> "ClassifyDataset":
        """This dataset with ``cache`` in use (as Ultralytics' classification dataset): True / "ram" decodes every
        image into memory now; "disk" saves each image's decode beside it as ``<image stem>.npy`` (reused by later
        runs, and shared with Ultralytics) and reads those (``yolojax.data.npy_cache``); False / None reads the image
        files."""
        if cache in (True, "ram"):
            self.ram_cache = [self.load(i) for i in range(len(self))]
        elif cache == "disk":
            self.disk_cache = prepare_disk_cache(self.files, compat=compat, prefix=prefix)
        return self

    def load(self, i: int) -> np.ndarray:
        """Image ``i`` as (h, w, 3) uint8 RGB (decoded as Ultralytics does: OpenCV, EXIF orientation applied)."""
        if self.ram_cache is not None:
            return self.ram_cache[i]
        img = read_cached(self.files[i]) if self.disk_cache else None
        if img is None:
            img = cv2.imread(self.files[i], cv2.IMREAD_COLOR)
        if img is None:
            raise DatasetError(f"{self.files[i]}: OpenCV could not read this image (it was readable when the "
                               "dataset was indexed); remove it or restore the file.")
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)

    def sample(self, i: int) -> tuple[np.ndarray, int]:
        """(image ``i`` as ``load`` gives it, its class id): what the loaders read (also ``TfdsClassifyDataset``)."""
        return self.load(i), int(self.labels[i])


def open_cls_split(info: Mapping[str, Any], split: str, *, imgsz: int, fraction: float = 1.0, compat: str = "v8",
                   cache=False):
    """The ``split`` role (train / val / test) of a checked classification dataset (``check_cls_dataset``'s dict):
    a ``ClassifyDataset`` of the verified folder images, or a ``TfdsClassifyDataset`` for ``tfds:`` data, with
    ``cache`` (False, True / "ram" or "disk"; ``tfds:`` records: not "disk") in use."""
    if "tfds" in info:
        return TfdsClassifyDataset.from_checked(dict(info), split, imgsz=imgsz, fraction=fraction).with_cache(cache)
    if not info.get(split):
        raise DatasetError(f"{info.get('path')}: the classification dataset has no '{split}' split folder.")
    return ClassifyDataset.from_index(cls_index(info[split], info["names"], compat=compat), imgsz=imgsz,
                                      fraction=fraction).with_cache(cache, compat=compat, prefix=f"{split}: ")


class _BuildTrainBatch(grain.MapTransform):
    """Record {"epoch", "positions", "indices", "shared"} -> {"images" (B, S, S, 3) uint8, "labels" (B,) int32}."""

    def __init__(self, ds, kwargs: dict, seed: int):
        self.ds, self.kwargs, self.seed = ds, kwargs, seed

    def map(self, rec):
        s, n = self.kwargs["imgsz"], len(rec["indices"])
        images = batch_array((n, s, s, 3), np.uint8, rec.get("shared", False))
        labels = np.zeros(n, np.int32)
        with removed_on_error(images):
            for k, (pos, idx) in enumerate(zip(rec["positions"], rec["indices"])):
                rng = np.random.default_rng([self.seed, rec["epoch"], int(pos)])
                img, labels[k] = self.ds.sample(int(idx))
                images[k] = classify_train(img, rng, **self.kwargs)
        return {"images": images, "labels": labels}


class ClassifyTrainLoader:
    """Training batches of ``classify_train`` outputs; the interface of ``yolojax.data.loader.TrainLoader`` (see the
    module docstring). ``dataset``: a ``ClassifyDataset`` or ``TfdsClassifyDataset`` (``len``, ``imgsz``,
    ``sample(i) -> (RGB image, class id)``). ``hyp``: the training config (``scale``, ``fliplr``, ``flipud``,
    ``auto_augment``, ``hsv_*``, ``erasing``)."""

    close_mosaic_epoch = None  # the batch plan's mosaic switch; classification has no mosaic
    rect_order = batch_shapes = None  # square batches in shuffled order
    multi_scale_sizes: tuple = ()  # classification batches are never rescaled
    stride = 32

    def __init__(self, dataset, *, batch_size: int, seed: int = 0, hyp: Mapping | None = None,
                 workers: int = 0, prefetch: int = 2, process_index: int = 0, process_count: int = 1):
        if len(dataset) == 0:
            raise ValueError("ClassifyTrainLoader needs a non-empty dataset.")
        self.dataset = dataset
        self.global_batch = min(int(batch_size), len(dataset))
        if self.global_batch % process_count:
            raise ValueError(f"batch {self.global_batch} does not divide over {process_count} processes.")
        self.batch_size = self.global_batch // process_count
        self.process_index, self.process_count = int(process_index), int(process_count)
        self.seed, self.workers, self.prefetch = int(seed), int(workers), int(prefetch)
        self.num_batches = math.ceil(len(dataset) / self.global_batch)
        self.augment = {**train_kwargs(dict(hyp or {})), "imgsz": int(dataset.imgsz)}
        self.transform = _BuildTrainBatch(dataset, self.augment, self.seed)

    def epoch_order(self, epoch: int) -> np.ndarray:
        """Dataset indices of epoch ``epoch`` in visiting order, (num_batches · global_batch,)."""
        return epoch_order(len(self.dataset), self.global_batch, self.seed, epoch)

    def iterator(self, start_epoch: int = 0, start_step: int = 0, end_epoch: int | None = None) -> BatchIterator:
        """Batches from (start_epoch, start_step) to the end of epoch ``end_epoch - 1`` (default: one epoch), one set
        of worker processes for all of them; ``get_state``/``set_state`` and ``close`` as for detection."""
        return BatchIterator(self, start_epoch, start_step, start_epoch + 1 if end_epoch is None else end_epoch)

    def restore_iterator(self, state: bytes | str | Mapping) -> BatchIterator:
        it = BatchIterator(self, 0, 0, 1)
        it.set_state(state)
        return it


class _BuildValBatch(grain.MapTransform):
    """Record {"indices" (-1: padding)} -> images, labels, image_valid, index."""

    def __init__(self, ds, crop_fraction: float):
        self.ds, self.crop_fraction = ds, float(crop_fraction)

    def map(self, rec):
        s, idx = self.ds.imgsz, np.asarray(rec["indices"], np.int64)
        images = batch_array((len(idx), s, s, 3), np.uint8, rec.get("shared", False))
        labels = np.zeros(len(idx), np.int32)
        with removed_on_error(images):
            images.fill(0)
            for k, i in enumerate(idx):
                if i >= 0:
                    img, labels[k] = self.ds.sample(int(i))
                    images[k] = classify_val(img, s, self.crop_fraction)
        return {"images": images, "labels": labels, "image_valid": idx >= 0, "index": idx}


class ClassifyValLoader(ValLoader):
    """Validation batches (see the module docstring). Passes run as the detection ``ValLoader``'s: with ``workers``,
    one set of worker processes serves every pass until ``close``."""

    def __init__(self, dataset, *, batch_size: int, crop_fraction: float = 1.0, workers: int = 0,
                 prefetch: int = 2):
        self._stream, self._pass_open = None, False
        if not 0.0 < float(crop_fraction) <= 1.0:
            raise ValueError(f"crop_fraction={crop_fraction!r} must be in (0, 1].")
        self.dataset, self.workers, self.prefetch = dataset, int(workers), int(prefetch)
        self.batch_size = int(batch_size)
        self.num_batches = math.ceil(len(dataset) / self.batch_size)
        self.shapes = [(dataset.imgsz, dataset.imgsz)]
        self.transform = _BuildValBatch(dataset, crop_fraction)

    def records(self) -> list[dict[str, Any]]:
        padded = np.full(self.num_batches * self.batch_size, -1, np.int64)
        padded[: len(self.dataset)] = np.arange(len(self.dataset))
        return [{"indices": padded[b * self.batch_size:(b + 1) * self.batch_size]} for b in range(self.num_batches)]
