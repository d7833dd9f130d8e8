"""Inference on images: ``predict(model, variables, source) -> [Prediction, ...]``.

Each image is letterboxed to ``imgsz x imgsz`` (one compiled function per batch shape, instead of one per
image shape), run through the model and NMS on the device, and its boxes are mapped back to the original
pixels on the host. ``save=True`` also writes annotated copies (OpenCV) into ``runs/detect/predict``.

    source: an image path, a directory (its images, sorted), a glob pattern, a list of those or of arrays,
            or one array (H, W, 3) uint8 BGR, as OpenCV reads images (Ultralytics' convention).
    Prediction.boxes (n, 4) xyxy original pixels, .scores (n,), .classes (n,) int, .names, .path, .orig_shape
"""
from __future__ import annotations

import dataclasses
import functools
import glob
import os
import pathlib
import time
from typing import Any, Sequence

import cv2
import numpy as np

IMAGE_SUFFIXES = (".bmp", ".dng", ".jpeg", ".jpg", ".mpo", ".png", ".tif", ".tiff", ".webp", ".pfm")


@dataclasses.dataclass
class Prediction:
    """Detections of one image: ``boxes`` (n, 4) xyxy in original-image pixels, ``scores`` (n,), ``classes``
    (n,) int, sorted by descending score."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    names: dict[int, str]
    path: str | None
    orig_shape: tuple[int, int]
    orig_img: np.ndarray | None = dataclasses.field(default=None, repr=False)
    speed: dict[str, float] = dataclasses.field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.scores)

    def plot(self, line_width: int | None = None) -> np.ndarray:
        """The original image (BGR) with boxes and ``name score`` labels drawn."""
        if self.orig_img is None:
            raise ValueError("this Prediction holds no image to draw on")
        return draw_detections(self.orig_img, self.boxes, self.scores, self.classes, self.names, line_width)

    def save(self, path: str | os.PathLike) -> pathlib.Path:
        path = pathlib.Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(path), self.plot()):
            raise OSError(f"OpenCV could not write {path} (unknown image suffix?)")
        return path

    def summary(self) -> list[dict[str, Any]]:
        return [{"name": self.names.get(int(c), str(int(c))), "class": int(c), "confidence": float(s),
                 "box": {"x1": float(b[0]), "y1": float(b[1]), "x2": float(b[2]), "y2": float(b[3])}}
                for b, s, c in zip(self.boxes, self.scores, self.classes)]

    def verbose(self) -> str:
        """Ultralytics' '2 persons, 1 bus' summary."""
        if not len(self):
            return "(no detections)"
        counts = np.bincount(self.classes.astype(int))
        return ", ".join(f"{n} {self.names.get(c, str(c))}{'s' * int(n > 1)}" for c, n in enumerate(counts) if n)


def _palette(c: int) -> tuple[int, int, int]:
    rng = np.random.default_rng(c + 7)
    return tuple(int(v) for v in rng.integers(60, 256, 3))


def draw_detections(img: np.ndarray, boxes, scores, classes, names, line_width: int | None = None) -> np.ndarray:
    out = np.ascontiguousarray(img.copy())
    lw = line_width or max(round(sum(out.shape[:2]) / 2 * 0.003), 1)
    for b, s, c in zip(boxes, scores, classes):
        colour = _palette(int(c))
        p1, p2 = (int(b[0]), int(b[1])), (int(b[2]), int(b[3]))
        cv2.rectangle(out, p1, p2, colour, lw, cv2.LINE_AA)
        label = f"{names.get(int(c), str(int(c)))} {float(s):.2f}"
        fs = max(lw / 3, 0.3)
        (tw, th), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, fs, max(lw - 1, 1))
        y = p1[1] - th - 3 if p1[1] - th - 3 >= 0 else p1[1] + th + 3
        cv2.rectangle(out, (p1[0], y), (p1[0] + tw, y + th + 3) if y > p1[1] else (p1[0] + tw, p1[1]), colour, -1)
        cv2.putText(out, label, (p1[0], (y + th + 1) if y > p1[1] else p1[1] - 2), cv2.FONT_HERSHEY_SIMPLEX, fs,
                    (255, 255, 255), max(lw - 1, 1), cv2.LINE_AA)
    return out


def list_sources(source) -> list[tuple[str | None, np.ndarray | None]]:
    """``[(path or None, array or None), ...]`` in order; a missing path raises FileNotFoundError."""
    if isinstance(source, np.ndarray) and source.ndim == 3:
        return [(None, source)]
    if isinstance(source, np.ndarray) and source.ndim == 4:
        return [(None, im) for im in source]
    if isinstance(source, (list, tuple)):
        return [item for s in source for item in list_sources(s)]
    text = str(source)
    p = pathlib.Path(text)
    if p.is_dir():
        files = sorted(str(f) for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise FileNotFoundError(f"predict source {p} is a directory without images ({', '.join(IMAGE_SUFFIXES)}).")
        return [(f, None) for f in files]
    if any(ch in text for ch in "*?["):
        files = sorted(f for f in glob.glob(text, recursive=True) if pathlib.Path(f).suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise FileNotFoundError(f"predict source {text!r} matches no image files.")
        return [(f, None) for f in files]
    if p.is_file():
        return [(text, None)]
    if text.startswith(("http://", "https://", "rtsp://")):
        raise FileNotFoundError(f"predict source {text}: yolojax reads local images only; download it first.")
    raise FileNotFoundError(f"predict source {text!r} does not exist (relative to {pathlib.Path.cwd()}). Give an "
                            f"image file, a directory of images, a glob such as 'images/*.jpg', or an array.")


@functools.lru_cache(maxsize=8)
def _infer_fn(model, max_det: int, agnostic: bool):
    """Jitted uint8 images (B, S, S, 3) RGB -> NMS outputs; ``conf``/``iou`` are traced (no recompiles)."""
    import jax

    from yolojax.engine.devices import compiler_options
    from yolojax.ops.nms import non_max_suppression

    def infer(variables, images, conf, iou):
        preds = model.apply(variables, images.astype(np.float32) / 255.0, train=False)
        return non_max_suppression(preds, conf, iou, agnostic=agnostic, multi_label=False, max_det=max_det)

    return jax.jit(infer, compiler_options=compiler_options())


def predict(model, variables, source, *, imgsz: int = 640, conf: float = 0.25, iou: float = 0.7,
            max_det: int = 300, names: dict[int, str] | None = None, classes: Sequence[int] | None = None,
            agnostic_nms: bool = False, batch: int = 1, save: bool = False, project: str | None = None,
            name: str | None = None, exist_ok: bool = False, device=None, verbose: bool = True,
            **ignored) -> list[Prediction]:
    """Detect objects in ``source`` (see module docstring); returns one :class:`Prediction` per image."""
    import jax

    from yolojax.data.augment import letterbox
    from yolojax.engine.config import ConfigError, check_imgsz, closest_key, increment_path
    from yolojax.engine.devices import select_devices
    from yolojax.ops.nms import scale_boxes

    for key in ignored:
        if key not in ("half", "show", "save_txt", "save_conf", "save_crop", "show_labels", "show_conf",
                       "show_boxes", "line_width", "vid_stride", "stream_buffer", "visualize", "augment", "embed",
                       "retina_masks", "stream", "task", "mode", "model", "data"):
            near = closest_key(key, list(predict.__kwdefaults__))
            raise ConfigError(f"'{key}' is not a predict argument." + (f" Did you mean '{near}'?" if near else ""))
    names = dict(names) if names else {i: str(i) for i in range(model.num_classes)}
    imgsz = check_imgsz(imgsz)
    items = list_sources(source)
    dev = select_devices(device)[0]
    variables = jax.device_put(variables, dev)
    fn = _infer_fn(model, int(max_det), bool(agnostic_nms))
    save_dir = None
    if save:
        save_dir = increment_path(pathlib.Path(project or "runs/detect") / (name or "predict"), exist_ok)
        save_dir.mkdir(parents=True, exist_ok=True)
    results: list[Prediction] = []
    batch = max(int(batch), 1)
    for start in range(0, len(items), batch):
        chunk = items[start:start + batch]
        t0 = time.perf_counter()
        originals, inputs, pads = [], [], []
        for path, arr in chunk:
            img = cv2.imread(path, cv2.IMREAD_COLOR) if arr is None else np.asarray(arr)
            if img is None:
                raise FileNotFoundError(f"{path}: OpenCV could not read this image (corrupt or not an image).")
            if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
                raise ValueError(f"predict: arrays must be (H, W, 3) uint8 BGR images, got {img.shape} {img.dtype}.")
            boxed, _, r, (left, top), _ = letterbox(img, None, (imgsz, imgsz))
            originals.append(img)
            inputs.append(boxed[..., ::-1])  # BGR -> RGB
            pads.append(((r, r), (left, top)))
        while len(inputs) < batch:  # pad the last batch: same compiled shape
            inputs.append(np.full_like(inputs[0], 114))
        images = jax.device_put(np.ascontiguousarray(np.stack(inputs)), dev)
        t1 = time.perf_counter()
        out = jax.device_get(fn(variables, images, np.float32(conf), np.float32(iou)))
        t2 = time.perf_counter()
        boxes, scores, cls, valid = out
        for j, ((path, _), img) in enumerate(zip(chunk, originals)):
            keep = np.array(valid[j], dtype=bool)
            if classes is not None:
                keep = keep & np.isin(cls[j], np.asarray(list(classes)))
            b = scale_boxes(boxes[j][keep], pads[j], img.shape[:2])
            n = len(chunk)
            speed = {"preprocess": 1e3 * (t1 - t0) / n, "inference": 1e3 * (t2 - t1) / n}
            pred = Prediction(b, np.asarray(scores[j][keep], np.float32), np.asarray(cls[j][keep]).astype(np.int64),
                              names, path, tuple(img.shape[:2]), img, speed)
            if save_dir is not None:
                stem = pathlib.Path(path).name if path else f"image{start + j}.jpg"
                pred.save(save_dir / stem)
            if verbose:
                print(f"image {start + j + 1}/{len(items)} {path or 'array'}: {imgsz}x{imgsz} {pred.verbose()}, "
                      f"{speed['inference']:.1f}ms")
            results.append(pred)
    if save_dir is not None and verbose:
        print(f"Results saved to {save_dir}")
    return results
