"""The mosaic + affine warp + flips on the device (yolojax.augment.warp) against OpenCV, and the loader's
warp_on_device batches against the host pipeline's."""
from __future__ import annotations

import cv2
import jax
import numpy as np
import pytest

from yolojax import augment
from yolojax.augment.device import batch_images
from yolojax.augment.warp import warp_tiles

# OpenCV 4.11 replaced warpAffine's 1/32-pixel fixed-point map by the float32 one reproduced here; older versions
# differ from it (and from 4.11+) by several grey levels.
NEW_WARP = tuple(int(v) for v in cv2.__version__.split(".")[:2]) >= (4, 11)
needs_new_warp = pytest.mark.skipif(not NEW_WARP, reason=f"OpenCV {cv2.__version__} warps with a fixed-point map")

_warp = jax.jit(warp_tiles)
_images = jax.jit(batch_images)


def _tile_images(rng, s: int):
    """Four BGR tiles with the long side s: two smooth (photo-like), two noise (the hardest case)."""
    out = []
    for k in range(4):
        h, w = (s, int(rng.integers(s // 2, s + 1))) if k % 2 else (int(rng.integers(s // 2, s + 1)), s)
        small = rng.integers(0, 256, (max(h // 8, 2), max(w // 8, 2), 3), dtype=np.uint8)
        out.append(cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC) if k < 2
                   else rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    return out


def _mosaic_case(rng, s: int, M=None, degrees=0.0, shear=0.0, lr=False, ud=False):
    """(OpenCV's warped, flipped mosaic, the device inputs for one sample)."""
    imgs = _tile_images(rng, s)
    rects = augment.mosaic_layout([im.shape[:2] for im in imgs], s, rng)
    canvas = np.full((2 * s, 2 * s, 3), 114, np.uint8)
    sources = np.zeros((4, s, s, 3), np.uint8)
    tiles = []
    for k, (im, (x1a, y1a, x2a, y2a, x1b, y1b, x2b, y2b)) in enumerate(zip(imgs, rects)):
        canvas[y1a:y2a, x1a:x2a] = im[y1b:y2b, x1b:x2b]
        sources[k, :im.shape[0], :im.shape[1]] = im
        tiles.append((k, x1a, y1a, x2a, y2a, x1b - x1a, y1b - y1a))
    if M is None:
        M, _ = augment.perspective_matrix(rng, (2 * s, 2 * s), (s, s), degrees=degrees, shear=shear)
    ref = cv2.warpAffine(canvas, np.asarray(M, np.float64)[:2], (s, s), borderValue=(114, 114, 114))
    ref = cv2.flip(ref, 0) if ud else ref
    ref = cv2.flip(ref, 1) if lr else ref
    cols, rows = augment.affine_coordinates(np.asarray(M)[:2], (s, s), flip_lr=lr, flip_ud=ud)
    return ref, sources, np.asarray(tiles, np.int32), cols, rows


def _run(sources, tiles, cols, rows):
    return np.asarray(_warp(sources, tiles[None], cols[None], rows[None]))[0]


@needs_new_warp  # (before 4.11 a half-way value rounded up, not to even)
@pytest.mark.parametrize("scale,tx,ty", [(1.0, 200.0, -300.0), (0.5, 100.5, 31.0), (2.0, -777.0, -500.5)])
def test_warp_tiles_is_exact_where_opencv_needs_no_rounding(scale, tx, ty):
    """Scales 1/2, 1 and 2 with whole or half-pixel shifts: every source coordinate and interpolation weight is
    exact in float32, so the device must give OpenCV's pixels bit for bit (tile lookup, crop offsets, the 114
    border, flips)."""
    rng = np.random.default_rng(0)
    for lr, ud in ((False, False), (True, False), (False, True)):
        M = np.array([[scale, 0, tx], [0, scale, ty], [0, 0, 1]], np.float32)
        ref, *inputs = _mosaic_case(rng, 96, M=M, lr=lr, ud=ud)
        np.testing.assert_array_equal(_run(*inputs), ref)


@needs_new_warp
@pytest.mark.parametrize("degrees,shear", [(0.0, 0.0), (10.0, 5.0)])
def test_warp_tiles_matches_opencv_warp_affine(degrees, shear):
    """Random mosaics, random affines (the default scale 0.5-1.5 and translation; with rotation and shear) and
    flips: within one grey level of cv2.warpAffine, and that in at most 1 pixel in 1,000 (the float32 multiply-adds
    OpenCV fuses; XLA:CPU rounds them twice)."""
    rng = np.random.default_rng(1)
    diffs = []
    for i in range(6):
        ref, *inputs = _mosaic_case(rng, 128, degrees=degrees, shear=shear, lr=bool(i % 2), ud=i == 3)
        diffs.append(np.abs(_run(*inputs).astype(int) - ref.astype(int)))
    d = np.stack(diffs)
    assert d.max() <= 1
    assert (d > 0).mean() < 1e-3, (d > 0).mean()


def test_render_warp_plan_draws_the_plan_on_the_host():
    """The pictures' host drawing of a plan (cv2.remap over the composed canvas) is OpenCV's warp of the mosaic
    to within a grey level (remap reads the map as given rather than fusing it as warpAffine does; before
    OpenCV 4.11 both round the map to 1/32 pixel)."""
    rng = np.random.default_rng(4)
    for i in range(3):
        ref, sources, tiles, cols, rows = _mosaic_case(rng, 96, degrees=5.0 * i, lr=i == 1, ud=i == 2)
        d = np.abs(augment.render_warp_plan(sources, tiles, cols, rows).astype(int) - ref.astype(int))
        assert d.max() <= 1 and (d > 0).mean() < 1e-2, ((d > 0).mean(), d.max())


def test_affine_coordinates_match_the_inverse_map():
    """The per-column and per-row parts add up to OpenCV's inverse map (float64 reference) to float32 precision,
    flips reverse them, and a warp without rotation or shear keeps the columns/rows separable."""
    rng = np.random.default_rng(2)
    for degrees in (0.0, 20.0):
        M, _ = augment.perspective_matrix(rng, (256, 256), (128, 96), degrees=degrees)
        inv = np.linalg.inv(np.asarray(M, np.float64))
        y, x = np.mgrid[0:128, 0:96].astype(np.float64)
        want_x = inv[0, 0] * x + inv[0, 1] * y + inv[0, 2]
        want_y = inv[1, 0] * x + inv[1, 1] * y + inv[1, 2]
        cols, rows = augment.affine_coordinates(M[:2], (128, 96))
        assert cols.shape == (2, 96) and rows.shape == (2, 128) and cols.dtype == rows.dtype == np.float32
        np.testing.assert_allclose(cols[0][None] + rows[0][:, None], want_x, atol=2e-4)
        np.testing.assert_allclose(cols[1][None] + rows[1][:, None], want_y, atol=2e-4)
        if degrees == 0.0:
            assert not rows[0].any() and not cols[1].any()
        fc, fr = augment.affine_coordinates(M[:2], (128, 96), flip_lr=True, flip_ud=True)
        np.testing.assert_array_equal(fc, cols[:, ::-1])
        np.testing.assert_array_equal(fr, rows[:, ::-1])


def _loaders(shapes_small, hyp, compat="v8"):
    from yolojax.data import DetectionDataset, TrainLoader

    ds = DetectionDataset.from_config(shapes_small, "train", imgsz=64, compat=compat, verbose=False)
    host = TrainLoader(ds, batch_size=8, seed=5, hyp=hyp, compat=compat, hsv_on_device=True)
    dev = TrainLoader(ds, batch_size=8, seed=5, hyp=hyp, compat=compat, warp_on_device=True)
    assert dev.warp_on_device and not host.warp_on_device
    return host, dev


@needs_new_warp
@pytest.mark.parametrize("hyp,compat", [(dict(), "v8"), (dict(degrees=10.0, shear=5.0, flipud=0.5, bgr=0.5), "v8"),
                                        (dict(mosaic=0.5), "v8"), (dict(mosaic=0.5), "current"),
                                        (dict(hsv_h=0.0, hsv_s=0.0, hsv_v=0.0, bgr=0.5), "v8")])
def test_loader_warp_on_device_batches_match_the_host_batches(shapes_small, hyp, compat):
    """The same seed: the worker ships the batch's decoded images and a plan per sample; the train step's
    ``batch_images`` gives the host pipeline's batch (boxes, classes, masks identical; images within one grey level
    of the warp in at most 1 pixel in 1,000, which the HSV jitter may widen on those pixels), over 2 epochs."""
    host, dev = _loaders(shapes_small, hyp, compat)
    jitter = bool(hyp.get("hsv_h", 1) or hyp.get("hsv_s", 1) or hyp.get("hsv_v", 1))
    for epoch in range(2):
        for a, b in zip(host.epoch_iterator(epoch), dev.epoch_iterator(epoch)):
            assert "images" not in b and b["sources"].shape == (8, 64, 64, 3)
            assert b["warp_tiles"].shape == (8, 4, 7) and b["warp_cols"].shape == b["warp_rows"].shape == (8, 2, 64)
            assert ("hsv_tables" in b) == jitter
            for k in ("boxes", "classes", "mask"):
                np.testing.assert_array_equal(a[k], b[k])
            ref = np.asarray(_images(a)) if jitter else a["images"]
            got = np.asarray(_images(b))
            d = np.abs(got.astype(int) - ref.astype(int))
            assert (d > 0).mean() < 1e-3, (d > 0).mean()
            if not jitter:
                assert d.max() <= 1


def test_loader_keeps_the_warp_on_the_host_when_the_device_cannot_draw_it(shapes_small):
    from yolojax.data import DetectionDataset, TrainLoader

    ds = DetectionDataset.from_config(shapes_small, "train", imgsz=64, verbose=False)
    for hyp, batch, why in ((dict(mixup=0.1), 8, "mixup > 0"), (dict(perspective=1e-4), 8, "perspective > 0"),
                            (dict(), 4, "a batch of 4 per process")):
        loader = TrainLoader(ds, batch_size=batch, seed=0, hyp=hyp, warp_on_device=True)
        assert not loader.warp_on_device and why in loader.warp_obstacle()
        assert not loader.hsv_on_device  # the jitter follows its own setting (hsv_on_device) then
        assert "images" in next(iter(loader.epoch_iterator(0)))


def test_warp_on_device_setting():
    from yolojax.config import ConfigError
    from yolojax.tasks.detect import warp_on_device

    assert warp_on_device("auto", "gpu") and warp_on_device("auto", "tpu") and not warp_on_device("auto", "cpu")
    assert warp_on_device("True", "cpu") and not warp_on_device(False, "gpu")
    with pytest.raises(ConfigError, match="warp_on_device='maybe'"):
        warp_on_device("maybe", "gpu")


@needs_new_warp
def test_plans_number_sources_in_the_global_batch(shapes_small):
    """Multi-host: each process ships its own images, which become rows p·B_local.. of the global ``sources``;
    the plans must point there. Process 1 of 2, composed over the concatenated sources, gives that process's host
    batch (within the warp's one-level tolerance)."""
    from yolojax.data import DetectionDataset, TrainLoader

    ds = DetectionDataset.from_config(shapes_small, "train", imgsz=64, verbose=False)
    kw = dict(batch_size=16, seed=2, process_count=2, hyp=dict(hsv_h=0.0, hsv_s=0.0, hsv_v=0.0))
    p0, p1 = (TrainLoader(ds, process_index=i, warp_on_device=True, **kw) for i in (0, 1))
    host1 = TrainLoader(ds, process_index=1, **kw)
    b0, b1, h1 = (next(iter(x.epoch_iterator(0))) for x in (p0, p1, host1))
    used = b1["warp_tiles"][..., 0]
    assert used[used >= 0].min() >= 8 and used.max() < 16 and b0["warp_tiles"][..., 0].max() < 8
    glob = {k: np.concatenate([b0[k], b1[k]]) for k in b1}
    got = np.asarray(_images(glob))[8:]
    d = np.abs(got.astype(int) - h1["images"].astype(int))
    assert d.max() <= 1 and (d > 0).mean() < 1e-3


@pytest.mark.slow
def test_worker_processes_ship_the_same_plans(shapes_small):
    """Grain worker processes build the same sources and plans as the main process (batches are functions of their
    seed, whatever the worker count)."""
    from yolojax.data import DetectionDataset, TrainLoader

    ds = DetectionDataset.from_config(shapes_small, "train", imgsz=64, verbose=False)
    ref = list(TrainLoader(ds, batch_size=8, seed=3, warp_on_device=True).epoch_iterator(1))
    it = TrainLoader(ds, batch_size=8, seed=3, warp_on_device=True, workers=2).epoch_iterator(1)
    try:
        for a in ref:
            b = next(it)
            assert set(a) == set(b) and "sources" in b
            for k in a:
                np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    finally:
        it.close()
