"""Image/label verification and the label cache.

``load_labels(image_files, nc, *, single_cls=False, classes=None, compat="v8", prefix="") -> LabelSet``

Each image is checked (opens, ≥ 10 px both sides, known format); each label line must have 5 finite fields
(``class x y w h``; a row of more than 6 values is a polygon ``class x1 y1 x2 y2 ...`` whose box is its extent), an
integer class id in ``[0, nc)`` and coordinates in [0, 1] (v8-era rule; ``compat="current"`` allows Ultralytics' 1 %
tolerance and clips). A failing image is dropped and counted as corrupt with a message naming the file and line
("nothing is lost": the message stays in the cache and is printed). Duplicate rows are removed with a warning.
Missing or empty label files are backgrounds.

Class ids: Ultralytics 8.2 accepted ``class == nc`` (an off-by-one, ``max_cls <= nc``), which later crashes or trains a
phantom class; we require ``class < nc`` in both compat modes.

The cache is ``labels/<split>.cache`` next to the labels folder: an ``.npz`` written with ``allow_pickle=False``
(never an executable pickle), keyed on a SHA-256 of every image/label path with its size and mtime plus the scan
settings, written atomically (temp file + ``os.replace``) and rebuilt when stale or unreadable. If the folder is not
writable the labels are used without a cache (warning). The dataset folder is never otherwise modified (a truncated
JPEG is reported, not re-saved as Ultralytics does).
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import math
import os
import pathlib
import tempfile
import warnings
from typing import Sequence

import numpy as np
from PIL import Image

from yolojax.data.dataset_yaml import img2label_path, img_formats
from yolojax.data.errors import DatasetError

CACHE_VERSION = "yolojax-labels-1"
MAX_PRINTED_MSGS = 20


@dataclasses.dataclass
class LabelSet:
    """Verified images and their labels. ``labels[i]`` is (n, 5) float32 rows ``class, x, y, w, h`` (normalised)."""

    im_files: list[str]
    shapes: np.ndarray  # (N, 2) int: original (h, w), EXIF-orientation corrected
    labels: list[np.ndarray]
    msgs: list[str]
    counts: dict  # found, missing, empty, corrupt, total
    cache_path: pathlib.Path | None = None

    def __len__(self) -> int:
        return len(self.im_files)

    def summary(self) -> str:
        c = self.counts
        return (f"{c['found'] + c['missing'] + c['empty']} images, {c['missing'] + c['empty']} backgrounds, "
                f"{c['corrupt']} corrupt")


def _exif_size(im: Image.Image) -> tuple[int, int]:
    """(w, h) after applying the EXIF orientation (what OpenCV's imread returns)."""
    w, h = im.size
    try:
        if im.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # rotated by 90 or 270 degrees
            return h, w
    except Exception:  # broken EXIF: keep the stored size
        pass
    return w, h


def _parse_label(lb_file: str, nc: int, compat: str) -> tuple[np.ndarray, list[str]]:
    """Rows (n, 5) float32 or a DatasetError naming file and line. Also returns warnings."""
    rows, lines = [], []
    with open(lb_file, encoding="utf-8") as f:
        text = f.read()
    tol = 0.01 if compat == "current" else 0.0
    for ln, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        where = f"{lb_file}:{ln}"
        try:
            vals = [float(p) for p in parts]
        except ValueError:
            raise DatasetError(f"{where}: non-numeric field in '{line.strip()}' (expected 'class x y w h').") from None
        if not all(math.isfinite(v) for v in vals):
            raise DatasetError(f"{where}: non-finite value in '{line.strip()}'.")
        if len(vals) > 6:  # polygon: class x1 y1 x2 y2 ...
            if len(vals) % 2 == 0:
                raise DatasetError(f"{where}: polygon row has an odd number of coordinates ({len(vals) - 1}).")
            xy = np.asarray(vals[1:], np.float32).reshape(-1, 2)
            coords = xy.ravel()
            x0, y0 = xy.min(0)
            x1, y1 = xy.max(0)
            box = [(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0]
        elif len(vals) == 5:
            coords = np.asarray(vals[1:], np.float32)
            box = vals[1:]
        else:
            raise DatasetError(f"{where}: {len(vals)} fields, expected 5 ('class x_center y_center width height', "
                               "normalised) or a polygon 'class x1 y1 x2 y2 ...'.")
        cls = vals[0]
        if cls != int(cls) or cls < 0 or cls >= nc:
            raise DatasetError(f"{where}: class id {parts[0]} is not an integer in [0, {nc - 1}] (the data YAML has "
                               f"{nc} names). Fix the label or the 'names' list.")
        if coords.min() < -tol or coords.max() > 1 + tol or (len(vals) == 5 and min(box[2:]) < 0):
            raise DatasetError(f"{where}: non-normalized or out of bounds coordinates {' '.join(parts[1:])} "
                               "(must lie in [0, 1]: pixel values divided by image width/height)")
        rows.append([cls, *box])
        lines.append(ln)
    lb = np.asarray(rows, np.float32).reshape(-1, 5)
    if tol:
        lb[:, 1:] = np.clip(lb[:, 1:], 0, 1)
    msgs = []
    if len(lb):
        uniq = np.unique(lb, axis=0)  # sorted rows, as Ultralytics returns them when duplicates exist
        if len(uniq) < len(lb):
            msgs.append(f"{lb_file}: {len(lb) - len(uniq)} duplicate labels removed")
            lb = uniq
    return lb, msgs


def check_image(im_file: str, compat: str = "v8") -> tuple[tuple[int, int], str]:
    """``((h, w), format)`` of an image that opens, has a known format and both sides at least 10 px (EXIF
    orientation applied); otherwise raises (DatasetError, or the decoder's own exception) saying why."""
    with Image.open(im_file) as im:
        im.verify()
        fmt = (im.format or "").lower()
    with Image.open(im_file) as im:
        w, h = _exif_size(im)
    if fmt not in img_formats(compat):
        raise DatasetError(f"unsupported image format '{fmt}'")
    if w < 10 or h < 10:
        raise DatasetError(f"image size {w}x{h} is smaller than 10 px")
    return (h, w), fmt


def verify_image_label(im_file: str, nc: int, compat: str = "v8"):
    """Check one image and its label file. Returns (im_file, shape, labels, status, msgs)."""
    msgs: list[str] = []
    try:
        (h, w), fmt = check_image(im_file, compat)
        if fmt == "jpeg":
            with open(im_file, "rb") as f:
                f.seek(-2, 2)
                if f.read() != b"\xff\xd9":
                    msgs.append(f"{im_file}: truncated JPEG (no end marker); used as is, decoded by OpenCV")
    except Exception as e:
        return im_file, None, None, "corrupt", [f"{im_file}: ignoring corrupt image: {e}"]
    lb_file = os.fspath(img2label_path(im_file))
    if not os.path.isfile(lb_file):
        return im_file, (h, w), np.zeros((0, 5), np.float32), "missing", msgs
    try:
        lb, m = _parse_label(lb_file, nc, compat)
    except (DatasetError, OSError, UnicodeDecodeError) as e:
        return im_file, None, None, "corrupt", msgs + [f"{im_file}: ignoring image, bad label: {e}"]
    return im_file, (h, w), lb, ("found" if len(lb) else "empty"), msgs + m


def stat_fingerprint(paths, salt: str) -> str:
    """A cache key: SHA-256 of ``salt`` and each path's size and modification time (or that it is missing), so a
    cache is reused only while none of ``paths`` changed."""
    h = hashlib.sha256(salt.encode())
    for p in paths:
        try:
            st = os.stat(p)
            h.update(f"{p}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{p}|missing\n".encode())
    return h.hexdigest()


def _hash(files: Sequence[str], nc: int, compat: str) -> str:
    paths = (p for f in files for p in (f, os.fspath(img2label_path(f))))
    return stat_fingerprint(paths, f"{CACHE_VERSION}|nc={nc}|compat={compat}")


def cache_path_for(image_files: Sequence[str | os.PathLike]) -> pathlib.Path:
    return img2label_path(image_files[0]).parent.with_suffix(".cache")


def read_npz_cache(path: pathlib.Path, version: str, key: str) -> dict[str, np.ndarray] | None:
    """The arrays ``write_npz_cache`` stored in ``path`` for ``version`` and ``key``; None when the file is missing,
    stale, unreadable, truncated or another program's (the caller rebuilds what it caches)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["version"]) != version or str(z["hash"]) != key:
                return None
            return {k: z[k] for k in z.files}
    except Exception:  # noqa: BLE001 - any unreadable file is a cache miss
        return None


def write_npz_cache(path: pathlib.Path, version: str, key: str, arrays: dict[str, np.ndarray], *, what: str,
                    without: str) -> bool:
    """Store ``arrays`` (no object arrays) with ``version`` and ``key`` in ``path`` atomically (temp file, then
    rename); True when written. When the folder or file is not writable: a warning naming ``what`` and saying what
    running ``without`` it costs, and False."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        warnings.warn(f"{what} not written: {path.parent} is not writable ({e}); {without}.", stacklevel=4)
        return False
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, version=np.array(version), hash=np.array(key), **arrays)
        os.replace(tmp, path)
        return True
    except OSError as e:
        warnings.warn(f"{what} not written to {path} ({e}); {without}.", stacklevel=4)
        return False
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _read_cache(path: pathlib.Path, key: str) -> LabelSet | None:
    z = read_npz_cache(path, CACHE_VERSION, key)
    if z is None:
        return None
    offsets, rows = z["offsets"], z["rows"]
    labels = [rows[offsets[i]:offsets[i + 1]].copy() for i in range(len(offsets) - 1)]
    counts = dict(zip(("found", "missing", "empty", "corrupt", "total"), map(int, z["counts"])))
    return LabelSet([str(s) for s in z["im_files"]], z["shapes"].astype(np.int64), labels, [str(s) for s in z["msgs"]],
                    counts, path)


def _write_cache(path: pathlib.Path, key: str, ls: LabelSet) -> bool:
    offsets = np.cumsum([0] + [len(lb) for lb in ls.labels]).astype(np.int64)
    rows = np.concatenate(ls.labels, 0) if ls.labels else np.zeros((0, 5), np.float32)
    counts = np.array([ls.counts[k] for k in ("found", "missing", "empty", "corrupt", "total")], np.int64)
    arrays = {"im_files": np.array(ls.im_files, dtype=str), "shapes": ls.shapes.astype(np.int64), "rows": rows,
              "offsets": offsets, "msgs": np.array(ls.msgs, dtype=str), "counts": counts}
    return write_npz_cache(path, CACHE_VERSION, key, arrays, what="Label cache",
                           without="labels are re-scanned on each run, nothing else is affected")


def scan(image_files: Sequence[str | os.PathLike], nc: int, *, compat: str = "v8",
         threads: int | None = None) -> LabelSet:
    files = [os.fspath(f) for f in image_files]
    threads = threads or min(8, max(1, os.cpu_count() or 1) * 2)
    counts = {"found": 0, "missing": 0, "empty": 0, "corrupt": 0, "total": len(files)}
    keep_f, keep_s, keep_l, msgs = [], [], [], []
    with concurrent.futures.ThreadPoolExecutor(threads) as ex:
        for im_file, shape, lb, status, m in ex.map(lambda f: verify_image_label(f, nc, compat), files):
            counts[status] += 1
            msgs += m
            if status != "corrupt":
                keep_f.append(im_file)
                keep_s.append(shape)
                keep_l.append(lb)
    shapes = np.asarray(keep_s, np.int64).reshape(-1, 2)
    return LabelSet(keep_f, shapes, keep_l, msgs, counts)


def select_classes(labels: Sequence[np.ndarray], classes: Sequence[int] | None = None,
                   single_cls: bool = False) -> list[np.ndarray]:
    """Ultralytics' label selection: keep the rows whose class id is in ``classes`` (None keeps all; an image left
    without rows stays, as a background), then with ``single_cls`` make every class 0. Rows as ``LabelSet.labels``."""
    out = list(labels)
    if classes is not None:
        keep = np.asarray(list(classes), np.float32)
        out = [lb[np.isin(lb[:, 0], keep)] for lb in out]
    if single_cls:
        out = [np.concatenate([np.zeros_like(lb[:, :1]), lb[:, 1:]], 1) for lb in out]
    return out


def load_labels(image_files: Sequence[str | os.PathLike], nc: int, *, single_cls: bool = False,
                classes: Sequence[int] | None = None, compat: str = "v8", prefix: str = "", use_cache: bool = True,
                verbose: bool = True) -> LabelSet:
    """Verified labels for ``image_files`` (see module docstring), from the cache when it is fresh; ``classes`` and
    ``single_cls`` then select and merge classes (:func:`select_classes`)."""
    if not image_files:
        raise DatasetError(f"{prefix}no image files given.")
    files = [os.fspath(f) for f in image_files]
    key = _hash(files, nc, compat)
    path = cache_path_for(files)
    ls = _read_cache(path, key) if use_cache and path.exists() else None
    from_cache = ls is not None
    if ls is None:
        ls = scan(files, nc, compat=compat)
        if use_cache and _write_cache(path, key, ls):
            ls.cache_path = path
    if verbose:
        src = f"cache {path}" if from_cache else f"{path.parent}"
        print(f"{prefix}Scanning {src}... {ls.summary()}")
        for m in ls.msgs[:MAX_PRINTED_MSGS]:
            print(f"{prefix}WARNING {m}")
        if len(ls.msgs) > MAX_PRINTED_MSGS:
            print(f"{prefix}WARNING ... and {len(ls.msgs) - MAX_PRINTED_MSGS} more (all kept in {path})")
    if not ls.im_files:
        raise DatasetError(f"{prefix}no valid images among {len(files)} files under {path.parent.parent}: "
                           f"{'; '.join(ls.msgs[:3]) or 'see warnings'}. Fix the dataset and retry.")
    ls.labels = select_classes(ls.labels, classes, single_cls)
    return ls
