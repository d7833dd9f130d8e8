"""The training batch: a dict of arrays whose keys say where the rest of its augmentation is rendered.

A training batch is a plain ``dict`` (a JAX pytree: ``train_step(state, batch)`` jits over it, ``device_put`` shards
it) of numpy arrays on the host, jax arrays on the device. It always carries the targets, and the images in one of
three layouts (``Layout``), chosen by the loader (``TrainLoader(hsv_on_device=..., warp_on_device=...)``):

- ``IMAGES``: ``images`` uint8 (B, S, S, 3) RGB, final.
- ``HSV``: ``images`` uint8 (B, S, S, 3) **BGR** before the colour jitter, ``hsv_tables`` uint8 (B, 3, 256) (each
  image's H, S, V lookup tables, ``plan.hsv_tables``) and ``hsv_to_rgb`` (B,) bool (False where the ``bgr`` coin
  keeps BGR): the train step applies the jitter (``color.hsv_jitter``).
- ``WARP``: no ``images``; ``sources`` uint8 (N, S, S, 3) BGR (the batch's decoded images, numbered in the global
  batch), one plan per sample ``warp_tiles`` int32 (B, 4, 7), ``warp_cols`` / ``warp_rows`` float32 (B, 2, S)
  (``warp.warp_tiles``), ``hsv_to_rgb`` (B,) bool, and ``hsv_tables`` when there is a jitter: the train step composes,
  warps, flips and jitters.

Multi-scale training adds ``scale_rows`` (B, h') and ``scale_cols`` (B, w') float32 to any layout: the train step
resizes the [0, 1] images to (h', w') (``resize.resize_bilinear``); the boxes are already in (h', w') pixels.

The keys are the contract: ``layout_of`` reads them (also at trace time: keys are static), so a batch carries no
tag that ``jit`` would have to see.
"""
from __future__ import annotations

import enum
from typing import Any, Mapping, TypedDict

import numpy as np

from yolojax.augment.host import apply_hsv_tables, render_warp_plan


class Layout(enum.Enum):
    """Where a training batch's images are finished: on the host, or (partly) in the train step."""

    IMAGES = "images"  # final RGB images
    HSV = "hsv"  # BGR images + the colour jitter's tables
    WARP = "warp"  # sources + per-sample mosaic/warp/flip plans (+ the jitter's tables)


class Targets(TypedDict):
    """Every batch's labels: ``boxes`` (B, M, 4) float32 pixel xyxy, ``classes`` (B, M) int32, ``mask`` (B, M) bool
    (M: the batch's box bucket)."""

    boxes: np.ndarray
    classes: np.ndarray
    mask: np.ndarray


class ImagesBatch(Targets):
    images: np.ndarray  # (B, S, S, 3) uint8 RGB


class HsvBatch(Targets):
    images: np.ndarray  # (B, S, S, 3) uint8 BGR
    hsv_tables: np.ndarray  # (B, 3, 256) uint8
    hsv_to_rgb: np.ndarray  # (B,) bool


class WarpBatch(Targets, total=False):
    sources: np.ndarray  # (N, S, S, 3) uint8 BGR
    warp_tiles: np.ndarray  # (B, 4, 7) int32
    warp_cols: np.ndarray  # (B, 2, S) float32
    warp_rows: np.ndarray  # (B, 2, S) float32
    hsv_to_rgb: np.ndarray  # (B,) bool
    hsv_tables: np.ndarray  # (B, 3, 256) uint8, only with a jitter


class MultiScale(TypedDict):
    """Added to any layout by multi-scale training."""

    scale_rows: np.ndarray  # (B, h') float32 source rows of the resize
    scale_cols: np.ndarray  # (B, w') float32 source columns


def layout_of(batch: Mapping[str, Any]) -> Layout:
    """The layout a training batch carries (see the module docstring)."""
    if "warp_tiles" in batch:
        return Layout.WARP
    if "hsv_tables" in batch:
        return Layout.HSV
    return Layout.IMAGES


def has_jitter(batch: Mapping[str, Any]) -> bool:
    """Whether the train step applies the HSV jitter (the batch carries its tables)."""
    return "hsv_tables" in batch


def is_multi_scale(batch: Mapping[str, Any]) -> bool:
    """Whether the train step resizes the batch (``scale_rows``, ``scale_cols``)."""
    return "scale_rows" in batch


def batch_image_shape(batch: Mapping[str, Any]) -> tuple[int, ...]:
    """(B, H, W, 3): the shape of a training batch's images as the model sees them, in any layout, also when the
    train step resizes them."""
    if is_multi_scale(batch):
        return (batch["scale_rows"].shape[0], batch["scale_rows"].shape[-1], batch["scale_cols"].shape[-1], 3)
    if layout_of(batch) is Layout.WARP:
        return (batch["warp_tiles"].shape[0], batch["warp_rows"].shape[-1], batch["warp_cols"].shape[-1], 3)
    return tuple(batch["images"].shape)


def host_images(batch: Mapping[str, Any]) -> np.ndarray:
    """A training batch's images drawn on the host with OpenCV, uint8 (B, S, S, 3) RGB (before a multi-scale resize):
    the device's pixels within a grey level (pictures, checks). ``batch``: numpy arrays."""
    layout = layout_of(batch)
    if layout is Layout.IMAGES:
        return np.asarray(batch["images"])
    if layout is Layout.WARP:
        images = [render_warp_plan(batch["sources"], *plan)
                  for plan in zip(batch["warp_tiles"], batch["warp_cols"], batch["warp_rows"])]
    else:
        images = batch["images"]
    tables = batch["hsv_tables"] if has_jitter(batch) else [None] * len(images)
    return np.stack([apply_hsv_tables(im, t, bool(rgb)) for im, t, rgb in zip(images, tables, batch["hsv_to_rgb"])])
