"""TensorFlow Datasets as detection datasets: ``data="tfds:coco/2017"``, ``"tfds:voc/2007"``.

    check_dataset("tfds:voc/2007")            # -> the usual checked dict, plus "tfds": {"name", "data_dir"}
    DetectionDataset.from_config("tfds:coco/2017", "val", imgsz=640)   # -> yolojax.data.dataset.TfdsDetectionDataset

Data string: ``tfds:NAME[/CONFIG][:VERSION][:TRAIN[,VAL]]`` where TRAIN/VAL are tfds split expressions (``train``,
``train+validation``, ``train[:10%]``...). Default splits (what the trainer's ``train``/``val`` roles read):

* ``coco/*``: train → ``train``, val → ``validation`` (tfds' ``test`` split of COCO has no boxes).
* ``voc/2007``: train → ``train+validation``, val → ``test``: Ultralytics' VOC.yaml validates on VOC2007 test and
  trains on the trainval sets (it adds VOC2012 trainval too; ask for ``tfds:voc/2007:train+validation`` and merge
  by hand if you want that).
* ``voc/2012`` and anything else: train → ``train``, val → ``validation`` (else ``test``).

Boxes: tfds stores normalised ``(ymin, xmin, ymax, xmax)``; we store ``class, x, y, w, h`` normalised like YOLO
labels. Objects flagged ``is_crowd`` (COCO) or ``is_difficult`` (VOC) are dropped, as Ultralytics' COCO/VOC label
converters do. Class names come from the ``objects/label`` ``ClassLabel`` feature.

Random access: the split is read through ``builder.as_data_source`` (ArrayRecord; no TensorFlow needed to *read*)
with the image left encoded; the metadata pass (``scan_records``) reads every record once (labels + image size from
the header), and ``decode_image`` decodes one image on demand with OpenCV into BGR uint8, which
``TfdsDetectionDataset`` resizes like any ``DetectionDataset`` image, so the same augmentation and validation
pipelines apply. EXIF orientation is ignored on decode because the boxes refer to
the stored pixel grid. The data source pickles (reopens its files) for Grain worker processes.

Preparing: a dataset not yet prepared in the tfds data dir (``$TFDS_DATA_DIR``, default ``~/tensorflow_datasets``)
is downloaded and prepared in ArrayRecord format when ``autodownload`` (this needs TensorFlow: the ``tfds`` extra).
A dataset prepared earlier as TFRecord only cannot be read randomly: the error says how to convert it. Without
TensorFlow the stock COCO builder cannot even be constructed; an already prepared dataset is then read from its
files (``tfds.builder_from_directory``).
"""
from __future__ import annotations

import io

import cv2
import numpy as np
from PIL import Image

from yolojax.data.errors import DatasetError
# The data-string and builder half lives in tfds_builder (check_dataset imports it without the record reading);
# its public names stay importable from here.
from yolojax.data.tfds_builder import (INSTALL_HINT, PREFIX, TfdsSpec, check_tfds_dataset,  # noqa: F401
                                       default_splits, import_tfds, open_builder, parse_spec)

# Per-object boolean flags whose boxes Ultralytics' converters leave out of the labels.
DROP_FLAGS = ("is_crowd", "is_difficult")


def _image_hw(image) -> tuple[int, int]:
    """(h, w) of an encoded image from its header (PIL reads no pixels), or of an already decoded array."""
    if isinstance(image, np.ndarray) and image.ndim >= 2 and image.dtype != object:
        return int(image.shape[0]), int(image.shape[1])

    with Image.open(io.BytesIO(bytes(image))) as im:
        w, h = im.size
    return int(h), int(w)


def example_labels(objects: dict, nc: int) -> np.ndarray:
    """tfds ``objects`` → (n, 5) float32 ``class, x, y, w, h`` (normalised); crowd/difficult objects dropped.

    Raises ValueError for inconsistent lengths, non-finite or out-of-[0, 1] boxes, or class ids outside [0, nc).
    """
    bbox = np.asarray(objects.get("bbox", np.zeros((0, 4))), np.float32).reshape(-1, 4)
    cls = np.asarray(objects.get("label", np.zeros((0,))), np.int64).reshape(-1)
    if len(cls) != len(bbox):
        raise ValueError(f"{len(bbox)} boxes but {len(cls)} labels")
    keep = np.ones(len(bbox), bool)
    for flag in DROP_FLAGS:
        if flag in objects:
            f = np.asarray(objects[flag], bool).reshape(-1)
            if len(f) != len(bbox):
                raise ValueError(f"{len(bbox)} boxes but {len(f)} '{flag}' flags")
            keep &= ~f
    bbox, cls = bbox[keep], cls[keep]
    if not np.isfinite(bbox).all() or (bbox < 0).any() or (bbox > 1).any():
        raise ValueError("box coordinates outside [0, 1]")
    if ((bbox[:, 2] < bbox[:, 0]) | (bbox[:, 3] < bbox[:, 1])).any():
        raise ValueError("box with ymax < ymin or xmax < xmin")
    if len(cls) and (cls.min() < 0 or cls.max() >= nc):
        raise ValueError(f"class id {int(cls.max() if cls.max() >= nc else cls.min())} outside [0, {nc})")
    ymin, xmin, ymax, xmax = bbox.T
    rows = np.stack([cls.astype(np.float32), (xmin + xmax) / 2, (ymin + ymax) / 2, xmax - xmin, ymax - ymin], 1)
    return rows.astype(np.float32).reshape(-1, 5)


def _text(v) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


def open_split_source(info: dict, split: str):
    """(random-access source, its name for messages) of the ``split`` role (train / val / test) of
    ``check_tfds_dataset``'s dict; images are left encoded. DatasetError for a missing split or a dataset prepared
    as TFRecord only."""
    if not info.get(split):
        raise DatasetError(f"data='tfds:{info['tfds']['name']}' has no '{split}' split.")
    name, expr = info["tfds"]["name"], info[split][0]
    tfds = import_tfds()
    builder = open_builder(name, data_dir=info["tfds"]["data_dir"], autodownload=False)
    where = f"tfds:{name} split '{expr}'"
    try:
        source = builder.as_data_source(expr, decoders={"image": tfds.decode.SkipDecoding()})
    except NotImplementedError as e:  # prepared as TFRecord only
        raise DatasetError(f"{where}: random access needs the ArrayRecord format but {builder.data_dir} holds "
                           f"{builder.info.file_format} files. Convert it once with `tfds convert_format "
                           f"--dataset_dir={builder.data_dir} --out_file_format=array_record` (or rebuild with "
                           f"`tfds build {name} --file_format=array_record`).") from e
    except (ValueError, KeyError) as e:
        raise DatasetError(f"{where}: {e}. Available splits: {', '.join(builder.info.splits)}.") from e
    return source, where


def scan_records(source, nc: int, *, where: str, fraction: float = 1.0, prefix: str = "", verbose: bool = True):
    """Every record's labels and image size, read once (image not decoded): (file names, shapes (N, 2) int64 (h, w),
    labels [(n, 5) float32 ``class, x, y, w, h``], record ids (N,) int64). ``fraction`` < 1 reads the first part;
    corrupt records are reported and left out, duplicate label rows removed; DatasetError when none is valid."""
    n = len(source)
    if fraction < 1.0:
        n = max(1, round(n * fraction))
    files, shapes, labels, ids, msgs = [], [], [], [], []
    backgrounds = corrupt = 0
    for i in range(n):
        ex = source[i]
        fname = _text(ex.get("image/filename", f"{where}[{i}]"))
        try:
            lb = example_labels(ex.get("objects", {}), nc)
            h, w = _image_hw(ex["image"])
        except Exception as e:  # noqa: BLE001 - any unreadable record is reported and skipped
            msgs.append(f"{where} record {i} ({fname}): ignoring corrupt example: {e}")
            corrupt += 1
            continue
        if len(lb):
            uniq = np.unique(lb, axis=0)
            if len(uniq) < len(lb):
                msgs.append(f"{where} record {i} ({fname}): {len(lb) - len(uniq)} duplicate labels removed")
                lb = uniq
        else:
            backgrounds += 1
        files.append(fname), shapes.append((h, w)), labels.append(lb), ids.append(i)
    if verbose:
        print(f"{prefix}Reading {where}... {n} images, {backgrounds} backgrounds, {corrupt} corrupt")
        for m in msgs[:20]:
            print(f"{prefix}WARNING {m}")
    if not files:
        raise DatasetError(f"{where}: no valid examples among {n}: {'; '.join(msgs[:3]) or 'empty split'}.")
    return files, np.asarray(shapes, np.int64).reshape(-1, 2), labels, np.asarray(ids, np.int64)


def decode_image(image) -> np.ndarray | None:
    """A record's image (encoded bytes, or an already decoded RGB array) -> BGR uint8 (h, w, 3) in its stored pixel
    grid (EXIF orientation ignored: the boxes refer to that grid); None when OpenCV cannot decode it."""
    if isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3:
        return np.ascontiguousarray(image[..., ::-1])
    return cv2.imdecode(np.frombuffer(bytes(image), np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
