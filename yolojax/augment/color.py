"""OpenCV's 8-bit BGR <-> HSV conversions in JAX, and the HSV jitter of the training pipeline on the device.

The training pipeline's colour jitter converts each image to HSV, passes every channel through a per-image
256-entry table and converts back. That is cheap on an accelerator and costly in the loader's worker processes, so
``hsv_jitter(images, tables, to_rgb)`` does it on the device with the tables
the worker drew (``yolojax.augment.plan.hsv_tables``), so the random stream and every other augmentation stay the
host's.

The conversions reproduce OpenCV's 8-bit arithmetic (the jitter Ultralytics applies), so the device gives the
host's pixels:

- BGR -> HSV in integers: ``V = max``, ``S = round(255·(V − min)/V)`` and the hue sector formula scaled to [0, 180),
  both through 12-bit fixed-point reciprocal tables as OpenCV computes them.
- HSV -> BGR in float32: ``h·(6/180)``, ``s/255``, ``v/255`` (float32 constants), the sector values
  ``v, v(1−s), v(1−s·f), v(1−s(1−f))``, and ``floor(255·x)`` (OpenCV truncates here).

Both equal ``cv2.cvtColor`` (OpenCV 4.10 and 5.0) for every one of the 2^24 inputs on XLA:CPU (tests/test_color.py
checks all of them). OpenCV converts rows in vector blocks (32 pixels with AVX-512) and a row's remainder with scalar
code that rounds HSV -> BGR to nearest instead; training images are S×S with S a multiple of 32, so every pixel takes
the vector path, the one reproduced here. Another backend may contract a multiply-add in the float part; the GPU
suite counts any difference there (``benchmarks/color_check.py``).
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

_SHIFT = 12  # OpenCV's fixed-point precision for the 8-bit HSV divisions


def _reciprocal_table(numerator: float) -> np.ndarray:
    """``round(numerator / i)`` for i in 0..255 (0 for i = 0), OpenCV's saturate_cast rounding (half to even)."""
    i = np.arange(256, dtype=np.float64)
    with np.errstate(divide="ignore"):
        t = np.where(i > 0, numerator / np.maximum(i, 1), 0.0)
    return np.rint(t).astype(np.int32)


_SAT_DIV = _reciprocal_table(float(255 << _SHIFT))
_HUE_DIV = _reciprocal_table((180 << _SHIFT) / 6.0)


def bgr_to_hsv(img):
    """uint8 (..., 3) BGR -> uint8 (..., 3) HSV with H in [0, 180), as ``cv2.COLOR_BGR2HSV``."""
    x = img.astype(jnp.int32)
    b, g, r = x[..., 0], x[..., 1], x[..., 2]
    v = jnp.maximum(jnp.maximum(b, g), r)
    diff = v - jnp.minimum(jnp.minimum(b, g), r)
    half = 1 << (_SHIFT - 1)
    s = (diff * jnp.asarray(_SAT_DIV)[v] + half) >> _SHIFT
    h = jnp.where(v == r, g - b, jnp.where(v == g, b - r + 2 * diff, r - g + 4 * diff))
    h = (h * jnp.asarray(_HUE_DIV)[diff] + half) >> _SHIFT
    h = jnp.where(h < 0, h + 180, h)
    return jnp.stack([h, s, v], -1).astype(jnp.uint8)


def hsv_to_bgr(hsv, to_rgb=False):
    """uint8 (..., 3) HSV (H in [0, 180); a larger H wraps round, as in OpenCV) -> uint8 (..., 3) BGR, or RGB where
    ``to_rgb`` (a bool, or an array that broadcasts against the leading dimensions), as ``cv2.COLOR_HSV2BGR`` /
    ``COLOR_HSV2RGB``."""
    x = hsv.astype(jnp.float32)
    h = x[..., 0] * jnp.float32(6.0 / 180.0)
    s = x[..., 1] * jnp.float32(1.0 / 255.0)
    v = x[..., 2] * jnp.float32(1.0 / 255.0)
    h = jnp.where(h >= 6, h - 6, h)  # H above 179 wraps round (exact: h < 12)
    sector = jnp.floor(h)
    f = h - sector
    sector = sector.astype(jnp.int32)
    p = v * (1.0 - s)
    q = v * (1.0 - s * f)
    t = v * (1.0 - s * (1.0 - f))
    # (b, g, r) per sector, from the values (v, p, q, t): red→yellow, yellow→green, ..., magenta→red
    cases = {0: (p, t, v), 1: (p, v, q), 2: (t, v, p), 3: (v, q, p), 4: (v, p, t), 5: (q, p, v)}
    b, g, r = (sum(jnp.where(sector == k, c[ch], 0.0) for k, c in cases.items()) for ch in range(3))
    grey = s == 0
    b, g, r = (jnp.where(grey, v, c) for c in (b, g, r))
    to_u8 = lambda c: jnp.clip(jnp.floor(c * 255.0), 0, 255).astype(jnp.uint8)  # noqa: E731
    bgr = jnp.stack([to_u8(b), to_u8(g), to_u8(r)], -1)
    if isinstance(to_rgb, (bool, np.bool_)):
        return bgr[..., ::-1] if to_rgb else bgr
    to_rgb = jnp.asarray(to_rgb)
    return jnp.where(to_rgb.reshape(to_rgb.shape + (1,) * (bgr.ndim - to_rgb.ndim)), bgr[..., ::-1], bgr)


def hsv_jitter(images, tables, to_rgb=True):
    """The training colour jitter on a batch: uint8 (B, H, W, 3) BGR, ``tables`` uint8 (B, 3, 256) (H, S, V lookup
    tables per image, ``plan.hsv_tables``), ``to_rgb`` bool or (B,) -> uint8 (B, H, W, 3) RGB (BGR where
    ``to_rgb`` is False). Equal to ``host.apply_hsv_tables`` image by image (see the module docstring)."""
    hsv = bgr_to_hsv(images).astype(jnp.int32)
    bsz = images.shape[0]
    flat = tables.reshape(bsz, 3 * 256)
    idx = (hsv + jnp.arange(3, dtype=jnp.int32) * 256).reshape(bsz, -1)
    jittered = jnp.take_along_axis(flat, idx, axis=1).reshape(hsv.shape)
    return hsv_to_bgr(jittered, to_rgb)
