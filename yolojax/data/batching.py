"""Batch shapes and order: box buckets and padding, rectangular and multi-scale sizes, each epoch's order.

Box buckets: a batch's targets are padded to M boxes, M the smallest of ``BUCKETS`` that holds its largest sample, so
a run compiles the train step for a few M only (``box_bucket``, ``pad_boxes``; ``usual_box_bucket`` starts the list
where a dataset's batches usually are).

Epoch order: epoch ``e`` visits ``permutation(seed, e)`` completed to a whole number of batches with its own first
indices (``epoch_order``; jit needs a fixed batch size, as distributed samplers pad).

Rectangular batches (``rect_batch_shapes``): the images in aspect-ratio order, each batch letterboxed into its own
(h, w) (Ultralytics' batch shapes; stride 32, pad 0.0 for training, 0.5 for validation).

Multi-scale training: each batch's long side is a size drawn as Ultralytics draws it (uniform stride multiples in
[0.5, 1.5]·imgsz, ``multi_scale_size``) rounded to the nearest of ``MULTI_SCALE_BUCKETS`` evenly spaced sizes, so a
run compiles at most that many image shapes (per rect shape). The host scales the boxes (``resized``); the train
step resizes the images (``yolojax.augment.device.resize_batch``).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from yolojax.augment.resize import source_coordinates

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


def pad_boxes(boxes: Sequence[np.ndarray], classes: Sequence[np.ndarray], buckets=BUCKETS):
    """Stack per-image (n_i, 4) boxes and (n_i,) classes into zero-padded (B, M, 4), (B, M) and a (B, M) mask."""
    m = box_bucket(max((len(b) for b in boxes), default=0), buckets)
    out_b = np.zeros((len(boxes), m, 4), np.float32)
    out_c = np.zeros((len(boxes), m), np.int32)
    mask = np.zeros((len(boxes), m), bool)
    for i, (b, c) in enumerate(zip(boxes, classes)):
        out_b[i, :len(b)], out_c[i, :len(c)], mask[i, :len(b)] = b, c, True
    return out_b, out_c, mask


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


def resized(batch: dict, hw: tuple[int, int], new_hw: tuple[int, int]) -> dict:
    """``batch`` (images (h, w)) with its boxes scaled to ``new_hw`` and the device's resize coordinates."""
    (h, w), (nh, nw) = hw, new_hw
    n = batch["boxes"].shape[0]
    batch["boxes"] = batch["boxes"] * np.array([nw / w, nh / h, nw / w, nh / h], np.float32)
    batch["scale_rows"] = np.tile(source_coordinates(h, nh), (n, 1))
    batch["scale_cols"] = np.tile(source_coordinates(w, nw), (n, 1))
    return batch


def epoch_order(n: int, global_batch: int, seed: int, epoch: int) -> np.ndarray:
    """Dataset indices visited in ``epoch``: a seeded permutation, completed to a whole number of batches with its
    own first indices. Shape (ceil(n / global_batch) · global_batch,)."""
    return whole_batches(np.random.default_rng([seed, epoch, 0x5EED]).permutation(n), global_batch)


def whole_batches(order: np.ndarray, global_batch: int) -> np.ndarray:
    """``order`` completed to a whole number of batches with its own first indices (``global_batch`` <= its length)."""
    n = len(order)
    need = math.ceil(n / global_batch) * global_batch
    return np.concatenate([order, order[: need - n]]) if need > n else order


def rect_batch_shapes(hw: np.ndarray, batch_size: int, imgsz: int, stride: int = 32, pad: float = 0.5):
    """Rectangular batches: returns (order, shapes) with ``order`` the images sorted by aspect ratio h/w
    (stable) and ``shapes`` (n_batches, 2) the letterbox (h, w) of each batch of ``batch_size`` sorted images."""
    ar = hw[:, 0] / hw[:, 1]
    order = np.argsort(ar, kind="stable")
    ar = ar[order]
    nb = int(math.ceil(len(ar) / batch_size))
    shapes = []
    for b in range(nb):
        a = ar[b * batch_size:(b + 1) * batch_size]
        lo, hi = a.min(), a.max()
        shape = [hi, 1.0] if hi < 1 else ([1.0, 1 / lo] if lo > 1 else [1.0, 1.0])
        shapes.append(np.ceil(np.array(shape) * imgsz / stride + pad).astype(int) * stride)
    return order, np.array(shapes, np.int64).reshape(-1, 2)
