"""Validation of a detector's weights on a dataset split: ``validate(model, variables, data=...) -> ValMetrics``.

Prints Ultralytics' table (``all`` and, with more than one class, one row per class) and the ``Speed:`` line.
``YOLO.val()``, ``yolojax val`` and ``python -m yolojax.val`` call it.

    validate(model, variables, data=..., imgsz=640, batch=16, conf=None (0.001), iou=0.7, max_det=300,
             split="val", single_cls=False, compat="v8", device=None, workers=None, rect=True) -> ValMetrics

``workers=None``: no worker processes on a CPU (the step needs the cores; batches are still built a step ahead in
a thread), ``min(8, cores)`` Grain worker processes with an accelerator, whose step outruns one loading thread.
"""
from __future__ import annotations

import dataclasses
import pathlib
from typing import Any

import numpy as np

from yolojax.metrics import DetMetrics


@dataclasses.dataclass
class ValMetrics:
    """What Ultralytics' ``DetMetrics`` offers: ``.box`` (``map``, ``map50``, ``map75``, ``mp``, ``mr``,
    ``maps`` (nc,), per-class ``p``/``r``/``ap50``/``ap`` over ``ap_class_index``), ``.results_dict``,
    ``.fitness``, ``.speed`` (ms per image), ``.names``, ``.summary()`` (one dict per class)."""

    box: DetMetrics
    names: dict[int, str]
    speed: dict[str, float]
    save_dir: pathlib.Path | None = None
    compat: str = "v8"
    table: list[str] = dataclasses.field(default_factory=list)
    losses: dict[str, float] = dataclasses.field(default_factory=dict)
    seen: int = 0

    @classmethod
    def from_result(cls, result, names, save_dir=None, compat: str = "v8") -> "ValMetrics":
        """From a :class:`yolojax.engine.validate.ValResult`."""
        return cls(result.metrics, dict(names), dict(result.speed), pathlib.Path(save_dir) if save_dir else None,
                   compat, list(result.table), dict(result.losses), int(result.seen))

    @property
    def fitness(self) -> float:
        return self.box.fitness(self.compat)

    @property
    def results_dict(self) -> dict[str, float]:
        return {**self.box.results_dict, "fitness": self.fitness}

    @property
    def keys(self) -> list[str]:
        return ["metrics/precision(B)", "metrics/recall(B)", "metrics/mAP50(B)", "metrics/mAP50-95(B)"]

    @property
    def maps(self) -> np.ndarray:
        return self.box.maps

    @property
    def ap_class_index(self) -> np.ndarray:
        return self.box.ap_class_index

    def mean_results(self) -> list[float]:
        return self.box.mean_results()

    def class_result(self, i: int) -> tuple[float, float, float, float]:
        return self.box.class_result(i)

    def summary(self) -> list[dict[str, Any]]:
        """Per evaluated class: name, class id, box-p, box-r, box-f1, mAP50, mAP50-95."""
        rows = []
        for i, c in enumerate(self.box.ap_class_index):
            p, r, ap50, ap = self.box.class_result(i)
            rows.append({"name": self.names.get(int(c), str(int(c))), "class": int(c), "box-p": p, "box-r": r,
                         "box-f1": float(self.box.f1[i]), "mAP50": ap50, "mAP50-95": ap})
        return rows

    def __repr__(self) -> str:
        return f"ValMetrics({self.results_dict})"


def val_mesh(device, batch: int, verbose: bool = True):
    """``(local devices, mesh, put)`` for validating ``batch`` images per batch on ``device``: as many of the
    selected devices as divide ``batch`` evenly; ``put`` places a host batch split over them."""
    import jax

    from yolojax.engine.devices import (data_sharding, environment_line, largest_divisor_at_most, local_devices,
                                        make_mesh, select_devices)

    devices = local_devices(select_devices(device))
    devices = devices[:largest_divisor_at_most(int(batch), len(devices))]  # each device gets batch / n images
    mesh = make_mesh(devices)
    if verbose:
        print(environment_line(devices))
    return devices, mesh, lambda b: jax.device_put(b, data_sharding(mesh))


def validate(model, variables, *, data, names: dict[int, str] | None = None, imgsz: int = 640, batch: int = 16,
             conf: float | None = None, iou: float = 0.7, max_det: int = 300, split: str = "val",
             single_cls: bool = False, compat: str = "v8", device=None, workers: int | None = None,
             rect: bool = True, verbose: bool = True, save_json: bool = False, project=None, name=None,
             **ignored) -> ValMetrics:
    """Validate ``variables`` of ``model`` on the ``split`` of ``data``; prints the table and Speed line."""
    import jax

    from yolojax.data import DetectionDataset, ValLoader, check_dataset
    from yolojax.config import ConfigError, check_imgsz
    from yolojax.engine.devices import host_cores, replicated
    from yolojax.engine.validate import Validator, speed_line

    for key in ignored:
        if key not in ("half", "plots", "exist_ok", "dnn", "save_hybrid", "augment",
                       "task", "mode", "model", "cache", "amp", "seed", "deterministic", "fraction"):
            from yolojax.config import closest_key

            near = closest_key(key, list(validate.__kwdefaults__))
            raise ConfigError(f"'{key}' is not a validation argument." + (f" Did you mean '{near}'?" if near else ""))
    imgsz = check_imgsz(imgsz)
    info = check_dataset(data)
    ds_names = dict(info["names"])
    if single_cls:
        ds_names = {0: "item"}
    if len(ds_names) != model.num_classes:
        raise ConfigError(f"The model predicts {model.num_classes} classes but dataset {info.get('yaml_file', data)} "
                          f"has {len(ds_names)} (names). Validate on the dataset the model was trained on, or train "
                          f"it on this one first.")
    devices, mesh, put = val_mesh(device, batch, verbose)
    ds = DetectionDataset.from_config(info, split if info.get(split) else "val", imgsz=imgsz, single_cls=single_cls,
                                      compat=compat, verbose=False)
    if workers is None:
        workers = 0 if devices[0].platform == "cpu" else min(8, host_cores())
    loader = ValLoader(ds, batch_size=int(batch), rect=bool(rect), workers=int(workers), compat=compat)
    validator = Validator(model, loader, ds_names, conf=conf, iou=iou, max_det=max_det, single_cls=single_cls,
                          compat=compat, compute_loss=False, put=put, keep_predictions=save_json)
    result = validator(jax.device_put(variables, replicated(mesh)))
    loader.close()
    lines = result.table if verbose else result.table[:2]
    for line in lines:
        print(line)
    print(speed_line(result.speed))
    save_dir = None
    if save_json:
        from yolojax.config import increment_path
        from yolojax.report.coco_json import write_validation_json

        save_dir = increment_path(pathlib.Path(project or "runs/detect") / (name or "val"))
        out = write_validation_json(save_dir, ds, result.predictions, names=ds_names)
        print(f"Saving {out['predictions']}...")
        if out["coco"] is not None:
            print(f"pycocotools: mAP50-95 {out['coco']['AP50-95']:.4f}, mAP50 {out['coco']['AP50']:.4f} "
                  f"(yolojax: {result.metrics.map:.4f}, {result.metrics.map50:.4f})")
        else:
            print("pycocotools is not installed: pip install pycocotools to print COCO's own AP beside ours.")
    return ValMetrics.from_result(result, ds_names, save_dir, compat)
