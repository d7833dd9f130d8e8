"""Detection metrics on the host (NumPy): matching, AP, P/R/F1, fitness, confusion matrix; and
classification accuracy (top-1/top-5, at the end).

The device hands over fixed-size NMS outputs; everything here works on the few thousand kept boxes per
validation run, so plain NumPy in float32/float64 is both fast enough and the easiest way to reproduce
Ultralytics' numbers to 1e-6: IoU is computed in float32 in the same operation order, AP in float64.

``compat="v8"`` (default) follows Ultralytics 8.2.103, ``compat="current"`` follows 8.4; they differ in
the matching rule, the AP precision envelope, the fitness formula and the confusion-matrix confidence.
``DetectionStatsAccumulator`` at the bottom holds the per-image bookkeeping of a validation run, so that the
validator itself stays a thin loop.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import numpy as np

from yolojax.compat import COMPAT_MODES, check_compat  # noqa: F401 - COMPAT_MODES stays importable from here

IOU_EPS = 1e-7
IOUV = np.linspace(0.5, 0.95, 10).astype(np.float32)  # 0.50:0.05:0.95 rounded to float32, as torch.linspace gives


def box_iou(boxes1, boxes2, eps: float = IOU_EPS) -> np.ndarray:
    """Pairwise IoU of xyxy boxes (N, 4) x (M, 4) -> (N, M) float32 (eps added to the union, no +1 pixel)."""
    a = np.asarray(boxes1, np.float32)[:, None, :]
    b = np.asarray(boxes2, np.float32)[None, :, :]
    inter = (np.minimum(a[..., 2:], b[..., 2:]) - np.maximum(a[..., :2], b[..., :2])).clip(0).prod(-1)
    area_a = (a[..., 2:] - a[..., :2]).prod(-1)
    area_b = (b[..., 2:] - b[..., :2]).prod(-1)
    return inter / (area_a + area_b - inter + np.float32(eps))


# ----------------------------------------------------------------------------------------------- matching


def match_predictions(pred_classes, true_classes, iou, *, iouv=IOUV, compat: str = "v8") -> np.ndarray:
    """Which detections are true positives at each IoU threshold.

    Args:
      pred_classes: (D,) detection classes, detections in descending confidence (NMS order).
      true_classes: (L,) label classes.
      iou: (L, D) IoU of every label with every detection.
      iouv: (T,) IoU thresholds (a detection counts at ``t`` when IoU >= t).
      compat: "v8" -- per threshold, pairs sorted by IoU, each detection keeps its best label, then each label
        keeps its lowest-index (most confident) detection; "current" -- COCO-style greedy: detections in order
        claim the best-IoU still-unclaimed label.
    Returns:
      (D, T) bool.
    """
    check_compat(compat)
    iouv = np.asarray(iouv)
    iou = np.asarray(iou)
    same_class = np.asarray(true_classes)[:, None] == np.asarray(pred_classes)[None, :]
    iou = iou * same_class
    num_labels, num_dets = iou.shape
    correct = np.zeros((num_dets, iouv.shape[0]), dtype=bool)
    if num_labels == 0 or num_dets == 0:
        return correct
    if compat == "v8":
        for j, threshold in enumerate(iouv):
            label_idx, det_idx = np.nonzero(iou >= threshold)
            if label_idx.shape[0] == 0:
                continue
            if label_idx.shape[0] > 1:
                by_iou = np.argsort(iou[label_idx, det_idx])[::-1]
                label_idx, det_idx = label_idx[by_iou], det_idx[by_iou]
                _, first = np.unique(det_idx, return_index=True)  # best label per detection; now det order
                label_idx, det_idx = label_idx[first], det_idx[first]
                _, first = np.unique(label_idx, return_index=True)  # most confident detection per label
                label_idx, det_idx = label_idx[first], det_idx[first]
            correct[det_idx, j] = True
        return correct
    claimed = np.zeros((num_labels, iouv.shape[0]), dtype=bool)
    cols = np.arange(iouv.shape[0])
    # Only a detection with some IoU >= min threshold can match or claim anything.
    for d in np.nonzero(iou.max(0) >= iouv.min())[0]:
        masked = np.where(claimed, -1.0, iou[:, d][:, None])  # (L, T)
        best = masked.argmax(0)
        hit = masked[best, cols] >= iouv
        correct[d] = hit
        claimed[best[hit], cols[hit]] = True
    return correct


# ----------------------------------------------------------------------------------------------- AP


def compute_ap(recall, precision, compat: str = "v8"):
    """101-point interpolated AP of one precision/recall curve.

    Returns ``(ap, mpre, mrec)``: the AP and the enveloped precision over the padded recall.
    """
    check_compat(compat)
    recall, precision = np.asarray(recall, np.float64), np.asarray(precision, np.float64)
    if compat == "v8":  # precision falls linearly to 0 at recall 1
        mrec = np.concatenate(([0.0], recall, [1.0]))
        mpre = np.concatenate(([1.0], precision, [0.0]))
    else:  # precision drops to 0 right after the last achieved recall
        last = recall[-1:] if recall.size else np.zeros(1)
        mrec = np.concatenate(([0.0], recall, last, [1.0]))
        mpre = np.concatenate(([1.0], precision, [0.0, 0.0]))
    mpre = np.flip(np.maximum.accumulate(np.flip(mpre)))  # non-increasing envelope
    grid = np.linspace(0, 1, 101)
    values = np.interp(grid, mrec, mpre)
    ap = float(np.sum(np.diff(grid) * (values[1:] + values[:-1]) / 2.0))
    return ap, mpre, mrec


def smooth(y, f: float = 0.05) -> np.ndarray:
    """Box filter of fraction ``f`` (odd number of taps), padding by repeating the end values."""
    y = np.asarray(y, np.float64)
    taps = round(len(y) * f * 2) // 2 + 1
    pad = np.ones(taps // 2)
    padded = np.concatenate((pad * y[0], y, pad * y[-1]))
    return np.convolve(padded, np.ones(taps) / taps, mode="valid")


def ap_per_class(tp, conf, pred_cls, target_cls, *, compat: str = "v8", eps: float = 1e-16) -> dict:
    """AP, P, R, F1 per class over a whole validation set.

    Args:
      tp: (N, T) bool true-positive table; conf: (N,); pred_cls: (N,); target_cls: (M,) one entry per label.
    Returns:
      dict with, for the C classes that have labels (``ap_class``, ascending): ``p``, ``r``, ``f1`` (C,) at the
      confidence maximising the smoothed mean F1; ``ap`` (C, T); ``tp``, ``fp`` (C,) counts at that point;
      ``p_curve``, ``r_curve``, ``f1_curve`` (C, 1000) over ``x = linspace(0, 1, 1000)`` confidences;
      ``prec_values`` (C', 1000) enveloped precision at IoU 0.5 over recall ``x`` for the C' classes with
      detections; ``conf_index`` the operating-point index into ``x``.
    """
    check_compat(compat)
    tp = np.asarray(tp, bool)
    conf = np.asarray(conf)
    pred_cls = np.asarray(pred_cls)
    order = np.argsort(-conf)
    tp, conf, pred_cls = tp[order], conf[order], pred_cls[order]

    ap_class, num_labels = np.unique(np.asarray(target_cls), return_counts=True)
    num_classes, num_thresholds = ap_class.shape[0], tp.shape[1]
    x = np.linspace(0, 1, 1000)
    ap = np.zeros((num_classes, num_thresholds))
    p_curve = np.zeros((num_classes, 1000))
    r_curve = np.zeros((num_classes, 1000))
    prec_values = []
    for ci, c in enumerate(ap_class):
        mine = pred_cls == c
        n_l, n_p = num_labels[ci], int(mine.sum())
        if n_p == 0 or n_l == 0:
            continue
        tpc = tp[mine].cumsum(0)
        fpc = (1 - tp[mine]).cumsum(0)
        recall = tpc / (n_l + eps)
        precision = tpc / (tpc + fpc)
        # np.interp needs increasing x: confidences decrease, so interpolate over their negatives.
        r_curve[ci] = np.interp(-x, -conf[mine], recall[:, 0], left=0)
        p_curve[ci] = np.interp(-x, -conf[mine], precision[:, 0], left=1)
        for j in range(num_thresholds):
            ap[ci, j], mpre, mrec = compute_ap(recall[:, j], precision[:, j], compat)
            if j == 0:
                prec_values.append(np.interp(x, mrec, mpre))

    f1_curve = 2 * p_curve * r_curve / (p_curve + r_curve + eps)
    i = int(smooth(f1_curve.mean(0), 0.1).argmax()) if num_classes else 0
    p, r, f1 = p_curve[:, i], r_curve[:, i], f1_curve[:, i]
    tp_count = (r * num_labels).round()
    fp_count = (tp_count / (p + eps) - tp_count).round()
    return {
        "tp": tp_count, "fp": fp_count, "p": p, "r": r, "f1": f1, "ap": ap,
        "ap_class": ap_class.astype(int), "p_curve": p_curve, "r_curve": r_curve, "f1_curve": f1_curve,
        "x": x, "prec_values": np.array(prec_values).reshape(-1, 1000), "conf_index": i,
    }


@dataclasses.dataclass
class DetMetrics:
    """Box metrics of one validation run, named and reduced as Ultralytics reports them.

    Per-class arrays cover the ``ap_class_index`` classes (those with labels); ``nc`` is the dataset's class count.
    """

    nc: int
    p: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))
    r: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))
    f1: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))
    all_ap: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, 10)))
    ap_class_index: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, int))
    curves: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)
    compat: str = "v8"

    @classmethod
    def from_stats(cls, tp, conf, pred_cls, target_cls, *, nc: int, compat: str = "v8") -> "DetMetrics":
        out = ap_per_class(tp, conf, pred_cls, target_cls, compat=compat)
        curves = {k: out[k] for k in ("p_curve", "r_curve", "f1_curve", "prec_values", "x")}
        return cls(nc, out["p"], out["r"], out["f1"], out["ap"], out["ap_class"], curves, compat)

    def _mean(self, a) -> float:
        return float(np.mean(a)) if len(a) else 0.0

    @property
    def mp(self) -> float:
        return self._mean(self.p)

    @property
    def mr(self) -> float:
        return self._mean(self.r)

    @property
    def ap50(self) -> np.ndarray:
        return self.all_ap[:, 0] if len(self.all_ap) else np.zeros(0)

    @property
    def ap(self) -> np.ndarray:
        """(C,) AP50-95 per evaluated class."""
        return self.all_ap.mean(1) if len(self.all_ap) else np.zeros(0)

    @property
    def map50(self) -> float:
        return self._mean(self.ap50)

    @property
    def map75(self) -> float:
        return self._mean(self.all_ap[:, 5]) if len(self.all_ap) else 0.0

    @property
    def map(self) -> float:
        return self._mean(self.ap)

    @property
    def maps(self) -> np.ndarray:
        """(nc,) AP50-95 per dataset class; classes without labels get the overall mAP50-95."""
        maps = np.zeros(self.nc) + self.map
        maps[self.ap_class_index] = self.ap
        return maps

    def mean_results(self) -> list[float]:
        return [self.mp, self.mr, self.map50, self.map]

    def class_result(self, i: int) -> tuple[float, float, float, float]:
        return float(self.p[i]), float(self.r[i]), float(self.ap50[i]), float(self.ap[i])

    def fitness(self, compat: str | None = None) -> float:
        compat = compat or self.compat
        check_compat(compat)
        if compat == "current":
            return float(np.nan_to_num(self.map))
        return float((np.nan_to_num(self.mean_results()) * [0.0, 0.0, 0.1, 0.9]).sum())

    @property
    def results_dict(self) -> dict[str, float]:
        keys = ("metrics/precision(B)", "metrics/recall(B)", "metrics/mAP50(B)", "metrics/mAP50-95(B)")
        out = dict(zip(keys, (float(v) for v in self.mean_results())))
        out["fitness"] = self.fitness()
        return out


# ----------------------------------------------------------------------------------------------- confusion matrix


class ConfusionMatrix:
    """Detection confusion matrix: rows = predicted class, columns = true class; index ``nc``
    is background (row ``nc``: missed labels; column ``nc``: detections matching no label).

    Per image, detections with ``conf > self.conf`` are matched to labels class-agnostically by IoU
    ``> iou_thres``, one-to-one, the highest IoUs first. A label matched to exactly one detection counts at
    (detection class, label class); an unmatched label counts as (background, label class); an unmatched
    detection as (detection class, background). v8-era replaces the validation conf 0.001 (or None) by 0.25.
    """

    def __init__(self, nc: int, conf: float | None = 0.25, iou_thres: float = 0.45, *, compat: str = "v8"):
        check_compat(compat)
        self.nc = int(nc)
        if compat == "v8" and (conf is None or conf == 0.001):
            conf = 0.25
        self.conf = 0.25 if conf is None else float(conf)
        self.iou_thres = float(iou_thres)
        self.matrix = np.zeros((self.nc + 1, self.nc + 1), dtype=np.int64)

    def process_batch(self, det_boxes, det_conf, det_cls, gt_boxes, gt_cls) -> None:
        """One image: detections (D, 4) xyxy, (D,), (D,) and labels (L, 4) xyxy, (L,) in the same pixel space."""
        det_boxes = np.asarray(det_boxes, np.float32).reshape(-1, 4)
        det_cls = np.asarray(det_cls).reshape(-1).astype(int)
        gt_cls = np.asarray(gt_cls).reshape(-1).astype(int)
        confident = np.asarray(det_conf).reshape(-1) > self.conf
        det_boxes, det_cls = det_boxes[confident], det_cls[confident]
        bg = self.nc
        if gt_cls.shape[0] == 0:
            np.add.at(self.matrix, (det_cls, bg), 1)
            return
        if det_cls.shape[0] == 0:
            np.add.at(self.matrix, (bg, gt_cls), 1)
            return
        iou = box_iou(gt_boxes, det_boxes)
        label_idx, det_idx = np.nonzero(iou > self.iou_thres)
        if label_idx.shape[0] > 1:
            by_iou = np.argsort(iou[label_idx, det_idx])[::-1]
            label_idx, det_idx = label_idx[by_iou], det_idx[by_iou]
            _, first = np.unique(det_idx, return_index=True)  # each detection keeps its best label
            label_idx, det_idx = label_idx[first], det_idx[first]
            by_iou = np.argsort(iou[label_idx, det_idx])[::-1]
            label_idx, det_idx = label_idx[by_iou], det_idx[by_iou]
            _, first = np.unique(label_idx, return_index=True)  # each label keeps its best detection
            label_idx, det_idx = label_idx[first], det_idx[first]
        for li, gc in enumerate(gt_cls):
            hits = det_idx[label_idx == li]
            if hits.shape[0] == 1:
                self.matrix[det_cls[hits[0]], gc] += 1
            else:
                self.matrix[bg, gc] += 1
        unmatched = np.ones(det_cls.shape[0], bool)
        unmatched[det_idx] = False
        np.add.at(self.matrix, (det_cls[unmatched], bg), 1)

    def tp_fp(self) -> tuple[np.ndarray, np.ndarray]:
        """(nc,) true positives (diagonal) and false positives (row sum minus diagonal), background excluded."""
        tp = self.matrix.diagonal()
        fp = self.matrix.sum(1) - tp
        return tp[:-1], fp[:-1]


# ----------------------------------------------------------------------------------------------- accumulation


class DetectionStatsAccumulator:
    """Collects per-image matching statistics over a validation run, then reduces them to ``DetMetrics``.

    Usage: ``update(...)`` once per image with that image's kept detections and labels, then ``compute()`` and
    ``table_lines(metrics)``. With ``ratio_pad`` and ``orig_hw`` given, the coordinate space follows
    Ultralytics: v8 maps both detections and labels to the original image with ``scale_boxes`` (clipped);
    "current" matches in the letterboxed input space as given. Without them the boxes are used as given.
    """

    def __init__(self, nc: int, names: Sequence[str] | Mapping[int, str] | None = None, *, compat: str = "v8",
                 iouv=IOUV, single_cls: bool = False, confusion_matrix: ConfusionMatrix | None = None):
        check_compat(compat)
        self.nc, self.compat, self.iouv, self.single_cls = int(nc), compat, np.asarray(iouv), single_cls
        if names is None:
            names = {i: f"class{i}" for i in range(self.nc)}
        self.names = dict(enumerate(names)) if not isinstance(names, Mapping) else dict(names)
        self.confusion_matrix = confusion_matrix
        self.seen = 0
        self._stats: dict[str, list[np.ndarray]] = {k: [] for k in ("tp", "conf", "pred_cls", "target_cls", "target_img")}

    def update(self, pred_boxes, pred_scores, pred_classes, gt_boxes, gt_classes, *, ratio_pad=None, orig_hw=None):
        """One image. pred_boxes (D, 4) xyxy in NMS order (descending score), pred_scores (D,), pred_classes (D,);
        gt_boxes (L, 4) xyxy pixels, gt_classes (L,)."""
        from yolojax.ops.nms import scale_boxes  # local: keeps this module importable without JAX

        pred_boxes = np.asarray(pred_boxes, np.float32).reshape(-1, 4)
        pred_scores = np.asarray(pred_scores, np.float32).reshape(-1)
        pred_classes = np.asarray(pred_classes).reshape(-1).astype(np.float32)
        gt_boxes = np.asarray(gt_boxes, np.float32).reshape(-1, 4)
        gt_classes = np.asarray(gt_classes).reshape(-1).astype(np.float32)
        if not (pred_boxes.shape[0] == pred_scores.shape[0] == pred_classes.shape[0]):
            raise ValueError(f"update: detections disagree in length: boxes {pred_boxes.shape}, scores "
                             f"{pred_scores.shape}, classes {pred_classes.shape}")
        if gt_boxes.shape[0] != gt_classes.shape[0]:
            raise ValueError(f"update: labels disagree in length: boxes {gt_boxes.shape}, classes {gt_classes.shape}")
        self.seen += 1
        num_dets, num_labels = pred_boxes.shape[0], gt_classes.shape[0]
        if num_dets == 0 and num_labels == 0 and self.compat == "v8":
            return  # v8 skips such images (only ``seen`` counts them)
        if self.single_cls:
            pred_classes = np.zeros_like(pred_classes)
        if ratio_pad is not None and orig_hw is not None and self.compat == "v8":
            pred_boxes = scale_boxes(pred_boxes, ratio_pad, orig_hw)
            gt_boxes = scale_boxes(gt_boxes, ratio_pad, orig_hw)
        tp = np.zeros((num_dets, self.iouv.shape[0]), bool)
        if num_dets and num_labels:
            iou = box_iou(gt_boxes, pred_boxes)
            tp = match_predictions(pred_classes, gt_classes, iou, iouv=self.iouv, compat=self.compat)
        if self.confusion_matrix is not None:
            self.confusion_matrix.process_batch(pred_boxes, pred_scores, pred_classes, gt_boxes, gt_classes)
        for key, value in (("tp", tp), ("conf", pred_scores), ("pred_cls", pred_classes),
                           ("target_cls", gt_classes), ("target_img", np.unique(gt_classes))):
            self._stats[key].append(value)

    def stats(self) -> dict[str, np.ndarray]:
        """The concatenated per-detection / per-label arrays (``tp`` (N, T), ``conf``, ``pred_cls``, ...)."""
        empty = {"tp": np.zeros((0, self.iouv.shape[0]), bool)}
        return {k: np.concatenate(v, 0) if v else empty.get(k, np.zeros(0, np.float32)) for k, v in self._stats.items()}

    def compute(self) -> DetMetrics:
        s = self.stats()
        self.nt_per_class = np.bincount(s["target_cls"].astype(int), minlength=self.nc)
        self.nt_per_image = np.bincount(s["target_img"].astype(int), minlength=self.nc)
        evaluable = s["tp"].any() if self.compat == "v8" else (len(s["tp"]) and len(s["target_cls"]))
        if not evaluable:  # v8: metrics stay 0 when nothing matched at all
            return DetMetrics(self.nc, compat=self.compat)
        return DetMetrics.from_stats(s["tp"], s["conf"], s["pred_cls"], s["target_cls"], nc=self.nc, compat=self.compat)

    def table_lines(self, metrics: DetMetrics, *, per_class: bool = True) -> list[str]:
        """Ultralytics' validation table: header, the ``all`` row, then one row per class
        with labels when ``per_class`` and nc > 1. Call after ``compute``."""
        if not hasattr(self, "nt_per_class"):
            raise RuntimeError("table_lines: call compute() first")
        header = ("%22s" + "%11s" * 6) % ("Class", "Images", "Instances", "Box(P", "R", "mAP50", "mAP50-95)")
        row = "%22s" + "%11i" * 2 + "%11.3g" * 4
        lines = [header, row % ("all", self.seen, self.nt_per_class.sum(), *metrics.mean_results())]
        if per_class and self.nc > 1:
            for i, c in enumerate(metrics.ap_class_index):
                lines.append(row % (self.names.get(int(c), str(c)), self.nt_per_image[c], self.nt_per_class[c],
                                    *metrics.class_result(i)))
        return lines


def top_k_accuracy(scores, labels, *, k: int = 5) -> dict[str, float]:
    """Classification accuracy as Ultralytics' ClassifyMetrics: ``top1``, ``top5`` and ``fitness`` (their mean).

    ``scores`` (N, nc) probabilities or logits, ``labels`` (N,) int class ids. ``top5`` counts a sample correct
    when its label is among its ``min(k, nc)`` highest scores; ties go to the lower class id. Fractions in [0, 1]."""
    scores, labels = np.asarray(scores), np.asarray(labels)
    if scores.ndim != 2 or labels.shape != scores.shape[:1]:
        raise ValueError(f"top_k_accuracy: scores must be (N, nc) and labels (N,); got {scores.shape} and "
                         f"{labels.shape}.")
    if labels.size and (labels.min() < 0 or labels.max() >= scores.shape[1]):
        raise ValueError(f"top_k_accuracy: labels must lie in [0, {scores.shape[1]}); got min {labels.min()}, "
                         f"max {labels.max()}.")
    return ranked_accuracy(np.argsort(-scores, axis=1, kind="stable")[:, : min(k, scores.shape[1])], labels)


def ranked_accuracy(top, labels) -> dict[str, float]:
    """``top1``, ``top5``, ``fitness`` from each sample's class ids ranked best first, ``top`` (N, k) int (k = 5,
    or nc when fewer), and its ``labels`` (N,): what Ultralytics' ClassifyMetrics computes from its predictions."""
    top, labels = np.asarray(top), np.asarray(labels)
    correct = top == labels[:, None]
    top1 = float(correct[:, 0].mean()) if labels.size else 0.0
    top5 = float(correct.any(axis=1).mean()) if labels.size else 0.0
    return {"top1": top1, "top5": top5, "fitness": (top1 + top5) / 2}


def classify_confusion(pred, labels, nc: int) -> np.ndarray:
    """Ultralytics' classification confusion matrix: (nc, nc) int64 counts, row = top-1 predicted class, column =
    true class (no background row or column). ``pred``, ``labels``: (N,) int class ids."""
    matrix = np.zeros((int(nc), int(nc)), np.int64)
    np.add.at(matrix, (np.asarray(pred, np.int64).reshape(-1), np.asarray(labels, np.int64).reshape(-1)), 1)
    return matrix
