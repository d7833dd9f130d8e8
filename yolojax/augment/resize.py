"""Bilinear resizing of a batch on the device, as PyTorch's ``interpolate(mode="bilinear", align_corners=False)``.

Multi-scale training (``multi_scale=True``) resizes each batch after it is scaled to [0, 1], as Ultralytics' trainer
does in ``preprocess_batch``. The output size is static (the shape of the coordinate arrays), so each size compiles
once. ``source_coordinates(n_in, n_out)`` gives, for every output pixel along one axis, the input coordinate it
samples: ``max((i + 0.5) · n_in / n_out − 0.5, 0)`` (no antialiasing, also when shrinking); the two neighbours
``floor`` and ``min(floor + 1, n_in − 1)`` are blended linearly.
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np


def source_coordinates(n_in: int, n_out: int) -> np.ndarray:
    """(n_out,) float32 input coordinates of the output pixels along an axis of ``n_in`` pixels resized to ``n_out``."""
    scale = np.float32(n_in / n_out)
    return np.maximum((np.arange(n_out, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5),
                      np.float32(0)).astype(np.float32)


def _lerp_axis(x, coords, axis: int):
    """Linear interpolation of ``x`` (B, H, W, C) along ``axis`` (1: rows, 2: columns) at ``coords`` (B, n)."""
    n_in = x.shape[axis]
    lo = jnp.floor(coords)
    w = (coords - lo).astype(x.dtype)
    i0 = jnp.clip(lo.astype(jnp.int32), 0, n_in - 1)
    i1 = jnp.minimum(i0 + 1, n_in - 1)
    shape = (x.shape[0], -1, 1, 1) if axis == 1 else (x.shape[0], 1, -1, 1)
    a = jnp.take_along_axis(x, i0.reshape(shape), axis=axis)
    b = jnp.take_along_axis(x, i1.reshape(shape), axis=axis)
    w = w.reshape(shape)
    return a + (b - a) * w


def resize_bilinear(images, rows, cols):
    """``images`` (B, H, W, C) float resized to (B, nh, nw, C), sampling input rows ``rows`` (B, nh) and columns
    ``cols`` (B, nw) (``source_coordinates``); rows first, then columns (bilinear is separable)."""
    return _lerp_axis(_lerp_axis(images, rows, 1), cols, 2)
