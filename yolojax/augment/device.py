"""The rest of a batch's augmentation in the train step: what the loader left to the device, read from its layout.

    images = batch_images(batch)                          # uint8 (B, S, S, 3) RGB, any layout
    x = resize_batch(images.astype(jnp.float32) / 255, batch)   # multi-scale: (B, h', w', 3), else unchanged

Pure jnp functions of a batch dict (``yolojax.augment.batch``): jittable, the layout read from the keys at trace time.
"""
from __future__ import annotations

import jax.numpy as jnp

from yolojax.augment.batch import Layout, has_jitter, is_multi_scale, layout_of
from yolojax.augment.color import hsv_jitter
from yolojax.augment.resize import resize_bilinear
from yolojax.augment.warp import warp_tiles


def batch_images(batch):
    """The batch's uint8 RGB images (B, S, S, 3): ``images`` (``Layout.IMAGES``), or composed and warped here from
    ``sources`` and the per-sample plans (``Layout.WARP``), then through the HSV jitter when the loader left it to
    the device (``hsv_tables``, ``hsv_to_rgb``)."""
    warp = layout_of(batch) is Layout.WARP
    if warp:
        images = warp_tiles(batch["sources"], batch["warp_tiles"], batch["warp_cols"], batch["warp_rows"])
    else:
        images = batch["images"]
    if has_jitter(batch):
        return hsv_jitter(images, batch["hsv_tables"], batch["hsv_to_rgb"])
    if warp:  # no jitter: only the channel order (BGR sources; RGB unless the bgr coin kept BGR)
        return jnp.where(batch["hsv_to_rgb"][:, None, None, None], images[..., ::-1], images)
    return images


def resize_batch(images, batch):
    """Float ``images`` (B, H, W, C) of ``batch`` resized to the multi-scale size it carries (``scale_rows``,
    ``scale_cols``), as Ultralytics' ``preprocess_batch`` resizes the [0, 1] batch; unchanged otherwise."""
    if is_multi_scale(batch):
        return resize_bilinear(images, batch["scale_rows"], batch["scale_cols"])
    return images
