"""Box arithmetic shared by the head, the loss, NMS and the metrics.

Conventions: boxes are ``xyxy`` corners or ``xywh`` centre + size, last axis of length 4;
leading axes broadcast. Anchor points are cell centres in *grid units* of their level; multiply by the
``stride_tensor`` to get input pixels. Every function here is pure ``jnp`` (jit/vmap/grad safe) except
``make_anchors``, which depends only on static shapes and returns NumPy constants.

The IoU family follows Ultralytics' ``bbox_iou`` numerically: ``eps = 1e-7`` is added to the
*heights* only and to the union / enclosing diagonal, and the CIoU trade-off ``alpha`` carries no gradient.
"""
from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

IOU_EPS = 1e-7


def xywh2xyxy(boxes):
    """(..., 4) centre-x, centre-y, w, h -> (..., 4) x1, y1, x2, y2. Works on NumPy or jnp arrays (and tracers).

    ``w / 2`` is exact in floating point, so the corners round as Ultralytics' do (NMS relies on it)."""
    xp = jnp if isinstance(boxes, jax.Array) else np
    half_w = boxes[..., 2] / 2
    half_h = boxes[..., 3] / 2
    return xp.stack(
        [boxes[..., 0] - half_w, boxes[..., 1] - half_h, boxes[..., 0] + half_w, boxes[..., 1] + half_h], axis=-1
    )


def xyxy2xywh(boxes):
    """(..., 4) x1, y1, x2, y2 -> (..., 4) centre-x, centre-y, w, h. Works on NumPy or jnp arrays."""
    xp = jnp if isinstance(boxes, jax.Array) else np
    return xp.stack(
        [
            (boxes[..., 0] + boxes[..., 2]) / 2,
            (boxes[..., 1] + boxes[..., 3]) / 2,
            boxes[..., 2] - boxes[..., 0],
            boxes[..., 3] - boxes[..., 1],
        ],
        axis=-1,
    )


def bbox_iou(box1, box2, *, xywh=False, GIoU=False, DIoU=False, CIoU=False, eps=IOU_EPS):
    """Element-wise IoU (or GIoU / DIoU / CIoU) of ``box1`` (..., 4) and ``box2`` (..., 4) -> (...,).

    Leading axes broadcast, so ``box1[:, None]`` against ``box2[None]`` gives a pairwise table.
    With ``xywh=True`` the inputs are centre/size and are converted to corners first (the eps-on-heights
    rule then applies to the converted boxes). At most one of GIoU / DIoU / CIoU is meant to be set;
    CIoU wins over DIoU, which wins over GIoU.
    """
    if xywh:
        box1, box2 = xywh2xyxy(jnp.asarray(box1)), xywh2xyxy(jnp.asarray(box2))
    b1x1, b1y1, b1x2, b1y2 = (box1[..., i] for i in range(4))
    b2x1, b2y1, b2x2, b2y2 = (box2[..., i] for i in range(4))
    w1, h1 = b1x2 - b1x1, b1y2 - b1y1 + eps
    w2, h2 = b2x2 - b2x1, b2y2 - b2y1 + eps

    inter = jnp.maximum(jnp.minimum(b1x2, b2x2) - jnp.maximum(b1x1, b2x1), 0) * jnp.maximum(
        jnp.minimum(b1y2, b2y2) - jnp.maximum(b1y1, b2y1), 0
    )
    union = w1 * h1 + w2 * h2 - inter + eps
    iou = inter / union
    if not (GIoU or DIoU or CIoU):
        return iou

    # Smallest enclosing box.
    cw = jnp.maximum(b1x2, b2x2) - jnp.minimum(b1x1, b2x1)
    ch = jnp.maximum(b1y2, b2y2) - jnp.minimum(b1y1, b2y1)
    if CIoU or DIoU:
        c2 = cw**2 + ch**2 + eps  # squared diagonal of the enclosing box
        rho2 = ((b2x1 + b2x2 - b1x1 - b1x2) ** 2 + (b2y1 + b2y2 - b1y1 - b1y2) ** 2) / 4  # centre distance²
        if CIoU:
            v = (4 / math.pi**2) * (jnp.arctan(w2 / h2) - jnp.arctan(w1 / h1)) ** 2
            # The aspect-ratio weight is a constant for the gradient (as in the CIoU paper and Ultralytics).
            alpha = jax.lax.stop_gradient(v / (v - iou + (1 + eps)))
            return iou - (rho2 / c2 + v * alpha)
        return iou - rho2 / c2
    c_area = cw * ch + eps
    return iou - (c_area - union) / c_area


def box_iou(boxes1, boxes2, eps=IOU_EPS):
    """Pairwise plain IoU of (N, 4) and (M, 4) xyxy boxes -> (N, M) (leading batch axes broadcast).

    Unlike ``bbox_iou`` no eps is added to the sides: this is the matrix used to match predictions with
    ground truth (metrics) and to suppress duplicates (NMS), ``inter / (area1 + area2 - inter + eps)``.
    """
    a = boxes1[..., :, None, :]
    b = boxes2[..., None, :, :]
    inter_w = jnp.maximum(jnp.minimum(a[..., 2], b[..., 2]) - jnp.maximum(a[..., 0], b[..., 0]), 0)
    inter_h = jnp.maximum(jnp.minimum(a[..., 3], b[..., 3]) - jnp.maximum(a[..., 1], b[..., 1]), 0)
    inter = inter_w * inter_h
    area1 = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area2 = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    return inter / (area1 + area2 - inter + eps)


def make_anchors(feat_hw: Sequence[Sequence[int]], strides: Sequence[float], offset: float = 0.5):
    """Anchor centres for the given feature-map sizes.

    Args:
      feat_hw: ((H3, W3), (H4, W4), (H5, W5)) feature sizes, one per level (static ints).
      strides: one stride per level, e.g. (8, 16, 32).
    Returns:
      anchor_points (A, 2) float32 in grid units of each anchor's level, (x + offset, y + offset), levels in
      order, row-major within a level (index ``y * W + x``); stride_tensor (A, 1) float32.
      NumPy arrays: shapes are static, so they become compile-time constants under jit.
    """
    if len(feat_hw) != len(strides):
        raise ValueError(f"make_anchors: {len(feat_hw)} feature sizes but {len(strides)} strides; give one per level.")
    points, stride_rows = [], []
    for (h, w), s in zip(feat_hw, strides):
        xs = np.arange(int(w), dtype=np.float32) + np.float32(offset)
        ys = np.arange(int(h), dtype=np.float32) + np.float32(offset)
        gy, gx = np.meshgrid(ys, xs, indexing="ij")
        points.append(np.stack([gx, gy], axis=-1).reshape(-1, 2))
        stride_rows.append(np.full((int(h) * int(w), 1), s, dtype=np.float32))
    return np.concatenate(points, 0), np.concatenate(stride_rows, 0)


def dist2bbox(distance, anchor_points, *, xywh=True):
    """(..., 4) distances (left, top, right, bottom) from ``anchor_points`` (..., 2) -> (..., 4) boxes.

    Returns centre/size when ``xywh`` else corners; same units as the inputs (grid units in the head).
    """
    top_left = anchor_points - distance[..., :2]
    bottom_right = anchor_points + distance[..., 2:]
    if xywh:
        return jnp.concatenate([(top_left + bottom_right) / 2, bottom_right - top_left], axis=-1)
    return jnp.concatenate([top_left, bottom_right], axis=-1)


def bbox2dist(anchor_points, bbox, reg_max):
    """Inverse of ``dist2bbox``: xyxy ``bbox`` (..., 4) -> (..., 4) distances (l, t, r, b) from the anchors.

    Clamped to ``[0, reg_max - 0.01]`` so that the DFL target always has an upper bin. ``reg_max`` is the
    largest bin *index*: the loss passes 15 for 16 bins.
    """
    dist = jnp.concatenate([anchor_points - bbox[..., :2], bbox[..., 2:] - anchor_points], axis=-1)
    return jnp.clip(dist, 0, reg_max - 0.01)


def dfl_decode(logits, reg_max: int = 16):
    """Distribution Focal Loss decode: (..., 4 * reg_max) logits, side-major (l0..l15, t0..t15, r.., b..)
    -> (..., 4) expected distances in grid units (softmax over the bins, then Σ k·p_k).

    The expectation is an element-wise product and sum rather than a matmul, so that accelerators' reduced
    matmul precision (TF32 / bf16 passes) cannot change it.
    """
    probs = jax.nn.softmax(logits.reshape(*logits.shape[:-1], 4, reg_max), axis=-1)
    return jnp.sum(probs * jnp.arange(reg_max, dtype=probs.dtype), axis=-1)
