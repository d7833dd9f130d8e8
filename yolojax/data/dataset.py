"""A verified detection dataset with random access, plus the per-sample train/val pipelines.

``DetectionDataset.from_config(data, split="train", imgsz=640, ...)`` lists the split's images, verifies them and their
labels (cached), and exposes ``len``, ``load(i) -> (img BGR (h, w, 3) long side = imgsz, boxes (n, 4) pixel xyxy,
classes (n,), (h0, w0))`` and optionally keeps resized images in RAM (``cache="ram"``) or decoded images on disk beside
them (``cache="disk"``, ``yolojax.data.npy_cache``). For ``tfds:`` data it returns a ``TfdsDetectionDataset``, whose
images are records of a TensorFlow Datasets split (``yolojax.data.tfds`` reads them).

``val_sample(ds, index, shape, compat)`` is the validation letterbox of one image; the training pipeline of one
sample is ``yolojax.augment.train_sample``.
"""
from __future__ import annotations

import collections
import dataclasses
from typing import Any

import cv2
import numpy as np

from yolojax.augment import host
from yolojax.data.dataset_yaml import DatasetError, check_dataset, list_images
from yolojax.data.labels import LabelSet, load_labels, select_classes
from yolojax.data.npy_cache import prepare_disk_cache, read_cached
from yolojax.data.tfds import decode_image, open_split_source, scan_records


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
            ds.disk_cache = prepare_disk_cache(ds.im_files, compat=compat, prefix=prefix, verbose=verbose)
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
        return host.resize_long_side(img, self.imgsz)

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


@dataclasses.dataclass
class TfdsDetectionDataset(DetectionDataset):
    """A ``DetectionDataset`` whose images are records of a tfds split, decoded on demand (``yolojax.data.tfds``).

    ``im_files[i]`` is the record's ``image/filename`` (COCO: ``000000397133.jpg``, so the stem is the image id),
    ``record_ids[i]`` its index in ``source`` (records that fail verification are left out).
    """

    source: Any = None
    record_ids: np.ndarray | None = None

    @classmethod
    def from_checked(cls, info: dict, split: str = "train", *, imgsz: int = 640, single_cls: bool = False,
                     fraction: float = 1.0, cache=None, verbose: bool = True,
                     classes=None) -> "TfdsDetectionDataset":
        """Build from ``check_tfds_dataset``'s dict (what ``DetectionDataset.from_config`` routes here)."""
        source, where = open_split_source(info, split)
        return cls.from_source(source, info["names"], where=where, imgsz=imgsz, single_cls=single_cls,
                               fraction=fraction if split == "train" else 1.0, cache=cache,
                               prefix=f"{split}: ", verbose=verbose, classes=classes)

    @classmethod
    def from_source(cls, source, names: dict[int, str], *, where: str, imgsz: int = 640, single_cls: bool = False,
                    fraction: float = 1.0, cache=None, prefix: str = "", verbose: bool = True, classes=None):
        """Read every record's labels and image size once from a random-access tfds source (image not decoded);
        ``classes`` and ``single_cls`` select and merge classes as for label files (``labels.select_classes``)."""
        files, shapes, labels, ids = scan_records(source, len(names), where=where, fraction=fraction, prefix=prefix,
                                                  verbose=verbose)
        ds = cls(files, shapes, select_classes(labels, classes, single_cls), dict(names), int(imgsz),
                 source=source, record_ids=ids)
        if cache in (True, "ram"):
            ds.ram_cache = [ds._read(i) for i in range(len(ds))]
        elif cache not in (None, False, "", "False"):
            raise DatasetError(f"cache={cache!r} is not supported: use cache='ram' or no cache.")
        return ds

    def _read(self, i: int) -> np.ndarray:
        """Decode record ``i`` to BGR uint8 (h, w, 3), long side resized to ``imgsz`` (as ``DetectionDataset``)."""
        img = decode_image(self.source[int(self.record_ids[i])]["image"])
        if img is None:
            raise DatasetError(f"{self.im_files[i]} (tfds record {int(self.record_ids[i])}): OpenCV could not decode "
                               "this image. Re-prepare the dataset (tfds build --overwrite).")
        return host.resize_long_side(img, self.imgsz)


def val_sample(ds: DetectionDataset, index: int, shape: tuple[int, int], *, compat: str = "v8"):
    """Validation letterbox into ``shape`` (h, w) without upscaling.

    Returns (img RGB (h, w, 3) uint8, boxes (n, 4) pixel xyxy in that image, classes (n,), ratio_pad (2, 2) float64
    ``((ratio_h, ratio_w), (pad_left, pad_top))`` as Ultralytics' ``ratio_pad``, ori_shape (h0, w0)).
    """
    img, boxes, cls, (h0, w0) = ds.load(index)
    h, w = img.shape[:2]
    img, boxes, r, (left, top), _ = host.letterbox(img, boxes, tuple(shape), scaleup=False, compat=compat)
    ratio = (h / h0 * r, w / w0 * r) if compat == "current" else (h / h0, w / w0)
    ratio_pad = np.array([ratio, (left, top)], np.float64)
    return np.ascontiguousarray(img[..., ::-1]), boxes.astype(np.float32), cls, ratio_pad, (h0, w0)


