"""The random draws of the training augmentation and the geometry they imply, without pixels.

Every random choice is drawn from an explicit ``np.random.Generator`` argument, so a sample's plan is a pure function
of its seed; the same plan is then rendered by OpenCV on the host (``yolojax.augment.host``) or by the train step
on the device (``yolojax.augment.device``). Boxes are (n, 4) float32 **pixel xyxy** in the current image, classes
(n,) int32.

Ultralytics draws some values with Python ``random`` and some with NumPy; bit-exact reproduction of its random
streams is not a goal, the distributions are. The deterministic parts (letterbox geometry) match Ultralytics exactly.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

PAD_VALUE = 114  # the grey of padding and of canvas pixels no tile covers


def letterbox_geometry(hw: tuple[int, int], new_shape: tuple[int, int], scaleup: bool = True,
                       stride: int | None = None):
    """``letterbox``'s numbers for an (h, w) image:
    ``(r, (unpad_w, unpad_h), (left, top, right, bottom), (dw, dh))``.

    ``stride``: pad only to the next multiple of ``stride`` on each side (the smallest stride-multiple rectangle
    around the image scaled to fit ``new_shape``, Ultralytics' ``auto=True``) instead of to ``new_shape``."""
    h, w = hw
    nh, nw = new_shape
    r = min(nh / h, nw / w)
    if not scaleup:
        r = min(r, 1.0)
    unpad_w, unpad_h = max(int(round(w * r)), 1), max(int(round(h * r)), 1)  # thin images keep one pixel
    pad_w, pad_h = nw - unpad_w, nh - unpad_h
    if stride:
        pad_w, pad_h = pad_w % stride, pad_h % stride
    dw, dh = pad_w / 2, pad_h / 2
    top, bottom = int(round(dh - 0.1)), int(round(dh + 0.1))
    left, right = int(round(dw - 0.1)), int(round(dw + 0.1))
    return r, (unpad_w, unpad_h), (left, top, right, bottom), (dw, dh)


def letterbox_boxes(boxes: np.ndarray, r: float, left_top: tuple[int, int], dwh: tuple[float, float],
                    compat: str = "v8") -> np.ndarray:
    """Boxes through a letterbox: scaled by r, shifted by the un-rounded half padding (v8) or the integer one."""
    shift = np.array([*dwh] * 2 if compat == "v8" else [*left_top] * 2, np.float32)
    return boxes * np.float32(r) + shift


def mosaic_layout(sizes, s: int, rng: np.random.Generator):
    """Where the 4 tiles of a mosaic go: around a centre (xc, yc), each ~ U(s/2, 3s/2) (y drawn first), per
    tile ``(x1a, y1a, x2a, y2a, x1b, y1b, x2b, y2b)``: canvas rectangle ``a`` shows tile rectangle ``b``.
    ``sizes``: the 4 tiles' (h, w); the canvas is 2s × 2s."""
    yc, xc = (int(rng.uniform(s / 2, 3 * s / 2)) for _ in range(2))
    rects = []
    for k, (h, w) in enumerate(sizes):
        if k == 0:  # top left
            x1a, y1a, x2a, y2a = max(xc - w, 0), max(yc - h, 0), xc, yc
            x1b, y1b, x2b, y2b = w - (x2a - x1a), h - (y2a - y1a), w, h
        elif k == 1:  # top right
            x1a, y1a, x2a, y2a = xc, max(yc - h, 0), min(xc + w, 2 * s), yc
            x1b, y1b, x2b, y2b = 0, h - (y2a - y1a), min(w, x2a - x1a), h
        elif k == 2:  # bottom left
            x1a, y1a, x2a, y2a = max(xc - w, 0), yc, xc, min(2 * s, yc + h)
            x1b, y1b, x2b, y2b = w - (x2a - x1a), 0, w, min(y2a - y1a, h)
        else:  # bottom right
            x1a, y1a, x2a, y2a = xc, yc, min(xc + w, 2 * s), min(2 * s, yc + h)
            x1b, y1b, x2b, y2b = 0, 0, min(w, x2a - x1a), min(y2a - y1a, h)
        rects.append((x1a, y1a, x2a, y2a, x1b, y1b, x2b, y2b))
    return rects


def mosaic_labels(labels, rects, s: int):
    """The 4 tiles' (boxes, classes) moved onto the mosaic canvas of ``rects`` (``mosaic_layout``), clipped to
    [0, 2s], zero-area boxes removed."""
    all_boxes, all_cls = [], []
    for (boxes, cls), (x1a, y1a, _, _, x1b, y1b, _, _) in zip(labels, rects):
        pad = np.array([x1a - x1b, y1a - y1b] * 2, np.float32)
        all_boxes.append(boxes.astype(np.float32) + pad)
        all_cls.append(cls)
    boxes = np.clip(np.concatenate(all_boxes, 0), 0, 2 * s)
    cls = np.concatenate(all_cls, 0).astype(np.int32)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return boxes[keep], cls[keep]


def box_candidates(box1: np.ndarray, box2: np.ndarray, wh_thr: float = 2, ar_thr: float = 100,
                   area_thr: float = 0.1, eps: float = 1e-16) -> np.ndarray:
    """Keep boxes that stay > 2 px, keep > 10 % of their (scaled) area and an aspect ratio < 100. (n, 4) xyxy each."""
    w1, h1 = box1[:, 2] - box1[:, 0], box1[:, 3] - box1[:, 1]
    w2, h2 = box2[:, 2] - box2[:, 0], box2[:, 3] - box2[:, 1]
    ar = np.maximum(w2 / (h2 + eps), h2 / (w2 + eps))
    return (w2 > wh_thr) & (h2 > wh_thr) & (w2 * h2 / (w1 * h1 + eps) > area_thr) & (ar < ar_thr)


def perspective_matrix(rng: np.random.Generator, in_hw: tuple[int, int], out_size: tuple[int, int], *, degrees=0.0,
                       translate=0.1, scale=0.5, shear=0.0, perspective=0.0):
    """The random warp of ``random_perspective``: ``(M (3, 3) float32, scale k)``, drawn from ``rng``."""
    h_out, w_out = out_size
    C = np.eye(3, dtype=np.float32)
    C[0, 2], C[1, 2] = -in_hw[1] / 2, -in_hw[0] / 2
    P = np.eye(3, dtype=np.float32)
    P[2, 0], P[2, 1] = rng.uniform(-perspective, perspective), rng.uniform(-perspective, perspective)
    R = np.eye(3, dtype=np.float32)
    a, k = rng.uniform(-degrees, degrees), rng.uniform(1 - scale, 1 + scale)
    R[:2] = cv2.getRotationMatrix2D(angle=a, center=(0, 0), scale=k)
    S = np.eye(3, dtype=np.float32)
    S[0, 1] = math.tan(rng.uniform(-shear, shear) * math.pi / 180)
    S[1, 0] = math.tan(rng.uniform(-shear, shear) * math.pi / 180)
    T = np.eye(3, dtype=np.float32)
    T[0, 2] = rng.uniform(0.5 - translate, 0.5 + translate) * w_out
    T[1, 2] = rng.uniform(0.5 - translate, 0.5 + translate) * h_out
    return T @ S @ R @ P @ C, k


def warp_labels(boxes, cls, M, k, out_size: tuple[int, int], perspective: bool = False):
    """Boxes through the warp ``M``: corners transformed, min/max, clipped to ``out_size`` (h, w), then filtered by
    ``box_candidates`` against the original boxes scaled by ``k``."""
    h_out, w_out = out_size
    n = len(boxes)
    if n == 0:
        return boxes.reshape(0, 4).astype(np.float32), cls.reshape(0).astype(np.int32)
    xy = np.ones((n * 4, 3), np.float32)
    xy[:, :2] = boxes[:, [0, 1, 2, 3, 0, 3, 2, 1]].reshape(n * 4, 2)  # x1y1, x2y2, x1y2, x2y1
    xy = xy @ M.T
    xy = (xy[:, :2] / xy[:, 2:3] if perspective else xy[:, :2]).reshape(n, 8)
    x, y = xy[:, [0, 2, 4, 6]], xy[:, [1, 3, 5, 7]]
    new = np.stack([x.min(1), y.min(1), x.max(1), y.max(1)], 1).astype(np.float32)
    new[:, [0, 2]] = new[:, [0, 2]].clip(0, w_out)
    new[:, [1, 3]] = new[:, [1, 3]].clip(0, h_out)
    keep = box_candidates(boxes * np.float32(k), new)
    return new[keep], cls[keep].astype(np.int32)


def _fma32(a, x, c) -> np.ndarray:
    """float32 ``a·x + c`` rounded once, as a fused multiply-add (float64 holds the product of a float32 and an
    integer below 2^29 exactly)."""
    return (np.float64(np.float32(a)) * np.asarray(x, np.float64) + np.asarray(c, np.float64)).astype(np.float32)


def affine_coordinates(M, out_hw: tuple[int, int], flip_lr: bool = False, flip_ud: bool = False):
    """Per-column and per-row parts of OpenCV's inverse map for ``cv2.warpAffine(img, M, (w, h))``.

    ``M``: the forward 2×3 (or 3×3 with last row 0 0 1) matrix. Returns ``cols`` (2, w), ``rows`` (2, h) float32
    with ``src_x(y, x) = cols[0, x] + rows[0, y]`` and ``src_y(y, x) = cols[1, x] + rows[1, y]``, then reversed
    along x (``flip_lr``) / y (``flip_ud``) so the warp also flips. OpenCV inverts ``M`` in float64, rounds it to
    float32 and computes ``fma(m0, x, y·m1 + m2)``; without rotation or shear (m1 = m3 = 0, the default) the map is
    separable and these parts hold it exactly, otherwise ``cols`` holds the rounded products ``m0·x``, ``m3·x``.
    """
    h, w = out_hw
    m = np.asarray(M, np.float64).reshape(-1)[:6].copy()
    d = m[0] * m[4] - m[1] * m[3]
    d = 1.0 / d if d != 0 else 0.0
    a11, a22 = m[4] * d, m[0] * d
    m[0], m[1], m[3], m[4] = a11, m[1] * -d, m[3] * -d, a22
    m[2], m[5] = -m[0] * m[2] - m[1] * m[5], -m[3] * m[2] - m[4] * m[5]
    f = m.astype(np.float32)
    x, y = np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32)
    row_x = (y * f[1]).astype(np.float32) + f[2]  # OpenCV: float(y·m1 + m2) per row, not fused
    row_y = (y * f[4]).astype(np.float32) + f[5]
    cols, rows = np.zeros((2, w), np.float32), np.zeros((2, h), np.float32)
    if f[1] == 0 and f[3] == 0:  # separable: x depends on the column only, y on the row
        cols[0] = _fma32(f[0], x, f[2])
        rows[1] = _fma32(f[4], y, f[5])
    else:
        cols[0], cols[1] = x * f[0], x * f[3]
        rows[0], rows[1] = row_x, row_y
    if flip_lr:
        cols = cols[:, ::-1]
    if flip_ud:
        rows = rows[:, ::-1]
    return np.ascontiguousarray(cols), np.ascontiguousarray(rows)


def hsv_tables(rng: np.random.Generator, hgain=0.015, sgain=0.7, vgain=0.4, compat: str = "v8") -> np.ndarray | None:
    """The HSV jitter's random part: gains ``1 + U(-1, 1)·(h, s, v)gain`` drawn from ``rng`` as one draw of
    3, turned into uint8 (3, 256) lookup tables for H, S, V. Hue: ``x·g mod 180`` (v8) or ``x + (g−1)·180 mod 180``.
    None (and nothing drawn) when every gain is 0."""
    if not (hgain or sgain or vgain):
        return None
    r = rng.uniform(-1, 1, 3) * np.array([hgain, sgain, vgain]) + 1
    x = np.arange(0, 256, dtype=r.dtype)
    tables = np.empty((3, 256), np.uint8)
    tables[0] = (x * r[0]) % 180 if compat == "v8" else (x + (r[0] - 1) * 180) % 180
    tables[1] = np.clip(x * r[1], 0, 255)
    if compat != "v8":
        tables[1, 0] = 0
    tables[2] = np.clip(x * r[2], 0, 255)
    return tables


def flip_draws(rng: np.random.Generator, flipud=0.0, fliplr=0.5) -> tuple[bool, bool]:
    """The flips' coins: (up-down with p=flipud, then left-right with p=fliplr), one draw each."""
    return bool(rng.random() < flipud), bool(rng.random() < fliplr)


def flip_boxes(boxes, hw: tuple[int, int], ud: bool, lr: bool) -> np.ndarray:
    """Pixel xyxy boxes of an (h, w) image flipped up-down (``ud``) and/or left-right (``lr``)."""
    h, w = hw
    if ud:
        boxes = np.stack([boxes[:, 0], h - boxes[:, 3], boxes[:, 2], h - boxes[:, 1]], 1)
    if lr:
        boxes = np.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], 1)
    return boxes.astype(np.float32).reshape(-1, 4)
