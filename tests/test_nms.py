"""NMS: parity with Ultralytics' fixture outputs, a brute-force NumPy reference, greedy-NMS properties."""
from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from yolojax.ops.nms import non_max_suppression, scale_boxes

SETTINGS = ("val", "predict", "agnostic", "maxdet20")


def _run(preds, conf, iou, **kw):
    return tuple(np.asarray(a) for a in non_max_suppression(preds, conf, iou, **kw))


def _as_rows(boxes, scores, classes, valid):
    """Flatten fixed-size outputs to Ultralytics' per-image (n, 6) rows, images in order."""
    rows = [np.concatenate([boxes[i][valid[i]], scores[i][valid[i]][:, None], classes[i][valid[i]][:, None]], 1)
            for i in range(boxes.shape[0])]
    img = np.concatenate([np.full(int(valid[i].sum()), i) for i in range(boxes.shape[0])])
    return np.concatenate(rows), img


@pytest.mark.parametrize("version", ["v82", "v84"])
@pytest.mark.parametrize("name", SETTINGS)
def test_matches_ultralytics_fixture(fixtures_dir, version, name):
    data = np.load(fixtures_dir / version / "metrics_data.npz")
    ref = np.load(fixtures_dir / version / "metrics_nms.npz")
    settings = json.loads((fixtures_dir / version / "metrics_fixtures.json").read_text())["nms"][name]["settings"]
    preds = data["raw_preds"].transpose(0, 2, 1)  # torch (B, 4 + nc, A) -> ours (B, A, 4 + nc)
    out = _run(preds, settings["conf_thres"], settings["iou_thres"], agnostic=settings["agnostic"],
               multi_label=settings["multi_label"], max_det=settings["max_det"])
    rows, img = _as_rows(*out)
    det = ref[f"{name}/det"]
    np.testing.assert_array_equal(img, ref[f"{name}/img"])  # same count per image
    np.testing.assert_array_equal(rows[:, 5], det[:, 5])  # same classes in the same order
    np.testing.assert_array_equal(rows[:, 4], det[:, 4])  # scores are copied, never recomputed
    np.testing.assert_allclose(rows[:, :4], det[:, :4], atol=1e-4, rtol=0)
    # padding rows are zero and come after the kept ones
    boxes, scores, classes, valid = out
    assert not np.any(valid[:, 1:] & ~valid[:, :-1])
    assert np.all(boxes[~valid] == 0) and np.all(scores[~valid] == 0)


def _iou_np(box, boxes):
    """IoU of one xyxy box against many, float32, torchvision's formula."""
    inter = (np.minimum(box[2:], boxes[:, 2:]) - np.maximum(box[:2], boxes[:, :2])).clip(0).prod(1)
    areas = (boxes[:, 2:] - boxes[:, :2]).prod(1)
    return inter / ((box[2:] - box[:2]).prod() + areas - inter)


def _reference_nms(pred, conf, iou_thres, *, multi_label, agnostic, max_det, max_wh=7680.0):
    """Textbook greedy NMS on one image (A, 4 + nc): sort, then walk the list suppressing overlaps."""
    xy, wh = pred[:, :2], pred[:, 2:4]
    boxes = np.concatenate([xy - wh / 2, xy + wh / 2], 1).astype(np.float32)
    scores = pred[:, 4:]
    if multi_label:
        a, c = np.nonzero(scores > conf)
        cand = np.concatenate([boxes[a], scores[a, c][:, None], c[:, None]], 1)
    else:
        c = scores.argmax(1)
        s = scores.max(1)
        keep = s > conf
        cand = np.concatenate([boxes[keep], s[keep][:, None], c[keep][:, None]], 1)
    cand = cand[np.argsort(-cand[:, 4], kind="stable")].astype(np.float32)
    shifted = cand[:, :4] + (0 if agnostic else cand[:, 5:6] * np.float32(max_wh))
    suppressed = np.zeros(len(cand), bool)
    kept = []
    for i in range(len(cand)):
        if suppressed[i]:
            continue
        kept.append(i)
        suppressed |= _iou_np(shifted[i], shifted) > np.float32(iou_thres)
    return cand[kept[:max_det]]


def _random_preds(seed, batch=3, anchors=120, nc=3, size=200.0):
    rng = np.random.default_rng(seed)
    centers = rng.uniform(0, size, (batch, anchors, 2))
    # clusters of near-duplicates so that suppression actually happens
    centers[:, anchors // 2:] = centers[:, : anchors - anchors // 2] + rng.normal(0, 4, (batch, anchors - anchors // 2, 2))
    wh = rng.uniform(5, 60, (batch, anchors, 2))
    scores = rng.uniform(0, 1, (batch, anchors, nc)) ** 3
    return np.concatenate([centers, wh, scores], -1).astype(np.float32)


@pytest.mark.parametrize("multi_label,agnostic", [(True, False), (False, False), (False, True)])
def test_equals_bruteforce_reference(multi_label, agnostic):
    preds = _random_preds(1)
    out = _run(preds, 0.05, 0.5, multi_label=multi_label, agnostic=agnostic, max_det=40)
    for i in range(preds.shape[0]):
        ref = _reference_nms(preds[i], 0.05, 0.5, multi_label=multi_label, agnostic=agnostic, max_det=40)
        valid = out[3][i]
        ours = np.concatenate([out[0][i][valid], out[1][i][valid][:, None], out[2][i][valid][:, None]], 1)
        assert ours.shape == ref.shape
        np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)


def test_greedy_properties_on_random_boxes():
    preds = _random_preds(7, batch=2, anchors=200, nc=4)
    conf, thr = 0.02, 0.45
    boxes, scores, classes, valid = _run(preds, conf, thr, multi_label=True, max_det=1000)
    for i in range(preds.shape[0]):
        kb, ks, kc = boxes[i][valid[i]], scores[i][valid[i]], classes[i][valid[i]]
        assert np.all(np.diff(ks) < 0), "kept boxes must come by descending score"
        # 1. no two kept boxes of the same class overlap by more than the threshold
        for j in range(len(kb)):
            same = kc == kc[j]
            same[j] = False
            assert np.all(_iou_np(kb[j], kb[same]) <= thr + 1e-5)
        # 2. every candidate that was not kept overlaps a kept, higher-scoring box of its class
        xy, wh = preds[i, :, :2], preds[i, :, 2:4]
        all_boxes = np.concatenate([xy - wh / 2, xy + wh / 2], 1)
        a, c = np.nonzero(preds[i, :, 4:] > conf)
        for anchor, cls in zip(a, c):
            s = preds[i, anchor, 4 + cls]
            if np.any((ks == s) & (kc == cls)):
                continue
            higher = (kc == cls) & (ks > s)
            assert np.any(_iou_np(all_boxes[anchor], kb[higher]) > thr - 1e-5)


def test_max_nms_preselects_highest_scores():
    preds = _random_preds(3, batch=1, anchors=100, nc=2)
    # with iou_thres 1.0 nothing is suppressed, so the output is exactly the max_nms best candidates
    _, scores, _, valid = _run(preds, 0.0, 1.0, multi_label=True, max_nms=50, max_det=300)
    expected = np.sort(preds[0, :, 4:].reshape(-1))[::-1][:50]
    assert valid[0].sum() == 50
    np.testing.assert_array_equal(scores[0][valid[0]], expected)


def test_thresholds_are_traced_and_nms_nests_in_jit():
    preds = jnp.asarray(_random_preds(5, batch=2))

    @jax.jit
    def count_kept(p, conf):
        return non_max_suppression(p, conf, 0.6, max_det=300)[3].sum()

    many, few = int(count_kept(preds, 0.01)), int(count_kept(preds, 0.5))
    assert many > few > 0
    assert count_kept._cache_size() == 1  # a new threshold did not recompile


def test_bad_layout_is_a_clear_error():
    with pytest.raises(ValueError, match="transpose"):
        non_max_suppression(np.zeros((2, 9), np.float32))


def test_scale_boxes_undoes_letterbox():
    # original 100x200 (h x w) image letterboxed to 64x64: gain 0.32, pad left 0, top 16
    orig = np.array([[10.0, 20.0, 110.0, 70.0], [-5.0, 90.0, 250.0, 120.0]], np.float32)
    gain, pad = 0.32, (0.0, 16.0)
    letterboxed = orig * gain + np.array([pad[0], pad[1], pad[0], pad[1]], np.float32)
    back = scale_boxes(letterboxed, ((gain, gain), pad), (100, 200))
    np.testing.assert_allclose(back[0], orig[0], atol=1e-4)
    np.testing.assert_allclose(back[1], [0.0, 90.0, 200.0, 100.0], atol=1e-4)  # clipped to the image
    flat = scale_boxes(letterboxed, (gain, gain, pad[0], pad[1]), (100, 200), clip=False)
    np.testing.assert_allclose(flat, orig, atol=1e-4)
    with pytest.raises(ValueError, match="ratio_pad"):
        scale_boxes(letterboxed, (gain, pad[0]), (100, 200))


@pytest.mark.parametrize("window", [7, 64, 10_000])
def test_windowed_greedy_equals_reference(window):
    """The windowed pick loop crosses window borders exactly like one long greedy pass."""
    from yolojax.ops import nms as nms_module

    rng = np.random.default_rng(11)
    xy = rng.uniform(0, 100, (150, 2))
    wh = rng.uniform(5, 40, (150, 2))
    boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)  # treat slot order as the score order
    valid = np.arange(150) < 140
    greedy = jax.jit(nms_module._greedy_nms, static_argnames=("max_det", "window"))
    keep, count = greedy(jnp.asarray(boxes), jnp.asarray(valid), 0.3, max_det=60, window=window)
    suppressed, expected = ~valid, []
    for i in range(150):
        if not suppressed[i]:
            expected.append(i)
            suppressed |= _iou_np(boxes[i], boxes) > np.float32(0.3)
    expected = expected[:60]
    assert int(count) == len(expected)
    np.testing.assert_array_equal(np.asarray(keep)[: int(count)], expected)
