"""Training augmentation, one home: the random draws (``plan``), their pixels on the host with OpenCV (``host``) and
in the train step (``device``: ``warp``, ``color``, ``resize``), one sample end to end (``sample``) and the batch
layouts that say which part the train step renders (``batch``).

    from yolojax import augment
    augment.letterbox(img, boxes, (640, 640))              # host pixels; augment.hsv_tables(rng) a draw
    augment.train_sample(ds, i, rng, hyp)                   # -> augment.Sample
    augment.batch_images(batch)                             # in the train step: uint8 RGB, any layout

``plan``, ``host``, ``sample`` and ``batch`` import NumPy and OpenCV only; the device names (``batch_images``, ``resize_batch``,
``warp_tiles``, ``hsv_jitter``) are imported on first use.
"""
from __future__ import annotations

import importlib

from yolojax.augment.batch import Layout, batch_image_shape, host_images, layout_of
from yolojax.augment.host import (apply_hsv_tables, draw_mosaic, letterbox, mixup, mosaic4, random_flip, random_hsv,
                                  random_perspective, render_warp_plan, resize_long_side)
from yolojax.augment.plan import (PAD_VALUE, affine_coordinates, box_candidates, flip_boxes, flip_draws, hsv_tables,
                                  letterbox_boxes, letterbox_geometry, mosaic_labels, mosaic_layout, perspective_matrix,
                                  warp_labels)
from yolojax.augment.sample import DEFAULT_HYP, Sample, augment_hyp, train_sample

_LAZY = {"batch_images": "device", "resize_batch": "device",
         "warp_tiles": "warp", "hsv_jitter": "color", "bgr_to_hsv": "color", "hsv_to_bgr": "color",
         "resize_bilinear": "resize", "source_coordinates": "resize"}

__all__ = sorted(["Layout", "batch_image_shape", "host_images", "layout_of", "apply_hsv_tables", "draw_mosaic",
                  "letterbox", "mixup", "mosaic4", "random_flip", "random_hsv", "random_perspective",
                  "render_warp_plan", "resize_long_side", "PAD_VALUE", "affine_coordinates", "box_candidates",
                  "flip_boxes", "flip_draws", "hsv_tables", "letterbox_boxes", "letterbox_geometry", "mosaic_labels",
                  "mosaic_layout", "perspective_matrix", "warp_labels", "DEFAULT_HYP", "Sample",
                  "augment_hyp", "train_sample", *_LAZY])


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(f"yolojax.augment.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'yolojax.augment' has no attribute {name!r}")
