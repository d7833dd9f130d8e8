"""The training pipeline's mosaic + affine warp + flips, on the device, from a plan the loader drew.

A training sample is four tiles (or one, without mosaic) placed on a canvas filled with 114, warped by the random
affine ``M`` into the S×S output with OpenCV's bilinear ``warpAffine``, then maybe flipped. In the loader's workers
the warp is the largest piece of host time after JPEG decoding. With ``TrainLoader(warp_on_device=True)`` the worker
draws every random number and computes the boxes exactly as the host path does, but ships the batch's own decoded images
(``sources``: the mosaic partners come from the batch) and a small plan per sample instead of the picture:

- ``tiles`` (T, 7) int32 ``(source, x1, y1, x2, y2, dx, dy)``: canvas pixels ``x1 <= x < x2, y1 <= y < y2`` show
  ``sources[source]`` at ``(y + dy, x + dx)``; ``source < 0`` marks an unused slot. Canvas pixels no tile covers are
  114, as OpenCV's constant border is.
- ``cols``, ``rows`` (2, S) float32: the canvas coordinate of output pixel (y, x) is ``(cols[0, x] + rows[0, y],
  cols[1, x] + rows[1, y])`` (``yolojax.augment.plan.affine_coordinates``). A flip reverses ``cols`` (left-right)
  or ``rows`` (up-down).

``warp_tiles`` then gathers the four neighbours of every output pixel from the tiles and interpolates as OpenCV 4.11+
does (``warpAffine`` ``INTER_LINEAR`` on 8-bit images): the inverse map in float32, ``fx = x − floor(x)``, two
horizontal and one vertical ``a·(q − p) + p`` in float32, round half to even. Where an accelerator contracts those
to fused multiply-adds, as OpenCV's vector code does, the result is OpenCV's; without (XLA:CPU) about 2 pixels in
10,000 differ by one grey level (tests/test_warp.py bounds it). OpenCV 4.10 and older used a 1/32-pixel fixed-point
map instead; their pixels differ from 4.11's by up to several levels, so the reference here is the current one.
"""
from __future__ import annotations

import jax.numpy as jnp

from yolojax.augment.plan import PAD_VALUE


def _taps(sources, tiles, cy, cx):
    """uint8 (B, H, W, 3) values of canvas pixels (cy, cx) (int32 (B, H, W)): the tile covering each, else 114."""
    _, sh, sw, _ = sources.shape
    src = jnp.full(cx.shape, -1, jnp.int32)
    dx = jnp.zeros_like(cx)
    dy = jnp.zeros_like(cy)
    for t in range(tiles.shape[1]):  # tiles do not overlap: at most one covers a pixel
        k, x1, y1, x2, y2, ddx, ddy = (tiles[:, t, j][:, None, None] for j in range(7))
        inside = (k >= 0) & (cx >= x1) & (cx < x2) & (cy >= y1) & (cy < y2)
        src = jnp.where(inside, k, src)
        dx, dy = jnp.where(inside, ddx, dx), jnp.where(inside, ddy, dy)
    valid = src >= 0
    sx = jnp.clip(cx + dx, 0, sw - 1)
    sy = jnp.clip(cy + dy, 0, sh - 1)
    flat = (jnp.maximum(src, 0) * sh + sy) * sw + sx
    vals = jnp.take(sources.reshape(-1, sources.shape[-1]), flat, axis=0, mode="clip")  # in range: a plain gather
    return jnp.where(valid[..., None], vals, jnp.uint8(PAD_VALUE))


def warp_tiles(sources, tiles, cols, rows):
    """Compose each sample's canvas from ``sources`` and warp it (see the module docstring).

    ``sources`` uint8 (N, Hs, Ws, C); ``tiles`` int32 (B, T, 7); ``cols`` float32 (B, 2, W); ``rows`` float32
    (B, 2, H) -> uint8 (B, H, W, C), the channel order of ``sources``.
    """
    sx = cols[:, 0, None, :] + rows[:, 0, :, None]
    sy = cols[:, 1, None, :] + rows[:, 1, :, None]
    fx, fy = jnp.floor(sx), jnp.floor(sy)
    ax, ay = (sx - fx)[..., None], (sy - fy)[..., None]
    ix, iy = fx.astype(jnp.int32), fy.astype(jnp.int32)
    p00, p01, p10, p11 = (_taps(sources, tiles, iy + j, ix + i).astype(jnp.float32)
                          for j, i in ((0, 0), (0, 1), (1, 0), (1, 1)))
    top = ax * (p01 - p00) + p00
    bottom = ax * (p11 - p10) + p10
    v = ay * (bottom - top) + top
    return jnp.clip(jnp.round(v), 0, 255).astype(jnp.uint8)
