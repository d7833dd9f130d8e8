"""Pascal VOC as a YOLO-format dataset: the VOCdevkit's XML annotations become YOLO label files.

``convert_voc(root, names)`` is the converter that ``convert: voc`` names in ``cfg/datasets/VOC.yaml``. The VOC
archives extract to ``root/images/VOCdevkit/VOC<year>/`` (``Annotations/<id>.xml``, ``ImageSets/Main/<set>.txt``,
``JPEGImages/<id>.jpg``); for every image set in ``SETS`` whose list exists, each listed image is moved to
``root/images/<set><year>/<id>.jpg`` and its label written to ``root/labels/<set><year>/<id>.txt``. Ultralytics'
VOC.yaml trains on 2007+2012 ``train`` and ``val`` and validates on 2007 ``test``.

Labels follow Ultralytics' VOC recipe: one line ``class x y w h`` per object whose name is in ``names`` and that is
not marked ``difficult`` (difficult objects are left out of the labels, so they count neither as targets nor as
misses); the centre is ``(min + max) / 2 - 1`` (VOC pixel coordinates start at 1) and the size ``max - min``, both
divided by the image size that the XML states. An object without a ``difficult`` tag counts as not difficult; an
XML without a usable size takes it from the image.

The conversion is idempotent: labels are rewritten (atomically) from the XML on every run and an image already
moved is found at its destination, so an interrupted conversion simply runs again.
"""
from __future__ import annotations

import os
import pathlib
import tempfile
import xml.etree.ElementTree as ET

from PIL import Image
from tqdm import tqdm

from yolojax.data.errors import DatasetError

# (year, image set) in the order Ultralytics converts them.
SETS = (("2012", "train"), ("2012", "val"), ("2007", "train"), ("2007", "val"), ("2007", "test"))


def _size(root: ET.Element, image: pathlib.Path) -> tuple[int, int]:
    size = root.find("size")
    try:
        w, h = int(size.findtext("width")), int(size.findtext("height"))
        if w > 0 and h > 0:
            return w, h
    except (AttributeError, TypeError, ValueError):
        pass

    with Image.open(image) as im:
        return im.size


def voc_labels(xml_file: str | os.PathLike, names: list[str], image: str | os.PathLike) -> tuple[list[str], int, set]:
    """(YOLO label lines, number of difficult objects left out, unknown class names) for one VOC XML file.

    ``image`` is read only when the XML lacks a usable ``size``. Raises DatasetError naming the file when it is not
    valid XML or an object's box is missing."""
    try:
        root = ET.parse(xml_file).getroot()
    except ET.ParseError as e:
        raise DatasetError(f"VOC annotation {xml_file} is not valid XML ({e}). Delete the dataset folder and "
                           "download it again.") from e
    w, h = _size(root, pathlib.Path(image))
    lines, difficult, unknown = [], 0, set()
    for obj in root.iter("object"):
        name = (obj.findtext("name") or "").strip()
        if name not in names:
            unknown.add(name)
            continue
        if int(obj.findtext("difficult") or 0) == 1:
            difficult += 1
            continue
        box = obj.find("bndbox")
        try:
            xmin, xmax, ymin, ymax = (float(box.findtext(k)) for k in ("xmin", "xmax", "ymin", "ymax"))
        except (AttributeError, TypeError, ValueError) as e:
            raise DatasetError(f"VOC annotation {xml_file}: object '{name}' has no complete bndbox "
                               "(xmin, ymin, xmax, ymax).") from e
        xywh = ((xmin + xmax) / 2 - 1) / w, ((ymin + ymax) / 2 - 1) / h, (xmax - xmin) / w, (ymax - ymin) / h
        lines.append(" ".join(str(v) for v in (names.index(name), *xywh)))
    return lines, difficult, unknown


def _write_text(path: pathlib.Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def convert_voc(root: str | os.PathLike, names: dict[int, str]) -> dict[str, int]:
    """Convert the VOCdevkit under ``root/images`` into YOLO folders (module docstring); returns images per folder.

    Raises DatasetError when no image set list is found or a listed image is neither in the devkit nor already
    at its destination."""
    root = pathlib.Path(root)
    devkit = root / "images" / "VOCdevkit"
    order = [names[i] for i in range(len(names))]
    counts: dict[str, int] = {}
    for year, image_set in SETS:
        voc = devkit / f"VOC{year}"
        listing = voc / "ImageSets" / "Main" / f"{image_set}.txt"
        if not listing.is_file():
            continue
        split = f"{image_set}{year}"
        imgs_dir, lbs_dir = root / "images" / split, root / "labels" / split
        imgs_dir.mkdir(parents=True, exist_ok=True)
        lbs_dir.mkdir(parents=True, exist_ok=True)
        ids = listing.read_text(encoding="utf-8").split()
        difficult, boxes, unknown = 0, 0, set()
        for image_id in tqdm(ids, desc=f"Converting VOC {split}", leave=False):
            src, dst = voc / "JPEGImages" / f"{image_id}.jpg", imgs_dir / f"{image_id}.jpg"
            if not src.is_file() and not dst.is_file():
                raise DatasetError(f"VOC image {image_id} (listed in {listing}) is neither in {src.parent} nor in "
                                   f"{imgs_dir}. Delete {root} and download the dataset again.")
            image = src if src.is_file() else dst
            lines, n_diff, unk = voc_labels(voc / "Annotations" / f"{image_id}.xml", order, image)
            _write_text(lbs_dir / f"{image_id}.txt", "".join(line + "\n" for line in lines))
            if src.is_file():
                os.replace(src, dst)
            difficult, boxes, unknown = difficult + n_diff, boxes + len(lines), unknown | unk
        counts[split] = len(ids)
        note = f"; objects of classes not in names left out: {', '.join(sorted(unknown))}" if unknown else ""
        print(f"VOC {split}: {len(ids)} images, {boxes} boxes ({difficult} difficult objects left out, as "
              f"Ultralytics does){note}")
    if not counts:
        raise DatasetError(f"No VOC image set lists found under {devkit} (expected VOC<year>/ImageSets/Main/"
                           "<set>.txt from the VOC archives). Delete the folder and download the dataset again.")
    return counts
