"""Validation of a classifier's weights on a dataset split: ``validate_classifier(model, variables, data=...)``.

Prints Ultralytics' classification table (``classes top1_acc top5_acc`` and the ``all`` row) and the ``Speed:`` line
and returns :class:`ClassifyMetrics`. ``YOLO.val()``, ``yolojax classify val`` and ``python -m yolojax.val`` call it
for a YOLOv8-cls model.

    validate_classifier(model, variables, data=..., imgsz=224, batch=16, split="val", crop_fraction=1.0,
                        compat="v8", device=None, workers=None) -> ClassifyMetrics

``data``: what ``yolojax.data.classify.check_cls_dataset`` takes (a folder with train/ and val/ class folders, a
name such as ``shapes-cls`` or ``imagenette``, ``tfds:NAME``). ``workers=None``: as detection's validation.
"""
from __future__ import annotations

import dataclasses
import pathlib

# Ultralytics validation arguments that do not apply to classification: accepted (Ultralytics accepts every
# argument), without effect here.
_INERT = ("half", "plots", "exist_ok", "dnn", "augment", "task", "mode", "model", "cache", "amp", "seed",
          "deterministic", "fraction", "rect", "save_hybrid", "project", "name")


@dataclasses.dataclass
class ClassifyMetrics:
    """What Ultralytics' ``ClassifyMetrics`` offers: ``top1``, ``top5`` (fractions), ``fitness`` (their mean),
    ``results_dict`` ({"metrics/accuracy_top1", "metrics/accuracy_top5", "fitness"}), ``keys``, ``speed`` (ms per
    image); besides: ``names``, ``confusion`` ((nc, nc) counts, row = predicted class, column = true class),
    ``losses`` ({"val/loss"}), ``seen`` (images scored), ``save_dir`` (the run directory after training)."""

    top1: float
    top5: float
    names: dict[int, str]
    speed: dict[str, float]
    confusion: object = None
    losses: dict[str, float] = dataclasses.field(default_factory=dict)
    seen: int = 0
    save_dir: pathlib.Path | None = None
    task: str = "classify"

    @classmethod
    def from_result(cls, result, names, save_dir=None) -> "ClassifyMetrics":
        """From a :class:`yolojax.classify_val.ClassifyValResult`."""
        return cls(float(result.top1), float(result.top5), dict(names), dict(result.speed), result.confusion,
                   dict(result.losses), int(result.seen), pathlib.Path(save_dir) if save_dir else None)

    @property
    def fitness(self) -> float:
        return (self.top1 + self.top5) / 2

    @property
    def keys(self) -> list[str]:
        return ["metrics/accuracy_top1", "metrics/accuracy_top5"]

    @property
    def results_dict(self) -> dict[str, float]:
        return dict(zip(self.keys + ["fitness"], [self.top1, self.top5, self.fitness]))

    @property
    def curves(self) -> list:
        return []

    def summary(self) -> list[dict[str, float]]:
        """One row: ``{"classify-top1", "classify-top5"}``."""
        return [{"classify-top1": self.top1, "classify-top5": self.top5}]

    def __repr__(self) -> str:
        return f"ClassifyMetrics({self.results_dict})"


def validate_classifier(model, variables, *, data=None, names=None, imgsz: int = 224, batch: int = 16,
                        split: str = "val", crop_fraction: float = 1.0, compat: str = "v8", device=None,
                        workers: int | None = None, verbose: bool = True, **ignored) -> ClassifyMetrics:
    """Validate ``variables`` of the classifier ``model`` on the ``split`` of ``data``; prints the table and the
    Speed line (see the module docstring)."""
    import jax

    from yolojax.classify_val import ClassifyValidator
    from yolojax.config import ConfigError, check_imgsz, closest_key
    from yolojax.data.classify import check_cls_dataset
    from yolojax.data.classify_loader import ClassifyValLoader, open_cls_split
    from yolojax.engine.devices import host_cores, replicated
    from yolojax.engine.validate import speed_line
    from yolojax.evaluate import val_mesh

    for key in ignored:
        if key not in _INERT:
            near = closest_key(key, list(validate_classifier.__kwdefaults__))
            raise ConfigError(f"'{key}' is not a classification validation argument."
                              + (f" Did you mean '{near}'?" if near else ""))
    if data is None:
        raise ConfigError("classification val needs data=DATASET: a folder with train/ and val/ class folders, "
                          "or a name such as shapes-cls or imagenette.")
    imgsz = check_imgsz(imgsz, stride=1)  # a classifier has no stride constraint (global pooling)
    info = check_cls_dataset(data)
    ds_names = dict(info["names"])
    if len(ds_names) != model.num_classes:
        raise ConfigError(f"The classifier predicts {model.num_classes} classes but dataset {data} has "
                          f"{len(ds_names)} class folders. Validate on the dataset the model was trained on, or "
                          f"train it on this one first.")
    devices, mesh, put = val_mesh(device, batch, verbose)
    role = split if info.get(split) else "val"
    ds = open_cls_split(info, role, imgsz=imgsz, compat=compat)
    if workers is None:
        workers = 0 if devices[0].platform == "cpu" else min(8, host_cores())
    loader = ClassifyValLoader(ds, batch_size=int(batch), crop_fraction=crop_fraction, workers=int(workers))
    try:
        validator = ClassifyValidator(model, loader, ds_names, compat=compat, put=put)
        result = validator(jax.device_put(variables, replicated(mesh)))
    finally:
        loader.close()
    for line in result.table:
        print(line)
    print(speed_line(result.speed))
    return ClassifyMetrics.from_result(result, names or ds_names)
