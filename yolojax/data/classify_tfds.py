"""TensorFlow Datasets as classification datasets: ``data="tfds:imagenette"``, ``"tfds:cifar10"``,
``"tfds:imagenet2012"``.

    info = check_tfds_cls_dataset("tfds:imagenette")   # the dict check_cls_dataset returns, splits as tfds expressions
    ds = TfdsClassifyDataset.from_checked(info, "train", imgsz=224)   # what the classification loaders read

The data string is detection's (``tfds:NAME[/CONFIG][:VERSION][:TRAIN[,VAL]]``, ``yolojax.data.tfds_builder``):
train → ``train``, val → ``validation``, or ``test`` when the dataset has no validation split (cifar10). The class
names are the ``label`` ``ClassLabel`` feature's (ImageNet's and Imagenette's: the WordNet ids that name the class
folders of Ultralytics' layout, so ids agree with a folder copy of the same data).

Records are read through ``builder.as_data_source`` (ArrayRecord, no TensorFlow needed to read) with the image left
encoded: nothing is read up front, and ``sample(i)`` decodes one record's image with OpenCV (RGB) and takes its
label. A dataset not prepared yet is downloaded and prepared as for detection (TensorFlow needed), except ImageNet
(``imagenet2012``), which tfds cannot download: the error says where to put the archives.
"""
from __future__ import annotations

import os
from typing import Any

import cv2
import numpy as np

from yolojax.data.errors import DatasetError
from yolojax.data.tfds_builder import import_tfds, open_builder, parse_spec

# tfds datasets whose archives must be downloaded by hand into the manual dir (an account is needed).
MANUAL = ("imagenet2012", "imagenet2012_subset", "imagenet2012_real", "imagenet2012_multilabel")
IMAGENET_TARS = ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")


def _manual_dir(data_dir: str | None) -> str:
    tfds = import_tfds()
    root = data_dir or os.environ.get("TFDS_DATA_DIR") or tfds.core.constants.DATA_DIR
    return os.path.join(os.path.expanduser(root), "downloads", "manual")


def _open(name: str, data_dir: str | None, autodownload: bool):
    """The prepared builder; ImageNet-style datasets are prepared only from archives already in the manual dir."""
    if name.split(":")[0].split("/")[0] not in MANUAL:
        return open_builder(name, data_dir=data_dir, autodownload=autodownload)
    try:
        return open_builder(name, data_dir=data_dir, autodownload=False)
    except DatasetError:
        manual = _manual_dir(data_dir)
        missing = [t for t in IMAGENET_TARS if not os.path.isfile(os.path.join(manual, t))]
        if missing or not autodownload:
            raise DatasetError(
                f"data='tfds:{name}' is not prepared and tfds cannot download ImageNet (it needs an account at "
                f"image-net.org): download {' and '.join(IMAGENET_TARS)} into {manual} (missing: "
                f"{', '.join(missing) or 'none'}), then rerun (tfds prepares it, TensorFlow needed: "
                f"pip install 'yolojax[tfds]'), or prepare it once with `tfds build {name} --manual_dir={manual} "
                "--file_format=array_record`.") from None
        return open_builder(name, data_dir=data_dir, autodownload=True)


def check_tfds_cls_dataset(data: str, *, data_dir: str | None = None, autodownload: bool = True) -> dict[str, Any]:
    """``check_cls_dataset`` for ``tfds:`` strings: {"path", "train", "val", "test" (split expressions or None),
    "nc", "names", "tfds": {"name", "data_dir"}}; DatasetError when the dataset has no ``label`` ClassLabel."""
    spec = parse_spec(data)
    builder = _open(spec.name, data_dir, autodownload)
    try:
        label = builder.info.features["label"]
        names = dict(enumerate(label.names))
    except (KeyError, TypeError, AttributeError) as e:
        raise DatasetError(f"data='tfds:{spec.name}' has no 'label' ClassLabel feature (features: "
                           f"{builder.info.features}); a classification dataset has 'image' and 'label'.") from e
    splits = set(builder.info.splits)
    val = spec.val
    if val == "validation" and "validation" not in splits and "test" in splits:
        val = "test"
    test = "test" if "test" in splits and val != "test" else None
    return {"path": builder.data_dir, "train": spec.train, "val": val, "test": test, "nc": len(names), "names": names,
            "tfds": {"name": spec.name, "data_dir": data_dir}}


class TfdsClassifyDataset:
    """One tfds split as the classification loaders read it: ``len``, ``imgsz``, ``names``,
    ``sample(i) -> ((h, w, 3) uint8 RGB, class id)``. Picklable (the data source reopens its files in workers)."""

    def __init__(self, source, names: dict[int, str], imgsz: int, where: str, n: int | None = None):
        self.source, self.names, self.imgsz, self.where = source, dict(names), int(imgsz), where
        self.n = len(source) if n is None else int(n)
        self.ram_cache: list | None = None  # every sample, decoded (cache="ram")

    def with_cache(self, cache) -> "TfdsClassifyDataset":
        """This dataset with ``cache`` in use: True / "ram" decodes every record into memory now; False / None
        decodes on demand; "disk" is refused (records have no image files to save a decode beside)."""
        if cache in (True, "ram"):
            self.ram_cache = [self.sample(i) for i in range(len(self))]
        elif cache not in (None, False):
            raise DatasetError(f"cache={cache!r} is not supported for {self.where}: use cache='ram' or no cache.")
        return self

    @classmethod
    def from_checked(cls, info: dict, split: str = "train", *, imgsz: int, fraction: float = 1.0):
        """The ``split`` role (train / val / test) of ``check_tfds_cls_dataset``'s dict; ``fraction`` < 1 keeps the
        first ``round(n · fraction)`` records."""
        expr = info.get(split)
        if not expr:
            raise DatasetError(f"data='tfds:{info['tfds']['name']}' has no '{split}' split.")
        tfds = import_tfds()
        name = info["tfds"]["name"]
        builder = open_builder(name, data_dir=info["tfds"]["data_dir"], autodownload=False)
        where = f"tfds:{name} split '{expr}'"
        try:
            source = builder.as_data_source(expr, decoders={"image": tfds.decode.SkipDecoding()})
        except NotImplementedError as e:
            raise DatasetError(f"{where}: random access needs the ArrayRecord format but {builder.data_dir} holds "
                               f"{builder.info.file_format} files. Convert it with `tfds convert_format "
                               f"--dataset_dir={builder.data_dir} --out_file_format=array_record`.") from e
        except (ValueError, KeyError) as e:
            raise DatasetError(f"{where}: {e}. Available splits: {', '.join(builder.info.splits)}.") from e
        n = len(source)
        if not n:
            raise DatasetError(f"{where}: the split is empty.")
        if fraction < 1.0:
            n = max(1, round(n * fraction))
        return cls(source, info["names"], imgsz, where, n)

    def __len__(self) -> int:
        return self.n

    def sample(self, i: int) -> tuple[np.ndarray, int]:
        if self.ram_cache is not None:
            return self.ram_cache[i]
        ex = self.source[int(i)]
        image, label = ex["image"], int(ex["label"])
        if isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3:  # decoded already (RGB)
            return image, label
        img = cv2.imdecode(np.frombuffer(bytes(image), np.uint8), cv2.IMREAD_COLOR)
        if img is None:
            raise DatasetError(f"{self.where} record {i}: OpenCV could not decode its image. Re-prepare the dataset "
                               "(tfds build --overwrite).")
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB), label
