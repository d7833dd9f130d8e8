"""Inference on images: ``predict(model, variables, source) -> [Prediction, ...]``.

As Ultralytics' predictor: each image is scaled to fit ``imgsz`` and padded (114, centred) to the smallest
rectangle whose sides are multiples of the model's stride (``rect=True``; a batch of images of different shapes,
or ``rect=False``, is padded to ``imgsz`` instead), run through the model and single-label NMS on the device
(``classes`` filters candidates before NMS), and its boxes are mapped back to the original pixels on the host
(``original_boxes``). One function is compiled per input shape: with one side at ``imgsz`` and the other a stride
multiple, a folder of photos needs a few. Images are never padded further to share a shape, because extra
padding changes the output (the convolutions' zero borders and pooling windows move), so results stay
Ultralytics'. ``save=True`` also writes annotated copies (OpenCV) into ``runs/detect/predict``.

    source: an image path, a directory (its images, sorted), a glob pattern, a list of those or of arrays,
            or one array (H, W, 3) uint8 BGR, as OpenCV reads images (Ultralytics' convention).
    Prediction.boxes (n, 4) xyxy original pixels, .scores (n,), .classes (n,) int, .names, .path, .orig_shape,
               .input_shape (h, w) of the letterboxed image the model saw
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
    input_shape: tuple[int, int] | None = None  # (h, w) of the letterboxed image the model saw

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
    """Jitted (uint8 images (B, H, W, 3) RGB, allowed (nc,) bool, conf, iou) -> NMS outputs.

    ``conf``, ``iou`` and ``allowed`` are traced (no recompiles). An anchor whose best class is not allowed is no
    candidate (its scores are set below any threshold), as Ultralytics filters ``classes`` before NMS."""
    import jax
    import jax.numpy as jnp

    from yolojax.engine.devices import compiler_options
    from yolojax.ops.nms import non_max_suppression

    def infer(variables, images, allowed, conf, iou):
        preds = model.apply(variables, images.astype(np.float32) / 255.0, train=False)
        best_allowed = allowed[jnp.argmax(preds[..., 4:], axis=-1)]
        preds = preds.at[..., 4:].set(jnp.where(best_allowed[..., None], preds[..., 4:], -1.0))
        return non_max_suppression(preds, conf, iou, agnostic=agnostic, multi_label=False, max_det=max_det)

    return jax.jit(infer, compiler_options=compiler_options())


def original_boxes(boxes: np.ndarray, input_hw: tuple[int, int], orig_hw: tuple[int, int],
                   compat: str = "v8") -> np.ndarray:
    """Map (n, 4) xyxy boxes from the letterboxed input back to the original image, clipped to it.

    The gain and centred padding are recovered from the two shapes, as Ultralytics' predictor does:
    ``gain = min(h1 / h0, w1 / w0)``; ``compat="v8"`` divides both axes by ``gain`` and takes the padding
    ``round((w1 - w0 * gain) / 2 - 0.1)`` (likewise y); ``"current"`` first rounds the scaled sides as the letterbox
    does (``max(round(w0 * gain), 1)``), divides each axis by its own ``w / w0`` and pads around those sides.
    Returns float32 (n, 4) in original pixels."""
    (h1, w1), (h0, w0) = input_hw, orig_hw
    gain = min(h1 / h0, w1 / w0)
    if compat == "v8":
        gain_x = gain_y = gain
        pad_x, pad_y = round((w1 - w0 * gain) / 2 - 0.1), round((h1 - h0 * gain) / 2 - 0.1)
    else:
        new_h, new_w = max(round(h0 * gain), 1), max(round(w0 * gain), 1)
        gain_x, gain_y = new_w / w0, new_h / h0
        pad_x, pad_y = round((w1 - new_w) / 2 - 0.1), round((h1 - new_h) / 2 - 0.1)
    out = np.array(boxes, np.float32).reshape(-1, 4)
    out -= np.array([pad_x, pad_y, pad_x, pad_y], np.float32)
    out /= np.array([gain_x, gain_y, gain_x, gain_y], np.float32)
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, w0)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, h0)
    return out


def predict_imgsz(imgsz, stride: int = 32) -> tuple[int, int]:
    """``imgsz`` as (h, w), each side rounded up to a multiple of ``stride``: an int is a square, a sequence is
    ``(h, w)`` (one number: a square), as Ultralytics' predictor takes it."""
    from yolojax.config import ConfigError, check_imgsz

    sides = list(imgsz) if isinstance(imgsz, (list, tuple)) else [imgsz]
    if len(sides) not in (1, 2):
        raise ConfigError(f"imgsz={imgsz!r}: give one size or (height, width).")
    sides = [check_imgsz(int(v), stride) for v in sides]
    return (sides[0], sides[-1])


def predict(model, variables, source, *, imgsz: int | Sequence[int] = 640, conf: float = 0.25, iou: float = 0.7,
            max_det: int = 300, names: dict[int, str] | None = None, classes: Sequence[int] | None = None,
            agnostic_nms: bool = False, batch: int = 1, rect: bool = True, compat: str = "v8", save: bool = False,
            project: str | None = None, name: str | None = None, exist_ok: bool = False, device=None,
            verbose: bool = True, **ignored) -> list[Prediction]:
    """Detect objects in ``source`` (see module docstring); returns one :class:`Prediction` per image.

    ``compat``: "v8" (Ultralytics 8.2) or "current" (8.4), which differ in how boxes are mapped back
    (``original_boxes``)."""
    import jax

    from yolojax.augment.host import letterbox
    from yolojax.config import ConfigError, closest_key, increment_path
    from yolojax.engine.devices import select_devices
    from yolojax.compat import check_compat

    for key in ignored:
        if key not in ("half", "show", "save_txt", "save_conf", "save_crop", "show_labels", "show_conf",
                       "show_boxes", "line_width", "vid_stride", "stream_buffer", "visualize", "augment", "embed",
                       "retina_masks", "stream", "task", "mode", "model", "data"):
            near = closest_key(key, list(predict.__kwdefaults__))
            raise ConfigError(f"'{key}' is not a predict argument." + (f" Did you mean '{near}'?" if near else ""))
    try:
        check_compat(compat)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    names = dict(names) if names else {i: str(i) for i in range(model.num_classes)}
    stride = max(max(model.strides), 32)
    shape = predict_imgsz(imgsz, stride)
    allowed = np.ones(model.num_classes, bool)
    if classes is not None:
        wanted = np.asarray(list(classes) if isinstance(classes, (list, tuple, np.ndarray)) else [classes], int)
        if wanted.size and (wanted.min() < 0 or wanted.max() >= model.num_classes):
            raise ConfigError(f"classes={wanted.tolist()}: class ids must be in 0..{model.num_classes - 1}.")
        allowed[:] = False
        allowed[wanted] = True
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
        originals = []
        for path, arr in chunk:
            img = cv2.imread(path, cv2.IMREAD_COLOR) if arr is None else np.asarray(arr)
            if img is None:
                raise FileNotFoundError(f"{path}: OpenCV could not read this image (corrupt or not an image).")
            if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
                raise ValueError(f"predict: arrays must be (H, W, 3) uint8 BGR images, got {img.shape} {img.dtype}.")
            originals.append(img)
        # as Ultralytics: the smallest stride rectangle only when the whole batch shares one image shape
        auto = rect and len({img.shape for img in originals}) == 1
        inputs = [letterbox(img, None, shape, stride=stride if auto else None)[0][..., ::-1] for img in originals]
        input_hw = inputs[0].shape[:2]
        while len(inputs) < batch:  # pad the last batch: same compiled shape
            inputs.append(np.full_like(inputs[0], 114))
        images = jax.device_put(np.ascontiguousarray(np.stack(inputs)), dev)
        t1 = time.perf_counter()
        out = jax.device_get(fn(variables, images, allowed, np.float32(conf), np.float32(iou)))
        t2 = time.perf_counter()
        boxes, scores, cls, valid = out
        for j, ((path, _), img) in enumerate(zip(chunk, originals)):
            keep = np.array(valid[j], dtype=bool)
            b = original_boxes(boxes[j][keep], input_hw, img.shape[:2], compat)
            n = len(chunk)
            speed = {"preprocess": 1e3 * (t1 - t0) / n, "inference": 1e3 * (t2 - t1) / n}
            pred = Prediction(b, np.asarray(scores[j][keep], np.float32), np.asarray(cls[j][keep]).astype(np.int64),
                              names, path, tuple(img.shape[:2]), img, speed, tuple(input_hw))
            if save_dir is not None:
                stem = pathlib.Path(path).name if path else f"image{start + j}.jpg"
                pred.save(save_dir / stem)
            if verbose:
                print(f"image {start + j + 1}/{len(items)} {path or 'array'}: {input_hw[0]}x{input_hw[1]} "
                      f"{pred.verbose()}, {speed['inference']:.1f}ms")
            results.append(pred)
    if save_dir is not None and verbose:
        print(f"Results saved to {save_dir}")
    return results
