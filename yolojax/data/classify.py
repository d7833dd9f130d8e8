"""Classification datasets: folder layout, download by name, verified sample index (Ultralytics 8.2 semantics).

``check_cls_dataset(data, *, autodownload=True) -> dict`` resolves ``data`` to a dataset folder and returns::

    {"path": Path root, "train": Path, "val": Path, "test": Path, "nc": int, "names": {int: str}}

(a dict, i.e. an already-resolved dataset, is returned as a copy; ``tfds:NAME`` strings are checked by
``yolojax.data.classify_tfds``, whose dict holds split expressions instead of folders).

``data`` may be a folder (``root/train/<class>/*``, ``root/val/<class>/*``, optional ``root/test/<class>/*``), a
relative folder name under the datasets dir (``$YOLOJAX_DATASETS_DIR``, default ``./datasets``), an http(s) ``.zip``
URL or a local ``.zip`` (extracted into the datasets dir), ``shapes-cls`` (the synthetic set of six shape classes,
generated on first use; ``shapes``, the default ``data``, names it too for a classification run) or a
bare name that Ultralytics publishes in its release assets (``imagenette160``, ``mnist160``, ``cifar10`` ...): a name
whose folder is missing is fetched from ``<assets>/v0.0.0/<name>.zip`` and extracted into the datasets dir (the
archive holds ``<name>/train/...``). ``imagenet`` is never downloaded (it needs an account): the error says where to
put it. Splits: ``val`` is ``val/`` or ``validation/``; with neither, ``test/`` serves as val (and val as test), as
Ultralytics falls back. Class names are the train folder's sub-folder names, sorted; class id = position.

``cls_index(split_dir, names, *, compat="v8") -> ClassificationIndex``: every image under ``split_dir/<class>/``
(recursive, sorted, known extensions), verified as Ultralytics verifies classification images (opens, format known,
both sides at least 10 px); unreadable images are skipped, named in ``msgs`` and counted. The verdicts are cached in
``<split>.cache`` beside the split folder (an ``.npz`` without pickles, written atomically, keyed on a SHA-256 of every
path with its size and mtime), so a large set is verified once; a stale or unreadable cache is rebuilt. A class
folder of the split that is not a train class, or that holds no image, is an error naming it (Ultralytics'
ImageFolder indexes each split on its own folders, which would silently shift ids when val lacks a class: ids here
always come from train).
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import pathlib
import re
from typing import Any, Mapping

import numpy as np

from yolojax.data.classify_tfds import check_tfds_cls_dataset
from yolojax.data.dataset_yaml import DatasetError, datasets_dir, img_formats
from yolojax.data.download import ASSETS_URL, download_zip, safe_extract
from yolojax.data.labels import MAX_PRINTED_MSGS, check_image, read_npz_cache, stat_fingerprint, write_npz_cache
from yolojax.data.synthetic import shapes_cls_dir

CACHE_VERSION = "yolojax-cls-1"
ASSETS_TAG = "v0.0.0"  # the release Ultralytics downloads classification sets from
# Names Ultralytics documents as downloadable by name (any other bare name is tried the same way).
KNOWN_NAMES = ("caltech101", "caltech256", "cifar10", "cifar100", "fashion-mnist", "imagenet10", "imagenette",
               "imagenette160", "imagenette320", "imagewoof", "imagewoof160", "imagewoof320", "mnist", "mnist160")
IMAGENET_HELP = ("ImageNet is not downloaded automatically (it needs an account at image-net.org): download "
                 "ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar, extract them to {root}/train/<wnid>/*.JPEG "
                 "(1000 class folders) and {root}/val/<wnid>/*.JPEG (the val images sorted into the same 1000 "
                 "folders), then pass data={root}.")
_BARE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclasses.dataclass
class ClassificationIndex:
    """Verified samples of one split: ``samples[i] = (image path, class id)``, ids index ``names``."""

    root: pathlib.Path
    samples: list[tuple[str, int]]
    names: dict[int, str]
    msgs: list[str]
    counts: dict  # found, corrupt

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def nc(self) -> int:
        return len(self.names)

    def summary(self) -> str:
        c = self.counts
        classes = len({k for _, k in self.samples})
        return f"{self.root}: {c['found']} images in {classes}/{self.nc} classes, {c['corrupt']} corrupt"


def _download_by_name(name: str, dest: pathlib.Path) -> None:
    url = f"{ASSETS_URL}/{ASSETS_TAG}/{name}.zip"
    print(f"Dataset {name} not found at {dest}; downloading {url} ...")
    try:
        download_zip(url, dest.parent)
    except DatasetError as e:
        raise DatasetError(f"data={name}: no folder {dest} and the download failed ({e}). Names Ultralytics "
                           f"publishes: {', '.join(KNOWN_NAMES)}; or pass the path of a folder with train/ and "
                           "val/ class sub-folders.") from e
    if not dest.is_dir():
        raise DatasetError(f"data={name}: {url} was extracted into {dest.parent} but holds no folder '{name}'. "
                           f"Extract it by hand so that {dest}/train exists.")


def _resolve_root(data: str, autodownload: bool) -> pathlib.Path:
    """The dataset folder that ``data`` names, downloading or extracting it when needed."""
    s = data.strip()
    if s.lower() in ("shapes", "shapes-cls"):  # the synthetic set: shapes-cls, or the default data=shapes
        return shapes_cls_dir()
    if s.lower().startswith(("http://", "https://")):
        name = pathlib.PurePosixPath(s.split("?")[0]).name
        dest = datasets_dir() / name[:-4] if name.lower().endswith(".zip") else None
        if dest is None or not dest.is_dir():
            if not autodownload:
                raise DatasetError(f"data={s}: not downloaded yet and autodownload is off.")
            download_zip(s, datasets_dir())  # refuses anything but .zip, naming the URL
        return datasets_dir() / name[:-4]
    path = pathlib.Path(s).expanduser()
    if path.is_dir():
        return path.resolve()
    if path.suffix.lower() == ".zip" and path.is_file():
        dest = datasets_dir() / path.stem
        if not dest.is_dir():
            safe_extract(path, datasets_dir())
        return dest
    dest = (datasets_dir() / path).resolve()
    if dest.is_dir():
        return dest
    if s.lower() == "imagenet":
        raise DatasetError(f"data=imagenet: {IMAGENET_HELP.format(root=dest)}")
    if path.suffix or not _BARE_NAME.match(s):
        raise DatasetError(f"data={s}: no such folder (looked in {path.resolve()} and {dest}). A classification "
                           "dataset is a folder with train/<class>/ and val/<class>/ sub-folders of images, or a "
                           f"name Ultralytics publishes ({', '.join(KNOWN_NAMES)}).")
    if not autodownload:
        raise DatasetError(f"data={s}: no folder {dest} and autodownload is off. Download it, or pass a folder.")
    _download_by_name(s, dest)
    return dest


def _class_dirs(split: pathlib.Path) -> list[str]:
    return sorted(p.name for p in split.iterdir() if p.is_dir())


def check_cls_dataset(data: str | os.PathLike | Mapping, *, autodownload: bool = True) -> dict[str, Any]:
    """Resolve and check a classification dataset (see module docstring); raises ``DatasetError`` on bad input."""
    if isinstance(data, Mapping):
        return dict(data)
    if isinstance(data, str) and data.strip().startswith("tfds:"):
        return check_tfds_cls_dataset(data.strip(), autodownload=autodownload)
    root = _resolve_root(os.fspath(data), autodownload)
    train = root / "train"
    if not train.is_dir():
        raise DatasetError(f"data={data}: {root} has no train/ folder. A classification dataset needs "
                           "train/<class>/*.jpg and val/<class>/*.jpg (one sub-folder per class).")
    val = next((root / v for v in ("val", "validation") if (root / v).is_dir()), None)
    test = root / "test" if (root / "test").is_dir() else None
    if val is None and test is None:
        raise DatasetError(f"data={data}: {root} has no val/ (or validation/, or test/) folder; add one with the "
                           "same class sub-folders as train/.")
    names = dict(enumerate(_class_dirs(train)))
    if not names:
        raise DatasetError(f"data={data}: {train} has no class sub-folders; put each class's images in "
                           f"{train}/<class name>/.")
    return {"path": root, "train": train, "val": val or test, "test": test or val, "nc": len(names), "names": names}


def verify_cls_image(im_file: str, compat: str = "v8") -> str | None:
    """None if the image opens, has a known format and both sides are at least 10 px; else why not (one line)."""
    try:
        check_image(im_file, compat)
    except Exception as e:  # any decoder failure means the image cannot be used
        return f"{im_file}: ignoring corrupt image: {e}"
    return None


def _images_under(folder: pathlib.Path, exts: tuple[str, ...]) -> list[str]:
    out = []
    for dirpath, dirnames, files in os.walk(folder, followlinks=True):
        dirnames.sort()
        out += [os.path.join(dirpath, f) for f in sorted(files) if f.rsplit(".", 1)[-1].lower() in exts]
    return out


def _cache_key(files: list[str], compat: str) -> str:
    return stat_fingerprint(files, f"{CACHE_VERSION}|compat={compat}")


def _read_cache(path: pathlib.Path, key: str) -> list[str | None] | None:
    """The cached verdicts (None = good image, else the message) if ``path`` holds them for ``key``."""
    z = read_npz_cache(path, CACHE_VERSION, key)
    return None if z is None else [str(m) or None for m in z["verdicts"]]


def _write_cache(path: pathlib.Path, key: str, verdicts: list[str | None]) -> None:
    write_npz_cache(path, CACHE_VERSION, key, {"verdicts": np.array([v or "" for v in verdicts], dtype=str)},
                    what="Image cache", without="images are verified again on each run")


def cls_index(split_dir: str | os.PathLike, names: Mapping[int, str], *, compat: str = "v8",
              workers: int = 8) -> ClassificationIndex:
    """Verified ``(path, class id)`` samples of ``split_dir`` with train's ``names`` (see module docstring)."""
    split_dir = pathlib.Path(split_dir)
    if not split_dir.is_dir():
        raise DatasetError(f"Classification split {split_dir} does not exist.")
    ids = {n: i for i, n in names.items()}
    exts = img_formats(compat)
    files, classes, empty = [], [], []
    for cname in _class_dirs(split_dir):
        if cname not in ids:
            raise DatasetError(f"{split_dir / cname}: class folder '{cname}' is not a class of the train split "
                               f"({len(ids)} classes: {', '.join(list(ids)[:10])}...). Rename or remove it.")
        found = _images_under(split_dir / cname, exts)
        if not found:
            empty.append(cname)
        files += found
        classes += [ids[cname]] * len(found)
    if empty:
        raise DatasetError(f"{split_dir}: class folder(s) {', '.join(empty[:10])} hold no image (extensions "
                           f"{', '.join(exts)}). Add images or remove the folder(s).")
    if not files:
        raise DatasetError(f"{split_dir}: no class sub-folders with images; expected {split_dir}/<class>/*.jpg.")
    cache = split_dir.with_suffix(".cache")
    key = _cache_key(files, compat)
    verdicts = _read_cache(cache, key)
    if verdicts is None:
        with concurrent.futures.ThreadPoolExecutor(max(1, min(workers, os.cpu_count() or 1))) as pool:
            verdicts = list(pool.map(lambda f: verify_cls_image(f, compat), files))
        _write_cache(cache, key, verdicts)
    samples = [(f, k) for f, k, v in zip(files, classes, verdicts) if v is None]
    msgs = [v for v in verdicts if v is not None]
    for m in msgs[:MAX_PRINTED_MSGS]:
        print(f"WARNING {m}")
    if len(msgs) > MAX_PRINTED_MSGS:
        print(f"WARNING ... and {len(msgs) - MAX_PRINTED_MSGS} more corrupt images in {split_dir}")
    if not samples:
        raise DatasetError(f"{split_dir}: all {len(files)} images are unreadable (first: {msgs[0]}).")
    return ClassificationIndex(split_dir, samples, dict(names), msgs, {"found": len(samples), "corrupt": len(msgs)})
