"""``cache='disk'``: each decoded image saved beside it as ``<image stem>.npy`` and read from there on later runs.

The file holds OpenCV's decode of the original image (BGR uint8, full size; the resize to ``imgsz`` happens at load
time, as for an image file), saved without pickles (``allow_pickle=False``) and written atomically (temp file +
``os.replace``), so a run killed while caching leaves no half-written ``.npy``. Ultralytics' names and rules: an
existing ``.npy`` is reused as it is (v8); ``compat="current"`` rewrites one older than its image. A folder that is not
writable, or a disk without room for the cache (estimated from up to 30 images, plus a safety margin), gives a
warning and the dataset reads its image files instead. A ``.npy`` that cannot be read is removed (warning) and the
image file is read.
"""
from __future__ import annotations

import concurrent.futures
import os
import pathlib
import random
import shutil
import tempfile
import warnings
from typing import Sequence

import cv2
import numpy as np

SAFETY_MARGIN = 0.5  # free disk space required beyond the estimated cache size (8.2.103)
_SAMPLE = 30  # images decoded to estimate the cache size


def npy_path(im_file: str | os.PathLike) -> pathlib.Path:
    """``images/a/b.jpg`` -> ``images/a/b.npy`` (Ultralytics' name: existing caches are shared with it)."""
    return pathlib.Path(im_file).with_suffix(".npy")


def disk_cache_possible(im_files: Sequence[str], *, prefix: str = "", seed: int = 0, stacklevel: int = 3) -> bool:
    """Whether every image folder is writable and the disk has room for the cache (else a warning and False)."""
    for folder in sorted({os.path.dirname(os.path.abspath(f)) for f in im_files}):
        if not os.access(folder, os.W_OK):
            warnings.warn(f"{prefix}cache='disk': {folder} is not writable, so the decoded images cannot be saved "
                          "beside it; reading the image files instead (use cache='ram' to cache in memory).",
                          stacklevel=stacklevel)
            return False
    sample = random.Random(seed).sample(list(im_files), min(len(im_files), _SAMPLE))
    sizes = [im.nbytes for im in (cv2.imread(f, cv2.IMREAD_COLOR) for f in sample) if im is not None]
    if not sizes:
        return True
    need = sum(sizes) / len(sizes) * len(im_files) * (1 + SAFETY_MARGIN)
    total, _, free = shutil.disk_usage(os.path.dirname(os.path.abspath(im_files[0])))
    if need > free:
        gb = 1 << 30
        warnings.warn(f"{prefix}cache='disk' needs {need / gb:.1f} GB (with a {SAFETY_MARGIN:.0%} margin) but only "
                      f"{free / gb:.1f} of {total / gb:.1f} GB are free; reading the image files instead.",
                      stacklevel=stacklevel)
        return False
    return True


def _stale(im_file: str, npy: pathlib.Path, compat: str) -> bool:
    if not npy.exists():
        return True
    return compat == "current" and npy.stat().st_mtime < os.stat(im_file).st_mtime


def _save(im_file: str, npy: pathlib.Path) -> int:
    """Decode ``im_file`` into ``npy`` atomically; bytes written (0 if the image or the write failed, with a warning
    for the write: the image file is read instead)."""
    img = cv2.imread(im_file, cv2.IMREAD_COLOR)
    if img is None:
        return 0
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{npy.stem}.", suffix=".npy.tmp", dir=npy.parent)
        with os.fdopen(fd, "wb") as f:
            np.save(f, img, allow_pickle=False)
        os.replace(tmp, npy)
        return img.nbytes
    except OSError as e:
        warnings.warn(f"cache='disk': {npy} not written ({e}); this image is read from {im_file}.", stacklevel=2)
        return 0
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def write_disk_cache(im_files: Sequence[str], *, compat: str = "v8", threads: int | None = None) -> int:
    """Save the ``.npy`` of every image that has none (current: or an older one); returns the bytes written."""
    todo = [(f, npy_path(f)) for f in im_files]
    todo = [(f, n) for f, n in todo if _stale(f, n, compat)]
    if not todo:
        return 0
    threads = threads or min(8, os.cpu_count() or 1)
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:  # decoding and writing release the GIL
        return sum(pool.map(lambda fn: _save(*fn), todo))


def prepare_disk_cache(im_files: Sequence[str], *, compat: str = "v8", prefix: str = "", verbose: bool = True) -> bool:
    """``cache='disk'`` for a dataset of ``im_files``: the missing (current: stale) ``.npy`` files written and one
    line saying so; returns whether the dataset reads its images from them (False, with a warning, where the
    folders are not writable or the disk lacks room)."""
    if not im_files or not disk_cache_possible(im_files, prefix=prefix, stacklevel=4):
        return False
    written = write_disk_cache(im_files, compat=compat)
    if verbose:
        print(f"{prefix}Caching images ({written / (1 << 30):.1f}GB Disk): {len(im_files)} .npy files beside the "
              "images")
    return True


def read_cached(im_file: str) -> np.ndarray | None:
    """The decoded image from ``im_file``'s ``.npy`` (BGR uint8), or None when there is none. An unreadable one is
    removed with a warning (the caller reads the image file)."""
    npy = npy_path(im_file)
    try:
        img = np.load(npy, allow_pickle=False)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        warnings.warn(f"cache='disk': removing the unreadable {npy} ({e}); reading {im_file} instead.", stacklevel=3)
        npy.unlink(missing_ok=True)
        return None
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        warnings.warn(f"cache='disk': removing {npy}, which holds a {img.dtype} {img.shape} array, not a BGR image; "
                      f"reading {im_file} instead.", stacklevel=3)
        npy.unlink(missing_ok=True)
        return None
    return img
