"""Training/validation augmentations in NumPy + OpenCV, as pure functions.

Conventions: images are uint8 HWC **BGR** (OpenCV order; converted to RGB at the end of a sample), boxes are
(n, 4) float32 **pixel xyxy** in the current image, classes are (n,) int32. Every random choice is drawn from an
explicit ``np.random.Generator`` argument, so a sample is a pure function of its seed.

Ultralytics draws some values with Python ``random`` and some with NumPy; bit-exact reproduction of its
random streams is not a goal, the distributions are. The deterministic parts (load resize, letterbox, validation
batches) match Ultralytics exactly.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

PAD_VALUE = 114


def resize_long_side(img: np.ndarray, imgsz: int) -> np.ndarray:
    """Scale so the long side is ``imgsz``: (w, h) = (min(ceil(w0 r), imgsz), min(ceil(h0 r), imgsz)), bilinear."""
    h0, w0 = img.shape[:2]
    r = imgsz / max(h0, w0)
    if r != 1:
        w, h = min(math.ceil(w0 * r), imgsz), min(math.ceil(h0 * r), imgsz)
        img = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
    return img


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


def draw_mosaic(images, rects, s: int, out: np.ndarray | None = None, alpha: bool = False) -> np.ndarray:
    """The mosaic canvas (2s, 2s, 3 or 4) filled with 114 with ``images[k]``'s rectangle b of ``rects[k]``
    (``mosaic_layout``) in its rectangle a. ``out``: a canvas to draw on (reused when its shape fits). ``alpha``: a
    4-channel canvas (BGR + a padding channel): OpenCV's bilinear warp runs ~2× faster on 4 channels than on 3 and
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
    ``draw_mosaic`` (a loader reuses one canvas instead of allocating 4.9 MB per sample).
    """
    rects = mosaic_layout([t[0].shape[:2] for t in tiles], s, rng)
    canvas = draw_mosaic([t[0] for t in tiles], rects, s, out, alpha)
    boxes, cls = mosaic_labels([t[1:] for t in tiles], rects, s)
    return canvas, boxes, cls


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


def render_warp_plan(sources: np.ndarray, tiles: np.ndarray, cols: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """One sample of a ``TrainLoader(warp_on_device=True)`` batch drawn on the host with OpenCV (for pictures and
    checks; the train step uses ``yolojax.ops.warp.warp_tiles``): the canvas from ``sources`` and ``tiles``
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
