"""Jittable, batched non-maximum suppression with fixed-size outputs.

Semantics follow Ultralytics' ``non_max_suppression`` (v8-era and current agree on these inputs):

1. Candidates: single-label keeps each anchor's best class if its score is ``> conf_thres``; multi-label keeps
   every (anchor, class) pair whose score is ``> conf_thres``.
2. Pre-selection: at most ``max_nms`` candidates, the highest scores first.
3. Class-aware NMS: each box is shifted by ``class * max_wh`` (no shift when ``agnostic``) so that boxes of
   different classes never overlap, then greedy NMS: visit candidates by descending score, keep one unless a
   kept box overlaps it with IoU ``> iou_thres`` (areas ``(x2 - x1)(y2 - y1)``, no eps, no +1, all in float32 on
   the shifted boxes, as torchvision computes it).
4. The first ``max_det`` kept boxes, by descending score.

Shape discipline: nothing here depends on how many boxes pass the threshold. Candidates are a fixed
``K = min(max_nms, A * nc)`` slots (``A`` in single-label mode) chosen with ``lax.top_k`` (which also sorts them),
with a validity mask. The greedy selection is a ``lax.while_loop`` of at most ``max_det`` picks; each pick takes
the first still-alive candidate (the highest remaining score, because the slots are sorted) and suppresses the
candidates it overlaps, so the whole image costs at most O(max_det * K) -- exactly greedy NMS, without
ever forming the K x K IoU matrix (30,000^2 floats would be 3.6 GB). Slots are visited in windows of
``NMS_WINDOW`` so that a pick scans only its window, and the loop stops once ``max_det`` boxes are kept or the
valid candidates (a prefix of the sorted slots) run out -- the common case at ``conf_thres = 0.25``.
"""
from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from yolojax.ops.boxes import xywh2xyxy

# Sorted candidates are processed in windows of this many slots (see _greedy_nms); any value is exact.
NMS_WINDOW = 512


def _select_candidates(pred: jax.Array, conf_thres, *, multi_label: bool, max_nms: int):
    """One image's fixed-size candidate list, sorted by descending score.

    Args:
      pred: (A, 4 + nc) xywh pixel boxes then class scores.
    Returns:
      boxes (K, 4) xyxy, scores (K,), classes (K,) int32, valid (K,) bool; ``K = min(max_nms, A*nc | A)``.
    """
    num_anchors, num_classes = pred.shape[0], pred.shape[1] - 4
    boxes = xywh2xyxy(pred[:, :4])
    class_scores = pred[:, 4:]
    if multi_label and num_classes > 1:
        flat = class_scores.reshape(-1)  # row-major: index = anchor * nc + class
        masked = jnp.where(flat > conf_thres, flat, -jnp.inf)
        k = min(max_nms, flat.shape[0])
        scores, flat_idx = jax.lax.top_k(masked, k)
        anchor_idx = flat_idx // num_classes
        classes = (flat_idx % num_classes).astype(jnp.int32)
    else:
        best = jnp.max(class_scores, axis=1)
        best_class = jnp.argmax(class_scores, axis=1).astype(jnp.int32)  # first index on ties, like torch.max
        masked = jnp.where(best > conf_thres, best, -jnp.inf)
        k = min(max_nms, num_anchors)
        scores, anchor_idx = jax.lax.top_k(masked, k)
        classes = best_class[anchor_idx]
    valid = scores > -jnp.inf
    return boxes[anchor_idx], jnp.where(valid, scores, 0.0), classes, valid


def _pairwise_iou(box, areas_box, boxes, areas):
    """IoU of box(es) against ``boxes``, torchvision's float32 formula: inter / (area_a + area_b - inter).

    ``box`` (..., 1, 4) broadcasts against ``boxes`` (N, 4); no eps, so two zero-area boxes give NaN, which
    compares False below (not suppressed), as in torchvision.
    """
    inter_w = jnp.maximum(jnp.minimum(box[..., 2], boxes[:, 2]) - jnp.maximum(box[..., 0], boxes[:, 0]), 0.0)
    inter_h = jnp.maximum(jnp.minimum(box[..., 3], boxes[:, 3]) - jnp.maximum(box[..., 1], boxes[:, 1]), 0.0)
    inter = inter_w * inter_h
    return inter / (areas_box + areas - inter)


def _greedy_nms(boxes: jax.Array, valid: jax.Array, iou_thres, max_det: int, window: int = NMS_WINDOW):
    """Greedy NMS over candidates already sorted by descending score.

    The sorted slots are visited in windows of ``window``: a window is first cleared of candidates that overlap
    any box kept in earlier windows (all of which score higher), then picks run inside it. Each pick takes the
    first alive slot and suppresses what it overlaps. This is exactly greedy NMS, and it touches only the
    windows needed to reach ``max_det`` or to exhaust the valid candidates (a prefix of the slots), instead of
    scanning all K slots on each of the ``max_det`` picks.

    Args:
      boxes: (K, 4) xyxy, already shifted per class.
      valid: (K,) which slots hold real candidates (a prefix, since slots are sorted by score).
    Returns:
      keep (max_det,) int32 slot indices in pick order, count () int32 of real entries in ``keep``.
    """
    num_slots = boxes.shape[0]
    window = min(window, num_slots)
    num_windows = -(-num_slots // window)
    pad = num_windows * window - num_slots
    boxes = jnp.pad(boxes, ((0, pad), (0, 0)))
    valid = jnp.pad(valid, (0, pad))
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])

    def pick_cond(state):
        alive, _, _, _, count = state
        return (count < max_det) & jnp.any(alive)

    def pick_body(state):
        alive, win_boxes, win_areas, (keep, kept_boxes, kept_areas, offset), count = state
        i = jnp.argmax(alive)  # first alive slot = highest remaining score
        iou = _pairwise_iou(win_boxes[i], win_areas[i], win_boxes, win_areas)
        alive = (alive & ~(iou > iou_thres)).at[i].set(False)
        kept = (keep.at[count].set(offset + i.astype(jnp.int32)), kept_boxes.at[count].set(win_boxes[i]),
                kept_areas.at[count].set(win_areas[i]), offset)
        return alive, win_boxes, win_areas, kept, count + 1

    def window_cond(state):
        w, _, _, _, count = state
        return (count < max_det) & (w < num_windows) & valid[jnp.minimum(w, num_windows - 1) * window]

    def window_body(state):
        w, keep, kept_boxes, kept_areas, count = state
        offset = (w * window).astype(jnp.int32)
        win_boxes = jax.lax.dynamic_slice_in_dim(boxes, offset, window)
        win_areas = jax.lax.dynamic_slice_in_dim(areas, offset, window)
        win_valid = jax.lax.dynamic_slice_in_dim(valid, offset, window)
        # (window, max_det): suppression by every box kept so far
        iou = _pairwise_iou(kept_boxes[:, None, :], kept_areas[:, None], win_boxes, win_areas)
        already = jnp.any((iou > iou_thres) & (jnp.arange(max_det) < count)[:, None], axis=0)
        state = (win_valid & ~already, win_boxes, win_areas, (keep, kept_boxes, kept_areas, offset), count)
        _, _, _, (keep, kept_boxes, kept_areas, _), count = jax.lax.while_loop(pick_cond, pick_body, state)
        return w + 1, keep, kept_boxes, kept_areas, count

    init = (jnp.int32(0), jnp.zeros((max_det,), jnp.int32), jnp.zeros((max_det, 4), boxes.dtype),
            jnp.zeros((max_det,), boxes.dtype), jnp.int32(0))
    _, keep, _, _, count = jax.lax.while_loop(window_cond, window_body, init)
    return keep, count


def _nms_one_image(pred, conf_thres, iou_thres, *, agnostic, multi_label, max_det, max_nms, max_wh):
    boxes, scores, classes, valid = _select_candidates(pred, conf_thres, multi_label=multi_label, max_nms=max_nms)
    if agnostic:
        shifted = boxes
    else:  # class * max_wh is exact in float32; the sums round exactly as Ultralytics' shifted boxes do
        shifted = boxes + (classes.astype(boxes.dtype) * jnp.asarray(max_wh, boxes.dtype))[:, None]
    keep, count = _greedy_nms(shifted, valid, iou_thres, max_det)
    kept_valid = jnp.arange(max_det) < count
    out_boxes = jnp.where(kept_valid[:, None], boxes[keep], 0.0)
    out_scores = jnp.where(kept_valid, scores[keep], 0.0)
    out_classes = jnp.where(kept_valid, classes[keep], 0)
    return out_boxes, out_scores, out_classes, kept_valid


@functools.partial(
    jax.jit, static_argnames=("agnostic", "multi_label", "max_det", "max_nms", "max_wh")
)
def non_max_suppression(
    preds: jax.Array,
    conf_thres: float = 0.25,
    iou_thres: float = 0.7,
    *,
    agnostic: bool = False,
    multi_label: bool = False,
    max_det: int = 300,
    max_nms: int = 30000,
    max_wh: float = 7680.0,
):
    """Batched NMS with fixed-size outputs.

    Args:
      preds: (B, A, 4 + nc) float: xywh boxes in input pixels, then class scores (probabilities).
        (Ultralytics' (B, 4 + nc, A) layout must be transposed first.)
      conf_thres, iou_thres: traced scalars, so changing them does not recompile.
      agnostic: one NMS over all classes instead of one per class.
      multi_label: every (anchor, class) pair above ``conf_thres`` is a candidate (only if nc > 1).
      max_det: detections kept per image (static: the output size).
      max_nms: candidates entering NMS per image, highest scores first (static).
      max_wh: per-class box shift for class-aware NMS; must exceed the image size.
    Returns:
      boxes (B, max_det, 4) xyxy input pixels, scores (B, max_det), classes (B, max_det) int32,
      valid (B, max_det) bool. Each image's kept boxes come first, by descending score; padding rows are 0.
    """
    preds = jnp.asarray(preds)
    if preds.ndim != 3 or preds.shape[-1] < 5:
        raise ValueError(
            f"non_max_suppression expects preds of shape (batch, anchors, 4 + num_classes) with at least one "
            f"class, got {preds.shape}. If you have Ultralytics' (batch, 4 + nc, anchors) layout, pass "
            f"preds.transpose(0, 2, 1)."
        )
    per_image = functools.partial(
        _nms_one_image,
        agnostic=agnostic,
        multi_label=multi_label,
        max_det=max_det,
        max_nms=max_nms,
        max_wh=max_wh,
    )
    conf_thres = jnp.asarray(conf_thres, preds.dtype)
    iou_thres = jnp.asarray(iou_thres, preds.dtype)
    return jax.vmap(per_image, in_axes=(0, None, None))(preds, conf_thres, iou_thres)


def scale_boxes(boxes, ratio_pad, orig_hw: Sequence[int], *, clip: bool = True) -> np.ndarray:
    """Map xyxy boxes from letterboxed network-input pixels back to the original image (host side, NumPy).

    v8-era rule: subtract the padding ``(left, top)``, divide by the gain, clip to the image.

    Args:
      boxes: (..., 4) xyxy in input pixels.
      ratio_pad: ``((gain_h, gain_w), (pad_left, pad_top))`` as Ultralytics' batches carry it, or the flat
        ``(gain_h, gain_w, pad_left, pad_top)`` of our loader. The gain used is ``gain_h`` (= ``ratio_pad[0][0]``),
        as Ultralytics does; letterboxing keeps the aspect ratio, so both gains agree.
      orig_hw: original image (height, width).
      clip: clip to ``[0, W] x [0, H]`` (v8-era); ``False`` leaves boxes unclipped.
    Returns:
      (..., 4) float32 xyxy in original-image pixels (a new array).
    """
    flat = np.asarray(
        [v for part in ratio_pad for v in (part if np.ndim(part) else [part])], dtype=np.float64
    ).reshape(-1)
    if flat.shape[0] != 4:
        raise ValueError(
            f"scale_boxes: ratio_pad must be ((gain_h, gain_w), (pad_left, pad_top)) or 4 numbers, got {ratio_pad!r}"
        )
    gain, pad_left, pad_top = flat[0], flat[2], flat[3]
    out = np.array(boxes, dtype=np.float32, copy=True)
    out[..., [0, 2]] -= np.float32(pad_left)
    out[..., [1, 3]] -= np.float32(pad_top)
    out[..., :4] /= np.float32(gain)
    if clip:
        h, w = int(orig_hw[0]), int(orig_hw[1])
        out[..., [0, 2]] = out[..., [0, 2]].clip(0, w)
        out[..., [1, 3]] = out[..., [1, 3]].clip(0, h)
    return out
