"""Classification inference: ``classify(model, variables, source, imgsz=224) -> [ClassPrediction, ...]``.

As Ultralytics' ClassificationPredictor: each image (read BGR by OpenCV, as Ultralytics reads it, then RGB) goes
through the validation transform (short side to ``floor(imgsz / crop_fraction)``, centre crop ``imgsz``), so every
input has the same shape and one compiled function serves all batches; the eval-mode model returns the class
probabilities. ``source`` takes what detection's ``yolojax.predict.predict`` takes (paths, directories, globs,
(H, W, 3) uint8 BGR arrays or lists of them).

    ClassPrediction.probs (nc,) float32 softmax, .top5 (min(5, nc),) int class ids best first (ties: the lower id),
                   .top5conf their probabilities, .top1 / .top1conf, .names, .path, .orig_shape (h, w)

``predict_classes(...)`` is ``YOLO.predict`` for a classifier: the same probabilities as Ultralytics' ``Results``
(``result.probs.top1``, ``.top5``, ``.top1conf``, ``.top5conf``, ``.data``), one printed line per image.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Mapping

import cv2
import jax
import jax.numpy as jnp
import numpy as np

from yolojax.data.classify_augment import classify_val
from yolojax.predict import list_sources


def ranked(probs: np.ndarray) -> np.ndarray:
    """(nc,) probabilities -> the ``min(5, nc)`` best class ids, best first (ties: the lower id)."""
    return np.argsort(-probs, kind="stable")[: min(5, len(probs))]


@dataclasses.dataclass
class ClassPrediction:
    """Class probabilities of one image (see the module docstring)."""

    probs: np.ndarray
    names: dict[int, str]
    path: str | None
    orig_shape: tuple[int, int]

    @property
    def top5(self) -> np.ndarray:
        return ranked(self.probs)

    @property
    def top5conf(self) -> np.ndarray:
        return self.probs[self.top5]

    @property
    def top1(self) -> int:
        return int(self.top5[0])

    @property
    def top1conf(self) -> float:
        return float(self.probs[self.top1])


@functools.lru_cache(maxsize=8)
def _probs_fn(model):
    return jax.jit(lambda variables, images: model.apply(variables, images.astype(jnp.float32) / 255.0,
                                                         train=False).astype(jnp.float32))


def preprocess(bgr: np.ndarray, imgsz: int, crop_fraction: float = 1.0) -> np.ndarray:
    """(h, w, 3) uint8 BGR -> (imgsz, imgsz, 3) uint8 RGB, the classifier's input (see the module docstring)."""
    if bgr.ndim != 3 or bgr.shape[2] != 3 or bgr.dtype != np.uint8:
        raise ValueError(f"classify: an image must be (H, W, 3) uint8 BGR; got {bgr.shape} {bgr.dtype}.")
    return classify_val(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), int(imgsz), crop_fraction)


def classify(model, variables, source, *, imgsz: int = 224, crop_fraction: float = 1.0, batch: int = 16,
             names: Mapping[int, str] | None = None) -> list[ClassPrediction]:
    """Class probabilities for every image of ``source`` (see the module docstring); ``batch`` images per call,
    the last call padded to the same shape."""
    if not 0.0 < float(crop_fraction) <= 1.0:
        raise ValueError(f"crop_fraction={crop_fraction!r} must be in (0, 1].")
    names = dict(names) if names is not None else {i: str(i) for i in range(model.num_classes)}
    fn, out = _probs_fn(model), []
    items = list_sources(source)
    batch = max(1, min(int(batch), len(items)))
    for lo in range(0, len(items), batch):
        chunk, inputs, shapes = items[lo:lo + batch], [], []
        for path, arr in chunk:
            img = arr if arr is not None else cv2.imread(path, cv2.IMREAD_COLOR)
            if img is None:
                raise FileNotFoundError(f"classify: OpenCV could not read image {path}.")
            inputs.append(preprocess(img, imgsz, crop_fraction)), shapes.append(img.shape[:2])
        x = np.zeros((batch, imgsz, imgsz, 3), np.uint8)
        x[: len(inputs)] = np.stack(inputs)
        probs = np.asarray(fn(variables, x))[: len(inputs)]
        out += [ClassPrediction(p, names, path, (int(h), int(w))) for p, (path, _), (h, w) in zip(probs, chunk, shapes)]
    return out


@dataclasses.dataclass
class Probs:
    """Ultralytics' ``Results.probs``: ``data`` (nc,) float32 class probabilities, ``top1`` (int), ``top5`` (list
    of the ``min(5, nc)`` best class ids, best first), ``top1conf`` (float), ``top5conf`` ((k,) their
    probabilities)."""

    data: np.ndarray

    @property
    def top5(self) -> list[int]:
        return [int(i) for i in ranked(self.data)]

    @property
    def top1(self) -> int:
        return int(ranked(self.data)[0])

    @property
    def top5conf(self) -> np.ndarray:
        return self.data[ranked(self.data)]

    @property
    def top1conf(self) -> float:
        return float(self.data[self.top1])


@dataclasses.dataclass
class ClassifyResult:
    """One image's result, as Ultralytics' ``Results`` of a classifier: ``probs`` (:class:`Probs`), ``names``
    ({id: name}), ``path`` (None for an array), ``orig_shape`` (h, w), ``speed`` (ms per image)."""

    probs: Probs
    names: dict[int, str]
    path: str | None
    orig_shape: tuple[int, int]
    speed: dict[str, float] = dataclasses.field(default_factory=dict)

    def verbose(self) -> str:
        """``"name conf, "`` for each of the top-5 classes, as Ultralytics prints them."""
        return "".join(f"{self.names[j]} {self.probs.data[j]:.2f}, " for j in self.probs.top5)

    def summary(self) -> list[dict]:
        """One row per top-5 class: ``{"name", "class", "confidence"}``."""
        return [{"name": self.names[j], "class": j, "confidence": float(self.probs.data[j])} for j in self.probs.top5]


# Ultralytics predict arguments without effect on a classifier (their detection filters, display options).
_INERT = ("conf", "iou", "max_det", "agnostic_nms", "classes", "half", "show", "show_labels", "show_conf",
          "show_boxes", "line_width", "vid_stride", "stream_buffer", "visualize", "augment", "embed", "stream", "rect",
          "compat", "task", "mode", "model", "data")


def predict_classes(model, variables, source, *, imgsz: int = 224, batch: int = 16, crop_fraction: float = 1.0,
                    names: Mapping[int, str] | None = None, device=None, verbose: bool = True,
                    **ignored) -> list[ClassifyResult]:
    """Classify every image of ``source`` on ``device`` (default: the first device); prints
    ``image i/n PATH: SxS name conf, ...`` per image when ``verbose``. Unknown keywords raise a ``ConfigError``."""
    import time

    from yolojax.config import ConfigError, check_imgsz, closest_key
    from yolojax.engine.devices import select_devices

    for key in ignored:
        if key not in _INERT:
            near = closest_key(key, list(predict_classes.__kwdefaults__))
            raise ConfigError(f"'{key}' is not a classification predict argument in yolojax." + (
                f" Did you mean '{near}'?" if near else f" Valid: {', '.join(predict_classes.__kwdefaults__)}."))
    imgsz = check_imgsz(imgsz, stride=1)  # a classifier has no stride constraint (global pooling)
    variables = jax.device_put(variables, select_devices(device)[0])
    t0 = time.perf_counter()
    preds = classify(model, variables, source, imgsz=imgsz, crop_fraction=crop_fraction, batch=batch, names=names)
    ms = 1e3 * (time.perf_counter() - t0) / max(len(preds), 1)
    out = [ClassifyResult(Probs(p.probs), p.names, p.path, p.orig_shape, {"inference": ms}) for p in preds]
    if verbose:
        for i, r in enumerate(out):
            print(f"image {i + 1}/{len(out)} {r.path or 'array'}: {imgsz}x{imgsz} {r.verbose()}{ms:.1f}ms")
    return out
