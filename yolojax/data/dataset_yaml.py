"""Dataset YAML resolution, like Ultralytics' ``check_det_dataset`` and its image listing.

``check_dataset(data) -> dict`` accepts a path to a data YAML, a bare bundled name (``coco8``, ``coco128``, ``coco``,
``VOC``, ``shapes``) or an already-parsed dict, and returns::

    {"path": Path root, "train": [Path, ...], "val": [Path, ...], "test": [Path, ...] or None,
     "names": {int: str}, "nc": int, "yaml_file": Path or None, "download": ...}

Rules: ``train`` and ``val`` are required (``validation`` is renamed to ``val``); ``names`` (list or dict) or ``nc``
is required; the root is ``path`` (or the YAML's own folder if absent); a relative root that does not exist is
resolved under the datasets dir (env ``YOLOJAX_DATASETS_DIR``, default ``./datasets``). If the val paths do not
exist (or an earlier download into the root was interrupted) and ``download`` is an http(s) archive URL (or a list
of them), it is downloaded and extracted, then converted by the converter of ours that ``convert`` names (``voc``);
a ``download`` that is code (``bash ...`` or Python) is **never executed**: we stop with instructions to download
by hand.

``list_images(sources)`` lists image files (recursive, sorted, extension filter); ``img2label_path`` maps an image
to its label file (last ``/images/`` → ``/labels/``, extension → ``.txt``).
"""
from __future__ import annotations

import os
import pathlib
from typing import Any, Iterable, Mapping, Sequence

import yaml

from yolojax.data.download import PROGRESS_FILE, download_unfinished, run_download
from yolojax.data.errors import DatasetError
from yolojax.data.synthetic import shapes_yaml
from yolojax.data.tfds_builder import check_tfds_dataset

CFG_DIR = pathlib.Path(__file__).resolve().parents[1] / "cfg" / "datasets"

# Image extensions (lower case, no dot). v8-era list; `current` adds a few formats OpenCV may not read.
IMG_FORMATS_V8 = ("bmp", "dng", "jpeg", "jpg", "mpo", "png", "tif", "tiff", "webp", "pfm")
IMG_FORMATS_CURRENT = ("avif", "bmp", "dng", "heic", "heif", "jp2", "jpeg", "jpg", "mpo", "png", "tif", "tiff", "webp")


def img_formats(compat: str = "v8") -> tuple[str, ...]:
    return IMG_FORMATS_CURRENT if compat == "current" else IMG_FORMATS_V8


def datasets_dir() -> pathlib.Path:
    """Where relative dataset roots and downloads go: ``$YOLOJAX_DATASETS_DIR`` or ``./datasets``."""
    return pathlib.Path(os.environ.get("YOLOJAX_DATASETS_DIR", "datasets")).expanduser().resolve()


def img2label_path(img: str | os.PathLike) -> pathlib.Path:
    """``.../images/x/y.jpg`` → ``.../labels/x/y.txt`` (the *last* ``/images/`` is replaced)."""
    s = os.fspath(img)
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    head, sep, tail = s.rpartition(sa)
    s = head + sb + tail if sep else s
    return pathlib.Path(os.path.splitext(s)[0] + ".txt")


def _resolve_bundled(name: str) -> pathlib.Path | None:
    stem = name[:-5] if name.endswith((".yaml", ".yml")) else name
    for cand in CFG_DIR.glob("*.yaml"):
        if cand.stem.lower() == stem.lower():
            return cand
    return None


def _load_yaml(file: pathlib.Path) -> dict:
    try:
        with open(file, encoding="utf-8") as f:
            d = yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise DatasetError(f"Dataset YAML {file} is not valid YAML: {e}. Fix the syntax and retry.") from e
    if not isinstance(d, dict):
        raise DatasetError(f"Dataset YAML {file} must hold a mapping with keys 'train', 'val', 'names' (got "
                           f"{type(d).__name__}). See yolojax/cfg/datasets/coco128.yaml for an example.")
    return d


def _names_dict(d: Mapping, where: str) -> dict[int, str]:
    names, nc = d.get("names"), d.get("nc")
    if names is None and nc is None:
        raise DatasetError(f"{where} has neither 'names' nor 'nc'. Add 'names:' (a list of class names, or a mapping "
                           "{0: name, ...}) so that the number of classes is known.")
    if names is None:
        return {i: f"class_{i}" for i in range(int(nc))}
    if isinstance(names, (list, tuple)):
        out = {i: str(n) for i, n in enumerate(names)}
    elif isinstance(names, Mapping):
        try:
            out = {int(k): str(v) for k, v in names.items()}
        except (TypeError, ValueError) as e:
            raise DatasetError(f"{where} key 'names': mapping keys must be integer class ids ({e}).") from e
        if sorted(out) != list(range(len(out))):
            raise DatasetError(f"{where} key 'names': class ids must be 0..{len(out) - 1} without gaps "
                               f"(got {sorted(out)}).")
    else:
        raise DatasetError(f"{where} key 'names' must be a list or a mapping, not {type(names).__name__}.")
    if nc is not None and int(nc) != len(out):
        raise DatasetError(f"{where}: 'nc' is {nc} but 'names' lists {len(out)} classes. Make them agree "
                           "(or delete 'nc').")
    return out


def _as_list(v) -> list:
    return list(v) if isinstance(v, (list, tuple)) else [v]


def _resolve_split(root: pathlib.Path, value) -> list[pathlib.Path]:
    out = []
    for v in _as_list(value):
        p = pathlib.Path(str(v)).expanduser()
        p = p if p.is_absolute() else (root / p)
        if not p.exists() and str(v).startswith("../"):  # Ultralytics retries `../x` without the `../`
            alt = root / str(v)[3:]
            p = alt if alt.exists() else p
        out.append(p.resolve() if p.exists() else pathlib.Path(os.path.normpath(p)))
    return out


def check_dataset(data: str | os.PathLike | Mapping, *, autodownload: bool = True) -> dict[str, Any]:
    """Parse and check a data YAML (path, bundled name or dict); download it if missing and allowed.

    Returns the dict described in the module docstring. Raises ``DatasetError`` with the file and key named.
    """
    yaml_file = None
    if isinstance(data, Mapping):
        d, where = dict(data), "The dataset dict"
    else:
        s = os.fspath(data)
        if s.startswith("tfds:"):  # TensorFlow Datasets (optional extra): see yolojax/data/tfds_builder.py
            return check_tfds_dataset(s, autodownload=autodownload)
        p = pathlib.Path(s).expanduser()
        if not p.exists():
            if s.lower().removesuffix(".yaml") == "shapes":
                p = shapes_yaml()
            else:
                bundled = _resolve_bundled(s) if os.sep not in s else None
                if bundled is None:
                    known = ", ".join(sorted(c.stem for c in CFG_DIR.glob("*.yaml")))
                    raise DatasetError(f"Dataset '{s}' not found: it is neither an existing file nor a bundled "
                                       f"dataset name ({known}, shapes). Pass the path to your data YAML.")
                p = bundled
        if p.is_dir():
            raise DatasetError(f"Dataset '{s}' is a folder: a detection dataset is a data YAML (train, val, names); "
                               "a folder of train/<class>/ and val/<class>/ images trains a classifier "
                               "(model=yolov8n-cls.yaml).")
        yaml_file = p.resolve()
        d, where = _load_yaml(yaml_file), f"Dataset YAML {yaml_file}"

    if "validation" in d and "val" not in d:
        d["val"] = d.pop("validation")
    for key in ("train", "val"):
        if not d.get(key):
            raise DatasetError(f"{where} is missing the required key '{key}'. Add '{key}: <images folder, .txt "
                               "list or list of those>' relative to 'path'.")
    names = _names_dict(d, where)

    if d.get("path"):
        root = pathlib.Path(str(d["path"])).expanduser()
        if not root.is_absolute():
            base = yaml_file.parent if yaml_file is not None else pathlib.Path.cwd()
            # A root that exists next to the YAML (or the cwd) wins; otherwise it lives under the datasets dir.
            root = (base / root) if (base / root).exists() else (datasets_dir() / root)
    else:
        root = yaml_file.parent if yaml_file is not None else pathlib.Path.cwd()
    root = pathlib.Path(os.path.normpath(root.resolve() if root.exists() else root))

    out: dict[str, Any] = {"path": root, "names": names, "nc": len(names), "yaml_file": yaml_file,
                           "download": d.get("download")}
    for key in ("train", "val", "test"):
        out[key] = _resolve_split(root, d[key]) if d.get(key) else None

    missing = [p for p in out["val"] if not p.exists()]
    dl = d.get("download")
    if (missing or download_unfinished(root)) and dl and autodownload:
        # refuses (with instructions) anything but archive URLs and our own named converters
        run_download(dl, datasets_dir(), root=root, convert=d.get("convert"), names=names, where=where)
        missing = [p for p in out["val"] if not p.exists()]
        if missing:
            raise DatasetError(f"{where}: downloaded {str(dl)[:100]!r} but the val paths still do not exist: "
                               f"{', '.join(map(str, missing))}. Check that 'path' and 'val' match the archive's "
                               "folder layout.")
    if download_unfinished(root):
        raise DatasetError(f"{where}: the download into {root} was interrupted and is unfinished (the file "
                           f"{PROGRESS_FILE} is there). Run again with autodownload to finish it (finished archives "
                           f"are not fetched again), or delete {root} and start over.")
    if missing:
        hint = "download and extract the dataset by hand" if dl else "add a 'download: <zip URL>' key or download it by hand"
        raise DatasetError(f"{where}: dataset images not found: {', '.join(map(str, missing))} (key 'val', root "
                           f"{root}). Check 'path' and 'val', or {hint}, so that these paths exist.")
    for p in out["train"]:
        if not p.exists():
            raise DatasetError(f"{where}: train path {p} (key 'train', root {root}) does not exist. Check 'path' "
                               "and 'train'.")
    return out


def list_images(sources: Iterable[str | os.PathLike], *, compat: str = "v8",
                fraction: float = 1.0) -> list[pathlib.Path]:
    """All image files under the given folders / in the given ``.txt`` lists, filtered by extension, sorted.

    ``fraction < 1`` keeps the first ``round(n * fraction)`` files (at least 1).
    """
    exts = set(img_formats(compat))
    files: list[str] = []
    for src in sources:
        p = pathlib.Path(src)
        if p.is_dir():
            files += [os.fspath(f) for f in p.rglob("*.*") if f.is_file()]
        elif p.is_file() and p.suffix == ".txt":
            parent = p.parent
            for line in p.read_text(encoding="utf-8").splitlines():
                line = line.strip()
                if not line:
                    continue
                q = pathlib.Path(line)
                if line.startswith("./"):  # relative to the list file's folder
                    q = parent / line[2:]
                elif not q.is_absolute():
                    q = parent / q
                files.append(os.path.normpath(q))
        else:
            raise DatasetError(f"Image source {p} does not exist (or is neither a folder nor a .txt list). Check "
                               "the 'train'/'val' entries of the data YAML.")
    imgs = sorted(f for f in files if f.rpartition(".")[2].lower() in exts)
    if not imgs:
        raise DatasetError(f"No images found in {', '.join(map(str, sources))}: expected files with extensions "
                           f"{', '.join(sorted(exts))}.")
    if fraction < 1.0:
        imgs = imgs[: max(1, round(len(imgs) * fraction))]
    return [pathlib.Path(f) for f in imgs]


def resolve_sources(sources: str | os.PathLike | Sequence) -> list[pathlib.Path]:
    return [pathlib.Path(s) for s in _as_list(sources)]
