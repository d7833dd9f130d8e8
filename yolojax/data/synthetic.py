"""A deterministic synthetic YOLO-format dataset of coloured shapes on textured backgrounds (offline default).

``shapes_yaml(n_train=256, n_val=64, seed=0) -> Path`` returns the ``data.yaml`` of the dataset, generating it on
first use into ``$YOLOJAX_CACHE/shapes-...`` (default ``~/.cache/yolojax``). Generation writes into a temporary folder
that is renamed into place when complete, so an interrupted run never leaves a half dataset behind.
``check_dataset("shapes")`` resolves to the default one.

Six classes, each a shape with its own colour family (so a tiny model can learn it in a few epochs at 64–128 px):
rectangle, ellipse, triangle, cross, star, diamond. 1–6 objects per image with sizes 18–60 % of the short side and
aspect ratios 0.6–1.7, overlapping up to 35 % of the smaller box; images of 96×128, 128×128, 120×160 and
144×112 (h×w) pixels;
backgrounds are a random colour gradient with stripes and Gaussian noise; about 5 % of images are backgrounds.
Labels are the exact extents of the drawn shapes.

``shapes_cls_dir(n_train=40, n_val=10, size=64, seed=0) -> Path``: the classification counterpart, one shape per
image, folders ``train/<name>/`` and ``val/<name>/`` for the same six classes (``check_cls_dataset("shapes")``).
"""
from __future__ import annotations

import math
import os
import pathlib
import shutil
import tempfile
from typing import Callable

import cv2
import numpy as np

NAMES = ("rectangle", "ellipse", "triangle", "cross", "star", "diamond")
# BGR base colours, far apart in hue so colour alone is a strong cue (plus shape).
_COLOURS = ((40, 40, 220), (220, 80, 30), (40, 200, 40), (30, 220, 230), (200, 40, 200), (230, 230, 230))
IMAGE_SIZES = ((96, 128), (128, 128), (120, 160), (144, 112))
VERSION = 1


def cache_root() -> pathlib.Path:
    return pathlib.Path(os.environ.get("YOLOJAX_CACHE", "~/.cache/yolojax")).expanduser()


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    c0, c1 = rng.uniform(40, 200, 3), rng.uniform(40, 200, 3)
    t = np.linspace(0, 1, w)[None, :, None] if rng.random() < 0.5 else np.linspace(0, 1, h)[:, None, None]
    img = np.broadcast_to(c0 * (1 - t) + c1 * t, (h, w, 3)).copy()
    for _ in range(int(rng.integers(0, 6))):  # texture: a few faint stripes
        p1 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        p2 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        cv2.line(img, p1, p2, tuple(float(v) for v in rng.uniform(30, 220, 3)), int(rng.integers(1, 4)))
    img += rng.normal(0, 12, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _polygon(cls: int, cx: float, cy: float, bw: float, bh: float, rng: np.random.Generator) -> np.ndarray | None:
    """Polygon points (k, 2) of a shape filling the box (cx, cy, bw, bh); None for the ellipse."""
    x0, y0, x1, y1 = cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2
    if cls == 0:
        return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
    if cls == 2:
        apex = rng.uniform(x0, x1)
        return np.array([[apex, y0], [x1, y1], [x0, y1]])
    if cls == 3:
        tx, ty = bw * 0.17, bh * 0.17
        return np.array([[cx - tx, y0], [cx + tx, y0], [cx + tx, cy - ty], [x1, cy - ty], [x1, cy + ty],
                         [cx + tx, cy + ty], [cx + tx, y1], [cx - tx, y1], [cx - tx, cy + ty], [x0, cy + ty],
                         [x0, cy - ty], [cx - tx, cy - ty]])
    if cls == 4:
        ang = -math.pi / 2 + np.arange(10) * math.pi / 5
        rad = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
        pts = np.stack([np.cos(ang) * rad, np.sin(ang) * rad], 1)
        lo, hi = pts.min(0), pts.max(0)
        pts = (pts - lo) / (hi - lo)  # fill the box exactly
        return np.stack([x0 + pts[:, 0] * bw, y0 + pts[:, 1] * bh], 1)
    if cls == 5:
        return np.array([[cx, y0], [x1, cy], [cx, y1], [x0, cy]])
    return None


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over the smaller box's area (1 when one box contains the other)."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    return iw * ih / (min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1])) + 1e-9)


def make_image(rng: np.random.Generator, h: int, w: int, num_classes: int = len(NAMES)):
    """One image (h, w, 3) uint8 BGR and its labels (n, 5) ``class, x, y, w, h`` normalised."""
    img = _background(rng, h, w)
    n = 0 if rng.random() < 0.05 else int(rng.integers(1, 7))
    boxes, rows = [], []
    for _ in range(n * 4):  # rejection sampling for limited overlap
        if len(rows) == n:
            break
        side = rng.uniform(0.18, 0.6) * min(h, w)
        ar = math.exp(rng.uniform(math.log(0.6), math.log(1.7)))
        bw, bh = min(side * math.sqrt(ar), w - 2), min(side / math.sqrt(ar), h - 2)
        cx, cy = rng.uniform(bw / 2, w - bw / 2), rng.uniform(bh / 2, h - bh / 2)
        box = np.array([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2])
        if any(_overlap(box, b) > 0.35 for b in boxes):  # overlaps, but every shape stays mostly visible
            continue
        cls = int(rng.integers(0, num_classes))
        colour = np.clip(np.array(_COLOURS[cls % len(_COLOURS)]) + rng.normal(0, 18, 3), 0, 255)
        colour = tuple(float(v) for v in colour)
        poly = _polygon(cls % len(_COLOURS), cx, cy, bw, bh, rng)
        if poly is None:
            cv2.ellipse(img, (int(round(cx)), int(round(cy))), (int(round(bw / 2)), int(round(bh / 2))), 0, 0, 360,
                        colour, -1, cv2.LINE_AA)
            x0, y0, x1, y1 = round(cx) - round(bw / 2), round(cy) - round(bh / 2), round(cx) + round(bw / 2), \
                round(cy) + round(bh / 2)
        else:
            pts = np.round(poly).astype(np.int32)
            cv2.fillPoly(img, [pts], colour, cv2.LINE_AA)
            (x0, y0), (x1, y1) = pts.min(0), pts.max(0)
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1 + 1, w), min(y1 + 1, h)  # pixel extents, inclusive
        boxes.append(box)
        rows.append([cls, (x0 + x1) / 2 / w, (y0 + y1) / 2 / h, (x1 - x0) / w, (y1 - y0) / h])
    return img, np.array(rows, np.float64).reshape(-1, 5)


def make_shapes_dataset(root: str | os.PathLike, *, n_train: int = 256, n_val: int = 64, seed: int = 0,
                        image_sizes=IMAGE_SIZES, num_classes: int = len(NAMES)) -> pathlib.Path:
    """Write the dataset into ``root`` (created atomically; reused if it exists). Returns its ``data.yaml``."""
    root = pathlib.Path(root)
    if (root / "data.yaml").exists():
        return root / "data.yaml"
    if not 1 <= num_classes <= len(NAMES):
        raise ValueError(f"num_classes must be in 1..{len(NAMES)}, got {num_classes}")

    def write(tmp: pathlib.Path) -> None:
        for split, n, sub in (("train", n_train, 0), ("val", n_val, 1)):
            (tmp / "images" / split).mkdir(parents=True)
            (tmp / "labels" / split).mkdir(parents=True)
            for i in range(n):
                rng = np.random.default_rng([seed, sub, i])
                h, w = image_sizes[int(rng.integers(0, len(image_sizes)))]
                img, rows = make_image(rng, h, w, num_classes)
                cv2.imwrite(str(tmp / "images" / split / f"{i:05d}.png"), img)
                text = "".join(f"{int(r[0])} {r[1]:.6f} {r[2]:.6f} {r[3]:.6f} {r[4]:.6f}\n" for r in rows)
                (tmp / "labels" / split / f"{i:05d}.txt").write_text(text)
        names = "".join(f"  {i}: {NAMES[i]}\n" for i in range(num_classes))
        (tmp / "data.yaml").write_text(f"# yolojax synthetic shapes (seed {seed}); folders next to this file\n"
                                       f"train: images/train\nval: images/val\nnames:\n{names}")

    _publish(root, write, done="data.yaml")
    return root / "data.yaml"


def _publish(root: pathlib.Path, write: Callable[[pathlib.Path], None], *, done: str) -> None:
    """Build a dataset folder atomically: ``write`` fills a temporary sibling folder, which is then renamed to
    ``root``. When another process published ``root`` first (its ``done`` entry exists), theirs is kept."""
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        write(tmp)
        try:
            os.rename(tmp, root)
        except OSError:
            if not (root / done).exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def shapes_yaml(n_train: int = 256, n_val: int = 64, seed: int = 0, num_classes: int = len(NAMES),
                root: str | os.PathLike | None = None) -> pathlib.Path:
    """Path of the shapes dataset's ``data.yaml``, generated on first use (see module docstring)."""
    base = pathlib.Path(root) if root is not None else cache_root()
    name = f"shapes-v{VERSION}-n{n_train}-{n_val}-c{num_classes}-s{seed}"
    return make_shapes_dataset(base / name, n_train=n_train, n_val=n_val, seed=seed, num_classes=num_classes)


CLS_VERSION = 1


def make_cls_image(rng: np.random.Generator, cls: int, size: int) -> np.ndarray:
    """One (size, size, 3) uint8 BGR image of class ``cls``: one shape of that class, 40–80 % of the side, on a
    textured background (the detection set's shapes and colour families)."""
    img = _background(rng, size, size)
    side = rng.uniform(0.4, 0.8) * size
    ar = math.exp(rng.uniform(math.log(0.75), math.log(1.33)))
    bw, bh = min(side * math.sqrt(ar), size - 2), min(side / math.sqrt(ar), size - 2)
    cx, cy = rng.uniform(bw / 2, size - bw / 2), rng.uniform(bh / 2, size - bh / 2)
    colour = tuple(float(v) for v in np.clip(np.array(_COLOURS[cls]) + rng.normal(0, 18, 3), 0, 255))
    poly = _polygon(cls, cx, cy, bw, bh, rng)
    if poly is None:
        cv2.ellipse(img, (int(round(cx)), int(round(cy))), (int(round(bw / 2)), int(round(bh / 2))), 0, 0, 360,
                    colour, -1, cv2.LINE_AA)
    else:
        cv2.fillPoly(img, [np.round(poly).astype(np.int32)], colour, cv2.LINE_AA)
    return img


def make_shapes_cls_dataset(root: str | os.PathLike, *, n_train: int = 40, n_val: int = 10, size: int = 64,
                            seed: int = 0) -> pathlib.Path:
    """Write the classification set into ``root`` (created atomically; reused if it exists); returns ``root``.

    Layout ``root/{train,val}/<name>/<index>.png``, one folder per ``NAMES`` entry, ``n_train``/``n_val`` images per
    class; image ``i`` of class ``c`` in split ``s`` is drawn from ``default_rng([seed, s, c, i])`` (same bytes on
    every machine)."""
    root = pathlib.Path(root)
    if (root / "train").is_dir():
        return root

    def write(tmp: pathlib.Path) -> None:
        for split, n, sub in (("train", n_train, 0), ("val", n_val, 1)):
            for c, name in enumerate(NAMES):
                (tmp / split / name).mkdir(parents=True)
                for i in range(n):
                    img = make_cls_image(np.random.default_rng([seed, sub, c, i]), c, size)
                    cv2.imwrite(str(tmp / split / name / f"{i:04d}.png"), img)

    _publish(root, write, done="train")
    return root


def shapes_cls_dir(n_train: int = 40, n_val: int = 10, size: int = 64, seed: int = 0,
                   root: str | os.PathLike | None = None) -> pathlib.Path:
    """Folder of the synthetic classification set (6 shape classes), generated on first use under ``cache_root()``."""
    base = pathlib.Path(root) if root is not None else cache_root()
    name = f"shapes-cls-v{CLS_VERSION}-n{n_train}-{n_val}-{size}px-s{seed}"
    return make_shapes_cls_dataset(base / name, n_train=n_train, n_val=n_val, size=size, seed=seed)
