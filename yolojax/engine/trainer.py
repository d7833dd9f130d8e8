"""What a training run is built from: ``setup(config, workdir) -> Setup`` (datasets and loaders, the model with
its transferred weights, AutoBatch, the device mesh, the optimizer and schedule as ``TrainHyper``), plus
``EarlyStopping`` (Ultralytics' patience rule). The loop that runs it is ``yolojax.train.train_and_evaluate``.
"""
from __future__ import annotations

import dataclasses
import math
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from yolojax import config as cfgmod
from yolojax.engine.autobatch import auto_batch, wants_autobatch
from yolojax.engine.devices import check_batch_divides, largest_divisor_at_most, make_mesh, select_devices
from yolojax.engine.optim import (MOMENTUM_OPTIMIZERS, OPTIMIZERS, Schedule, accumulate_steps, auto_optimizer,
                                  scaled_weight_decay, warmup_iterations)
from yolojax.engine.state import TrainHyper


@dataclasses.dataclass
class Setup:
    config: Any
    save_dir: pathlib.Path
    model: Any
    variables: dict
    names: dict
    train_loader: Any
    val_loader: Any
    hyper: TrainHyper
    mesh: Any
    optimizer_line: str


def _log(*args) -> None:
    if jax.process_index() == 0:
        print(*args, flush=True)


def _compute_dtype(config, devices):
    from yolojax.engine.metal import is_metal

    if is_metal(devices[0]):
        return jnp.float32  # the Metal plugins compute in float32 only
    name = str(config.get("dtype", "auto"))
    if name == "auto":
        on_accel = devices[0].platform not in ("cpu",)
        return jnp.bfloat16 if (config.amp and on_accel) else jnp.float32
    return {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[name]


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
    plan per sample; the pixels agree with OpenCV's warp to one grey level (``yolojax.ops.warp``). Without mixup and
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
    not_detect = cfgmod.ConfigError(f"model={src!r} is a classification model; yolojax trains detection models "
                                    "only so far (classification training is coming). Use a detection model such as "
                                    "yolov8n.yaml or yolov8n.pt.")
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


def setup(config, workdir=None) -> Setup:
    """Data, model, optimizer, mesh for a run; ``config`` as ``config_checks.check_config`` returns it."""
    from yolojax.data import DetectionDataset, TrainLoader, ValLoader, check_dataset

    config.imgsz = cfgmod.check_imgsz(config.imgsz)
    devices = select_devices(config.device)
    save_dir = pathlib.Path(workdir) if workdir else cfgmod.run_dir(config)
    data = check_dataset(config.data)
    names = dict(data["names"])
    classes = config.get("classes")
    if classes is not None and max(classes) >= len(names):
        raise cfgmod.ConfigError(f"classes={classes!r} is not valid: the dataset has {len(names)} classes, ids 0.."
                                 f"{len(names) - 1} ({', '.join(f'{i}: {n}' for i, n in list(names.items())[:8])}"
                                 f"{', ...' if len(names) > 8 else ''}).")
    if config.single_cls:
        names = {0: "item"}
    nc = len(names)
    workers = int(config.workers)
    if devices[0].platform == "cpu" and jax.process_count() == 1:
        workers = 0  # as Ultralytics on CPU: worker processes compete with the step for the same cores
    # classes: Ultralytics keeps only those classes' labels, in the training and the validation set alike
    train_ds = DetectionDataset.from_config(data, "train", imgsz=config.imgsz, single_cls=config.single_cls,
                                            fraction=config.fraction, compat=config.compat, cache=config.cache or None,
                                            classes=classes)
    val_ds = DetectionDataset.from_config(data, config.split if data.get(config.split) else "val",
                                          imgsz=config.imgsz, single_cls=config.single_cls, compat=config.compat,
                                          cache=config.cache or None, verbose=False, classes=classes)
    dtype = _compute_dtype(config, devices)
    model, variables = build_model(config, nc, names, dtype)
    if wants_autobatch(config.batch):
        config.batch = _auto_batch(config, devices, model, variables, train_ds)
    if devices[0].platform == "cpu" and jax.process_count() == 1 and int(config.batch) > 0:
        # CPU devices split one machine's cores (YOLOJAX_CPU_DEVICES): use as many as divide the batch
        devices = devices[:largest_divisor_at_most(int(config.batch), len(devices))]
    n_dev = len(devices)
    check_batch_divides(int(config.batch), n_dev)
    mesh = make_mesh(devices)
    epochs = int(config.epochs)
    close_at = (epochs - int(config.close_mosaic)) if int(config.close_mosaic) > 0 else None
    hyp = {k: config[k] for k in ("hsv_h", "hsv_s", "hsv_v", "degrees", "translate", "scale", "shear", "perspective",
                                   "flipud", "fliplr", "mosaic", "mixup", "bgr")}
    loader_kw = dict(process_index=jax.process_index(), process_count=jax.process_count(), rect=bool(config.rect),
                     multi_scale=bool(config.multi_scale))
    if config.rect:
        _log("WARNING rect=True: training batches in aspect-ratio order (no shuffling), mosaic and mixup off")
    loader_kw["hsv_on_device"] = hsv_on_device(config.get("hsv_on_device", "auto"), devices[0].platform)
    loader_kw["warp_on_device"] = warp_on_device(config.get("warp_on_device", "auto"), devices[0].platform)
    train_loader = TrainLoader(train_ds, batch_size=int(config.batch), seed=int(config.seed), hyp=hyp,
                               workers=workers, close_mosaic_epoch=close_at, compat=config.compat, **loader_kw)
    if jax.process_count() > 1:  # every host must pad to the same box count without communicating
        train_loader = TrainLoader(train_ds, batch_size=int(config.batch), seed=int(config.seed), hyp=hyp,
                                   workers=workers, close_mosaic_epoch=close_at, compat=config.compat, **loader_kw,
                                   buckets=(train_loader.max_boxes_bound(),))
    batch = train_loader.global_batch
    check_batch_divides(batch, n_dev)
    # multi-host: every process validates the whole set on its first local device (see train.py)
    n_val_dev = n_dev if jax.process_count() == 1 else 1
    val_batch = max(2 * batch // n_val_dev * n_val_dev, n_val_dev)
    val_loader = ValLoader(val_ds, batch_size=val_batch, rect=True, workers=workers, compat=config.compat)

    nb = train_loader.num_batches
    nbs = int(config.nbs)
    accumulate = accumulate_steps(nbs, batch)
    weight_decay = scaled_weight_decay(float(config.weight_decay), batch, nbs)
    iterations = math.ceil(len(train_ds) / max(batch, nbs)) * epochs
    name, lr0, momentum = str(config.optimizer), float(config.lr0), float(config.momentum)
    warmup_bias_lr = float(config.warmup_bias_lr)
    lines = []
    if name == "auto":
        lines.append(f"optimizer: 'optimizer=auto' found, ignoring 'lr0={lr0}' and 'momentum={momentum}' and "
                     f"determining best 'optimizer', 'lr0' and 'momentum' automatically... ")
        name, lr0, momentum = auto_optimizer(nc, iterations, config.compat)
        warmup_bias_lr = 0.0
    if name not in OPTIMIZERS:
        near = cfgmod.closest_key(name, OPTIMIZERS)
        raise cfgmod.ConfigError(f"optimizer={name!r} is not supported; choose one of {OPTIMIZERS} or auto."
                                 + (f" Did you mean '{near}'?" if near else ""))
    schedule = Schedule(lr0=lr0, lrf=float(config.lrf), epochs=epochs, nb=nb,
                        nw=warmup_iterations(float(config.warmup_epochs), nb, epochs, config.compat),
                        momentum=momentum, warmup_momentum=float(config.warmup_momentum),
                        warmup_bias_lr=warmup_bias_lr, cos_lr=bool(config.cos_lr), accumulate=accumulate,
                        nbs_over_batch=nbs / batch, compat=config.compat)
    frozen = cfgmod.parse_freeze(config.freeze)
    hyper = TrainHyper(schedule=schedule, optimizer=name, weight_decay=weight_decay, box=float(config.box),
                       cls=float(config.cls), dfl=float(config.dfl), compat=config.compat, frozen_layers=frozen)
    mom_txt = f"momentum={momentum}" if name in MOMENTUM_OPTIMIZERS else f"betas=({momentum}, 0.999)"
    lines.append(f"optimizer: {name}(lr={lr0}, {mom_txt}) with parameter groups "
                 f"{_count_groups(variables['params'], weight_decay)}")
    config.batch = batch
    return Setup(config, save_dir, model, variables, names, train_loader, val_loader, hyper, mesh, "\n".join(lines))


def _auto_batch(config, devices, model, variables, train_ds) -> int:
    """``batch=-1`` / a fraction: the global batch AutoBatch measures for this model, image size and dataset."""
    from yolojax.data.loader import usual_box_bucket
    from yolojax.engine.state import create_train_state, train_step

    if jax.process_count() > 1:
        raise cfgmod.ConfigError(f"batch={config.batch} (AutoBatch) needs a single process: every process must train "
                                 "with the same batch. Give the global batch size, e.g. batch=16.")
    name = str(config.optimizer) if str(config.optimizer) in OPTIMIZERS else "SGD"
    # the schedule's values do not change the step's memory; accumulate 2 keeps the gradient accumulator in it
    probe = TrainHyper(schedule=Schedule(lr0=0.01, lrf=0.01, epochs=1, nb=1, nw=-1, momentum=0.9,
                                         warmup_momentum=0.8, warmup_bias_lr=0.0, accumulate=2, nbs_over_batch=2.0,
                                         compat=config.compat),
                       optimizer=name, compat=config.compat, frozen_layers=cfgmod.parse_freeze(config.freeze))
    counts = [len(lb) for lb in train_ds.labels]
    mosaic, mixup = (0.0, 0.0) if config.rect else (float(config.mosaic), float(config.mixup))
    return auto_batch(config.batch, devices, imgsz=int(config.imgsz), step=train_step, log=_log,
                      make_state=lambda: jax.eval_shape(lambda v: create_train_state(model, v, probe), variables),
                      max_boxes=lambda b: usual_box_bucket(counts, b, mosaic, mixup, int(config.seed)))


def _count_groups(params, weight_decay: float) -> str:
    from yolojax.engine.optim import param_group_labels

    labels = jax.tree.leaves(param_group_labels(params))
    return (f"{labels.count('bn')} weight(decay=0.0), {labels.count('weight')} weight(decay={weight_decay:g}), "
            f"{labels.count('bias')} bias(decay=0.0)")


class EarlyStopping:
    """Stop when fitness has not improved for ``patience`` epochs (v8: ties count as improvement)."""

    def __init__(self, patience: int, compat: str = "v8"):
        self.patience = patience or float("inf")
        self.best_fitness, self.best_epoch, self.compat = 0.0, 0, compat

    def __call__(self, epoch: int, fitness: float | None) -> bool:
        if fitness is None:
            return False
        improved = fitness >= self.best_fitness if self.compat == "v8" else (fitness > self.best_fitness
                                                                             or self.best_fitness == 0)
        if improved:
            self.best_epoch, self.best_fitness = epoch, fitness
        return (epoch - self.best_epoch) >= self.patience

    def possible_stop(self, epoch: int) -> bool:
        return (epoch - self.best_epoch) >= self.patience - 1

    def state(self) -> dict:
        return {"best_fitness": self.best_fitness, "best_epoch": self.best_epoch}

    def load(self, s: dict) -> None:
        self.best_fitness, self.best_epoch = float(s["best_fitness"]), int(s["best_epoch"])
