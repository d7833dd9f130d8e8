"""The training and validation augmentation's pixels on the host, with OpenCV: pure functions.

Images are uint8 HWC **BGR** (OpenCV order; converted to RGB at the end of a sample), boxes (n, 4) float32 **pixel
xyxy** in the current image, classes (n,) int32. The random draws and the box geometry are ``yolojax.augment.plan``'s;
the functions here that draw (``random_*``, ``mosaic4``, ``mixup``) take an explicit ``np.random.Generator``. Load
resize, letterbox and the validation batches match Ultralytics exactly.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from yolojax.augment.plan import (PAD_VALUE, flip_draws, flip_boxes, hsv_tables, letterbox_boxes, letterbox_geometry,
                                  mosaic_labels, mosaic_layout, perspective_matrix, warp_labels)


def resize_long_side(img: np.ndarray, imgsz: int) -> np.ndarray:
    """Scale so the long side is ``imgsz``: (w, h) = (min(ceil(w0 r), imgsz), min(ceil(h0 r), imgsz)), bilinear."""
    h0, w0 = img.shape[:2]
    r = imgsz / max(h0, w0)
    if r != 1:
        w, h = min(math.ceil(w0 * r), imgsz), min(math.ceil(h0 * r), imgsz)
        img = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
    return img


def letterbox(img: np.ndarray, boxes: np.ndarray | None, new_shape: tuple[int, int], *, scaleup: bool = True,
              compat: str = "v8", stride: int | None = None):
    """Resize keeping the aspect ratio to fit ``new_shape`` (h, w), centre, pad with 114 (``auto=False``;
    with ``stride``, pad only up to the next multiple of it, ``auto=True``: see ``letterbox_geometry``).

    Returns ``(img, boxes, r, (left, top), (dw, dh))``. Boxes are scaled by r and shifted by the half padding: the
    un-rounded ``(dw, dh)`` (``compat="v8"``) or the integer ``(left, top)`` actually used (``"current"``).
    """
    h, w = img.shape[:2]
    r, (unpad_w, unpad_h), (left, top, right, bottom), dwh = letterbox_geometry((h, w), new_shape, scaleup, stride)
    if (w, h) != (unpad_w, unpad_h):
        img = cv2.resize(img, (unpad_w, unpad_h), interpolation=cv2.INTER_LINEAR)
    if top or bottom or left or right:
        img = cv2.copyMakeBorder(img, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3)
    if boxes is not None:
        boxes = letterbox_boxes(boxes, r, (left, top), dwh, compat)
    return img, boxes, r, (left, top), dwh


def draw_mosaic(images, rects, s: int, out: np.ndarray | None = None, alpha: bool = False) -> np.ndarray:
    """The mosaic canvas (2s, 2s, 3 or 4) filled with 114 with ``images[k]``'s rectangle b of ``rects[k]``
    (``mosaic_layout``) in its rectangle a. ``out``: a canvas to draw on (reused when its shape fits). ``alpha``: a
    4-channel canvas (BGR + a padding channel): OpenCV's bilinear warp runs faster on 4 channels than on 3 and
    gives the same first three, so the loader warps this one and drops the 4th channel after."""
    shape = (2 * s, 2 * s, 4 if alpha else images[0].shape[2])
    if out is not None and out.shape == shape and out.dtype == np.uint8:
        canvas = out
        canvas.fill(PAD_VALUE)
    else:
        canvas = np.full(shape, PAD_VALUE, np.uint8)
    for img, (x1a, y1a, x2a, y2a, x1b, y1b, x2b, y2b) in zip(images, rects):
        if alpha:  # convert while placing: one pass, written straight into the canvas
            view = canvas[y1a:y2a, x1a:x2a]
            placed = cv2.cvtColor(img[y1b:y2b, x1b:x2b], cv2.COLOR_BGR2BGRA, dst=view)
            if placed.ctypes.data != view.ctypes.data:  # an OpenCV build that wrote a copy instead
                view[...] = placed
        else:
            canvas[y1a:y2a, x1a:x2a] = img[y1b:y2b, x1b:x2b]
    return canvas


def mosaic4(tiles, s: int, rng: np.random.Generator, out: np.ndarray | None = None, alpha: bool = False):
    """4-image mosaic on a 2s×2s canvas filled with 114, centre U(s/2, 3s/2).

    ``tiles``: 4 × (img (h, w, 3) uint8, boxes (n, 4) pixel xyxy of that img, classes (n,)). Returns the canvas and
    the boxes/classes on it, clipped to [0, 2s] with zero-area boxes removed. ``out``, ``alpha``: see
    ``draw_mosaic`` (a loader reuses one canvas instead of allocating one per sample).
    """
    rects = mosaic_layout([t[0].shape[:2] for t in tiles], s, rng)
    canvas = draw_mosaic([t[0] for t in tiles], rects, s, out, alpha)
    boxes, cls = mosaic_labels([t[1:] for t in tiles], rects, s)
    return canvas, boxes, cls


def random_perspective(img, boxes, cls, rng: np.random.Generator, *, out_size: tuple[int, int],
                       degrees=0.0, translate=0.1, scale=0.5, shear=0.0, perspective=0.0):
    """Random affine/perspective warp ``M = T·S·R·P·C`` into an ``out_size`` (h, w) image.

    ``C`` moves the input centre to the origin and ``T`` to U(0.5 ± translate)·out_size, so with a 2s mosaic input
    and out_size s this is Ultralytics' border −s/2. Boxes: corners transformed, min/max, clipped, then filtered by
    ``box_candidates`` against the original boxes scaled by the sampled scale.
    """
    h_out, w_out = out_size
    M, k = perspective_matrix(rng, img.shape[:2], out_size, degrees=degrees, translate=translate, scale=scale,
                              shear=shear, perspective=perspective)
    if perspective:
        img = cv2.warpPerspective(img, M, dsize=(w_out, h_out), borderValue=(PAD_VALUE,) * 3)
    elif img.shape[:2] != (h_out, w_out) or (M != np.eye(3)).any():
        img = cv2.warpAffine(img, M[:2], dsize=(w_out, h_out), borderValue=(PAD_VALUE,) * 3)
    return (img, *warp_labels(boxes, cls, M, k, out_size, bool(perspective)))


def render_warp_plan(sources: np.ndarray, tiles: np.ndarray, cols: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """One sample of a ``TrainLoader(warp_on_device=True)`` batch drawn on the host with OpenCV (for pictures and
    checks; the train step uses ``yolojax.augment.warp.warp_tiles``): the canvas from ``sources`` and ``tiles``
    (T, 7), then ``cv2.remap`` with the map ``cols``/``rows`` describe. BGR (H, W, 3) uint8, within a grey level of
    the device's."""
    used = tiles[tiles[:, 0] >= 0]
    canvas = np.full((int(used[:, 4].max()), int(used[:, 3].max()), sources.shape[-1]), PAD_VALUE, np.uint8)
    for k, x1, y1, x2, y2, dx, dy in used:
        canvas[y1:y2, x1:x2] = sources[k, y1 + dy:y2 + dy, x1 + dx:x2 + dx]
    map_x = cols[0][None, :] + rows[0][:, None]
    map_y = cols[1][None, :] + rows[1][:, None]
    return cv2.remap(canvas, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                     borderValue=(PAD_VALUE,) * 3)


def apply_hsv_tables(img: np.ndarray, tables: np.ndarray | None, to_rgb: bool = False) -> np.ndarray:
    """BGR uint8 image -> HSV -> the (3, 256) ``tables`` -> BGR, or RGB with ``to_rgb`` (the conversion back from
    HSV then costs nothing extra). ``tables`` None: no jitter, only the channel order."""
    if tables is None:
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB) if to_rgb else img
    lut = np.ascontiguousarray(tables.T[:, None, :])  # (256, 1, 3): a single cv2.LUT pass, no split/merge
    hsv = cv2.LUT(cv2.cvtColor(img, cv2.COLOR_BGR2HSV), lut)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB if to_rgb else cv2.COLOR_HSV2BGR)


def random_hsv(img: np.ndarray, rng: np.random.Generator, hgain=0.015, sgain=0.7, vgain=0.4,
               compat: str = "v8", to_rgb: bool = False) -> np.ndarray:
    """HSV jitter by 256-entry lookup tables: ``hsv_tables`` then ``apply_hsv_tables``.

    BGR in; BGR out, or RGB with ``to_rgb``."""
    return apply_hsv_tables(img, hsv_tables(rng, hgain, sgain, vgain, compat), to_rgb)


def random_flip(img, boxes, rng: np.random.Generator, flipud=0.0, fliplr=0.5):
    """Vertical flip with p=flipud, then horizontal with p=fliplr (one draw each, in that order)."""
    ud, lr = flip_draws(rng, flipud, fliplr)
    if ud:
        img = cv2.flip(img, 0)  # OpenCV: a contiguous copy, much faster than np.flipud + ascontiguousarray
    if lr:
        img = cv2.flip(img, 1)
    return img, flip_boxes(boxes, img.shape[:2], ud, lr)


def mixup(a, b, rng: np.random.Generator):
    """Blend two (img, boxes, cls) samples with r ~ Beta(32, 32); labels concatenated; uint8 by truncation."""
    r = rng.beta(32.0, 32.0)
    img = (a[0] * r + b[0] * (1 - r)).astype(np.uint8)
    return img, np.concatenate([a[1], b[1]], 0), np.concatenate([a[2], b[2]], 0)
