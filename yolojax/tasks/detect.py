"""Detection: YOLOv8 on YOLO-format datasets (boxes), the TaskAligned loss, mAP validation."""
from __future__ import annotations

import pathlib
from typing import Any, Mapping

import jax
import numpy as np

from yolojax import config as cfgmod
from yolojax.engine.log import log
from yolojax.engine.validate import Validator
from yolojax.report import plots
from yolojax.report.results import COLUMNS
from yolojax.tasks.common import YoloFiles, probe_state


def _on_device_setting(name: str, setting, platform: str) -> bool:
    """auto / True / False (or their spellings from the command line) -> whether the train step does the work."""
    if isinstance(setting, str):
        key = setting.strip().lower()
        if key == "auto":
            return platform != "cpu"
        if key in ("true", "1", "yes", "on"):
            return True
        if key in ("false", "0", "no", "off", ""):
            return False
        raise cfgmod.ConfigError(f"{name}={setting!r}: use auto, True or False.")
    return bool(setting)


def hsv_on_device(setting, platform: str) -> bool:
    """Whether the train step applies the HSV jitter (``config.hsv_on_device``): "auto" on an accelerator, where it
    costs next to nothing and frees a third of the loader's CPU time per sample; on the CPU the host does it, in the
    loader's thread beside the step. The pixels are the same either way."""
    return _on_device_setting("hsv_on_device", setting, platform)


def warp_on_device(setting, platform: str) -> bool:
    """Whether the train step composes the mosaic and applies the affine warp and the flips (and so the jitter too)
    (``config.warp_on_device``): "auto" on an accelerator. The loader then ships the batch's decoded images and a
    plan per sample; the pixels agree with OpenCV's warp to one grey level (``yolojax.augment.warp``). Without mixup and
    perspective only (``TrainLoader.warp_obstacle``)."""
    return _on_device_setting("warp_on_device", setting, platform)


def build_model(config, nc: int, names: dict, dtype):
    """(model, variables) for ``config.model``: a YAML builds from scratch (Ultralytics init); weights
    (.pt/.npz) build the same architecture for the dataset's nc and transfer matching tensors."""
    from yolojax.nn import YOLOv8, model_class
    from yolojax.nn.yolo import init_variables
    from yolojax.weights import load_checkpoint, transfer

    src = str(config.model)
    compat = config.compat
    not_detect = cfgmod.ConfigError(f"model={src!r} is a classification model, but task=detect trains detection "
                                    "models: use one such as yolov8n.yaml or yolov8n.pt, or task=classify with a "
                                    "classification dataset (class folders).")
    if src.endswith((".yaml", ".yml")):
        if model_class(src) is not YOLOv8:
            raise not_detect
        model = YOLOv8.from_yaml(src, num_classes=nc, compat=compat, dtype=dtype)
        variables = init_variables(model, seed=config.seed)
        pretrained = config.pretrained if isinstance(config.pretrained, str) else None
    else:
        w = load_checkpoint(src)
        if type(w.model) is not YOLOv8:
            raise not_detect
        model = w.model.clone(num_classes=nc, compat=compat, dtype=dtype)
        variables = init_variables(model, seed=config.seed)
        pretrained = src if config.pretrained is not False else None
        if isinstance(config.pretrained, str) and config.pretrained not in ("", "True", "true"):
            pretrained = config.pretrained
        if pretrained == src:
            variables, _ = transfer(w.variables, variables)
            pretrained = None
    if pretrained:
        variables, _ = transfer(load_checkpoint(pretrained).variables, variables)
    return model, jax.tree.map(np.asarray, variables)


class DetectTask(YoloFiles):
    """The detection task (``yolojax.engine.task.Task``)."""

    name = "detect"
    loss_names = ("box_loss", "cls_loss", "dfl_loss")
    columns = COLUMNS
    closes_mosaic = True
    default_imgsz = 640

    def datasets(self, config):
        from yolojax.data import DetectionDataset, check_dataset

        data = check_dataset(config.data)
        names = dict(data["names"])
        classes = config.get("classes")
        if classes is not None and max(classes) >= len(names):
            raise cfgmod.ConfigError(
                f"classes={classes!r} is not valid: the dataset has {len(names)} classes, ids 0.."
                f"{len(names) - 1} ({', '.join(f'{i}: {n}' for i, n in list(names.items())[:8])}"
                f"{', ...' if len(names) > 8 else ''}).")
        if config.single_cls:
            names = {0: "item"}
        # classes: Ultralytics keeps only those classes' labels, in the training and the validation set alike
        train_ds = DetectionDataset.from_config(data, "train", imgsz=config.imgsz, single_cls=config.single_cls,
                                                fraction=config.fraction, compat=config.compat,
                                                cache=config.cache or None, classes=classes)
        val_ds = DetectionDataset.from_config(data, config.split if data.get(config.split) else "val",
                                              imgsz=config.imgsz, single_cls=config.single_cls, compat=config.compat,
                                              cache=config.cache or None, verbose=False, classes=classes)
        return names, train_ds, val_ds

    def build_model(self, config, names, dtype):
        return build_model(config, len(names), dict(names), dtype)

    def auto_batch(self, config, devices, model, variables, train_dataset) -> int:
        """``batch=-1`` / a fraction: the global batch AutoBatch measures for this model, image size and dataset."""
        from yolojax.data.batching import usual_box_bucket
        from yolojax.engine.autobatch import auto_batch
        from yolojax.engine.state import train_step

        counts = [len(lb) for lb in train_dataset.labels]
        mosaic, mixup = (0.0, 0.0) if config.rect else (float(config.mosaic), float(config.mixup))
        return auto_batch(config.batch, devices, imgsz=int(config.imgsz), step=train_step, log=log,
                          make_state=probe_state(config, model, variables, example_batch=16),
                          max_boxes=lambda b: usual_box_bucket(counts, b, mosaic, mixup, int(config.seed)))

    def train_loader(self, config, dataset, *, batch, workers, platform):
        from yolojax.data import TrainLoader

        epochs = int(config.epochs)
        close_at = (epochs - int(config.close_mosaic)) if int(config.close_mosaic) > 0 else None
        hyp = {k: config[k] for k in ("hsv_h", "hsv_s", "hsv_v", "degrees", "translate", "scale", "shear",
                                      "perspective", "flipud", "fliplr", "mosaic", "mixup", "bgr")}
        kw = dict(batch_size=batch, seed=int(config.seed), hyp=hyp, workers=workers, close_mosaic_epoch=close_at,
                  compat=config.compat, process_index=jax.process_index(), process_count=jax.process_count(),
                  rect=bool(config.rect), multi_scale=bool(config.multi_scale),
                  hsv_on_device=hsv_on_device(config.get("hsv_on_device", "auto"), platform),
                  warp_on_device=warp_on_device(config.get("warp_on_device", "auto"), platform))
        if config.rect:
            log("WARNING rect=True: training batches in aspect-ratio order (no shuffling), mosaic and mixup off")
        loader = TrainLoader(dataset, **kw)
        if jax.process_count() > 1:  # every host must pad to the same box count without communicating
            loader = TrainLoader(dataset, **kw, buckets=(loader.max_boxes_bound(),))
        return loader

    def val_loader(self, config, dataset, *, batch, workers):
        from yolojax.data import ValLoader

        return ValLoader(dataset, batch_size=batch, rect=True, workers=workers, compat=config.compat)

    def objective(self, config):
        return None  # TrainHyper's default: the detection loss with the box, cls and dfl gains

    def batch_shapes(self, batch: Mapping[str, Any]) -> dict[str, tuple]:
        from yolojax.augment.batch import batch_image_shape

        return {"images": batch_image_shape(batch), "boxes": batch["boxes"].shape}

    def loader_note(self, train_loader) -> str:
        if train_loader.warp_on_device:
            return " (mosaic, affine warp, flips and HSV jitter in the train step)"
        note = " (HSV jitter in the train step)" if train_loader.hsv_on_device else ""
        if train_loader.requested_warp_on_device:
            note += f" (warp on the host: {train_loader.warp_obstacle()})"
        return note

    def train_labels(self, train_loader):
        return train_loader.dataset.labels

    def validator(self, config, model, val_loader, names, put):
        return Validator(model, val_loader, names, conf=config.conf, iou=config.iou, max_det=config.max_det,
                         single_cls=config.single_cls, compat=config.compat,
                         loss_gains=(config.box, config.cls, config.dfl), put=put)

    def val_row(self, result) -> dict[str, float]:
        row = {k: v for k, v in result.metrics.results_dict.items() if k != "fitness"}
        return {**row, **result.losses}

    def fitness(self, result, config) -> float:
        return float(result.metrics.fitness(config.compat))

    def final_validation(self, validator, variables, config, save_dir):
        """The per-class table with ``verbose``; with ``save_json`` the COCO predictions (and pycocotools' AP)."""
        validator.keep_predictions = bool(config.save_json)
        result = validator(variables)
        for line in result.table if config.verbose else result.table[:2]:
            log(line)
        if config.save_json and jax.process_index() == 0:
            from yolojax.report.coco_json import write_validation_json

            out = write_validation_json(save_dir, validator.loader.dataset, result.predictions,
                                        names=validator.names)
            log(f"Saving {out['predictions']}...")
            if out["coco"] is not None:
                log(f"pycocotools: mAP50-95 {out['coco']['AP50-95']:.4f}, mAP50 {out['coco']['AP50']:.4f}")
        return result

    def batch_picture(self, batch, names):
        return plots.train_batch_grid(batch, names)

    def validation_pictures(self, result, names, save_dir):
        """val_batch{k}_labels.jpg and _pred.jpg of the first val batches (padding images left out), the confusion
        matrices, the PR/F1/P/R curves; TensorBoard shows the val_batch{k}_pred mosaics."""
        save_dir = pathlib.Path(save_dir)
        shown = {}
        for k, first in enumerate(result.first_batches):
            b, p = first["batch"], first["pred"]
            valid = np.asarray(b.get("image_valid", np.ones(len(b["images"]), bool)), bool)
            batch = {key: np.asarray(b[key])[valid] for key in ("images", "boxes", "classes", "mask")}
            pred = {key: np.asarray(p[key])[valid] for key in ("boxes", "scores", "classes", "valid")}
            shown[f"val_batch{k}_pred.jpg"] = plots.plot_val_batch(save_dir, k, batch, pred, names)
        cm = getattr(result.accumulator, "confusion_matrix", None)
        if cm is not None:
            for normalize, name in ((False, "confusion_matrix.png"), (True, "confusion_matrix_normalized.png")):
                plots.plot_confusion_matrix(save_dir / name, np.asarray(cm.matrix), names, normalize=normalize)
        stats = {k: np.asarray(v) for k, v in result.accumulator.stats().items()}
        plots.plot_detection_curves(save_dir, plots.detection_curves(result.metrics, stats, names))
        return shown
