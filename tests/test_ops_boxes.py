"""Box ops against Ultralytics' own outputs (fixtures/*/loss_units.npz, model/model_n_forward_64.npz) and
hand-computed cases."""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from yolojax.ops import bbox2dist, bbox_iou, box_iou, dfl_decode, dist2bbox, make_anchors, xywh2xyxy, xyxy2xywh

VERSIONS = ["v82", "v84"]
FLAGS = {"iou": {}, "giou": {"GIoU": True}, "diou": {"DIoU": True}, "ciou": {"CIoU": True}}


@pytest.fixture(scope="module", params=VERSIONS)
def units(request, fixtures_dir):
    return np.load(fixtures_dir / request.param / "loss_units.npz")


@pytest.mark.parametrize("kind", list(FLAGS))
def test_iou_family_matches_ultralytics(units, kind):
    got = jax.jit(functools.partial(bbox_iou, **FLAGS[kind]))(units["iou_box1_xyxy"], units["iou_box2_xyxy"])
    assert got.shape == (64,)
    np.testing.assert_allclose(np.asarray(got), units[kind], rtol=0, atol=1e-6)


def test_iou_hand_computed():
    a = np.array([0.0, 0.0, 2.0, 2.0], np.float32)
    b = np.array([1.0, 1.0, 3.0, 3.0], np.float32)

    @jax.jit
    def all_kinds(a, b):
        kinds = [bbox_iou(a, b, **flags) for flags in FLAGS.values()]
        return kinds + [bbox_iou(xyxy2xywh(a), xyxy2xywh(b), xywh=True, CIoU=True)]

    iou, giou, diou, ciou, ciou_xywh = (float(v) for v in all_kinds(a, b))
    assert iou == pytest.approx(1 / 7, abs=1e-6)  # inter 1, areas 4 and 4, union 7
    assert giou == pytest.approx(1 / 7 - 2 / 9, abs=1e-6)  # enclosing box 3x3 = 9
    # Centres (1,1) and (2,2): rho² = 2, enclosing diagonal² = 18; same aspect ratio so v = 0.
    assert diou == pytest.approx(1 / 7 - 2 / 18, abs=1e-6)
    assert ciou == pytest.approx(1 / 7 - 2 / 18, abs=1e-6)
    assert ciou_xywh == pytest.approx(1 / 7 - 2 / 18, abs=1e-6)


def test_ciou_alpha_carries_no_gradient():
    """d CIoU / d box1 must equal the gradient of iou - rho²/c² - v·alpha with alpha frozen (spec §2.4)."""
    box1 = jnp.array([1.0, 2.0, 5.0, 9.0])
    box2 = jnp.array([2.0, 1.0, 8.0, 6.0])
    eps = 1e-7

    def frozen_alpha_ciou(b1, alpha):
        w1, h1 = b1[2] - b1[0], b1[3] - b1[1] + eps
        w2, h2 = box2[2] - box2[0], box2[3] - box2[1] + eps
        iw = jnp.maximum(jnp.minimum(b1[2], box2[2]) - jnp.maximum(b1[0], box2[0]), 0)
        ih = jnp.maximum(jnp.minimum(b1[3], box2[3]) - jnp.maximum(b1[1], box2[1]), 0)
        iou = iw * ih / (w1 * h1 + w2 * h2 - iw * ih + eps)
        c2 = (jnp.maximum(b1[2], box2[2]) - jnp.minimum(b1[0], box2[0])) ** 2 + (
            jnp.maximum(b1[3], box2[3]) - jnp.minimum(b1[1], box2[1])) ** 2 + eps
        rho2 = ((box2[0] + box2[2] - b1[0] - b1[2]) ** 2 + (box2[1] + box2[3] - b1[1] - b1[3]) ** 2) / 4
        v = 4 / math.pi**2 * (jnp.arctan(w2 / h2) - jnp.arctan(w1 / h1)) ** 2
        return iou - rho2 / c2 - v * alpha, v / (v - iou + 1 + eps)

    _, alpha = frozen_alpha_ciou(box1, 0.0)
    expected_value, expected_grad = jax.jit(jax.value_and_grad(lambda b: frozen_alpha_ciou(b, alpha)[0]))(box1)
    got_value, got_grad = jax.jit(jax.value_and_grad(lambda b: bbox_iou(b, box2, CIoU=True)))(box1)
    assert float(got_value) == pytest.approx(float(expected_value), abs=1e-6)
    np.testing.assert_allclose(np.asarray(got_grad), np.asarray(expected_grad), rtol=1e-5, atol=1e-7)
    # And it differs from the gradient with alpha differentiated (the check is not vacuous).
    full_grad = jax.jit(jax.grad(lambda b: frozen_alpha_ciou(b, frozen_alpha_ciou(b, 0.0)[1])[0]))(box1)
    assert not np.allclose(np.asarray(full_grad), np.asarray(expected_grad), rtol=1e-4, atol=0)


def test_box_iou_pairwise():
    a = np.array([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 1.0, 1.0]], np.float32)
    b = np.array([[1.0, 1.0, 3.0, 3.0], [5.0, 5.0, 6.0, 6.0], [0.0, 0.0, 2.0, 2.0]], np.float32)
    got = np.asarray(jax.jit(box_iou)(a, b))
    assert got.shape == (2, 3)
    np.testing.assert_allclose(got, [[1 / 7, 0, 1], [0, 0, 1 / 4]], atol=1e-6)
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 50, (2, 20, 2)).astype(np.float32)
    wh = rng.uniform(1, 30, (2, 20, 2)).astype(np.float32)
    boxes = np.concatenate([xy, xy + wh], -1)
    pair = jax.jit(box_iou)(boxes[0], boxes[1])
    elementwise = jax.jit(lambda a, b: bbox_iou(a[:, None], b[None], eps=0.0))(boxes[0], boxes[1])
    np.testing.assert_allclose(np.asarray(pair), np.asarray(elementwise), rtol=1e-5, atol=1e-6)


def test_box_format_round_trip():
    xyxy = np.array([[10.0, 20.0, 50.0, 80.0], [0.0, 0.0, 1.0, 3.0]], np.float32)
    xywh = xyxy2xywh(xyxy)
    assert isinstance(xywh, np.ndarray)
    np.testing.assert_array_equal(xywh, [[30, 50, 40, 60], [0.5, 1.5, 1, 3]])
    np.testing.assert_array_equal(xywh2xyxy(xywh), xyxy)
    np.testing.assert_array_equal(np.asarray(xywh2xyxy(jnp.asarray(xywh))), xyxy)


def test_anchors_match_ultralytics(units, fixtures_dir):
    points, strides = make_anchors([(8, 8), (4, 4), (2, 2)], (8, 16, 32))
    assert points.dtype == np.float32 and points.shape == (84, 2) and strides.shape == (84, 1)
    np.testing.assert_array_equal(points, units["anchors_64"])
    np.testing.assert_array_equal(strides, units["strides_64"])
    model = np.load(fixtures_dir / "model" / "model_n_forward_64.npz")
    np.testing.assert_array_equal(points * strides, model["anchor_points"] * model["stride_tensor"])
    # Non-square inputs: 640 wide, 480 high -> A = 80·60 + 40·30 + 20·15, row-major (index y·W + x).
    points, strides = make_anchors([(60, 80), (30, 40), (15, 20)], (8, 16, 32))
    assert points.shape == (6300, 2)
    np.testing.assert_array_equal(points[81], [1.5, 1.5])


def test_dist2bbox_and_bbox2dist_match_ultralytics(units):
    anchors = jnp.asarray(units["anchors_64"])
    dist = jnp.asarray(units["dist_ltrb"])
    np.testing.assert_allclose(np.asarray(dist2bbox(dist, anchors, xywh=False)), units["dist2bbox_xyxy"], atol=1e-6)
    np.testing.assert_allclose(np.asarray(dist2bbox(dist, anchors, xywh=True)), units["dist2bbox_xywh"], atol=1e-6)
    got = bbox2dist(anchors, jnp.asarray(units["bbox2dist_in_xyxy"]), 15)
    np.testing.assert_allclose(np.asarray(got), units["bbox2dist_reg15"], atol=1e-6)
    assert float(got.max()) <= 14.99 + 1e-6 and float(got.min()) >= 0


def test_dfl_decode_reproduces_the_eval_head(fixtures_dir):
    """Ultralytics' eval output = dist2bbox(DFL(raw box logits)) · stride: rebuild it from the raw logits."""
    model = np.load(fixtures_dir / "model" / "model_n_forward_64.npz")
    logits = model["eval_boxes"].transpose(0, 2, 1)  # (B, A, 64)
    dist = jax.jit(dfl_decode)(logits)
    assert dist.shape == (2, 84, 4)
    boxes = jax.jit(dist2bbox)(dist, model["anchor_points"]) * model["stride_tensor"]
    np.testing.assert_allclose(np.asarray(boxes), model["eval_decoded"][:, :4].transpose(0, 2, 1), atol=2e-4)
    # One-hot logits decode to the bin index.
    sharp = jnp.full((1, 64), -1e4).at[0, jnp.array([3, 16 + 0, 32 + 15, 48 + 7])].set(0.0)
    np.testing.assert_allclose(np.asarray(dfl_decode(sharp)), [[3, 0, 15, 7]], atol=1e-6)
