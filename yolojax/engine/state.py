"""The train state and the pure, jittable train and eval steps.

    state = create_train_state(model, variables, hyper)   # hyper: TrainHyper (schedule, optimizer, gains)
    state, metrics = train_step(state, batch)     # jit it with donate_argnums=0
    out = eval_step(ema_variables, images, model=..., ...)   # decode + NMS (+ losses), fixed-size outputs

``batch``: a training batch dict (``yolojax.augment.batch``): "boxes" (B, M, 4) float32 pixel xyxy, "classes"
(B, M) int32, "mask" (B, M) bool, and the images in one of its layouts: "images" (B, S, S, 3) uint8 RGB, or what the
step finishes itself (``yolojax.augment.device``: the HSV jitter; the mosaic, warp and flips; a multi-scale resize).
One call of ``train_step`` consumes one batch (one Ultralytics iteration ``ni``): forward (train-mode BN),
TaskAligned assignment and loss, gradient, accumulation, and - every ``accumulate`` iterations - gradient clipping
(global norm 10), the optimizer update and the EMA update.
No host synchronisation: the schedule is computed on the device from the iteration counter.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from yolojax.augment.device import batch_images, resize_batch
from yolojax.engine.optim import Schedule, build_optimizer, ema_decay, param_group_labels, set_hyperparams
from yolojax.loss import detection_loss
from yolojax.nn.blocks import decode_levels
from yolojax.ops.nms import non_max_suppression

MAX_GRAD_NORM = 10.0


@dataclasses.dataclass(frozen=True)
class TrainHyper:
    """Settings of the train step. ``schedule`` moves into the state (runtime values, see ``Schedule``);
    everything else is static (hashable) and part of the compiled program."""

    schedule: Schedule | None
    optimizer: str = "SGD"
    weight_decay: float = 0.0005  # already scaled by batch * accumulate / nbs
    box: float = 7.5
    cls: float = 0.5
    dfl: float = 1.5
    compat: str = "v8"
    frozen_layers: tuple[int, ...] = ()
    ema_decay: float = 0.9999
    ema_tau: float = 2000.0
    # The task's loss: ``objective(outputs, batch, model) -> (total, items)`` with ``outputs`` the train-mode forward
    # of ``batch``'s images, ``total`` the scalar to differentiate, ``items`` scalars reported beside it. Static and
    # hashable (a module-level function): part of the compiled program. None: the detection loss from box, cls, dfl.
    objective: Callable | None = None
    # The run's seed: a model with dropout draws its masks from a key of (seed, iteration), so a resumed run draws
    # exactly what it would have drawn. A model without dropout draws nothing (the step does not depend on it).
    seed: int = 0
    # Set by create_train_state: the schedule makes every iteration an optimizer step (batch >= nbs), so the step
    # needs neither the accumulator (a read, add and zeroing of every gradient) nor a branch (a lax.cond, which
    # XLA:GPU runs either as a CUDA-graph conditional or by reading the predicate back on the host).
    optimizer_every_step: bool = False


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # global iteration ni (batches consumed)
    params: Any
    batch_stats: Any
    opt_state: Any
    grad_accum: Any  # summed gradients since the last optimizer step
    last_opt_step: jax.Array  # ni of the last optimizer step (-1 before the first)
    ema_params: Any
    ema_batch_stats: Any
    ema_updates: jax.Array
    schedule: Schedule  # lr/momentum/accumulation schedule (numbers are leaves: no recompiles)
    model: nn.Module = flax.struct.field(pytree_node=False)
    tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)
    hyper: TrainHyper = flax.struct.field(pytree_node=False)

    @property
    def ema_variables(self):
        return {"params": self.ema_params, "batch_stats": self.ema_batch_stats}

    @property
    def variables(self):
        return {"params": self.params, "batch_stats": self.batch_stats}


def create_train_state(model: nn.Module, variables, hyper: TrainHyper) -> TrainState:
    """A fresh state: optimizer state for the three parameter groups, EMA = a copy of the weights."""
    labels = param_group_labels(variables["params"], hyper.frozen_layers)
    s = hyper.schedule
    tx = build_optimizer(hyper.optimizer, lr0=s.lr0, momentum=s.momentum, weight_decay=hyper.weight_decay,
                         labels=labels)

    def fresh(params, batch_stats):  # one compiled program (op by op it compiled ~100 tiny ones: seconds on a CPU)
        return dict(params=params, batch_stats=batch_stats, opt_state=tx.init(params),
                    grad_accum=jax.tree.map(jnp.zeros_like, params), ema_params=jax.tree.map(jnp.copy, params),
                    ema_batch_stats=jax.tree.map(jnp.copy, batch_stats))

    arrays = jax.jit(fresh)(variables["params"], variables["batch_stats"])
    # weight decay is an injected hyperparameter (runtime value): keep it out of the static settings
    acc_end = s.nbs_over_batch if s.compat == "v8" else s.accumulate  # accumulation at the end of warmup
    every_step = bool(s.accumulate == 1 and acc_end <= 1)  # then Schedule.at's accumulate is 1 throughout
    hyper = dataclasses.replace(hyper, schedule=None, weight_decay=0.0, optimizer_every_step=every_step)
    return TrainState(step=jnp.zeros((), jnp.int32), last_opt_step=jnp.full((), -1, jnp.int32),
                      ema_updates=jnp.zeros((), jnp.int32), schedule=s.as_arrays(), model=model, tx=tx, hyper=hyper,
                      **arrays)


def clip_by_global_norm_torch(grads, max_norm: float = MAX_GRAD_NORM):
    """``torch.nn.utils.clip_grad_norm_``: scale by max_norm / (norm + 1e-6) when that is below 1."""
    norm = optax.global_norm(grads)
    coef = jnp.minimum(max_norm / (norm + 1e-6), 1.0)
    return jax.tree.map(lambda g: g * coef, grads), norm


def preprocess(images):
    """uint8 NHWC -> float32 in [0, 1] (on the device: the host ships bytes; the model casts to its compute dtype)."""
    return images.astype(jnp.float32) / 255.0


def _detection_objective(h: TrainHyper):
    """The default objective: the v8 detection loss with ``h``'s gains; items add ``instances`` (boxes in the batch)."""

    def objective(levels, batch, model):
        targets = {"boxes": batch["boxes"], "classes": batch["classes"], "mask": batch["mask"]}
        total, items = detection_loss(levels, targets, num_classes=model.num_classes, box=h.box, cls=h.cls,
                                      dfl=h.dfl, compat=h.compat)
        return total, {**items, "instances": jnp.sum(batch["mask"])}

    return objective


def train_step(state: TrainState, batch) -> tuple[TrainState, dict]:
    """One iteration: loss + grad on ``batch``, accumulate, and step the optimizer when due.

    ``metrics``: the objective's items, ``loss`` (the total unless the items name their own), ``optimizer_step``,
    ``grad_norm`` and the three groups' learning rates ``lr/pg0..2``."""
    h = state.hyper
    objective = h.objective or _detection_objective(h)
    images = resize_batch(preprocess(batch_images(batch)), batch)  # multi-scale: the [0, 1] batch resized

    rngs = {}
    if getattr(state.model, "dropout", 0.0) > 0:  # the classifier's head dropout
        rngs = {"dropout": jax.random.fold_in(jax.random.key(h.seed), state.step)}

    def loss_fn(params):
        outputs, updates = state.model.apply({"params": params, "batch_stats": state.batch_stats}, images,
                                             train=True, mutable=["batch_stats"], rngs=rngs)
        total, items = objective(outputs, batch, state.model)
        return total, (items, updates["batch_stats"])

    (total, (items, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    ni = state.step
    lrs, momentum, accumulate = state.schedule.at(ni)

    def do_update(grad_sum):
        clipped, norm = clip_by_global_norm_torch(grad_sum)
        opt_state = set_hyperparams(state.opt_state, lrs, momentum)
        updates, opt_state = state.tx.update(clipped, opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        ema_updates = state.ema_updates + 1
        d = ema_decay(ema_updates, h.ema_decay, h.ema_tau)
        blend = lambda e, v: d * e + (1.0 - d) * v  # noqa: E731
        return (params, opt_state, jax.tree.map(jnp.zeros_like, grad_sum), ni,
                jax.tree.map(blend, state.ema_params, params), jax.tree.map(blend, state.ema_batch_stats, batch_stats),
                ema_updates, norm)

    if h.optimizer_every_step:  # the accumulator stays zero, untouched
        due = jnp.ones((), bool)
        params, opt_state, _, last, ema_p, ema_bs, ema_updates, grad_norm = do_update(grads)
        grad_accum = state.grad_accum
    else:
        grad_accum = jax.tree.map(jnp.add, state.grad_accum, grads)
        due = (ni - state.last_opt_step) >= accumulate

        def no_update(_):
            return (state.params, state.opt_state, grad_accum, state.last_opt_step, state.ema_params,
                    state.ema_batch_stats, state.ema_updates, jnp.zeros((), jnp.float32))

        params, opt_state, grad_accum, last, ema_p, ema_bs, ema_updates, grad_norm = jax.lax.cond(
            due, lambda _: do_update(grad_accum), no_update, None)
    new_state = state.replace(step=ni + 1, params=params, batch_stats=batch_stats, opt_state=opt_state,
                              grad_accum=grad_accum, last_opt_step=last, ema_params=ema_p, ema_batch_stats=ema_bs,
                              ema_updates=ema_updates)
    metrics = {"loss": total, **items, "optimizer_step": due,
               "grad_norm": grad_norm, "lr/pg0": lrs["bias"] if h.compat == "v8" else lrs["weight"],
               "lr/pg1": lrs["weight"] if h.compat == "v8" else lrs["bn"],
               "lr/pg2": lrs["bn"] if h.compat == "v8" else lrs["bias"]}
    return new_state, metrics


def eval_step(variables, images, *, model: nn.Module, conf: float = 0.001, iou: float = 0.7, max_det: int = 300,
              agnostic: bool = False, multi_label: bool = True, targets=None, loss_gains=(7.5, 0.5, 1.5),
              compat: str = "v8"):
    """Eval-mode forward, decode, NMS (+ the loss items when ``targets`` are given). Fixed-size outputs.

    Returns {"boxes" (B, max_det, 4) xyxy input pixels, "scores", "classes", "valid"} and, with targets,
    "box_loss"/"cls_loss"/"dfl_loss" computed from the eval-mode raw outputs (Ultralytics' val losses)."""
    x = preprocess(images)
    levels = model.apply(variables, x, train=False, decode=False)
    preds = decode_levels(levels, model.strides)
    boxes, scores, classes, valid = non_max_suppression(
        preds, conf, iou, agnostic=agnostic, multi_label=multi_label and model.num_classes > 1, max_det=max_det)
    out = {"boxes": boxes, "scores": scores, "classes": classes, "valid": valid}
    if targets is not None:
        box, cls, dfl = loss_gains
        _, items = detection_loss(levels, targets, num_classes=model.num_classes, box=box, cls=cls, dfl=dfl,
                                  compat=compat)
        out.update(items)
    return out
