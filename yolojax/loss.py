"""The YOLOv8 losses as pure JAX: detection (TaskAlignedAssigner + BCE + CIoU + DFL) and the
classifier's cross-entropy (:func:`classification_loss`, at the end).

Everything works on fixed shapes: ground truth is padded to ``M`` rows per image with a boolean mask, so one
compiled function serves every batch, and the result does not depend on ``M`` (padding rows never match an
anchor). Computation is float32 whatever dtype the network used. Nothing here synchronises with the host or
branches on traced values, so it runs inside ``jax.jit``, ``jax.grad``, ``jax.vmap`` and on a sharded batch.

Conventions: ``B`` images, ``A`` anchors (P3, P4, P5, row-major), ``M`` padded ground-truth rows, ``nc``
classes; boxes on device are pixel xyxy, anchor points are in grid units unless said otherwise.
``compat="v8"`` (default) reproduces Ultralytics 8.2.103, ``compat="current"`` 8.4 (small-box enlargement
in the assigner's candidate test); the loss itself is the same in both.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from yolojax.compat import COMPAT_MODES, check_compat  # noqa: F401 - COMPAT_MODES stays importable from here
from yolojax.ops.boxes import bbox2dist, bbox_iou, dfl_decode, dist2bbox, make_anchors, xywh2xyxy, xyxy2xywh


# ----------------------------------------------------------------------------------------------------------
# Assigner
# ----------------------------------------------------------------------------------------------------------
def _candidates_in_gts(anchor_points, gt_boxes, eps):
    """(B, M, A) bool: anchor centre strictly inside the gt box by more than ``eps`` on all four sides.

    Four fused comparisons rather than a (B, M, A, 4) margin tensor and its minimum: same decision, a
    fraction of the memory traffic."""
    x, y = anchor_points[:, 0], anchor_points[:, 1]  # (A,)
    x1, y1, x2, y2 = (gt_boxes[:, :, i, None] for i in range(4))  # (B, M, 1)
    return (x - x1 > eps) & (y - y1 > eps) & (x2 - x > eps) & (y2 - y > eps)


def _enlarge_small_gts(gt_boxes, gt_mask, min_side):
    """[current] widen/heighten real gt boxes whose side is below ``min_side`` to ``min_side`` about their
    centre. Every real box goes through the xywh round trip (not only the enlarged ones): that reproduces the
    reference's rounding of the candidate test (checked against fixtures/v84)."""
    xywh = xyxy2xywh(gt_boxes)
    wh = xywh[..., 2:]
    small = (wh < min_side) & gt_mask[..., None]
    wh = jnp.where(small, jnp.asarray(min_side, wh.dtype), wh)
    return xywh2xyxy(jnp.concatenate([xywh[..., :2], wh], axis=-1))


def _first_argmax_over_gts(values):
    """argmax over axis 1 of (B, M, A), lowest index on ties -> (B, A) int32. A max and a min of an index
    where the max is reached: two plain reductions, several times faster on CPU than XLA's arg-reduction."""
    best = jnp.max(values, axis=1, keepdims=True)
    gt_index = jnp.arange(values.shape[1], dtype=jnp.int32)[None, :, None]
    return jnp.min(jnp.where(values == best, gt_index, values.shape[1]), axis=1)


def _topk_mask(metric, topk):
    """(B, M, A) bool marking the ``topk`` largest entries of each (b, m) row (lowest index first on ties)."""
    num_anchors = metric.shape[-1]
    _, idx = jax.lax.top_k(metric, min(topk, num_anchors))  # (B, M, k), distinct indices per row
    rows = metric.reshape(-1, num_anchors).shape[0]
    flat_idx = idx.reshape(rows, -1)
    counts = jnp.zeros((rows, num_anchors), jnp.int32).at[jnp.arange(rows)[:, None], flat_idx].add(1)
    return (counts == 1).reshape(metric.shape)


def task_aligned_assign(pd_scores, pd_bboxes, anchor_points, gt_classes, gt_boxes, gt_mask, *, topk=10,
                        alpha=0.5, beta=6.0, eps=1e-9, strides=(8, 16, 32), compat="v8"):
    """Task-aligned assignment of ground truth to anchors, no gradient.

    Args:
      pd_scores: (B, A, nc) predicted class probabilities (after sigmoid).
      pd_bboxes: (B, A, 4) predicted boxes, pixel xyxy.
      anchor_points: (A, 2) anchor centres in pixels.
      gt_classes: (B, M) int class ids; gt_boxes: (B, M, 4) pixel xyxy; gt_mask: (B, M) bool, True = real.
      topk, alpha, beta: candidates per gt and the alignment metric ``score**alpha * CIoU**beta``.
      eps: candidate-test margin and normaliser epsilon (1e-9 in Ultralytics).
      strides: the head strides; ``compat="current"`` enlarges gt sides below ``strides[1]`` for the candidate
        test only.
    Returns:
      dict with target_labels (B, A) int32, target_bboxes (B, A, 4) pixel xyxy, target_scores (B, A, nc)
      float32 (IoU-aware, zero on background), fg_mask (B, A) bool, target_gt_idx (B, A) int32.
    """
    check_compat(compat)
    f32 = jnp.float32
    pd_scores, pd_bboxes, anchor_points, gt_boxes = jax.lax.stop_gradient(
        (jnp.asarray(pd_scores, f32), jnp.asarray(pd_bboxes, f32), jnp.asarray(anchor_points, f32),
         jnp.asarray(gt_boxes, f32)))
    gt_classes = jnp.asarray(gt_classes, jnp.int32)
    gt_mask = jnp.asarray(gt_mask, bool)
    batch, num_anchors, num_classes = pd_scores.shape
    num_gt = gt_boxes.shape[1]
    if num_gt == 0:  # static shape: no ground truth anywhere -> all background (labels = nc, as Ultralytics)
        return {
            "target_labels": jnp.full((batch, num_anchors), num_classes, jnp.int32),
            "target_bboxes": jnp.zeros_like(pd_bboxes),
            "target_scores": jnp.zeros_like(pd_scores),
            "fg_mask": jnp.zeros((batch, num_anchors), bool),
            "target_gt_idx": jnp.zeros((batch, num_anchors), jnp.int32),
        }

    # 1. Candidates: anchor centres inside a real gt box.
    candidate_boxes = gt_boxes
    if compat == "current":
        candidate_boxes = _enlarge_small_gts(gt_boxes, gt_mask, float(strides[1]))
    in_gts = _candidates_in_gts(anchor_points, candidate_boxes, eps) & gt_mask[:, :, None]  # (B, M, A)

    # 2. Alignment metric on candidates only (zero elsewhere).
    labels = jnp.clip(gt_classes, 0, num_classes - 1)
    scores_by_class = jnp.swapaxes(pd_scores, 1, 2)  # (B, nc, A)
    # Row gather (one A-long slice per gt) rather than an element-wise gather: much cheaper on CPU.
    bbox_scores = jax.vmap(lambda rows, idx: rows[idx])(scores_by_class, labels)  # (B, M, A)
    ciou = bbox_iou(gt_boxes[:, :, None, :], pd_bboxes[:, None, :, :], CIoU=True)  # (B, M, A)
    overlaps = jnp.where(in_gts, jnp.maximum(ciou, 0.0), 0.0)
    bbox_scores = jnp.where(in_gts, bbox_scores, 0.0)
    align_metric = jnp.power(bbox_scores, alpha) * jnp.power(overlaps, beta)

    # 3-4. Top-k anchors per gt, kept where they are candidates of a real gt.
    mask_pos = _topk_mask(align_metric, topk) & in_gts  # (B, M, A)

    # 5. An anchor claimed by several gts goes to the gt it overlaps most among all gts it is a candidate of
    #    (argmax over the CIoU column; ties -> lowest gt index).
    claims = jnp.sum(mask_pos, axis=1)  # (B, A)
    best_gt = _first_argmax_over_gts(overlaps)  # (B, A)
    gt_index = jnp.arange(num_gt, dtype=jnp.int32)[None, :, None]  # (1, M, 1)
    mask_pos = jnp.where((claims > 1)[:, None, :], gt_index == best_gt[:, None, :], mask_pos)
    fg_mask = jnp.any(mask_pos, axis=1)  # (B, A)
    target_gt_idx = _first_argmax_over_gts(mask_pos)  # 0 for background (all False)

    # 6. Targets gathered from the assigned gt (background rows gather gt 0; masked below).
    target_labels = jnp.maximum(jnp.take_along_axis(gt_classes, target_gt_idx, axis=1), 0)
    target_bboxes = jnp.take_along_axis(gt_boxes, target_gt_idx[:, :, None], axis=1)
    target_scores = jax.nn.one_hot(target_labels, num_classes, dtype=f32) * fg_mask[:, :, None]

    # 7. Scale each positive so that every gt's best-aligned anchor gets that gt's best positive CIoU.
    pos = mask_pos.astype(f32)
    pos_align = align_metric * pos
    best_align = jnp.max(pos_align, axis=-1, keepdims=True)  # (B, M, 1)
    best_overlap = jnp.max(overlaps * pos, axis=-1, keepdims=True)  # (B, M, 1)
    norm = jnp.max(pos_align * best_overlap / (best_align + eps), axis=1)  # (B, A)
    target_scores = target_scores * norm[:, :, None]

    return {
        "target_labels": target_labels,
        "target_bboxes": target_bboxes,
        "target_scores": target_scores,
        "fg_mask": fg_mask,
        "target_gt_idx": target_gt_idx,
    }


# ----------------------------------------------------------------------------------------------------------
# Loss terms
# ----------------------------------------------------------------------------------------------------------
@jax.custom_jvp
def bce_with_logits(logits, targets):
    """Element-wise binary cross-entropy on logits: (1 - t)·x - log_sigmoid(x).

    This is PyTorch's formulation, kept on purpose: for confident negatives (x << 0, t = 0) it cancels two
    nearly equal numbers and so rounds each term to ~1 ulp of |x|; summed over every anchor and class that
    rounding shows at the 1e-4 level of the classification loss, and parity with Ultralytics' numbers needs
    the same rounding. ``log_sigmoid(x) = min(x, 0) - log1p(exp(-|x|))``. The derivative is given in closed
    form (sigmoid(x) - t, as PyTorch's backward), because autodiff of the expression above would repeat the
    cancellation in the gradient.
    """
    log_sigmoid = jnp.minimum(logits, 0) - jnp.log1p(jnp.exp(-jnp.abs(logits)))
    return (1 - targets) * logits - log_sigmoid


@bce_with_logits.defjvp
def _bce_with_logits_jvp(primals, tangents):
    logits, targets = primals
    logits_dot, targets_dot = tangents
    out = bce_with_logits(logits, targets)
    return out, (jax.nn.sigmoid(logits) - targets) * logits_dot - logits * targets_dot


def dfl_loss(logits, target, reg_max=16):
    """Distribution Focal Loss per anchor: (..., 4 * reg_max) logits (side-major), (..., 4) target distances
    in grid units -> (...,) mean over the 4 sides of the interpolated cross-entropy at the two bins around
    the target. Targets are clamped to [0, reg_max - 1.01] so that the upper bin exists."""
    logp = jax.nn.log_softmax(logits.reshape(*logits.shape[:-1], 4, reg_max), axis=-1)
    target = jnp.clip(target, 0, reg_max - 1 - 0.01)
    left = jnp.floor(target)
    left_idx = left.astype(jnp.int32)
    weight_left = left + 1 - target
    ce_left = -jnp.take_along_axis(logp, left_idx[..., None], axis=-1)[..., 0]
    ce_right = -jnp.take_along_axis(logp, left_idx[..., None] + 1, axis=-1)[..., 0]
    return jnp.mean(ce_left * weight_left + ce_right * (1 - weight_left), axis=-1)


def detection_loss_from_head(pred_distri, pred_scores, targets, *, image_hw, box=7.5, cls=0.5, dfl=1.5,
                             reg_max=16, strides=(8, 16, 32), topk=10, compat="v8"):
    """The v8 detection loss from flattened head outputs.

    Args:
      pred_distri: (B, A, 4 * reg_max) DFL logits (side-major l, t, r, b); pred_scores: (B, A, nc) logits.
      targets: {"boxes": (B, M, 4) pixel xyxy, "classes": (B, M) int, "mask": (B, M) bool}.
      image_hw: (H, W) network input size in pixels (static); anchors follow from it and ``strides``.
    Returns:
      total: scalar float32 = (box + cls + dfl losses) · B, the quantity to differentiate;
      items: {"box_loss", "cls_loss", "dfl_loss"} with gains applied, without the batch factor, no gradient.
    """
    check_compat(compat)
    f32 = jnp.float32
    pred_distri = jnp.asarray(pred_distri).astype(f32)
    pred_scores = jnp.asarray(pred_scores).astype(f32)
    batch, num_anchors, _ = pred_scores.shape
    height, width = (int(v) for v in image_hw)
    feat_hw = [(height // s, width // s) for s in strides]
    anchor_points, stride_tensor = make_anchors(feat_hw, strides)
    if anchor_points.shape[0] != num_anchors or pred_distri.shape[:2] != (batch, num_anchors):
        raise ValueError(
            f"detection loss: head outputs have {num_anchors} anchors (pred_distri {pred_distri.shape}, pred_scores "
            f"{pred_scores.shape}) but image_hw={tuple(image_hw)} with strides {tuple(strides)} gives "
            f"{anchor_points.shape[0]}; pass the network input size (a multiple of {max(strides)}).")

    pred_bboxes = dist2bbox(dfl_decode(pred_distri, reg_max), anchor_points, xywh=False)  # (B, A, 4) grid units
    assigned = task_aligned_assign(
        jax.nn.sigmoid(pred_scores), pred_bboxes * stride_tensor, anchor_points * stride_tensor,
        targets["classes"], targets["boxes"], targets["mask"], topk=topk, strides=strides, compat=compat)
    target_scores = assigned["target_scores"]
    fg_mask = assigned["fg_mask"]
    target_scores_sum = jnp.maximum(jnp.sum(target_scores), 1.0)

    loss_cls = jnp.sum(bce_with_logits(pred_scores, target_scores)) / target_scores_sum

    # Box terms on foreground anchors only, as a weighted sum over all anchors (weight 0 on background), so
    # that an empty foreground gives exactly 0. Background targets are swapped for a harmless 2x2 box around
    # the anchor so that no masked-out entry can put a NaN into the gradient.
    weight = jnp.sum(target_scores, axis=-1) * fg_mask  # (B, A)
    safe_box = jnp.concatenate([anchor_points - 1.0, anchor_points + 1.0], axis=-1)
    target_bboxes = jnp.where(fg_mask[..., None], assigned["target_bboxes"] / stride_tensor, safe_box)
    ciou = bbox_iou(pred_bboxes, target_bboxes, CIoU=True)  # (B, A)
    loss_box = jnp.sum((1.0 - ciou) * weight) / target_scores_sum
    target_ltrb = bbox2dist(anchor_points, target_bboxes, reg_max - 1)
    loss_dfl = jnp.sum(dfl_loss(pred_distri, target_ltrb, reg_max) * weight) / target_scores_sum

    loss_box, loss_cls, loss_dfl = loss_box * box, loss_cls * cls, loss_dfl * dfl
    total = (loss_box + loss_cls + loss_dfl) * batch
    items = jax.lax.stop_gradient({"box_loss": loss_box, "cls_loss": loss_cls, "dfl_loss": loss_dfl})
    return total, items


def flatten_levels(outputs):
    """[(B, H, W, C), ...] per-level maps -> (B, A, C), levels concatenated in order, row-major within one."""
    return jnp.concatenate([jnp.reshape(o, (o.shape[0], -1, o.shape[-1])) for o in outputs], axis=1)


def detection_loss(outputs, targets, *, num_classes, box=7.5, cls=0.5, dfl=1.5, reg_max=16,
                   strides=(8, 16, 32), topk=10, compat="v8"):
    """The v8 detection loss from the model's train-mode outputs.

    Args:
      outputs: [P3, P4, P5], each (B, H, W, 4 * reg_max + num_classes): DFL logits then class logits.
      targets: {"boxes": (B, M, 4) pixel xyxy, "classes": (B, M) int, "mask": (B, M) bool}.
    Returns:
      (total, items) as ``detection_loss_from_head``; the input size is P3's size times ``strides[0]``.
    """
    channels = 4 * reg_max + num_classes
    for level, o in enumerate(outputs):
        if o.ndim != 4 or o.shape[-1] != channels:
            raise ValueError(
                f"detection_loss: output level {level} has shape {tuple(o.shape)}; expected (B, H, W, {channels}) "
                f"= 4 x {reg_max} DFL logits + {num_classes} class logits, NHWC. Check num_classes and the model.")
    flat = flatten_levels(outputs)
    image_hw = (outputs[0].shape[1] * strides[0], outputs[0].shape[2] * strides[0])
    return detection_loss_from_head(
        flat[..., : 4 * reg_max], flat[..., 4 * reg_max:], targets, image_hw=image_hw, box=box, cls=cls, dfl=dfl,
        reg_max=reg_max, strides=strides, topk=topk, compat=compat)


# ----------------------------------------------------------------------------------------------------------
# Host-side helper
# ----------------------------------------------------------------------------------------------------------
def targets_from_yolo(batch_idx, cls, bboxes_xywhn, batch_size: int, image_hw: Sequence[int],
                      max_boxes: int | None = None):
    """YOLO-format labels (Ultralytics' collated batch) -> padded device targets. NumPy, host side.

    Args:
      batch_idx: (N,) image index of each box; cls: (N,) or (N, 1) class ids; bboxes_xywhn: (N, 4) normalised
        centre-x, centre-y, w, h relative to the network input.
      batch_size: B; image_hw: (H, W) network input in pixels.
      max_boxes: M, the padded row count; None = the largest per-image count in this batch.
    Returns:
      {"boxes": (B, M, 4) float32 pixel xyxy, "classes": (B, M) int32, "mask": (B, M) bool}; rows keep the
      input order within each image; padding rows are zero.
    """
    batch_idx = np.asarray(batch_idx).reshape(-1).astype(np.int64)
    cls = np.asarray(cls).reshape(-1)
    bboxes = np.asarray(bboxes_xywhn, np.float32).reshape(-1, 4)
    if not (len(batch_idx) == len(cls) == len(bboxes)):
        raise ValueError(f"targets_from_yolo: batch_idx ({len(batch_idx)}), cls ({len(cls)}) and bboxes "
                         f"({len(bboxes)}) must have one row per box.")
    if len(batch_idx) and (batch_idx.min() < 0 or batch_idx.max() >= batch_size):
        raise ValueError(f"targets_from_yolo: batch_idx holds {batch_idx.min()}..{batch_idx.max()}, outside "
                         f"0..{batch_size - 1}; every box must belong to an image of this batch.")
    counts = np.bincount(batch_idx, minlength=batch_size)
    most = int(counts.max()) if batch_size else 0
    if max_boxes is None:
        max_boxes = most
    elif most > max_boxes:
        worst = int(counts.argmax())
        raise ValueError(f"targets_from_yolo: image {worst} of the batch has {most} boxes but max_boxes={max_boxes}; "
                         "boxes are never dropped silently, so use a larger pad size (the next size bucket).")
    height, width = image_hw
    scale = np.array([width, height, width, height], np.float32)
    pixel_xyxy = xywh2xyxy(bboxes * scale)
    out_boxes = np.zeros((batch_size, max_boxes, 4), np.float32)
    out_classes = np.zeros((batch_size, max_boxes), np.int32)
    out_mask = np.zeros((batch_size, max_boxes), bool)
    for image in range(batch_size):
        rows = np.flatnonzero(batch_idx == image)
        out_boxes[image, : len(rows)] = pixel_xyxy[rows]
        out_classes[image, : len(rows)] = cls[rows].astype(np.int32)
        out_mask[image, : len(rows)] = True
    return {"boxes": out_boxes, "classes": out_classes, "mask": out_mask}


def classification_loss(logits, labels):
    """Ultralytics' ``v8ClassificationLoss``: softmax cross-entropy, mean over the batch (no batch-size factor).

    ``logits`` (B, nc) (the classifier's train-mode output), ``labels`` (B,) int class ids in [0, nc) -> scalar
    float32. Pure and traceable (jit, grad, vmap)."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    picked = jnp.take_along_axis(logp, labels.astype(jnp.int32)[:, None], axis=-1)[:, 0]
    return -jnp.mean(picked)


@dataclasses.dataclass(frozen=True)
class ClassificationObjective:
    """The classifier's training objective (hashable: a static argument of the jitted train step).

    ``objective(logits (B, nc), batch {"labels": (B,) int}, model) -> (total, {"loss": total})``: Ultralytics'
    ``v8ClassificationLoss``, whose ``loss`` is both what it differentiates and what it logs as ``train/loss``:
    the batch mean, without the batch-size factor of the detection loss (in both compats)."""

    loss_names = ("loss",)

    def __call__(self, logits, batch, model=None):
        loss = classification_loss(logits, batch["labels"])
        return loss, {"loss": loss}
