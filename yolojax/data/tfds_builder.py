"""TensorFlow Datasets data strings: ``tfds:NAME[/CONFIG][:VERSION][:TRAIN[,VAL]]`` parsed, its builder opened
(prepared on demand) and checked into the dict ``check_dataset`` returns. The dataset class over a split is
``yolojax.data.dataset.TfdsDetectionDataset``; this module needs neither it nor the loader, so ``check_dataset`` can
route ``tfds:`` strings here without importing them. The defaults and preparation rules are described in
``yolojax/data/tfds.py``.
"""
from __future__ import annotations

import dataclasses
import os
import re
from typing import Any

from yolojax.data.errors import DatasetError

PREFIX = "tfds:"
INSTALL_HINT = "pip install 'yolojax[tfds]'"
_SPEC_RE = re.compile(r"^(?P<name>[A-Za-z0-9_\-]+(?:/[A-Za-z0-9_\-\.]+)?)(?::(?P<version>\d+(?:\.(?:\d+|\*)){0,2}))?"
                      r"(?::(?P<splits>[^,]+(?:,[^,]+)?))?$")


@dataclasses.dataclass(frozen=True)
class TfdsSpec:
    """A parsed ``tfds:`` data string: ``name`` as tfds.builder takes it (``coco/2017`` or ``coco/2017:1.1.0``)."""

    name: str
    train: str
    val: str


def default_splits(name: str) -> tuple[str, str]:
    """(train, val) tfds split expressions for a dataset name without version (the defaults listed in ``yolojax/data/tfds.py``)."""
    base = name.split(":")[0]
    if base == "voc/2007":
        return "train+validation", "test"
    return "train", "validation"


def parse_spec(data: str) -> TfdsSpec:
    """``tfds:NAME[/CONFIG][:VERSION][:TRAIN[,VAL]]`` → TfdsSpec; DatasetError naming the string if malformed."""
    body = data[len(PREFIX):] if data.startswith(PREFIX) else data
    m = _SPEC_RE.match(body.strip())
    if not m:
        raise DatasetError(f"data={data!r} is not a valid TFDS data string. Use 'tfds:NAME[/CONFIG][:VERSION]"
                           "[:TRAIN_SPLIT[,VAL_SPLIT]]', e.g. 'tfds:coco/2017' or 'tfds:voc/2007:train,validation'.")
    name = m["name"] + (f":{m['version']}" if m["version"] else "")
    train, val = default_splits(m["name"])
    if m["splits"]:
        parts = [p.strip() for p in m["splits"].split(",")]
        train = parts[0] or train
        val = parts[1] if len(parts) > 1 and parts[1] else val
    return TfdsSpec(name, train, val)


def import_tfds():
    """``tensorflow_datasets``, or a DatasetError saying how to install it (imported lazily: an optional extra)."""
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise DatasetError(f"TFDS datasets need tensorflow-datasets, which is not installed ({e}). Install it with "
                           f"{INSTALL_HINT} (tensorflow-datasets, importlib_resources and TensorFlow, which tfds "
                           "needs to build COCO and VOC), then retry.") from e
    return tfds


def _is_missing_tf(e: BaseException) -> bool:
    while e is not None:
        if isinstance(e, ModuleNotFoundError) and "tensorflow" in str(e) and "datasets" not in str(e):
            return True
        e = e.__cause__ or e.__context__
    return False


def open_builder(name: str, *, data_dir: str | None = None, autodownload: bool = True):
    """A tfds builder for ``name`` whose data is prepared (downloading/preparing it as ArrayRecord if allowed)."""
    tfds = import_tfds()
    # tfds reads $TFDS_DATA_DIR once, at import; we honour it at call time.
    data_dir = data_dir or os.environ.get("TFDS_DATA_DIR") or None
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as e:
        if not _is_missing_tf(e):
            raise DatasetError(f"data='tfds:{name}': tensorflow-datasets could not open this dataset ({e}). Check "
                               "the name (see https://www.tensorflow.org/datasets/catalog).") from e
        try:  # The stock builder code needs TensorFlow; a prepared copy can still be read from its files.
            from tensorflow_datasets.core import read_only_builder

            return read_only_builder.builder_from_files(name, data_dir=data_dir)
        except Exception as e2:
            raise DatasetError(f"data='tfds:{name}': building this dataset's tfds builder needs TensorFlow, which is "
                               f"not installed, and no prepared copy was found ({e2}). Run `{INSTALL_HINT}` so "
                               "that it can be downloaded and prepared, then retry.") from e
    if not builder.is_prepared():
        if not autodownload:
            raise DatasetError(f"data='tfds:{name}' is not prepared in {builder.data_dir} and autodownload is off. "
                               f"Prepare it with `tfds build {name} --file_format=array_record`.")
        try:
            builder.download_and_prepare(file_format="array_record")
        except Exception as e:
            raise DatasetError(f"data='tfds:{name}': download_and_prepare into {builder.data_dir} failed: {e}. "
                               f"Check the network and that `{INSTALL_HINT}` (TensorFlow included) was run, or "
                               f"prepare it by hand with `tfds build {name} --file_format=array_record`.") from e
    return builder


def _class_names(builder, name: str) -> dict[int, str]:
    try:
        label = builder.info.features["objects"]["label"]
        names = list(label.names)
    except (KeyError, TypeError, AttributeError) as e:
        raise DatasetError(f"data='tfds:{name}' has no 'objects/label' ClassLabel feature and 'objects/bbox' boxes "
                           f"(features: {builder.info.features}); only object-detection datasets (COCO, VOC, ...) "
                           "are supported.") from e
    return dict(enumerate(names))


def check_tfds_dataset(data: str, *, data_dir: str | None = None, autodownload: bool = True) -> dict[str, Any]:
    """``check_dataset`` for ``tfds:`` strings: the same dict (``train``/``val`` hold one split expression each,
    ``test`` the dataset's ``test`` split if it is not val) plus ``"tfds": {"name", "data_dir"}``."""
    spec = parse_spec(data)
    builder = open_builder(spec.name, data_dir=data_dir, autodownload=autodownload)
    names = _class_names(builder, spec.name)
    splits = set(builder.info.splits)
    val = spec.val
    if val == "validation" and "validation" not in splits and "test" in splits:
        val = "test"
    test = "test" if "test" in splits and val != "test" else None
    return {"path": builder.data_dir, "train": [spec.train], "val": [val], "test": [test] if test else None,
            "names": names, "nc": len(names), "yaml_file": None, "download": None,
            "tfds": {"name": spec.name, "data_dir": data_dir}}
