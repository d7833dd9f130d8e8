"""Classification: YOLOv8-cls on class-folder (or ``tfds:``) datasets, cross-entropy, top-1 / top-5 validation.

Ultralytics 8.2.103's ClassificationTrainer on the engine's loop: runs go to runs/classify/train..., the default
image size is 224 (``DEFAULT_IMGSZ``, see ``yolojax.tasks.configure``), the model is built for the dataset's class
count (weights transfer where their shapes match, so a checkpoint's Linear is replaced when nc differs, as its
``reshape_outputs``), ``dropout`` sets the Classify head's rate, the validation batch is twice the training batch,
and fitness (best.npz, early stopping) is the mean of top-1 and top-5 accuracy. ``cache`` (ram / disk) applies to the
train and val splits, as Ultralytics' classification dataset; the settings only detection reads are warned about
(``yolojax.config.checks.DETECT_ONLY``).
"""
from __future__ import annotations

import pathlib
from typing import Any, Mapping

import jax
import numpy as np

from yolojax import config as cfgmod
from yolojax.engine.log import log
from yolojax.report.results import CLASSIFY_COLUMNS
from yolojax.tasks.common import YoloFiles, probe_state

DEFAULT_IMGSZ = 224  # Ultralytics' classification image size when none is given


def _not_classifier(src: str) -> cfgmod.ConfigError:
    return cfgmod.ConfigError(f"model={src!r} is a detection model, but task=classify trains classification models: "
                              "use one such as yolov8n-cls.yaml or yolov8n-cls.pt (or task=detect with a detection "
                              "dataset YAML).")


def build_model(config, names: Mapping[int, str], dtype):
    """(YOLOv8Cls, numpy variables) for ``config.model`` with ``len(names)`` classes and ``config.dropout``: a YAML
    builds from scratch (Ultralytics init, ``seed``); weights (.pt/.npz) build their architecture and transfer every
    tensor whose shape fits (not the Linear of another class count); ``pretrained`` as for detection."""
    from yolojax.nn import model_class
    from yolojax.nn.classify import YOLOv8Cls
    from yolojax.nn.yolo import init_variables
    from yolojax.weights import load_checkpoint, transfer

    src, nc = str(config.model), len(names)
    kw = dict(num_classes=nc, dropout=float(config.dropout), compat=config.compat, dtype=dtype)
    pretrained = config.pretrained if isinstance(config.pretrained, str) else None
    if src.endswith((".yaml", ".yml")):
        if model_class(src) is not YOLOv8Cls:
            raise _not_classifier(src)
        model = YOLOv8Cls.from_yaml(src, **kw)
        variables = init_variables(model, seed=config.seed)
    else:
        w = load_checkpoint(src)
        if type(w.model) is not YOLOv8Cls:
            raise _not_classifier(src)
        model = w.model.clone(**kw)
        variables = init_variables(model, seed=config.seed)
        if config.pretrained is not False and pretrained in (None, "", "True", "true", src):
            variables, _ = transfer(w.variables, variables)
        pretrained = None if pretrained in (None, "", "True", "true", src) else pretrained
    if pretrained:
        variables, _ = transfer(load_checkpoint(pretrained).variables, variables)
    return model, jax.tree.map(np.asarray, variables)


def train_batch_spec(batch: int, imgsz: int) -> dict:
    """Abstract classification training batch (for AutoBatch's compiles)."""
    S = jax.ShapeDtypeStruct
    return {"images": S((batch, imgsz, imgsz, 3), np.uint8), "labels": S((batch,), np.int32)}


def labelled_grid(images, classes, names: Mapping[int, str], *, scores=None) -> np.ndarray:
    """The images (B, H, W, 3) uint8 in a grid, each framed and titled with its class (and score): RGB uint8."""
    from yolojax.report.plots import image_grid

    images = np.asarray(images)
    b, h, w = images.shape[:3]
    frame = np.broadcast_to(np.array([0, 0, w - 1, h - 1], np.float32), (b, 1, 4))
    cls = np.asarray(classes).reshape(b, 1)
    sc = None if scores is None else np.asarray(scores, np.float32).reshape(b, 1)
    return image_grid(images, frame, cls, np.ones((b, 1), bool), names, scores=sc, conf_thres=-1.0)


class ClassificationTask(YoloFiles):
    """The classification task (``yolojax.engine.task.Task``)."""

    name = "classify"
    loss_names = ("loss",)
    columns = CLASSIFY_COLUMNS
    closes_mosaic = False
    default_imgsz = DEFAULT_IMGSZ

    def datasets(self, config):
        from yolojax.data.classify import check_cls_dataset
        from yolojax.data.classify_loader import open_cls_split

        info = check_cls_dataset(config.data)
        names = dict(info["names"])
        train_ds = open_cls_split(info, "train", imgsz=int(config.imgsz), fraction=float(config.fraction),
                                  compat=config.compat, cache=config.cache)
        split = config.split if info.get(config.split) else "val"  # the split validated on, as for detection
        val_ds = open_cls_split(info, split, imgsz=int(config.imgsz), compat=config.compat, cache=config.cache)
        return names, train_ds, val_ds

    def auto_lr_classes(self, config, nc: int) -> int:
        """The class count ``optimizer=auto``'s lr fit reads: 8.2.103 (v8) takes the model's ``nc`` attribute, which
        its classifier never has, so the fit uses its fallback 10 whatever the dataset; 8.4 takes the dataset's."""
        return 10 if config.compat == "v8" else nc

    def build_model(self, config, names, dtype):
        return build_model(config, names, dtype)

    def auto_batch(self, config, devices, model, variables, train_dataset) -> int:
        """``batch=-1`` / a fraction: AutoBatch over the classification train step at ``imgsz``."""
        from yolojax.engine.autobatch import auto_batch
        from yolojax.engine.state import train_step

        size = int(config.imgsz)
        return auto_batch(config.batch, devices, imgsz=size, step=train_step, log=log,
                          make_state=probe_state(config, model, variables, self.objective(config), example_batch=64),
                          batch_spec=lambda b: train_batch_spec(b, size))

    def train_loader(self, config, dataset, *, batch, workers, platform):
        from yolojax.data.classify_loader import ClassifyTrainLoader

        return ClassifyTrainLoader(dataset, batch_size=batch, seed=int(config.seed), hyp=config.to_dict(),
                                   workers=workers, process_index=jax.process_index(),
                                   process_count=jax.process_count())

    def val_loader(self, config, dataset, *, batch, workers):
        from yolojax.data.classify_loader import ClassifyValLoader

        return ClassifyValLoader(dataset, batch_size=batch, crop_fraction=float(config.crop_fraction),
                                 workers=workers)

    def objective(self, config):
        from yolojax.loss import ClassificationObjective

        return ClassificationObjective()

    def batch_shapes(self, batch: Mapping[str, Any]) -> dict[str, tuple]:
        return {"images": tuple(batch["images"].shape)}

    def loader_note(self, train_loader) -> str:
        return ""  # every augmentation runs in the loader

    def train_labels(self, train_loader):
        return None  # no boxes: no labels plot

    def validator(self, config, model, val_loader, names, put):
        from yolojax.classify_val import ClassifyValidator

        return ClassifyValidator(model, val_loader, names, compat=config.compat, put=put)

    def val_row(self, result) -> dict[str, float]:
        return {**result.results_dict, **result.losses}

    def fitness(self, result, config) -> float:
        return float(result.fitness)

    def final_validation(self, validator, variables, config, save_dir):
        """Ultralytics' two table lines; with ``plots`` the confusion matrices (``validation_pictures``)."""
        result = validator(variables)
        for line in result.table:
            log(line)
        return result

    # ------------------------------------------------------------------------------------------------ pictures

    def batch_picture(self, batch: Mapping[str, np.ndarray], names: Mapping[int, str]) -> np.ndarray | None:
        """train_batchN.jpg: the batch's (augmented) images in a grid, each titled with its class name."""
        return labelled_grid(batch["images"], batch["labels"], names)

    def validation_pictures(self, result, names: Mapping[int, str], save_dir: pathlib.Path) -> dict[str, np.ndarray]:
        """confusion_matrix.png and confusion_matrix_normalized.png (nc x nc, rows predicted, columns true, no
        background), val_batchK_labels.jpg / val_batchK_pred.jpg of the first validation batches; written under
        ``save_dir``, returned as {file name: RGB image}."""
        import cv2

        from yolojax.report.plots import plot_confusion_matrix, save_image

        save_dir = pathlib.Path(save_dir)
        save_dir.mkdir(parents=True, exist_ok=True)
        out = {}
        for normalize, fname in ((False, "confusion_matrix.png"), (True, "confusion_matrix_normalized.png")):
            path = plot_confusion_matrix(save_dir / fname, result.confusion, names, normalize=normalize,
                                         background=False)
            out[fname] = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        for k, first in enumerate(result.first_batches):
            batch = first["batch"]
            keep = np.asarray(batch["image_valid"], bool)
            if not keep.any():
                continue
            images = np.asarray(batch["images"])[keep]
            for suffix, classes in (("labels", np.asarray(batch["labels"])[keep]),
                                    ("pred", np.asarray(first["top"])[keep][:, 0])):
                fname = f"val_batch{k}_{suffix}.jpg"
                out[fname] = labelled_grid(images, classes, names)
                save_image(save_dir / fname, out[fname])
        return out
