"""What a training run is built from: ``build_run(config, workdir, task) -> Run`` - the devices and mesh, the
task's datasets, loaders and model (weights transferred), AutoBatch, and the optimizer and schedule as
``TrainHyper``. The loop that runs it is ``yolojax.engine.loop.train``.
"""
from __future__ import annotations

import dataclasses
import math
import pathlib
from typing import Any

import jax
import jax.numpy as jnp

from yolojax import config as cfgmod
from yolojax.engine.autobatch import wants_autobatch
from yolojax.engine.devices import check_batch_divides, largest_divisor_at_most, make_mesh, select_devices
from yolojax.engine.metal import is_metal
from yolojax.engine.optim import (MOMENTUM_OPTIMIZERS, OPTIMIZERS, Schedule, accumulate_steps, auto_optimizer,
                                  param_group_labels, scaled_weight_decay, warmup_iterations)
from yolojax.engine.state import TrainHyper
from yolojax.engine.task import Task


@dataclasses.dataclass(frozen=True)
class Run:
    """A built run. ``config`` is the resolved configuration (image size rounded to the stride, the global batch
    AutoBatch or the loader settled on); the caller's object is left as it was."""

    config: Any
    save_dir: pathlib.Path
    mesh: Any
    model: Any
    variables: dict
    names: dict[int, str]
    train_loader: Any
    val_loader: Any
    hyper: TrainHyper
    optimizer_line: str
    task: Task


def compute_dtype(config, devices):
    """The model's compute dtype: ``config.dtype``, or with "auto" bfloat16 under ``amp`` on an accelerator."""
    if is_metal(devices[0]):
        return jnp.float32  # the Metal plugins compute in float32 only
    name = str(config.get("dtype", "auto"))
    if name == "auto":
        on_accel = devices[0].platform not in ("cpu",)
        return jnp.bfloat16 if (config.amp and on_accel) else jnp.float32
    return {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[name]


def build_run(config, workdir, task: Task) -> Run:
    """Data, model, optimizer, mesh for a run of ``task``; ``config`` as ``yolojax.config.check_config`` returns
    it (not changed: the resolved copy is ``Run.config``)."""
    config = cfgmod.apply_overrides(config, {"imgsz": cfgmod.check_imgsz(config.imgsz)}, source="resolved")
    devices = select_devices(config.device)
    save_dir = pathlib.Path(workdir) if workdir else cfgmod.run_dir(config)
    names, train_ds, val_ds = task.datasets(config)
    workers = int(config.workers)
    if devices[0].platform == "cpu" and jax.process_count() == 1:
        workers = 0  # as Ultralytics on CPU: worker processes compete with the step for the same cores
    model, variables = task.build_model(config, names, compute_dtype(config, devices))
    batch = config.batch
    if wants_autobatch(batch):
        batch = task.auto_batch(config, devices, model, variables, train_ds)
    if devices[0].platform == "cpu" and jax.process_count() == 1 and int(batch) > 0:
        # CPU devices split one machine's cores (YOLOJAX_CPU_DEVICES): use as many as divide the batch
        devices = devices[:largest_divisor_at_most(int(batch), len(devices))]
    n_dev = len(devices)
    check_batch_divides(int(batch), n_dev)
    mesh = make_mesh(devices)
    # multi-host: every process validates the whole set on its first local device (see yolojax.engine.loop)
    n_val_dev = n_dev if jax.process_count() == 1 else 1
    train_loader = task.train_loader(config, train_ds, batch=int(batch), workers=workers,
                                     platform=devices[0].platform)
    batch = train_loader.global_batch
    check_batch_divides(batch, n_dev)
    val_loader = task.val_loader(config, val_ds, batch=max(2 * batch // n_val_dev * n_val_dev, n_val_dev),
                                 workers=workers)
    config = cfgmod.apply_overrides(config, {"batch": batch}, source="resolved")
    hyper, line = _hyper(config, task, len(names), len(train_ds), batch, train_loader.num_batches, variables)
    return Run(config, save_dir, mesh, model, variables, names, train_loader, val_loader, hyper, line, task)


def _hyper(config, task: Task, nc: int, n_images: int, batch: int, nb: int, variables) -> tuple[TrainHyper, str]:
    """The train step's settings (optimizer, schedule, gains, the task's objective) and the optimizer's line."""
    epochs = int(config.epochs)
    nbs = int(config.nbs)
    weight_decay = scaled_weight_decay(float(config.weight_decay), batch, nbs)
    iterations = math.ceil(n_images / max(batch, nbs)) * epochs
    name, lr0, momentum = str(config.optimizer), float(config.lr0), float(config.momentum)
    warmup_bias_lr = float(config.warmup_bias_lr)
    lines = []
    if name == "auto":
        lines.append(f"optimizer: 'optimizer=auto' found, ignoring 'lr0={lr0}' and 'momentum={momentum}' and "
                     f"determining best 'optimizer', 'lr0' and 'momentum' automatically... ")
        fit_nc = task.auto_lr_classes(config, nc) if hasattr(task, "auto_lr_classes") else nc
        name, lr0, momentum = auto_optimizer(fit_nc, iterations, config.compat)
        warmup_bias_lr = 0.0
    if name not in OPTIMIZERS:
        near = cfgmod.closest_key(name, OPTIMIZERS)
        raise cfgmod.ConfigError(f"optimizer={name!r} is not supported; choose one of {OPTIMIZERS} or auto."
                                 + (f" Did you mean '{near}'?" if near else ""))
    schedule = Schedule(lr0=lr0, lrf=float(config.lrf), epochs=epochs, nb=nb,
                        nw=warmup_iterations(float(config.warmup_epochs), nb, epochs, config.compat),
                        momentum=momentum, warmup_momentum=float(config.warmup_momentum),
                        warmup_bias_lr=warmup_bias_lr, cos_lr=bool(config.cos_lr),
                        accumulate=accumulate_steps(nbs, batch), nbs_over_batch=nbs / batch, compat=config.compat)
    hyper = TrainHyper(schedule=schedule, optimizer=name, weight_decay=weight_decay, box=float(config.box),
                       cls=float(config.cls), dfl=float(config.dfl), compat=config.compat,
                       frozen_layers=cfgmod.parse_freeze(config.freeze), objective=task.objective(config),
                       seed=int(config.seed))
    mom_txt = f"momentum={momentum}" if name in MOMENTUM_OPTIMIZERS else f"betas=({momentum}, 0.999)"
    lines.append(f"optimizer: {name}(lr={lr0}, {mom_txt}) with parameter groups "
                 f"{_count_groups(variables['params'], weight_decay)}")
    return hyper, "\n".join(lines)


def _count_groups(params, weight_decay: float) -> str:
    labels = jax.tree.leaves(param_group_labels(params))
    return (f"{labels.count('bn')} weight(decay=0.0), {labels.count('weight')} weight(decay={weight_decay:g}), "
            f"{labels.count('bias')} bias(decay=0.0)")
