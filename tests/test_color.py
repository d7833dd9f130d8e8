"""The HSV jitter on the device (yolojax.augment.color) against OpenCV, and the loader's hsv_on_device batches against
the host pipeline's."""
from __future__ import annotations

import functools

import cv2
import jax
import numpy as np
import pytest

from yolojax import augment
from yolojax.augment.color import bgr_to_hsv, hsv_jitter, hsv_to_bgr


def _all_triples(chunk: int, chunks: int) -> np.ndarray:
    """Chunk ``chunk`` of the 2^24 byte triples, as a (4096 / chunks, 4096, 3) uint8 image."""
    n = (1 << 24) // chunks
    v = np.arange(chunk * n, (chunk + 1) * n, dtype=np.uint32)
    return np.stack([(v >> 16) & 255, (v >> 8) & 255, v & 255], -1).astype(np.uint8).reshape(-1, 4096, 3)


@functools.lru_cache(maxsize=None)
def _jitted(fn, **kw):
    return jax.jit(functools.partial(fn, **kw))


@pytest.mark.parametrize("chunk", range(4))
def test_bgr_to_hsv_equals_opencv_for_every_colour(chunk):
    img = _all_triples(chunk, 4)
    np.testing.assert_array_equal(np.asarray(_jitted(bgr_to_hsv)(img)), cv2.cvtColor(img, cv2.COLOR_BGR2HSV))


@pytest.mark.parametrize("chunk", range(4))
def test_hsv_to_bgr_and_rgb_equal_opencv_for_every_input(chunk):
    hsv = _all_triples(chunk, 4)  # hue bytes 180..255 included: OpenCV wraps them round, so do we
    np.testing.assert_array_equal(np.asarray(_jitted(hsv_to_bgr)(hsv)), cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR))
    np.testing.assert_array_equal(np.asarray(_jitted(hsv_to_bgr, to_rgb=True)(hsv)),
                                  cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB))


def test_hsv_jitter_equals_the_host_jitter_image_by_image():
    # Rows of 64 pixels: OpenCV's vector code converts blocks of 32 (AVX-512) or fewer, and its scalar code for a
    # row's remainder rounds HSV -> BGR to nearest instead; training images are S x S with S a multiple of 32.
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (6, 24, 64, 3), dtype=np.uint8)
    images[0] = 0  # black, grey and saturated extremes
    images[1] = 128
    images[2, ..., 0] = 255
    gains = [(0.015, 0.7, 0.4), (0.5, 0.9, 0.9), (0.0, 0.7, 0.0), (0.015, 0.7, 0.4), (0.1, 0.0, 0.4), (0.3, 0.3, 0.3)]
    compats = ["v8", "v8", "current", "current", "v8", "current"]
    tables = np.stack([augment.hsv_tables(rng, *g, compat=c) for g, c in zip(gains, compats)])
    to_rgb = np.array([True, False, True, True, False, True])
    out = np.asarray(jax.jit(hsv_jitter)(images, tables, to_rgb))
    for k in range(len(images)):
        np.testing.assert_array_equal(out[k], augment.apply_hsv_tables(images[k], tables[k], bool(to_rgb[k])))
    # and the host function is the pipeline's jitter: the same rng gives random_hsv's image
    a, b = np.random.default_rng(7), np.random.default_rng(7)
    np.testing.assert_array_equal(augment.random_hsv(images[3], a, to_rgb=True),
                                  augment.apply_hsv_tables(images[3], augment.hsv_tables(b), to_rgb=True))


def test_hsv_tables_draw_nothing_without_gains():
    rng = np.random.default_rng(0)
    assert augment.hsv_tables(rng, 0.0, 0.0, 0.0) is None
    assert rng.random() == np.random.default_rng(0).random()


@pytest.mark.parametrize("hyp", [dict(mixup=0.5, bgr=0.5, flipud=0.5), dict(mosaic=0.0)])
def test_loader_hsv_on_device_batches_equal_the_host_batches(shapes_small, hyp):
    """The same seed: the worker leaves the jitter (BGR image + tables + the bgr coin) to the device, and the
    device's jitter gives exactly the host pipeline's batch; boxes, classes and masks are untouched."""
    from yolojax.data import DetectionDataset, TrainLoader

    ds = DetectionDataset.from_config(shapes_small, "train", imgsz=64, verbose=False)
    host = TrainLoader(ds, batch_size=8, seed=5, hyp=hyp)
    dev = TrainLoader(ds, batch_size=8, seed=5, hyp=hyp, hsv_on_device=True)
    assert dev.hsv_on_device and not host.hsv_on_device
    jitter = jax.jit(hsv_jitter)
    for epoch in range(2):
        for a, b in zip(host.epoch_iterator(epoch), dev.epoch_iterator(epoch)):
            assert set(b) == set(a) | {"hsv_tables", "hsv_to_rgb"}
            assert b["hsv_tables"].shape == (8, 3, 256) and b["hsv_to_rgb"].shape == (8,)
            if hyp.get("bgr"):
                assert not b["hsv_to_rgb"].all() or epoch  # the coin shows up (not always RGB) in epoch 0
            for k in ("boxes", "classes", "mask"):
                np.testing.assert_array_equal(a[k], b[k])
            assert not np.array_equal(a["images"], b["images"])
            np.testing.assert_array_equal(np.asarray(jitter(b["images"], b["hsv_tables"], b["hsv_to_rgb"])),
                                          a["images"])


def test_loader_keeps_the_jitter_on_the_host_when_there_is_none(shapes_small):
    from yolojax.data import DetectionDataset, TrainLoader

    ds = DetectionDataset.from_config(shapes_small, "train", imgsz=64, verbose=False)
    dev = TrainLoader(ds, batch_size=8, seed=5, hyp=dict(hsv_h=0.0, hsv_s=0.0, hsv_v=0.0), hsv_on_device=True)
    assert not dev.hsv_on_device
    assert "hsv_tables" not in next(iter(dev.epoch_iterator(0)))


def test_hsv_on_device_setting():
    from yolojax.config import ConfigError
    from yolojax.tasks.detect import hsv_on_device

    assert hsv_on_device("auto", "gpu") and hsv_on_device("auto", "tpu") and not hsv_on_device("auto", "cpu")
    assert hsv_on_device(True, "cpu") and hsv_on_device("True", "cpu") and not hsv_on_device("false", "gpu")
    assert not hsv_on_device(False, "gpu")
    with pytest.raises(ConfigError, match="hsv_on_device='sometimes'"):  # a user error: one paragraph, no traceback
        hsv_on_device("sometimes", "gpu")
