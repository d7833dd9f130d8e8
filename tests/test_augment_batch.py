"""The typed training batch (yolojax.augment.batch) and one sample in every layout (yolojax.augment.sample): the same
seed gives the same sample whichever part the host renders, and the batch's layout, image shape and host pictures
read the same from every layout."""
from __future__ import annotations

import numpy as np
import pytest

from yolojax.augment import (Layout, Sample, apply_hsv_tables, augment_hyp, batch_image_shape, host_images, layout_of,
                             train_sample)
from yolojax.data import DetectionDataset, TrainLoader


@pytest.fixture(scope="module")
def ds(shapes_small):
    return DetectionDataset.from_config(shapes_small, "train", imgsz=64, verbose=False)


@pytest.mark.parametrize("hyp", [dict(), dict(degrees=10.0, flipud=0.5, bgr=0.5)])
def test_one_sample_is_the_same_in_every_layout(ds, hyp):
    """``train_sample`` returns one shape; the HSV layout's BGR image through its tables is the IMAGES image exactly,
    and the WARP layout draws the same boxes (its pixels are the device's, tests/test_warp.py)."""
    hyp = augment_hyp(hyp)
    pool = np.arange(8)
    for k in range(8):
        draw = lambda layout: train_sample(ds, k, np.random.default_rng([3, k]), hyp, pool=pool,  # noqa: E731
                                           layout=layout, slot=k if layout is Layout.WARP else None)
        full, hsv, warp = draw(Layout.IMAGES), draw(Layout.HSV), draw(Layout.WARP)
        assert all(isinstance(s, Sample) for s in (full, hsv, warp))
        assert full.hsv_tables is None and full.warp is None and full.image.shape == (64, 64, 3)
        assert hsv.warp is None and hsv.hsv_tables.shape == (3, 256) and hsv.to_rgb == full.to_rgb
        np.testing.assert_array_equal(apply_hsv_tables(hsv.image, hsv.hsv_tables, hsv.to_rgb), full.image)
        assert warp.image is None and warp.to_rgb == full.to_rgb
        np.testing.assert_array_equal(warp.hsv_tables, hsv.hsv_tables)
        tiles, cols, rows = warp.warp
        assert tiles.shape == (4, 7) and cols.shape == rows.shape == (2, 64)
        for s in (hsv, warp):
            np.testing.assert_array_equal(s.boxes, full.boxes)
            np.testing.assert_array_equal(s.classes, full.classes)


@pytest.mark.parametrize("hyp", [dict(), dict(hsv_h=0.0, hsv_s=0.0, hsv_v=0.0, bgr=0.5)])
def test_every_layout_reads_the_same_through_the_batch_helpers(ds, hyp):
    """One seed, three loaders: each batch says its layout, the model's image shape is the same, and the host's
    picture of the batch is the IMAGES batch (exactly for HSV; within one grey level of the warp for WARP)."""
    jitter = bool(augment_hyp(hyp)["hsv_h"])
    loaders = {Layout.IMAGES: TrainLoader(ds, batch_size=8, seed=5, hyp=hyp),
               Layout.HSV: TrainLoader(ds, batch_size=8, seed=5, hyp=hyp, hsv_on_device=True),
               Layout.WARP: TrainLoader(ds, batch_size=8, seed=5, hyp=hyp, warp_on_device=True)}
    expect_hsv = Layout.HSV if jitter else Layout.IMAGES  # no gains: nothing for the device to jitter
    batches = {}
    for layout, loader in loaders.items():
        want = expect_hsv if layout is Layout.HSV else layout
        assert loader.layout is want
        batches[layout] = b = next(iter(loader.epoch_iterator(1)))
        assert layout_of(b) is want and batch_image_shape(b) == (8, 64, 64, 3)
    ref = batches[Layout.IMAGES]["images"]
    np.testing.assert_array_equal(host_images(batches[Layout.IMAGES]), ref)
    np.testing.assert_array_equal(host_images(batches[Layout.HSV]), ref)
    d = np.abs(host_images(batches[Layout.WARP]).astype(int) - ref.astype(int))
    assert (d > 0).mean() < 1e-3, (d > 0).mean()
    if not jitter:
        assert d.max() <= 1

