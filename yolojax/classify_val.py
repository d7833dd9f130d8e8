"""Classification validation (Ultralytics 8.2 ClassificationValidator): top-1/top-5 accuracy, val loss, confusion.

    validator = ClassifyValidator(model, ClassifyValLoader(ds, batch_size=128), names)
    result = validator(variables)        # ClassifyValResult
    result.results_dict                  # {"metrics/accuracy_top1": ..., "metrics/accuracy_top5": ...}
    result.losses                        # {"val/loss": ...}
    result.fitness                       # (top1 + top5) / 2

On the device, one jitted step per batch shape: eval-mode forward, softmax, the ``min(5, nc)`` best classes
(``jax.lax.top_k``: ties to the lower class id) and the batch's val loss over its valid images. On the host, the
ranked classes are gathered and scored as Ultralytics' ClassifyMetrics scores them, and the confusion matrix counts
(top-1 class, true class).

Val loss: Ultralytics averages the per-batch loss over the batches. In 8.2.103 (``compat="v8"``) the eval-mode model
returns probabilities and ``v8ClassificationLoss`` applies its cross-entropy to them (a softmax of the softmax, so
the value stays near ``log(nc)``); in 8.4 (``compat="current"``) it reads the logits. Both are reproduced.
"""
from __future__ import annotations

import dataclasses
import functools
import time
from typing import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from yolojax.compat import check_compat
from yolojax.metrics import classify_confusion, ranked_accuracy

TOP_K = 5


def classify_eval_step(variables, images, labels, valid, *, model, compat: str = "v8"):
    """(B, S, S, 3) uint8 RGB images, (B,) int labels, (B,) bool valid -> {"top" (B, min(5, nc)) int32 classes best
    first, "loss" () float32 the mean val loss of the valid images (0 when none)}."""
    x = images.astype(jnp.float32) / 255.0
    logits = model.apply(variables, x, train=False, decode=False).astype(jnp.float32)
    probs = jax.nn.softmax(logits, axis=-1)
    _, top = jax.lax.top_k(probs, min(TOP_K, logits.shape[-1]))
    logp = jax.nn.log_softmax(probs if compat == "v8" else logits, axis=-1)
    nll = -jnp.take_along_axis(logp, labels.astype(jnp.int32)[:, None], axis=-1)[:, 0]
    w = valid.astype(jnp.float32)
    return {"top": top.astype(jnp.int32), "loss": jnp.sum(nll * w) / jnp.maximum(jnp.sum(w), 1.0)}


@functools.lru_cache(maxsize=8)
def _jitted_step(model, compat: str, options: tuple):
    """One jitted step per model and compat, shared by every validator of this process."""
    return jax.jit(functools.partial(classify_eval_step, model=model, compat=compat),
                   compiler_options=dict(options) or None)


@dataclasses.dataclass
class ClassifyValResult:
    top1: float
    top5: float
    losses: dict[str, float]  # {"val/loss"} (empty without batches)
    confusion: np.ndarray  # (nc, nc) int64: row = top-1 predicted class, column = true class
    table: list[str]  # Ultralytics' console lines: the header, then the "all" row
    seen: int  # images scored
    speed: dict[str, float]  # ms per image: preprocess, inference, loss, postprocess
    phases: dict[str, float]  # seconds: val_data (waiting for batches), val_forward, val_metrics
    first_batches: list[dict]  # the first host batches with their ranked classes {"batch", "top"} (plots)

    @property
    def fitness(self) -> float:
        return (self.top1 + self.top5) / 2

    @property
    def results_dict(self) -> dict[str, float]:
        return {"metrics/accuracy_top1": self.top1, "metrics/accuracy_top5": self.top5}


def table_lines(top1: float, top5: float) -> list[str]:
    """Ultralytics' classification validation lines: ``%22s%11s%11s`` header, ``%22s%11.3g%11.3g`` all row."""
    return [("%22s" + "%11s" * 2) % ("classes", "top1_acc", "top5_acc"), ("%22s" + "%11.3g" * 2) % ("all", top1, top5)]


class ClassifyValidator:
    """``ClassifyValidator(model, loader, names)(variables) -> ClassifyValResult``.

    ``loader`` yields batches with ``images``, ``labels`` and ``image_valid`` (``ClassifyValLoader``); ``put``
    places a host batch on the devices (default ``jax.device_put``); ``compiler_options`` go to ``jax.jit``.
    Batches are dispatched one ahead of the host's bookkeeping."""

    def __init__(self, model, loader, names: Mapping[int, str], *, compat: str = "v8", put: Callable | None = None,
                 compiler_options: Mapping | None = None, plots_batches: int = 3):
        check_compat(compat)
        self.model, self.loader, self.names, self.compat = model, loader, dict(names), compat
        self.put = put or (lambda batch: jax.device_put(batch))
        self.plots_batches = int(plots_batches)
        self._step = _jitted_step(model, compat, tuple(sorted((compiler_options or {}).items())))
        self.compiled_shapes: set = set()

    def dispatch(self, variables, batch):
        """The step on one host batch, dispatched (not waited for): the device outputs."""
        dev = self.put({k: batch[k] for k in ("images", "labels", "image_valid")})
        self.compiled_shapes.add(tuple(batch["images"].shape))
        return self._step(variables, dev["images"], dev["labels"], dev["image_valid"])

    def __call__(self, variables, *, progress: Callable | None = None) -> ClassifyValResult:
        tops, labels, losses, first = [], [], [], []
        t_data = t_fwd = t_post = 0.0
        pending, it = None, iter(self.loader)
        while True:
            t0 = time.perf_counter()
            batch = next(it, None)
            t1 = time.perf_counter()
            out = self.dispatch(variables, batch) if batch is not None else None
            t2 = time.perf_counter()
            t_data, t_fwd = t_data + t1 - t0, t_fwd + t2 - t1
            if pending is not None:
                pb, pout = pending
                host = jax.device_get(pout)
                t3 = time.perf_counter()
                keep = np.asarray(pb["image_valid"], bool)
                tops.append(np.asarray(host["top"])[keep]), labels.append(np.asarray(pb["labels"])[keep])
                losses.append(float(host["loss"]))
                if len(first) < self.plots_batches:
                    first.append({"batch": pb, "top": host["top"]})
                t_fwd, t_post = t_fwd + t3 - t2, t_post + time.perf_counter() - t3
                if progress is not None:
                    progress(len(losses))
            if batch is None:
                break
            pending = (batch, out)
        t4 = time.perf_counter()
        nc = self.model.num_classes
        top = np.concatenate(tops) if tops else np.zeros((0, min(TOP_K, nc)), np.int32)
        lab = np.concatenate(labels) if labels else np.zeros((0,), np.int32)
        acc = ranked_accuracy(top, lab)
        confusion = classify_confusion(top[:, 0], lab, nc)
        val_loss = {"val/loss": round(float(np.mean(losses)), 5)} if losses else {}
        t_metrics = time.perf_counter() - t4
        n = max(len(lab), 1)
        speed = {"preprocess": 1e3 * t_data / n, "inference": 1e3 * t_fwd / n, "loss": 0.0,
                 "postprocess": 1e3 * (t_post + t_metrics) / n}
        phases = {"val_data": t_data, "val_forward": t_fwd, "val_metrics": t_post + t_metrics}
        return ClassifyValResult(acc["top1"], acc["top5"], val_loss, confusion, table_lines(acc["top1"], acc["top5"]),
                                 len(lab), speed, phases, first)
