"""One training sample: its plan drawn (mosaic tiles, affine matrix, mixup, colour gains, flips), then rendered.

``train_sample(ds, index, rng, hyp, layout=...) -> Sample``: every random draw of the sample, in one fixed order, so
the three layouts (``yolojax.augment.batch.Layout``) give the same sample: ``IMAGES`` renders all of it on the host
with OpenCV; ``HSV`` leaves the colour jitter to the train step; ``WARP`` leaves the mosaic, warp, flips and jitter to
it (``yolojax.augment.device``). ``ds`` is any dataset with ``imgsz``, ``len`` and ``load(i) -> (img BGR (h, w, 3)
long side imgsz, boxes (n, 4) pixel xyxy, classes (n,), (h0, w0))`` (``yolojax.data.DetectionDataset``).
"""
from __future__ import annotations

import dataclasses
import threading
from typing import Any, Mapping, NamedTuple

import cv2
import numpy as np

from yolojax.augment import host, plan
from yolojax.augment.batch import Layout


# Ultralytics' default augmentation hyperparameters.
DEFAULT_HYP = dict(hsv_h=0.015, hsv_s=0.7, hsv_v=0.4, degrees=0.0, translate=0.1, scale=0.5, shear=0.0,
                   perspective=0.0, flipud=0.0, fliplr=0.5, bgr=0.0, mosaic=1.0, mixup=0.0, copy_paste=0.0)


def augment_hyp(hyp: Mapping[str, Any] | None = None) -> dict[str, float]:
    """Default augmentation hyperparameters updated with the known keys of ``hyp`` (a dict or ConfigDict)."""
    out = dict(DEFAULT_HYP)
    if hyp is not None:
        for k in DEFAULT_HYP:
            if k in hyp and hyp[k] is not None:
                out[k] = float(hyp[k])
    return out


class Sample(NamedTuple):
    """One training sample, in every layout the same shape.

    ``image``: uint8 (S, S, 3) (or a rectangular batch's (h, w, 3)): RGB for ``Layout.IMAGES`` (BGR where the ``bgr``
    coin kept it), BGR before the jitter for ``Layout.HSV``, None for ``Layout.WARP``. ``boxes`` (n, 4) float32 pixel
    xyxy, ``classes`` (n,) int32 in the finished image. ``hsv_tables``: (3, 256) uint8 the device applies (``HSV``,
    ``WARP``; None without gains), None when the host applied them. ``to_rgb``: whether the finished image is RGB.
    ``warp``: for ``Layout.WARP``, the plan ``(tiles (4, 7) int32, cols (2, S), rows (2, S) float32)``
    (``yolojax.augment.warp``), else None."""

    image: np.ndarray | None
    boxes: np.ndarray
    classes: np.ndarray
    hsv_tables: np.ndarray | None
    to_rgb: bool
    warp: tuple[np.ndarray, np.ndarray, np.ndarray] | None


_canvas = threading.local()


@dataclasses.dataclass
class _Layout:
    """The random layout of one mosaic (or single) image before its pixels: ``tiles`` (pool position or None,
    image BGR, its place: canvas rectangle a and image rectangle b as in ``plan.mosaic_layout``); ``kind``
    "mosaic", "letterbox" or "plain"; the warp ``M`` into the output (h, w) ``out`` (S×S, or a rectangular batch's
    shape); the boxes and classes after it."""

    tiles: list
    kind: str
    M: np.ndarray
    boxes: np.ndarray
    classes: np.ndarray
    out: tuple[int, int]


def _layout(ds, index: int, rng: np.random.Generator, hyp: dict, mosaic: bool, compat: str, pool=None,
            slot: int | None = None, shape: tuple[int, int] | None = None) -> _Layout:
    """Every random draw of the mosaic (or letterbox) + random perspective stage, in order, and the boxes through
    it; the pixels are left to ``_render`` (host) or the train step (``yolojax.augment.warp``). ``pool``: dataset
    indices the mosaic partners are drawn from (the loader passes the batch's own images, like Ultralytics' FIFO
    buffer of recently loaded images, so each image is decoded once) or None (the whole dataset); ``slot``: this
    sample's position in ``pool``; ``shape``: the (h, w) of a rectangular training batch (no mosaic), else S×S."""
    s = ds.imgsz
    out = (s, s) if shape is None else (int(shape[0]), int(shape[1]))
    if shape is None and mosaic and hyp["mosaic"] > 0 and rng.random() <= hyp["mosaic"]:
        if pool is None:
            picks = [(None, index), *((None, int(j)) for j in rng.integers(0, len(ds), 3))]
        else:
            picks = [(slot, index), *((int(j), int(pool[j])) for j in rng.integers(0, len(pool), 3))]
        loaded = [ds.load(i) for _, i in picks]
        rects = plan.mosaic_layout([im.shape[:2] for im, *_ in loaded], s, rng)
        tiles = [(pos, im, r) for (pos, _), (im, *_), r in zip(picks, loaded, rects)]
        boxes, cls = plan.mosaic_labels([(b, c) for _, b, c, _ in loaded], rects, s)
        kind, canvas_hw = "mosaic", (2 * s, 2 * s)
    else:
        img, boxes, cls, _ = ds.load(index)
        h, w = img.shape[:2]
        kind, canvas_hw, tiles = "plain", (h, w), [(slot, img, (0, 0, w, h, 0, 0, w, h))]
        if compat == "v8":  # v8-era: letterbox to the output first (scaleup allowed), then the affine with border 0
            r, (uw, uh), (left, top, _, _), dwh = plan.letterbox_geometry((h, w), out, scaleup=True)
            boxes = plan.letterbox_boxes(boxes, r, (left, top), dwh, compat)
            kind, canvas_hw, tiles = "letterbox", out, [(slot, img, (left, top, left + uw, top + uh, 0, 0, uw, uh))]
    M, k = plan.perspective_matrix(rng, canvas_hw, out, degrees=hyp["degrees"], translate=hyp["translate"],
                                   scale=hyp["scale"], shear=hyp["shear"], perspective=hyp["perspective"])
    boxes, cls = plan.warp_labels(boxes, cls, M, k, out, bool(hyp["perspective"]))
    return _Layout(tiles, kind, M, boxes, cls, out)


def _render(lay: _Layout, s: int, perspective: bool) -> np.ndarray:
    """The host's pixels of a layout: the mosaic drawn on a 4-channel canvas (OpenCV's bilinear warp runs
    faster on 4 channels, same first three) or the letterboxed image, then OpenCV's warp; BGR (h, w, 3), ``lay.out``."""
    if lay.kind == "mosaic":
        # one canvas per thread, reused (the warp below copies out of it); 4 channels: a faster warp
        img = _canvas.array = host.draw_mosaic([im for _, im, _ in lay.tiles], [r for *_, r in lay.tiles], s,
                                               out=getattr(_canvas, "array", None), alpha=True)
    elif lay.kind == "letterbox":
        img = host.letterbox(lay.tiles[0][1], None, lay.out, scaleup=True)[0]
    else:
        img = lay.tiles[0][1]
    M, (h, w) = lay.M, lay.out
    if perspective:
        img = cv2.warpPerspective(img, M, dsize=(w, h), borderValue=(plan.PAD_VALUE,) * 3)
    elif img.shape[:2] != (h, w) or (M != np.eye(3)).any():
        img = cv2.warpAffine(img, M[:2], dsize=(w, h), borderValue=(plan.PAD_VALUE,) * 3)
    return cv2.cvtColor(img, cv2.COLOR_BGRA2BGR) if img.shape[2] == 4 else img


def _pre_transform(ds, index: int, rng: np.random.Generator, hyp: dict, mosaic: bool, compat: str, pool=None,
                   shape=None):
    """Mosaic (or the single image) + random perspective → (img BGR (S, S, 3) or ``shape``, boxes, classes)."""
    lay = _layout(ds, index, rng, hyp, mosaic, compat, pool, shape=shape)
    return _render(lay, ds.imgsz, bool(hyp["perspective"])), lay.boxes, lay.classes


def _warp_plan(lay: _Layout, s: int) -> np.ndarray:
    """A layout's tiles for ``yolojax.augment.warp.warp_tiles``: (4, 7) int32 rows ``(source, x1, y1, x2, y2, dx,
    dy)`` (source: the position in the batch, whose decoded images the loader ships; -1: unused)."""
    tiles = np.full((4, 7), -1, np.int32)
    for t, (pos, im, (x1a, y1a, x2a, y2a, x1b, y1b, _, _)) in enumerate(lay.tiles):
        if lay.kind == "letterbox" and (x2a - x1a, y2a - y1a) != im.shape[1::-1]:
            raise ValueError(f"a {im.shape[1]}x{im.shape[0]} image is not {s} on its long side: the device warp "
                             "cannot resize it")
        tiles[t] = (pos, x1a, y1a, x2a, y2a, x1b - x1a, y1b - y1a)
    return tiles


def train_sample(ds, index: int, rng: np.random.Generator, hyp: dict, *, mosaic: bool = True, compat: str = "v8",
                 pool=None, layout: Layout = Layout.IMAGES, slot: int | None = None,
                 shape: tuple[int, int] | None = None) -> Sample:
    """One augmented training sample: mosaic (or one image when ``mosaic=False``), the random warp, mixup, the HSV
    jitter and the flips, drawn from ``rng`` in the same order in every ``layout`` (see ``Sample``). ``hyp`` as
    returned by ``augment_hyp``; ``pool``: dataset indices that mosaic/mixup partners are drawn from
    (default: all).

    ``Layout.HSV``: the image is returned before the jitter (BGR) with its tables; the train step's
    ``hsv_jitter(image, tables, to_rgb)`` gives exactly the ``Layout.IMAGES`` image.

    ``Layout.WARP``: no pixels; ``pool`` is the batch (whose images the loader ships) and ``slot`` this sample's
    position in it; ``warp`` holds the plan, the same draws and boxes; no mixup, no perspective (the loader checks).

    ``shape``: rectangular training (``rect=True``): no mosaic, the image goes into this (h, w) (the batch's
    ``rect_shape``) instead of S×S."""
    warp = layout is Layout.WARP
    if warp:
        if (mosaic and hyp["mixup"] > 0) or hyp["perspective"] or pool is None or shape is not None:
            raise ValueError("the device warp needs mixup=0, perspective=0, square batches and the batch as the "
                             "partner pool")
        lay = _layout(ds, index, rng, hyp, mosaic, compat, pool, slot)
        boxes, cls = lay.boxes, lay.classes
    else:
        img, boxes, cls = _pre_transform(ds, index, rng, hyp, mosaic, compat, pool, shape)
    if shape is None and mosaic and hyp["mixup"] > 0 and rng.random() <= hyp["mixup"]:
        partner = int(rng.integers(0, len(ds))) if pool is None else int(pool[rng.integers(0, len(pool))])
        other = _pre_transform(ds, partner, rng, hyp, mosaic, compat, pool)
        img, boxes, cls = host.mixup((img, boxes, cls), other, rng)
    # HSV jitter (BGR in) converts to RGB on its way back, unless the `bgr` coin keeps BGR (as Ultralytics' Format);
    # the coin is drawn after the flips in Ultralytics, but its order among independent draws does not change the
    # outcome.
    # The flips commute with the per-pixel jitter, so applying it after them (on the device) changes nothing.
    keep_bgr = bool(hyp["bgr"]) and rng.random() < hyp["bgr"]
    tables = plan.hsv_tables(rng, hyp["hsv_h"], hyp["hsv_s"], hyp["hsv_v"], compat=compat)
    if warp:
        s = ds.imgsz
        ud, lr = plan.flip_draws(rng, hyp["flipud"], hyp["fliplr"])
        boxes = plan.flip_boxes(boxes, (s, s), ud, lr)
        cols, rows = plan.affine_coordinates(lay.M[:2], (s, s), flip_lr=lr, flip_ud=ud)
        return Sample(None, boxes, cls.astype(np.int32), tables, not keep_bgr, (_warp_plan(lay, s), cols, rows))
    if layout is Layout.IMAGES:
        img = host.apply_hsv_tables(img, tables, to_rgb=not keep_bgr)
        tables = None
    img, boxes = host.random_flip(img, boxes, rng, hyp["flipud"], hyp["fliplr"])
    return Sample(img, boxes.astype(np.float32), cls.astype(np.int32), tables, not keep_bgr, None)
