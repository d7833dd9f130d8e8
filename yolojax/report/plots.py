"""The pictures of a training run: sample batches, label statistics, metric curves, results.

Every function takes plain NumPy inputs and writes its files (atomically: a hidden temporary file renamed
into place, so a reader never sees half a picture). Figures use matplotlib's object API (``Figure`` +
the Agg canvas, no pyplot global state), so they can be drawn from a background thread; text uses the
DejaVu fonts bundled with matplotlib, and OpenCV's built-in Hershey font on the image grids. Nothing
touches the network.

Layouts follow Ultralytics' pictures (results grid of 2x5 panels for detection, 2x2 for classification; 2x2 label
statistics; P/R/F1-confidence and PR curves with an "all classes" line; confusion matrix with a background
row/column), drawn our own way.
"""
from __future__ import annotations

import math
import os
import pathlib
from typing import Callable, Mapping, Sequence

import cv2
import numpy as np

from yolojax.augment.batch import host_images
from yolojax.metrics import ap_per_class, smooth

DPI = 150
PRED_CONF = 0.25  # predictions drawn on val_batch*_pred.jpg (those a user would keep)


# ----------------------------------------------------------------------------------------------- helpers


def _atomic(path, write: Callable[[str], None]) -> pathlib.Path:
    """Call ``write(tmp)`` for a hidden temporary file next to ``path`` (same suffix), then rename it."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        write(str(tmp))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _new_figure(width: float, height: float, rows: int = 1, cols: int = 1):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), tight_layout=True)
    axes = fig.subplots(rows, cols, squeeze=False)
    return fig, axes


def _save_figure(fig, path, dpi: int = DPI) -> pathlib.Path:
    return _atomic(path, lambda tmp: fig.savefig(tmp, dpi=dpi))


def save_image(path, rgb: np.ndarray, quality: int = 90) -> pathlib.Path:
    """Write an RGB uint8 (H, W, 3) image (JPEG quality ``quality`` for .jpg)."""
    bgr = np.ascontiguousarray(np.asarray(rgb, np.uint8)[..., ::-1])

    def write(tmp):
        if not cv2.imwrite(tmp, bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)]):
            raise OSError(f"OpenCV could not write {path}")

    return _atomic(path, write)


def class_color(c: int) -> tuple[int, int, int]:
    """A distinct RGB colour per class (matplotlib's tab20 cycle: 20 colours that read on any background)."""
    from matplotlib import colormaps

    r, g, b, _ = colormaps["tab20"](int(c) % 20)
    return int(r * 255), int(g * 255), int(b * 255)


def smooth_gaussian(y: Sequence[float], sigma: float = 3.0) -> np.ndarray:
    """Gaussian-smoothed copy of ``y`` (edges padded by reflection); shorter series are smoothed less."""
    y = np.asarray(y, np.float64)
    sigma = min(sigma, len(y) / 6)
    if len(y) < 3 or sigma <= 0.3:
        return y.copy()
    half = int(math.ceil(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-half, half + 1) / sigma) ** 2)
    padded = np.pad(y, half, mode="reflect") if half < len(y) else np.pad(y, half, mode="edge")
    return np.convolve(padded, k / k.sum(), mode="valid")


# ----------------------------------------------------------------------------------------------- image grids


def grid_layout(n: int, h: int, w: int, *, min_cell: int = 160, max_size: int = 1920) -> tuple[int, int, int, int]:
    """(rows, cols, cell_h, cell_w) of a mosaic of ``n`` (h, w) images: ceil(sqrt(n)) columns; small images are
    upscaled so that a cell's long side is at least ``min_cell`` (labels stay readable at 64 px), and the whole
    mosaic is shrunk so that neither side exceeds ``max_size``."""
    cols = max(1, math.ceil(math.sqrt(n)))
    rows = max(1, math.ceil(n / cols))
    scale = max(1.0, min_cell / max(h, w))
    scale = min(scale, max_size / max(cols * w, rows * h))
    return rows, cols, max(1, round(h * scale)), max(1, round(w * scale))


def image_grid(images, boxes, classes, mask, names: Mapping[int, str] | None = None, *, scores=None,
               conf_thres: float = PRED_CONF, max_images: int = 16, min_cell: int = 160,
               max_size: int = 1920) -> np.ndarray:
    """Tile a batch and draw its boxes with class names (and scores) -> RGB uint8 mosaic.

    Args:
      images: (B, H, W, 3) uint8 RGB. boxes: (B, M, 4) pixel xyxy in those images. classes: (B, M) int.
      mask: (B, M) bool, which boxes are real. scores: (B, M) or None (labels); with scores only boxes with
        ``score > conf_thres`` are drawn and the label reads "name 0.87".
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"image_grid: images must be (B, H, W, 3), got {images.shape}")
    n = min(images.shape[0], max_images)
    h, w = images.shape[1:3]
    rows, cols, ch, cw = grid_layout(n, h, w, min_cell=min_cell, max_size=max_size)
    sy, sx = ch / h, cw / w
    canvas = np.full((rows * ch, cols * cw, 3), 255, np.uint8)
    names = dict(names or {})
    thick = max(1, round(min(ch, cw) / 160))
    font_scale = max(0.35, min(ch, cw) / 450)
    for i in range(n):
        r, c = divmod(i, cols)
        y0, x0 = r * ch, c * cw
        tile = cv2.resize(np.ascontiguousarray(images[i]), (cw, ch), interpolation=cv2.INTER_LINEAR)
        keep = np.asarray(mask[i], bool).copy()
        if scores is not None:
            keep &= np.asarray(scores[i]) > conf_thres
        for j in np.nonzero(keep)[0]:
            x1, y1, x2, y2 = (np.asarray(boxes[i][j], np.float64) * [sx, sy, sx, sy]).round().astype(int)
            k = int(classes[i][j])
            colour = class_color(k)
            cv2.rectangle(tile, (x1, y1), (x2, y2), colour, thick, cv2.LINE_AA)
            text = names.get(k, str(k)) + (f" {float(scores[i][j]):.2f}" if scores is not None else "")
            (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)
            ty = y1 - 2 if y1 - th - base - 2 >= 0 else y1 + th + 2  # above the box, else inside it
            cv2.rectangle(tile, (x1, ty - th - 1), (x1 + tw + 1, ty + base - 1), colour, -1)
            lum = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]
            cv2.putText(tile, text, (x1 + 1, ty - 1), cv2.FONT_HERSHEY_SIMPLEX, font_scale,
                        (0, 0, 0) if lum > 140 else (255, 255, 255), 1, cv2.LINE_AA)
        cv2.rectangle(tile, (0, 0), (cw - 1, ch - 1), (255, 255, 255), 2)  # tile border
        canvas[y0:y0 + ch, x0:x0 + cw] = tile
    return canvas


def plot_batch(path, images, boxes, classes, mask, names=None, *, scores=None, **kw) -> np.ndarray:
    """``image_grid`` saved to ``path``; returns the mosaic (for TensorBoard)."""
    grid = image_grid(images, boxes, classes, mask, names, scores=scores, **kw)
    save_image(path, grid)
    return grid


def train_batch_grid(batch: Mapping[str, np.ndarray], names: Mapping[int, str]) -> np.ndarray:
    """train_batchN.jpg's mosaic: the images of a host detection train batch (``yolojax.augment.batch.host_images``:
    the train step's pixels drawn with OpenCV, no JAX) with their labels."""
    return image_grid(host_images(batch), batch["boxes"], batch["classes"], batch["mask"], names)


def plot_val_batch(save_dir, k: int, batch: Mapping[str, np.ndarray], pred: Mapping[str, np.ndarray],
                   names: Mapping[int, str]) -> np.ndarray:
    """val_batch{k}_labels.jpg (``batch``: images, boxes, classes, mask) and val_batch{k}_pred.jpg (``pred``: boxes,
    scores, classes, valid, per image of the batch); returns the predictions' mosaic."""
    save_dir = pathlib.Path(save_dir)
    plot_batch(save_dir / f"val_batch{k}_labels.jpg", batch["images"], batch["boxes"], batch["classes"],
               batch["mask"], names)
    return plot_batch(save_dir / f"val_batch{k}_pred.jpg", batch["images"], pred["boxes"], pred["classes"],
                      pred["valid"], names, scores=pred["scores"])


# ----------------------------------------------------------------------------------------------- labels


def plot_labels(path, labels: Sequence[np.ndarray], names: Mapping[int, str], *, max_boxes: int = 1000,
                seed: int = 0) -> pathlib.Path:
    """labels.jpg: instances per class, a sample of box outlines, centre (x, y) and size (w, h) densities.

    Args:
      labels: per image (n, 5) rows ``class, x, y, w, h`` normalised to the image (the dataset's labels).
    """
    rows = [np.asarray(lb, np.float64).reshape(-1, 5) for lb in labels]
    lb = np.concatenate(rows, 0) if rows else np.zeros((0, 5))
    nc = max(len(names), int(lb[:, 0].max()) + 1 if len(lb) else 1)
    cls = lb[:, 0].astype(int)
    from matplotlib.colors import PowerNorm

    fig, ax = _new_figure(8, 8, 2, 2)
    counts = np.bincount(cls, minlength=nc)
    bars = ax[0, 0].bar(range(nc), counts, color=[np.array(class_color(c)) / 255 for c in range(nc)])
    ax[0, 0].set_ylabel("instances")
    ax[0, 0].set_title(f"{len(lb)} boxes in {len(rows)} images", fontsize=9)
    if nc <= 30:
        ax[0, 0].set_xticks(range(nc), [names.get(c, str(c)) for c in range(nc)], rotation=90, fontsize=8)
        if nc <= 12:
            ax[0, 0].bar_label(bars, fontsize=7)
    else:
        ax[0, 0].set_xlabel("classes")
    # Box outlines centred on one canvas: the spread of shapes and sizes at a glance.
    pick = np.random.default_rng(seed).permutation(len(lb))[:max_boxes]
    outline = np.full((1000, 1000, 3), 255, np.uint8)
    for k in pick:
        bw, bh = lb[k, 3] * 1000, lb[k, 4] * 1000
        p1 = (int(round(500 - bw / 2)), int(round(500 - bh / 2)))
        p2 = (int(round(500 + bw / 2)), int(round(500 + bh / 2)))
        cv2.rectangle(outline, p1, p2, class_color(cls[k]), 2)
    ax[0, 1].imshow(outline)
    ax[0, 1].axis("off")
    for a, (i, j), (xl, yl) in ((ax[1, 0], (1, 2), ("x", "y")), (ax[1, 1], (3, 4), ("width", "height"))):
        if len(lb):
            # sqrt colour scale from 0: single boxes stay visible next to dense cells
            a.hist2d(lb[:, i], lb[:, j], bins=50, range=[[0, 1], [0, 1]], cmap="Blues", cmin=1,
                     norm=PowerNorm(0.5, vmin=0))
        a.set_xlim(0, 1), a.set_ylim(0, 1)
        a.set_xlabel(xl), a.set_ylabel(yl)
    ax[1, 0].invert_yaxis()  # image coordinates: y grows downwards
    return _save_figure(fig, path)


# ----------------------------------------------------------------------------------------------- results.csv


def results_panels(columns: Sequence[str]) -> list[str]:
    """The results.png panels for results.csv ``columns``, in reading order over two rows: the loss columns and the
    metric columns are each cut in half, the first halves fill the top row and the second halves the bottom one
    (detection: train losses, P, R / val losses, mAP50, mAP50-95; classification: train/loss, top-1 / val/loss,
    top-5)."""
    losses = [c for c in columns if "loss" in c]
    metrics = [c for c in columns if "metric" in c]
    lm, mm = len(losses) // 2, (len(metrics) + 1) // 2
    return losses[:lm] + metrics[:mm] + losses[lm:] + metrics[mm:]


def plot_results(path, rows: Sequence[Mapping[str, float]]) -> pathlib.Path:
    """results.png: each loss/metric column of results.csv against epoch (values and a smoothed trend), laid out by
    ``results_panels`` on two rows (2x5 for detection, 2x2 for classification), ``len(panels) + 2`` inches wide.

    Args:
      rows: results.csv rows (``yolojax.report.results.read_results_csv``), each with ``epoch``; the first row's
        keys (in order) are the columns.
    """
    from matplotlib.ticker import MaxNLocator

    if not rows:
        raise ValueError(f"plot_results: no results rows to draw for {path}")
    panels = results_panels(list(rows[0]))
    if not panels:
        raise ValueError(f"plot_results: the rows for {path} hold no loss or metric column: {list(rows[0])}")
    cols = (len(panels) + 1) // 2
    fig, ax = _new_figure(len(panels) + 2, 6, 2, cols)
    ax = ax.ravel()
    ax[-1].set_visible(len(panels) % 2 == 0)
    epochs = np.array([r["epoch"] for r in rows], float)
    for a, key in zip(ax, panels):
        y = np.array([float(r.get(key, np.nan)) for r in rows])
        a.plot(epochs, y, marker=".", linewidth=2, markersize=8, label="results")
        if len(y) >= 3 and np.isfinite(y).all():
            a.plot(epochs, smooth_gaussian(y), ":", linewidth=2, label="smooth")
        a.set_title(key, fontsize=12)
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
        a.ticklabel_format(axis="y", useOffset=False)
    ax[0].legend(fontsize=8)
    return _save_figure(fig, path)


# ----------------------------------------------------------------------------------------------- metric curves


def plot_pr_curve(path, recall: np.ndarray, precision: np.ndarray, ap50: Sequence[float],
                  labels: Sequence[str], *, map50: float | None = None) -> pathlib.Path:
    """PR_curve.png.

    Args:
      recall: (1000,) recall grid. precision: (K, 1000) enveloped precision per class over it (IoU 0.5).
      ap50: (K,) AP50 of those classes; labels: (K,) their names. map50: the legend's mean AP50 over all
        evaluated classes (default: mean of ``ap50``).
    """
    precision = np.asarray(precision, float).reshape(-1, len(recall))
    fig, ax = _new_figure(9, 6)
    a = ax[0, 0]
    per_class = 0 < len(precision) < 21
    for y, ap, name in zip(precision, ap50, labels):
        a.plot(recall, y, linewidth=1, label=f"{name} {ap:.3f}" if per_class else None,
               color=None if per_class else "grey")
    mean = precision.mean(0) if len(precision) else np.zeros_like(recall)
    m = float(np.mean(ap50)) if map50 is None and len(ap50) else float(map50 or 0.0)
    a.plot(recall, mean, linewidth=3, color="blue", label=f"all classes {m:.3f} mAP@0.5")
    _finish_curve(a, "Recall", "Precision", "Precision-Recall Curve")
    return _save_figure(fig, path)


def plot_metric_curve(path, conf: np.ndarray, values: np.ndarray, labels: Sequence[str], *,
                      ylabel: str) -> pathlib.Path:
    """F1_curve.png / P_curve.png / R_curve.png: ``values`` (K, 1000) per class against confidence ``conf``
    (1000,); the thick line is the class mean, labelled with its (smoothed) best value and confidence."""
    values = np.asarray(values, float).reshape(-1, len(conf))
    fig, ax = _new_figure(9, 6)
    a = ax[0, 0]
    per_class = 0 < len(values) < 21
    for y, name in zip(values, labels):
        a.plot(conf, y, linewidth=1, label=name if per_class else None, color=None if per_class else "grey")
    mean = smooth(values.mean(0), 0.05) if len(values) else np.zeros_like(conf)
    i = int(mean.argmax())
    a.plot(conf, mean, linewidth=3, color="blue", label=f"all classes {mean[i]:.2f} at {conf[i]:.3f}")
    _finish_curve(a, "Confidence", ylabel, f"{ylabel}-Confidence Curve")
    return _save_figure(fig, path)


def _finish_curve(a, xlabel: str, ylabel: str, title: str) -> None:
    a.set_xlabel(xlabel), a.set_ylabel(ylabel)
    a.set_xlim(0, 1), a.set_ylim(0, 1.01)
    a.grid(alpha=0.3)
    a.legend(bbox_to_anchor=(1.04, 1), loc="upper left", fontsize=8)
    a.set_title(title)


def detection_curves(metrics, stats: Mapping[str, np.ndarray] | None, names: Mapping[int, str]) -> dict:
    """The curves to draw from a validation run: ``DetMetrics.curves`` when the metrics hold them, else
    recomputed from the accumulator's ``stats`` (v8 leaves DetMetrics empty when nothing matched; the pictures
    then show the all-zero curves instead of being missing).

    Returns ``{"x" (1000,), "p", "r", "f1" (C, 1000), "class_ids" (C,), "prec" (K, 1000), "prec_ids" (K,),
    "ap50" (C,)}``: C classes with labels, the K <= C of them that have detections (PR rows).
    """
    curves = dict(getattr(metrics, "curves", {}) or {})
    class_ids = np.asarray(getattr(metrics, "ap_class_index", np.zeros(0, int)), int)
    ap = np.asarray(getattr(metrics, "all_ap", np.zeros((0, 10))))
    if not curves and stats is not None and len(stats.get("target_cls", [])):
        out = ap_per_class(stats["tp"], stats["conf"], stats["pred_cls"], stats["target_cls"],
                           compat=getattr(metrics, "compat", "v8"))
        curves = {k: out[k] for k in ("p_curve", "r_curve", "f1_curve", "prec_values", "x")}
        class_ids, ap = out["ap_class"], out["ap"]
    x = np.asarray(curves.get("x", np.linspace(0, 1, 1000)))
    empty = np.zeros((0, len(x)))
    pred_cls = np.unique(np.asarray(stats["pred_cls"]).astype(int)) if stats is not None else class_ids
    prec_ids = class_ids[np.isin(class_ids, pred_cls)]  # ap_per_class keeps a PR row only for those
    prec = np.asarray(curves.get("prec_values", empty)).reshape(-1, len(x))
    if len(prec) != len(prec_ids):  # cannot align rows with classes: keep the curves, drop the names
        prec_ids = np.full(len(prec), -1)
    ap50 = ap[:, 0] if len(ap) else np.zeros(0)
    return {"x": x, "p": np.asarray(curves.get("p_curve", empty)), "r": np.asarray(curves.get("r_curve", empty)),
            "f1": np.asarray(curves.get("f1_curve", empty)), "class_ids": class_ids, "prec": prec,
            "prec_ids": prec_ids, "ap50": ap50, "names": dict(names)}


def plot_detection_curves(save_dir, curves: Mapping) -> list[pathlib.Path]:
    """PR_curve.png, F1_curve.png, P_curve.png, R_curve.png from ``detection_curves``' output."""
    save_dir = pathlib.Path(save_dir)
    names = curves["names"]
    label = lambda c: names.get(int(c), str(int(c)))  # noqa: E731
    ap_by_class = dict(zip(curves["class_ids"].tolist(), curves["ap50"].tolist()))
    out = [plot_pr_curve(save_dir / "PR_curve.png", curves["x"], curves["prec"],
                         [ap_by_class.get(int(c), 0.0) for c in curves["prec_ids"]],
                         [label(c) for c in curves["prec_ids"]],
                         map50=float(np.mean(curves["ap50"])) if len(curves["ap50"]) else 0.0)]
    labels = [label(c) for c in curves["class_ids"]]
    for key, name, ylabel in (("f1", "F1_curve.png", "F1"), ("p", "P_curve.png", "Precision"),
                              ("r", "R_curve.png", "Recall")):
        out.append(plot_metric_curve(save_dir / name, curves["x"], curves[key], labels, ylabel=ylabel))
    return out


# ----------------------------------------------------------------------------------------------- confusion matrix


def normalize_confusion(matrix: np.ndarray) -> np.ndarray:
    """Each true-class column divided by its total (so a column reads "where this class's labels went")."""
    m = np.asarray(matrix, np.float64)
    return m / (m.sum(0, keepdims=True) + 1e-9)


def plot_confusion_matrix(path, matrix: np.ndarray, names: Mapping[int, str], *, normalize: bool,
                          background: bool = True) -> pathlib.Path:
    """confusion_matrix.png / confusion_matrix_normalized.png.

    Args:
      matrix: rows = predicted class, columns = true class. With ``background`` (detection) (nc + 1, nc + 1) counts
        whose index nc is the background (``yolojax.metrics.ConfusionMatrix.matrix``); without (classification)
        (nc, nc) counts (``yolojax.metrics.classify_confusion``).
    """
    m = normalize_confusion(matrix) if normalize else np.asarray(matrix, np.float64)
    n = m.shape[0]
    ticks = [names.get(i, str(i)) for i in range(n - 1 if background else n)] + (["background"] if background else [])
    fig, ax = _new_figure(12, 9)
    a = ax[0, 0]
    shown = np.where(m < 0.005, np.nan, m)  # empty cells stay white
    im = a.imshow(shown, cmap="Blues", vmin=0.0, vmax=1.0 if normalize else max(1.0, np.nanmax(m)))
    fig.colorbar(im, ax=a, fraction=0.046, pad=0.04)
    if n <= 31:  # annotate cells and name every tick while they are legible
        a.set_xticks(range(n), ticks, rotation=90, fontsize=8)
        a.set_yticks(range(n), ticks, fontsize=8)
        hi = (1.0 if normalize else max(1.0, np.nanmax(m))) * 0.6
        for i, j in zip(*np.nonzero(m >= 0.005)):
            a.text(j, i, f"{m[i, j]:.2f}" if normalize else f"{int(m[i, j])}", ha="center", va="center",
                   fontsize=8, color="white" if m[i, j] > hi else "black")
    a.set_xlabel("True"), a.set_ylabel("Predicted")
    a.set_title("Confusion Matrix" + (" Normalized" if normalize else ""))
    return _save_figure(fig, path)
