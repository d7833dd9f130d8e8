"""The validator: jitted forward + decode + NMS (+ losses) on the device, matching and AP on the host.

Used by the detection task every epoch (EMA weights, rectangular batches, val losses) and by ``yolojax.evaluate``.
Batches are dispatched one ahead of the host-side matching, so the device works while the host
computes IoUs for the previous batch.
"""
from __future__ import annotations

import dataclasses
import functools
import time
from typing import Callable, Mapping

import jax
import numpy as np

from yolojax.engine.devices import compiler_options
from yolojax.engine.executables import Programs, from_yolojax, signature, store_for_run
from yolojax.engine.state import eval_step
from yolojax.metrics import ConfusionMatrix, DetectionStatsAccumulator, DetMetrics
from yolojax.ops.nms import scale_boxes


@dataclasses.dataclass
class ValResult:
    metrics: DetMetrics
    losses: dict[str, float]  # val/box_loss, val/cls_loss, val/dfl_loss (empty without losses)
    speed: dict[str, float]  # ms per image: preprocess, inference, loss, postprocess
    table: list[str]
    seen: int
    accumulator: DetectionStatsAccumulator
    first_batches: list[dict]  # the first batches with predictions (for plots)
    predictions: list | None = None  # with keep_predictions: (dataset index, boxes xyxy original px, scores, classes)
    # seconds of the pass: val_data (waiting for batches), val_forward (dispatching forward + NMS and reading the
    # results back), val_matching (per-image matching on the host), val_metrics (AP, P/R and the table)
    phases: dict[str, float] = dataclasses.field(default_factory=dict)


def speed_line(speed: Mapping[str, float]) -> str:
    """Ultralytics' ``Speed:`` line of a validation (ms per image)."""
    return (f"Speed: {speed['preprocess']:.1f}ms preprocess, {speed['inference']:.1f}ms inference, "
            f"{speed.get('loss', 0.0):.1f}ms loss, {speed['postprocess']:.1f}ms postprocess per image")


def _eval(variables, images, conf, iou, targets, **static):
    return eval_step(variables, images, conf=conf, iou=iou, targets=targets, **static)


@functools.lru_cache(maxsize=8)
def _eval_programs(model, max_det: int, agnostic: bool, loss_gains: tuple, compat: str) -> Programs:
    """The eval step's programs per model and settings, shared by every Validator of this process: jitted over
    (variables, images, conf, iou, targets)."""
    static = dict(model=model, max_det=max_det, agnostic=agnostic, multi_label=True, loss_gains=loss_gains,
                  compat=compat)
    return Programs(functools.partial(_eval, **static), "eval_step", static=repr(sorted(static.items())),
                    compiler_options=compiler_options())


class Validator:
    """``Validator(model, loader, names)(variables) -> ValResult``.

    ``put`` places a host batch on the devices (the trainer passes its sharding helper); by default
    ``jax.device_put`` on the default device."""

    def __init__(self, model, loader, names: Mapping[int, str], *, conf: float | None = None, iou: float = 0.7,
                 max_det: int = 300, single_cls: bool = False, compat: str = "v8", compute_loss: bool = True,
                 loss_gains=(7.5, 0.5, 1.5), put: Callable | None = None, plots_batches: int = 3,
                 confusion: bool = True, keep_predictions: bool = False):
        self.model, self.loader, self.names = model, loader, dict(names)
        self.conf = 0.001 if conf is None else float(conf)
        self.iou, self.max_det, self.single_cls, self.compat = float(iou), int(max_det), single_cls, compat
        self.compute_loss, self.loss_gains = compute_loss, tuple(loss_gains)
        self.put = put or (lambda batch: jax.device_put(batch))
        self.plots_batches, self.confusion = plots_batches, confusion
        self.keep_predictions = keep_predictions
        self._programs = _eval_programs(model, self.max_det, bool(single_cls), self.loss_gains, compat)
        self._store = store_for_run() if from_yolojax(type(model)) else None  # see engine.executables
        self._compiled: dict = {}
        self.compiled_shapes: set = set()

    def dispatch(self, variables, batch):
        """The step on one host batch, dispatched (not waited for): the device outputs."""
        dev = self.put({k: batch[k] for k in ("images", "boxes", "classes", "mask")})
        targets = {k: dev[k] for k in ("boxes", "classes", "mask")} if self.compute_loss else None
        self.compiled_shapes.add((batch["images"].shape, batch["boxes"].shape if self.compute_loss else None))
        args = (variables, dev["images"], self.conf, self.iou, targets)
        key = signature(args)
        program = self._compiled.get(key)
        if program is None:
            program = self._compiled[key] = self._programs.make((), args, self._store)[0]
        return program(*args)

    def __call__(self, variables, *, progress: Callable | None = None) -> ValResult:
        nc = self.model.num_classes
        cm = ConfusionMatrix(nc, conf=0.25 if self.compat == "v8" else self.conf, compat=self.compat) \
            if self.confusion else None
        acc = DetectionStatsAccumulator(nc, self.names, compat=self.compat, single_cls=self.single_cls,
                                        confusion_matrix=cm)
        loss_sum = np.zeros(3)
        n_batches, seen = 0, 0
        t_pre = t_inf = t_post = 0.0
        first: list[dict] = []
        preds: list | None = [] if self.keep_predictions else None
        pending = None
        it = iter(self.loader)
        t0 = time.perf_counter()
        while True:
            try:
                batch = next(it)
            except StopIteration:
                batch = None
            t1 = time.perf_counter()
            t_pre += t1 - t0
            # usually returns at once (async dispatch); on a multi-device CPU the call itself may run the step
            out = self.dispatch(variables, batch) if batch is not None else None
            t_inf += time.perf_counter() - t1
            if pending is not None:
                pb, pout = pending
                t2 = time.perf_counter()
                host = jax.device_get(pout)
                t3 = time.perf_counter()
                t_inf += t3 - t2
                seen += self._accumulate(acc, pb, host, preds)
                if self.compute_loss:
                    loss_sum += [float(host["box_loss"]), float(host["cls_loss"]), float(host["dfl_loss"])]
                n_batches += 1
                if len(first) < self.plots_batches:
                    first.append({"batch": pb, "pred": host})
                t_post += time.perf_counter() - t3
                if progress is not None:
                    progress(n_batches)
            if batch is None:
                break
            pending = (batch, out)
            t0 = time.perf_counter()
        t4 = time.perf_counter()
        metrics = acc.compute()
        table = acc.table_lines(metrics)
        t_metrics = time.perf_counter() - t4
        losses = {}
        if self.compute_loss and n_batches:
            losses = {f"val/{k}": round(float(v) / n_batches, 5)
                      for k, v in zip(("box_loss", "cls_loss", "dfl_loss"), loss_sum)}
        n = max(seen, 1)
        speed = {"preprocess": 1e3 * t_pre / n, "inference": 1e3 * t_inf / n, "loss": 0.0,
                 "postprocess": 1e3 * t_post / n}
        phases = {"val_data": t_pre, "val_forward": t_inf, "val_matching": t_post, "val_metrics": t_metrics}
        return ValResult(metrics, losses, speed, table, seen, acc, first, preds, phases)

    @staticmethod
    def _accumulate(acc: DetectionStatsAccumulator, batch: dict, host: dict, preds: list | None = None) -> int:
        seen = 0
        for i in range(batch["images"].shape[0]):
            if not batch["image_valid"][i]:
                continue
            keep = host["valid"][i]
            gt = batch["mask"][i]
            acc.update(host["boxes"][i][keep], host["scores"][i][keep], host["classes"][i][keep],
                       batch["boxes"][i][gt], batch["classes"][i][gt],
                       ratio_pad=batch["ratio_pad"][i], orig_hw=batch["ori_shape"][i])
            if preds is not None:
                boxes = scale_boxes(host["boxes"][i][keep], batch["ratio_pad"][i], batch["ori_shape"][i])
                preds.append((int(batch["index"][i]), boxes, host["scores"][i][keep], host["classes"][i][keep]))
            seen += 1
        return seen
