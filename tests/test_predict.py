"""``predict`` against Ultralytics' predictor: letterbox to the smallest stride rectangle, NMS, boxes mapped back.

The parity cases run Ultralytics' own predictions (``v82/predict.npz``, ``v84/predict.npz``: the yolov8n weights of
``model/model_n_state_dict.npz`` on four 96x128 images at imgsz 128 and 320); the other cases are hand-computed.
"""
from __future__ import annotations

import numpy as np
import pytest

from yolojax.augment import letterbox
from yolojax.predict import original_boxes, predict, predict_imgsz

IMAGES = [f"augment/dataset/images/train/{k:04d}.png" for k in range(4)]


@pytest.fixture(scope="module")
def yolov8n(fixtures_dir):
    from yolojax.weights import load

    return load(fixtures_dir / "model" / "model_n_state_dict.npz")


@pytest.mark.parametrize("size", [128, 320])
@pytest.mark.parametrize("compat,version", [("v8", "v82"), ("current", "v84")])
def test_predict_equals_ultralytics(yolov8n, fixtures_dir, compat, version, size):
    """Same input shape, count, order, classes and scores; boxes within 1e-3 of the image size (the two
    Ultralytics versions' own runs differ by up to ~1e-2 px here: float rounding of the forward pass)."""
    ref = np.load(fixtures_dir / version / "predict.npz")
    model, variables = yolov8n
    preds = predict(model, variables, [str(fixtures_dir / p) for p in IMAGES], imgsz=size, compat=compat,
                    verbose=False)
    for k, p in enumerate(preds):
        assert p.input_shape == tuple(ref[f"input_shape_{k}_{size}"]), k
        assert len(p) == len(ref[f"scores_{k}_{size}"]), k
        np.testing.assert_array_equal(p.classes, ref[f"classes_{k}_{size}"])
        np.testing.assert_allclose(p.scores, ref[f"scores_{k}_{size}"], atol=1e-4)
        np.testing.assert_allclose(p.boxes, ref[f"boxes_{k}_{size}"], rtol=0, atol=1e-3 * max(p.orig_shape))


def test_stride_letterbox_keeps_the_ratio_when_a_side_rounds_onto_a_stride_multiple():
    """201x1000 at 320: r = 0.32, the scaled height 64.32 rounds to 64, already a multiple of 32, so the input is
    64x320 with no padding; the width stays 320 (a letterbox recomputing r from 64x320 would take 64/201 and
    resize the width to 318)."""
    img = np.zeros((201, 1000, 3), np.uint8)
    out, _, r, (left, top), _ = letterbox(img, None, (320, 320), stride=32)
    assert (out.shape, r, left, top) == ((64, 320, 3), 0.32, 0, 0)
    # 96x128 at 320: scaled to 240x320, 80 rows short of 320 -> 80 mod 32 = 16 rows: 8 on top, 8 below
    out, _, r, (left, top), _ = letterbox(np.full((96, 128, 3), 7, np.uint8), None, (320, 320), stride=32)
    assert (out.shape, r, left, top) == ((256, 320, 3), 2.5, 0, 8)
    assert np.all(out[:8] == 114) and np.all(out[-8:] == 114) and np.all(out[8:-8] == 7)
    # a 1x3000 line at 640 keeps one row (0.21 would round to none): 31 rows of padding, 15 above
    out, _, _, (left, top), _ = letterbox(np.full((1, 3000, 3), 7, np.uint8), None, (640, 640), stride=32)
    assert (out.shape, left, top) == ((32, 640, 3), 0, 15) and np.all(out[15] == 7)


def test_original_boxes_v8_and_current():
    """A 100x301 image in a 32x64 input (r = 64/301: content 21x64, 5 rows of padding on top). The content's
    bottom edge (input y = 26) maps to 21 / (64/301) = 98.77 with v8's single gain and to 21 / (21/100) = 100 with
    8.4's per-axis gains; x maps with 64/301 in both; boxes are clipped to the image."""
    boxes = np.array([[0, 5, 64, 26], [32, 10, 70, 20]], np.float32)
    v8 = original_boxes(boxes, (32, 64), (100, 301), "v8")
    cur = original_boxes(boxes, (32, 64), (100, 301), "current")
    np.testing.assert_allclose(v8, [[0, 0, 301, 21 * 301 / 64], [150.5, 5 * 301 / 64, 301, 15 * 301 / 64]],
                               rtol=1e-6)
    np.testing.assert_allclose(cur, [[0, 0, 301, 100], [150.5, 5 / 0.21, 301, 15 / 0.21]], rtol=1e-6)


def test_predict_imgsz():
    assert predict_imgsz(640) == (640, 640)
    assert predict_imgsz([100, 200]) == (128, 224)
    assert predict_imgsz((320,)) == (320, 320)


@pytest.fixture(scope="module")
def tiny(tiny_model_yaml):
    from yolojax.nn import YOLOv8
    from yolojax.nn.yolo import init_variables

    model = YOLOv8.from_yaml(str(tiny_model_yaml))
    return model, init_variables(model, seed=0)


def test_a_batch_of_mixed_shapes_is_letterboxed_to_imgsz(tiny):
    """As Ultralytics: the stride rectangle only when every image of a batch has one shape (and ``rect``);
    otherwise the batch is padded to imgsz x imgsz. An image's detections do not depend on its batch."""
    model, variables = tiny
    rng = np.random.default_rng(1)
    wide, tall = (rng.integers(0, 256, hw + (3,), dtype=np.uint8) for hw in ((32, 64), (64, 32)))
    kw = dict(imgsz=64, conf=0.0, max_det=20, verbose=False)
    alone = predict(model, variables, [wide, tall], batch=1, **kw)
    assert [p.input_shape for p in alone] == [(32, 64), (64, 32)]
    mixed = predict(model, variables, [wide, tall], batch=2, **kw)
    square = predict(model, variables, [wide, tall], batch=2, rect=False, **kw)
    assert [p.input_shape for p in mixed] == [p.input_shape for p in square] == [(64, 64)] * 2
    for m, s in zip(mixed, square):
        np.testing.assert_array_equal(m.boxes, s.boxes)
    same = predict(model, variables, [wide, wide[:, ::-1]], batch=2, **kw)
    assert [p.input_shape for p in same] == [(32, 64)] * 2
    np.testing.assert_allclose(same[0].boxes, alone[0].boxes, atol=1e-4)
    np.testing.assert_allclose(same[0].scores, alone[0].scores, atol=1e-6)
    assert not np.allclose(mixed[0].scores, alone[0].scores, rtol=1e-3)  # the padding changes the result


def test_classes_filter_candidates_before_nms(yolov8n, fixtures_dir):
    """Ultralytics drops the other classes' candidates before NMS. With class 0 alone, agnostic NMS is class-aware
    NMS, and both keep exactly the class-0 rows of the unfiltered class-aware result (fewer than max_det here).
    Unfiltered agnostic NMS lets boxes of other classes suppress class-0 boxes, so filtering its output instead
    would keep fewer."""
    model, variables = yolov8n
    img = str(fixtures_dir / IMAGES[1])
    kw = dict(imgsz=128, verbose=False)
    (full,) = predict(model, variables, img, **kw)
    (full_agnostic,) = predict(model, variables, img, agnostic_nms=True, **kw)
    (only,) = predict(model, variables, img, classes=[0], **kw)
    (only_agnostic,) = predict(model, variables, img, classes=[0], agnostic_nms=True, **kw)
    assert len(full) < 300
    np.testing.assert_array_equal(only.boxes, full.boxes[full.classes == 0])
    np.testing.assert_array_equal(only_agnostic.boxes, only.boxes)
    np.testing.assert_array_equal(only_agnostic.scores, only.scores)
    assert np.sum(full_agnostic.classes == 0) < len(only_agnostic)


def test_bad_predict_arguments(tiny):
    from yolojax.config import ConfigError

    model, variables = tiny
    img = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(ConfigError, match=r"compat='v9'.*v8, current"):
        predict(model, variables, img, compat="v9", verbose=False)
    with pytest.raises(ConfigError, match=r"classes=\[80\].*0\.\.79"):
        predict(model, variables, img, classes=[80], verbose=False)
