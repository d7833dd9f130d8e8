"""A verified detection dataset with random access, plus the per-sample train/val pipelines.

``DetectionDataset.from_config(data, split="train", imgsz=640, ...)`` lists the split's images, verifies them and their
labels (cached), and exposes ``len``, ``load(i) -> (img BGR (h, w, 3) long side = imgsz, boxes (n, 4) pixel xyxy,
classes (n,), (h0, w0))`` and optionally keeps resized images in RAM (``cache="ram"``) or decoded images on disk beside
them (``cache="disk"``, ``yolojax.data.npy_cache``).

``train_sample(ds, index, rng, hyp, mosaic=True, compat="v8") -> (img RGB (S, S, 3) uint8, boxes, classes)`` is the
whole training pipeline of one sample; ``val_sample(ds, index, shape, compat)`` the validation letterbox.
"""
from __future__ import annotations

import collections
import dataclasses
import threading
from typing import Any, Mapping

import cv2
import numpy as np

from yolojax.data import augment
from yolojax.data.dataset_yaml import DatasetError, check_dataset, list_images
from yolojax.data.labels import LabelSet, load_labels
from yolojax.data.npy_cache import disk_cache_possible, read_cached, write_disk_cache

# Ultralytics' default augmentation hyperparameters.
DEFAULT_HYP = dict(hsv_h=0.015, hsv_s=0.7, hsv_v=0.4, degrees=0.0, translate=0.1, scale=0.5, shear=0.0,
                   perspective=0.0, flipud=0.0, fliplr=0.5, bgr=0.0, mosaic=1.0, mixup=0.0, copy_paste=0.0)


def augment_hyp(hyp: Mapping[str, Any] | None = None) -> dict[str, float]:
    """Default augmentation hyperparameters updated with the known keys of ``hyp`` (a dict or ConfigDict)."""
    out = dict(DEFAULT_HYP)
    if hyp is not None:
        for k in DEFAULT_HYP:
            if k in hyp and hyp[k] is not None:
                out[k] = float(hyp[k])
    return out


@dataclasses.dataclass
class DetectionDataset:
    """Images + verified labels. ``labels[i]``: (n, 5) float32 rows ``class, x, y, w, h`` normalised."""

    im_files: list[str]
    shapes: np.ndarray  # (N, 2) original (h, w)
    labels: list[np.ndarray]
    names: dict[int, str]
    imgsz: int
    ram_cache: list | None = None
    disk_cache: bool = False  # read each image's decode from its .npy (cache="disk")
    buffer_size: int = 0  # per-process LRU of decoded images (Ultralytics keeps min(n, 8·batch, 1000) per worker)

    @classmethod
    def from_files(cls, image_files, names, *, imgsz: int = 640, single_cls: bool = False, compat: str = "v8",
                   cache: str | bool | None = None, prefix: str = "", verbose: bool = True,
                   classes=None) -> "DetectionDataset":
        ls: LabelSet = load_labels(image_files, len(names), single_cls=single_cls, classes=classes, compat=compat,
                                   prefix=prefix, verbose=verbose)
        ds = cls(ls.im_files, ls.shapes, ls.labels, dict(names), int(imgsz))
        cache = cache.lower() if isinstance(cache, str) else cache
        if cache in (True, "ram"):
            ds.ram_cache = [ds._read(i) for i in range(len(ds))]
        elif cache == "disk":
            if ds.im_files and disk_cache_possible(ds.im_files, prefix=prefix):
                written = write_disk_cache(ds.im_files, compat=compat)
                ds.disk_cache = True
                if verbose:
                    print(f"{prefix}Caching images ({written / (1 << 30):.1f}GB Disk): {len(ds)} .npy files beside "
                          "the images")
        elif cache not in (None, False, "", "False"):
            raise DatasetError(f"cache={cache!r} is not supported: use cache='ram', cache='disk' or no cache.")
        return ds

    @classmethod
    def from_config(cls, data, split: str = "train", *, imgsz: int = 640, single_cls: bool = False,
                    fraction: float = 1.0, compat: str = "v8", cache=None, verbose: bool = True, classes=None):
        """Build from a data YAML / bundled name / checked dict. ``fraction`` applies to the train split only;
        ``classes`` (ids) keeps only those classes' labels (``labels.select_classes``)."""
        info = data if isinstance(data, dict) and "nc" in data and "yaml_file" in data else check_dataset(data)
        if info.get("tfds"):  # records of a TensorFlow Datasets split, decoded on demand
            from yolojax.data.tfds import TfdsDetectionDataset
            return TfdsDetectionDataset.from_checked(info, split, imgsz=imgsz, single_cls=single_cls,
                                                     fraction=fraction, cache=cache, verbose=verbose, classes=classes)
        if not info.get(split):
            raise DatasetError(f"Dataset {info.get('yaml_file')} has no '{split}' split.")
        files = list_images(info[split], compat=compat, fraction=fraction if split == "train" else 1.0)
        return cls.from_files(files, info["names"], imgsz=imgsz, single_cls=single_cls, compat=compat, cache=cache,
                              prefix=f"{split}: ", verbose=verbose, classes=classes)

    def __len__(self) -> int:
        return len(self.im_files)

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def _read(self, i: int) -> np.ndarray:
        img = read_cached(self.im_files[i]) if self.disk_cache else None
        if img is None:
            img = cv2.imread(self.im_files[i], cv2.IMREAD_COLOR)
        if img is None:
            raise DatasetError(f"{self.im_files[i]}: OpenCV could not read this image (it passed verification; was "
                               "it changed or deleted since?). Remove it or restore it, then delete the label cache.")
        return augment.resize_long_side(img, self.imgsz)

    def _image(self, i: int) -> np.ndarray:
        if self.ram_cache is not None:
            return self.ram_cache[i]
        if self.buffer_size <= 0:
            return self._read(i)
        buf = self.__dict__.setdefault("_buffer", collections.OrderedDict())
        if i in buf:
            buf.move_to_end(i)
            return buf[i]
        img = buf[i] = self._read(i)
        while len(buf) > self.buffer_size:
            buf.popitem(last=False)
        return img

    def __getstate__(self):  # the LRU buffer is per process: never pickled into workers
        return {k: v for k, v in self.__dict__.items() if k != "_buffer"}

    def load(self, i: int):
        """(img BGR (h, w, 3) resized so the long side is imgsz, boxes (n, 4) pixel xyxy, classes (n,), (h0, w0))."""
        img = self._image(i)
        h, w = img.shape[:2]
        lb = self.labels[i]
        xy, wh = lb[:, 1:3], lb[:, 3:5]
        boxes = np.concatenate([xy - wh / 2, xy + wh / 2], 1) * np.array([w, h, w, h], np.float32)
        return img, boxes.astype(np.float32), lb[:, 0].astype(np.int32), tuple(int(v) for v in self.shapes[i])


_canvas = threading.local()


@dataclasses.dataclass
class _Layout:
    """The random layout of one mosaic (or single) image before its pixels: ``tiles`` (pool position or None,
    image BGR, its place: canvas rectangle a and image rectangle b as in ``augment.mosaic_layout``); ``kind``
    "mosaic", "letterbox" or "plain"; the warp ``M`` into the output (h, w) ``out`` (S×S, or a rectangular batch's
    shape); the boxes and classes after it."""

    tiles: list
    kind: str
    M: np.ndarray
    boxes: np.ndarray
    classes: np.ndarray
    out: tuple[int, int]


def _layout(ds: DetectionDataset, index: int, rng: np.random.Generator, hyp: dict, mosaic: bool, compat: str,
            pool=None, slot: int | None = None, shape: tuple[int, int] | None = None) -> _Layout:
    """Every random draw of the mosaic (or letterbox) + random perspective stage, in order, and the boxes through
    it; the pixels are left to ``_render`` (host) or the train step (``yolojax.ops.warp``). ``pool``: dataset
    indices the mosaic partners are drawn from (the loader passes the batch's own images, like Ultralytics' FIFO
    buffer of recently loaded images, so each image is decoded once) or None (the whole dataset); ``slot``: this
    sample's position in ``pool``; ``shape``: the (h, w) of a rectangular training batch (no mosaic), else S×S."""
    s = ds.imgsz
    out = (s, s) if shape is None else (int(shape[0]), int(shape[1]))
    if shape is None and mosaic and hyp["mosaic"] > 0 and rng.random() <= hyp["mosaic"]:
        if pool is None:
            picks = [(None, index), *((None, int(j)) for j in rng.integers(0, len(ds), 3))]
        else:
            picks = [(slot, index), *((int(j), int(pool[j])) for j in rng.integers(0, len(pool), 3))]
        loaded = [ds.load(i) for _, i in picks]
        rects = augment.mosaic_layout([im.shape[:2] for im, *_ in loaded], s, rng)
        tiles = [(pos, im, r) for (pos, _), (im, *_), r in zip(picks, loaded, rects)]
        boxes, cls = augment.mosaic_labels([(b, c) for _, b, c, _ in loaded], rects, s)
        kind, canvas_hw = "mosaic", (2 * s, 2 * s)
    else:
        img, boxes, cls, _ = ds.load(index)
        h, w = img.shape[:2]
        kind, canvas_hw, tiles = "plain", (h, w), [(slot, img, (0, 0, w, h, 0, 0, w, h))]
        if compat == "v8":  # v8-era: letterbox to the output first (scaleup allowed), then the affine with border 0
            r, (uw, uh), (left, top, _, _), dwh = augment.letterbox_geometry((h, w), out, scaleup=True)
            boxes = augment.letterbox_boxes(boxes, r, (left, top), dwh, compat)
            kind, canvas_hw, tiles = "letterbox", out, [(slot, img, (left, top, left + uw, top + uh, 0, 0, uw, uh))]
    M, k = augment.perspective_matrix(rng, canvas_hw, out, degrees=hyp["degrees"], translate=hyp["translate"],
                                      scale=hyp["scale"], shear=hyp["shear"], perspective=hyp["perspective"])
    boxes, cls = augment.warp_labels(boxes, cls, M, k, out, bool(hyp["perspective"]))
    return _Layout(tiles, kind, M, boxes, cls, out)


def _render(lay: _Layout, s: int, perspective: bool) -> np.ndarray:
    """The host's pixels of a layout: the mosaic drawn on a 4-channel canvas (OpenCV's bilinear warp runs ~2×
    faster on 4 channels, same first three) or the letterboxed image, then OpenCV's warp; BGR (h, w, 3), ``lay.out``."""
    if lay.kind == "mosaic":
        # one canvas per thread, reused (the warp below copies out of it); 4 channels: a faster warp
        img = _canvas.array = augment.draw_mosaic([im for _, im, _ in lay.tiles], [r for *_, r in lay.tiles], s,
                                                  out=getattr(_canvas, "array", None), alpha=True)
    elif lay.kind == "letterbox":
        img = augment.letterbox(lay.tiles[0][1], None, lay.out, scaleup=True)[0]
    else:
        img = lay.tiles[0][1]
    M, (h, w) = lay.M, lay.out
    if perspective:
        img = cv2.warpPerspective(img, M, dsize=(w, h), borderValue=(augment.PAD_VALUE,) * 3)
    elif img.shape[:2] != (h, w) or (M != np.eye(3)).any():
        img = cv2.warpAffine(img, M[:2], dsize=(w, h), borderValue=(augment.PAD_VALUE,) * 3)
    return cv2.cvtColor(img, cv2.COLOR_BGRA2BGR) if img.shape[2] == 4 else img


def _pre_transform(ds: DetectionDataset, index: int, rng: np.random.Generator, hyp: dict, mosaic: bool, compat: str,
                   pool=None, shape=None):
    """Mosaic (or the single image) + random perspective → (img BGR (S, S, 3) or ``shape``, boxes, classes)."""
    lay = _layout(ds, index, rng, hyp, mosaic, compat, pool, shape=shape)
    return _render(lay, ds.imgsz, bool(hyp["perspective"])), lay.boxes, lay.classes


def _warp_plan(lay: _Layout, s: int) -> np.ndarray:
    """A layout's tiles for ``yolojax.ops.warp.warp_tiles``: (4, 7) int32 rows ``(source, x1, y1, x2, y2, dx, dy)``
    (source: the position in the batch, whose decoded images the loader ships; -1: unused)."""
    tiles = np.full((4, 7), -1, np.int32)
    for t, (pos, im, (x1a, y1a, x2a, y2a, x1b, y1b, _, _)) in enumerate(lay.tiles):
        if lay.kind == "letterbox" and (x2a - x1a, y2a - y1a) != im.shape[1::-1]:
            raise ValueError(f"a {im.shape[1]}x{im.shape[0]} image is not {s} on its long side: the device warp "
                             "cannot resize it")
        tiles[t] = (pos, x1a, y1a, x2a, y2a, x1b - x1a, y1b - y1a)
    return tiles


def train_sample(ds: DetectionDataset, index: int, rng: np.random.Generator, hyp: dict, *, mosaic: bool = True,
                 compat: str = "v8", pool=None, hsv_on_device: bool = False, warp_slot: int | None = None,
                 shape: tuple[int, int] | None = None):
    """One augmented training sample (mosaic, or one image when ``mosaic=False``, then the random warp):
    (img RGB (S, S, 3) uint8, boxes (n, 4) float32 pixel xyxy, classes (n,) int32). ``hyp`` as returned by ``augment_hyp``; ``pool``: dataset indices that
    mosaic/mixup partners are drawn from (default: all).

    ``hsv_on_device``: leave the HSV jitter to the train step (``yolojax.ops.color.hsv_jitter``): returns
    (img BGR, boxes, classes, tables (3, 256) uint8 or None, to_rgb bool), the same random draws in the same order,
    so the step's ``hsv_jitter(img, tables, to_rgb)`` gives exactly the image this function returns otherwise.

    ``warp_slot``: leave the mosaic, the affine warp, the flips and the jitter to the train step
    (``yolojax.ops.warp.warp_tiles``, then ``hsv_jitter``): ``pool`` is then the batch (whose images the loader
    ships) and ``warp_slot`` this sample's position in it. Returns ((tiles (4, 7), cols (2, S), rows (2, S)), boxes,
    classes, tables, to_rgb), the same draws and boxes; no mixup, no perspective (the loader checks).

    ``shape``: rectangular training (``rect=True``): no mosaic, the image goes into this (h, w) (the batch's
    ``rect_shape``) instead of S×S."""
    if warp_slot is not None:
        if (mosaic and hyp["mixup"] > 0) or hyp["perspective"] or pool is None or shape is not None:
            raise ValueError("the device warp needs mixup=0, perspective=0, square batches and the batch as the "
                             "partner pool")
        lay = _layout(ds, index, rng, hyp, mosaic, compat, pool, warp_slot)
        boxes, cls = lay.boxes, lay.classes
    else:
        img, boxes, cls = _pre_transform(ds, index, rng, hyp, mosaic, compat, pool, shape)
    if shape is None and mosaic and hyp["mixup"] > 0 and rng.random() <= hyp["mixup"]:
        partner = int(rng.integers(0, len(ds))) if pool is None else int(pool[rng.integers(0, len(pool))])
        other = _pre_transform(ds, partner, rng, hyp, mosaic, compat, pool)
        img, boxes, cls = augment.mixup((img, boxes, cls), other, rng)
    # HSV jitter (BGR in) converts to RGB on its way back, unless the `bgr` coin keeps BGR (as Ultralytics' Format); the coin
    # is drawn after the flips in Ultralytics, but its order among independent draws does not change the outcome.
    # The flips commute with the per-pixel jitter, so applying it after them (on the device) changes nothing.
    keep_bgr = bool(hyp["bgr"]) and rng.random() < hyp["bgr"]
    tables = augment.hsv_tables(rng, hyp["hsv_h"], hyp["hsv_s"], hyp["hsv_v"], compat=compat)
    if warp_slot is not None:
        s = ds.imgsz
        ud, lr = augment.flip_draws(rng, hyp["flipud"], hyp["fliplr"])
        boxes = augment.flip_boxes(boxes, (s, s), ud, lr)
        cols, rows = augment.affine_coordinates(lay.M[:2], (s, s), flip_lr=lr, flip_ud=ud)
        return (_warp_plan(lay, s), cols, rows), boxes, cls.astype(np.int32), tables, not keep_bgr
    if not hsv_on_device:
        img = augment.apply_hsv_tables(img, tables, to_rgb=not keep_bgr)
    img, boxes = augment.random_flip(img, boxes, rng, hyp["flipud"], hyp["fliplr"])
    if hsv_on_device:
        return img, boxes.astype(np.float32), cls.astype(np.int32), tables, not keep_bgr
    return img, boxes.astype(np.float32), cls.astype(np.int32)


def val_sample(ds: DetectionDataset, index: int, shape: tuple[int, int], *, compat: str = "v8"):
    """Validation letterbox into ``shape`` (h, w) without upscaling.

    Returns (img RGB (h, w, 3) uint8, boxes (n, 4) pixel xyxy in that image, classes (n,), ratio_pad (2, 2) float64
    ``((ratio_h, ratio_w), (pad_left, pad_top))`` as Ultralytics' ``ratio_pad``, ori_shape (h0, w0)).
    """
    img, boxes, cls, (h0, w0) = ds.load(index)
    h, w = img.shape[:2]
    img, boxes, r, (left, top), _ = augment.letterbox(img, boxes, tuple(shape), scaleup=False, compat=compat)
    ratio = (h / h0 * r, w / w0 * r) if compat == "current" else (h / h0, w / w0)
    ratio_pad = np.array([ratio, (left, top)], np.float64)
    return np.ascontiguousarray(img[..., ::-1]), boxes.astype(np.float32), cls, ratio_pad, (h0, w0)


