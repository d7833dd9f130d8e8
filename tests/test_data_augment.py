"""Augmentation (spec §4.4–4.7): validation letterbox exact vs Ultralytics 8.4.190, training statistics vs its
``augment_stats.json`` (mosaic and close_mosaic), and hand-checked unit cases."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from yolojax import augment
from yolojax.augment import augment_hyp, box_candidates, letterbox, mosaic4, random_flip, train_sample
from yolojax.data.batching import rect_batch_shapes
from yolojax.data.dataset import DetectionDataset, val_sample


@pytest.fixture(scope="module")
def fixture_ds(fixtures_dir, tmp_path_factory):
    import shutil
    dst = tmp_path_factory.mktemp("aug") / "ds"
    shutil.copytree(fixtures_dir / "augment" / "dataset", dst)  # copy: the cache is written next to the labels
    for p in dst.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    return DetectionDataset.from_config(str(dst / "data.yaml"), "train", imgsz=64, verbose=False)


def _xywhn(boxes, h, w):
    xy = (boxes[:, :2] + boxes[:, 2:]) / 2
    wh = boxes[:, 2:] - boxes[:, :2]
    return np.concatenate([xy, wh], 1) / np.array([w, h, w, h], np.float32)


@pytest.mark.parametrize("mode", ["square", "rect"])
def test_validation_letterbox_exact(fixture_ds, fixtures_dir, mode):
    fx = np.load(fixtures_dir / "augment" / "augment_val.npz")
    batch = 8
    if mode == "rect":
        order, shapes = rect_batch_shapes(fixture_ds.shapes, batch, 64, stride=32, pad=0.5)
    else:
        order, shapes = np.arange(len(fixture_ds)), np.array([[64, 64]] * 2)
    boxes, cls, bidx = [], [], []
    for j, i in enumerate(order):
        img, b, c, ratio_pad, ori = val_sample(fixture_ds, int(i), tuple(shapes[j // batch]))
        np.testing.assert_array_equal(img.transpose(2, 0, 1), fx[f"{mode}/img"][j])
        np.testing.assert_allclose(ratio_pad.ravel(), fx[f"{mode}/ratio_pad"][j])
        assert ori == tuple(fx[f"{mode}/ori_shape"][j])
        assert img.shape[:2] == tuple(fx[f"{mode}/resized_shape"][j])
        boxes.append(_xywhn(b, *img.shape[:2]))
        cls.append(c)
        bidx += [j] * len(c)
    np.testing.assert_allclose(np.concatenate(boxes), fx[f"{mode}/bboxes"], atol=1e-6, rtol=0)
    np.testing.assert_array_equal(np.concatenate(cls), fx[f"{mode}/cls"][:, 0])
    np.testing.assert_array_equal(bidx, fx[f"{mode}/batch_idx"])


def _stats(ds, n, mosaic, compat):
    hyp = augment_hyp()
    counts, wh = [], []
    for k in range(n):
        rng = np.random.default_rng([123, k])
        img, b, c = train_sample(ds, k % len(ds), rng, hyp, mosaic=mosaic, compat=compat)[:3]
        assert img.shape == (64, 64, 3) and img.dtype == np.uint8 and b.dtype == np.float32 and c.dtype == np.int32
        assert (b[:, 0] >= 0).all() and (b[:, 2] <= 64).all() and (b[:, 2] > b[:, 0]).all()
        counts.append(len(b))
        wh.append((b[:, 2:] - b[:, :2]) / 64)
    wh = np.concatenate(wh)
    return np.array(counts), wh


@pytest.mark.parametrize("mode, compat", [("mosaic", "v8"), ("close_mosaic", "v8"), ("close_mosaic", "current")])
def test_training_statistics_match_ultralytics(fixture_ds, fixtures_dir, mode, compat):
    ref = json.loads((fixtures_dir / "augment" / "augment_stats.json").read_text())["train"][mode]["stats"]
    n = 600  # ~4 s; our estimate's noise (~3 %) is small next to the reference's own (200 samples, ~5 %)
    counts, wh = _stats(fixture_ds, n, mode == "mosaic", compat)
    assert counts.mean() == pytest.approx(ref["instances_per_image_mean"], rel=0.15)
    assert counts.std() == pytest.approx(ref["instances_per_image_std"], rel=0.15)
    np.testing.assert_allclose(wh.mean(0), ref["box_wh_norm_mean"], rtol=0.15)
    # The empty fraction is a rare event (3.5 % of the fixture's 200 samples = 7 images): compare within 3 binomial
    # standard errors of the reference estimate plus ours instead of ±15 %.
    p_ref, p = ref["empty_image_fraction"], float((counts == 0).mean())
    se = math.sqrt(p_ref * (1 - p_ref) / ref["samples"]) + math.sqrt(max(p, 1e-3) * (1 - p) / n)
    assert abs(p - p_ref) < 3 * se
    if mode == "mosaic":  # box survival = boxes out / boxes entering the mosaic (4 tiles × 1.6875 labels)
        survival = counts.mean() / (4 * ref["dataset_instances_per_image_mean"])
        assert survival == pytest.approx(ref["box_survival_fraction(total_out/total_in)"], rel=0.15)


def test_letterbox_box_shift_compat():
    img = np.zeros((10, 21, 3), np.uint8)  # → 32×32 at r = 32/21: unpadded 32×15, dh = 8.5 → top 8, bottom 9
    boxes = np.array([[0, 0, 21, 10]], np.float32)
    out, b8, r, (left, top), (dw, dh) = letterbox(img, boxes, (32, 32), compat="v8")
    _, bcur, *_ = letterbox(img, boxes, (32, 32), compat="current")
    assert out.shape == (32, 32, 3) and (left, top) == (0, 8) and dh == 8.5
    np.testing.assert_allclose(b8, [[0, 8.5, 32, 8.5 + 10 * 32 / 21]], atol=1e-5)  # un-rounded half padding
    np.testing.assert_allclose(bcur, [[0, 8, 32, 8 + 10 * 32 / 21]], atol=1e-5)  # the integer padding used
    assert (out[:8] == 114).all() and (out[-9:] == 114).all() and out[8:23].max() == 0


def test_rect_batch_shapes_hand_computed():
    hw = np.array([[480, 640], [640, 480], [640, 640], [300, 600]])
    order, shapes = rect_batch_shapes(hw, 2, 640)
    np.testing.assert_array_equal(order, [3, 0, 2, 1])  # sorted by h/w: 0.5, 0.75, 1, 1.33
    # batch 0 (ar 0.5..0.75): [0.75, 1] → ceil([15 + .5, 20 + .5]) · 32 = [512, 672]; batch 1 straddles 1 → 672²
    np.testing.assert_array_equal(shapes, [[512, 672], [672, 672]])


def test_box_candidates_rules():
    b1 = np.array([[0, 0, 10, 10]] * 4, np.float32)
    b2 = np.array([[0, 0, 10, 10], [0, 0, 2, 10], [0, 0, 3, 3], [0, 0, 4, 4]], np.float32)
    np.testing.assert_array_equal(box_candidates(b1, b2), [True, False, False, True])  # ≤ 2 px; 9 % < 10 % area


def test_mosaic_places_tiles_and_boxes():
    s = 32
    tiles = []
    for k in range(4):
        img = np.full((24, 32, 3), 10 * (k + 1), np.uint8)
        tiles.append((img, np.array([[4, 4, 20, 20]], np.float32), np.array([k], np.int32)))
    canvas, boxes, cls = mosaic4(tiles, s, np.random.default_rng(0))
    rng = np.random.default_rng(0)
    yc, xc = int(rng.uniform(s / 2, 3 * s / 2)), int(rng.uniform(s / 2, 3 * s / 2))
    assert canvas.shape == (64, 64, 3)
    assert canvas[yc - 1, xc - 1, 0] == 10 and canvas[yc - 1, xc, 0] == 20
    assert canvas[yc, xc - 1, 0] == 30 and canvas[yc, xc, 0] == 40
    # tile 3 (bottom right) starts at (xc, yc): its box moves by exactly that offset (then clipped to the canvas)
    b3 = boxes[cls == 3][0]
    np.testing.assert_allclose(b3, np.clip([xc + 4, yc + 4, xc + 20, yc + 20], 0, 64))
    for bx in boxes:  # every box lies on its tile's colour
        x1, y1, x2, y2 = bx.astype(int)
        assert canvas[(y1 + y2) // 2, (x1 + x2) // 2, 0] in (10, 20, 30, 40)
    # a reused canvas (`out`, full of leftovers) gives the same mosaic, drawn into that array
    used = np.random.default_rng(5).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    again, boxes2, cls2 = mosaic4(tiles, s, np.random.default_rng(0), out=used)
    assert again is used
    np.testing.assert_array_equal(again, canvas)
    np.testing.assert_array_equal(boxes2, boxes)
    np.testing.assert_array_equal(cls2, cls)


def test_four_channel_mosaic_warps_to_the_same_image():
    """The loader's mosaic canvas has a 4th (padding) channel because OpenCV's bilinear warp is faster on 4
    channels; its first three channels, and every warp of them, equal the 3-channel path's."""
    import cv2

    s, rng = 64, np.random.default_rng(3)
    tiles = [(rng.integers(0, 256, (int(h), 64, 3), dtype=np.uint8), np.array([[2, 2, 30, 30]], np.float32),
              np.array([k], np.int32)) for k, h in enumerate(rng.integers(20, 65, 4))]
    three, b3, c3 = mosaic4(tiles, s, np.random.default_rng(1))
    four, b4, c4 = mosaic4(tiles, s, np.random.default_rng(1), alpha=True,
                           out=rng.integers(0, 256, (2 * s, 2 * s, 4), dtype=np.uint8))
    assert four.shape == (2 * s, 2 * s, 4)
    np.testing.assert_array_equal(four[..., :3], three)
    np.testing.assert_array_equal(b4, b3)
    np.testing.assert_array_equal(c4, c3)
    for seed in range(12):  # rotation, scale, shear, translation and perspective, as random_perspective draws them
        hyp = dict(degrees=30.0, translate=0.2, scale=0.5, shear=5.0, perspective=0.001 * (seed % 2))
        a = augment.random_perspective(three, b3, c3, np.random.default_rng(seed), out_size=(s, s), **hyp)
        b = augment.random_perspective(four, b4, c4, np.random.default_rng(seed), out_size=(s, s), **hyp)
        np.testing.assert_array_equal(cv2.cvtColor(b[0], cv2.COLOR_BGRA2BGR), a[0])
        np.testing.assert_array_equal(b[1], a[1])


def test_flip_and_hsv_properties():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (8, 12, 3), dtype=np.uint8)
    boxes = np.array([[1, 2, 5, 6]], np.float32)
    out, b = random_flip(img, boxes, np.random.default_rng(0), flipud=1.0, fliplr=1.0)
    np.testing.assert_array_equal(out, img[::-1, ::-1])
    np.testing.assert_allclose(b, [[12 - 5, 8 - 6, 12 - 1, 8 - 2]])
    assert augment.random_hsv(img, np.random.default_rng(0), 0, 0, 0) is img  # zero gains: untouched
    gray = np.full((4, 4, 3), 100, np.uint8)  # saturation 0, hue 0: only the value gain acts
    g = augment.random_hsv(gray, np.random.default_rng(1), 0.5, 0.5, 0.4)
    gv = np.random.default_rng(1).uniform(-1, 1, 3)[2] * 0.4 + 1
    assert (g == int(100 * gv)).all()


def test_load_resize_rule():
    img = np.zeros((100, 333, 3), np.uint8)
    out = augment.resize_long_side(img, 64)  # r = 64/333: w = min(ceil(64.0), 64), h = ceil(19.2) = 20
    assert out.shape == (20, 64, 3)
    assert augment.resize_long_side(np.zeros((64, 50, 3), np.uint8), 64).shape == (64, 50, 3)
