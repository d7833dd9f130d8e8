"""Standalone validation: ``python -m yolojax.val --weights=PATH --data=YAML [--imgsz 640] [--batch 16] ...``.

Prints Ultralytics' table (``all`` and, with more than one class, one row per class) and the ``Speed:`` line,
and returns a :class:`ValMetrics`. ``YOLO.val()`` and ``yolojax val`` call :func:`validate`.

    validate(model, variables, data=..., imgsz=640, batch=16, conf=None (0.001), iou=0.7, max_det=300,
             split="val", single_cls=False, compat="v8", device=None, workers=None, rect=True) -> ValMetrics

``workers=None``: no worker processes on a CPU (the step needs the cores; batches are still built a step ahead in
a thread), ``min(8, cores)`` Grain worker processes with an accelerator, whose step outruns one loading thread.
"""
from __future__ import annotations

import argparse
import dataclasses
import pathlib
import sys
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


def speed_line(speed: dict[str, float]) -> str:
    return (f"Speed: {speed['preprocess']:.1f}ms preprocess, {speed['inference']:.1f}ms inference, "
            f"{speed.get('loss', 0.0):.1f}ms loss, {speed['postprocess']:.1f}ms postprocess per image")


def validate(model, variables, *, data, names: dict[int, str] | None = None, imgsz: int = 640, batch: int = 16,
             conf: float | None = None, iou: float = 0.7, max_det: int = 300, split: str = "val",
             single_cls: bool = False, compat: str = "v8", device=None, workers: int | None = None,
             rect: bool = True, verbose: bool = True, save_json: bool = False, project=None, name=None,
             **ignored) -> ValMetrics:
    """Validate ``variables`` of ``model`` on the ``split`` of ``data``; prints the table and Speed line."""
    import jax

    from yolojax.data import DetectionDataset, ValLoader, check_dataset
    from yolojax.config import ConfigError, check_imgsz
    from yolojax.engine.devices import (data_sharding, environment_line, host_cores, largest_divisor_at_most,
                                        local_devices, make_mesh, replicated, select_devices)
    from yolojax.engine.validate import Validator

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
    devices = local_devices(select_devices(device))
    devices = devices[:largest_divisor_at_most(int(batch), len(devices))]  # each device gets batch / n images
    mesh = make_mesh(devices)
    if verbose:
        print(environment_line(devices))
    ds = DetectionDataset.from_config(info, split if info.get(split) else "val", imgsz=imgsz, single_cls=single_cls,
                                      compat=compat, verbose=False)
    if workers is None:
        workers = 0 if devices[0].platform == "cpu" else min(8, host_cores())
    loader = ValLoader(ds, batch_size=int(batch), rect=bool(rect), workers=int(workers), compat=compat)
    put = lambda b: jax.device_put(b, data_sharding(mesh))  # noqa: E731
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


def validate_weights(weights, data, **kwargs) -> ValMetrics:
    """Load ``weights`` (.pt / .npz / run directory) and :func:`validate` them."""
    from yolojax.model import load_weights

    w = load_weights(weights)
    return validate(w.model, w.variables, data=data, names=w.names, **kwargs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m yolojax.val", description=__doc__.splitlines()[0])
    parser.add_argument("--weights", required=True, help=".pt / .npz weights or a run directory")
    parser.add_argument("--data", required=True, help="dataset YAML or a bundled name (coco128, shapes, ...)")
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--conf", type=float, default=None, help="confidence threshold (default 0.001)")
    parser.add_argument("--iou", type=float, default=0.7)
    parser.add_argument("--max_det", type=int, default=300)
    parser.add_argument("--split", default="val")
    parser.add_argument("--device", default=None)
    parser.add_argument("--workers", type=int, default=None,
                        help="Grain worker processes (default: 0 on CPU, min(8, cores) with an accelerator)")
    parser.add_argument("--compat", default="v8", choices=("v8", "current"))
    parser.add_argument("--single_cls", action="store_true")
    parser.add_argument("--save_json", action="store_true", help="write COCO predictions.json (+ pycocotools AP)")
    args = parser.parse_args(argv)
    from yolojax.startup import begin, exit_code, prepare_jax

    begin(restart=False)

    def run():
        prepare_jax()
        validate_weights(args.weights, args.data, imgsz=args.imgsz, batch=args.batch, conf=args.conf, iou=args.iou,
                         max_det=args.max_det, split=args.split, device=args.device, compat=args.compat,
                         single_cls=args.single_cls, save_json=args.save_json, workers=args.workers)

    return exit_code(run)


if __name__ == "__main__":
    sys.exit(main())
