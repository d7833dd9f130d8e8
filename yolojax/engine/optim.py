"""Optimizer, parameter groups and the learning-rate / momentum schedule (spec §3.3–3.5).

Ultralytics builds three parameter groups: decayed weights (conv kernels), BatchNorm weights and all
biases (no decay). The v8-era group order, which the ``lr/pg0..2`` columns follow, is
pg0 = biases, pg1 = decayed weights, pg2 = BN weights ([current]: weights, BN, biases).

The schedule is a pure function of the global iteration ``ni`` so that it can run inside the jitted
step (no host round trip): during warmup (``ni <= nw``) lr ramps linearly from 0 (biases: from
``warmup_bias_lr``) to ``lr0 * lf(epoch)`` and momentum from ``warmup_momentum`` to ``momentum``; then
every epoch trains at ``lr0 * lf(epoch)`` (8.2.103 steps the scheduler at the start of each epoch).
"""
from __future__ import annotations

import functools
import math

import flax
from typing import Any

import jax
import jax.numpy as jnp
import optax

GROUPS_V8 = ("bias", "weight", "bn")  # pg0, pg1, pg2 in 8.2.103
GROUPS_CURRENT = ("weight", "bn", "bias")
MOMENTUM_OPTIMIZERS = ("SGD", "RMSProp")
OPTIMIZERS = ("SGD", "Adam", "Adamax", "AdamW", "NAdam", "RAdam", "RMSProp")


def param_group_labels(params, frozen_layers: tuple[int, ...] = ()) -> Any:
    """Label each parameter leaf: 'bias', 'weight', 'bn' or 'frozen' (layer index in ``frozen_layers``)."""

    def label(kp, _):
        path = [k.key for k in kp]
        layer = int(path[0].split("_")[1]) if path[0].startswith("model_") else -1
        if layer in frozen_layers:
            return "frozen"
        if path[-1] == "bias":
            return "bias"
        if path[-2] == "bn":
            return "bn"
        return "weight"

    return jax.tree_util.tree_map_with_path(label, params)


def auto_optimizer(nc: int, iterations: int, compat: str = "v8") -> tuple[str, float, float]:
    """``optimizer=auto``: SGD(0.01, 0.9) for long runs (> 10000 iterations), else AdamW(lr_fit, 0.9)."""
    lr_fit = round(0.002 * 5 / (4 + nc), 6)
    if iterations > 10000:
        return ("SGD" if compat == "v8" else "SGD"), 0.01, 0.9  # current: MuSGD, which we do not implement
    return "AdamW", lr_fit, 0.9


def _base_optimizer(name: str, learning_rate, momentum, weight_decay) -> optax.GradientTransformation:
    """One group's optimizer with PyTorch update rules; ``learning_rate``/``momentum`` are injected."""
    if name == "SGD":  # torch: g += wd*p; buf = mu*buf + g; p -= lr*(g + mu*buf)
        return optax.chain(optax.add_decayed_weights(weight_decay),
                           optax.trace(decay=momentum, nesterov=True), optax.scale_by_learning_rate(learning_rate))
    if name == "AdamW":  # decoupled: p *= 1 - lr*wd, then Adam
        return optax.adamw(learning_rate, b1=momentum, b2=0.999, eps=1e-8, weight_decay=weight_decay)
    l2 = optax.add_decayed_weights(weight_decay)  # torch Adam/Adamax/NAdam/RAdam/RMSprop: L2 into the gradient
    if name == "Adam":
        inner = optax.scale_by_adam(b1=momentum, b2=0.999, eps=1e-8)
    elif name == "Adamax":
        inner = optax.scale_by_adamax(b1=momentum, b2=0.999, eps=1e-8)
    elif name == "NAdam":
        inner = optax.scale_by_adam(b1=momentum, b2=0.999, eps=1e-8, nesterov=True)
    elif name == "RAdam":
        inner = optax.scale_by_radam(b1=momentum, b2=0.999, eps=1e-8)
    elif name == "RMSProp":  # torch RMSprop(alpha 0.99, eps 1e-8, momentum)
        return optax.chain(l2, optax.scale_by_rms(decay=0.99, eps=1e-8, eps_in_sqrt=False, bias_correction=False),
                           optax.trace(decay=momentum), optax.scale_by_learning_rate(learning_rate))
    else:
        raise ValueError(f"optimizer={name!r} is not one of {OPTIMIZERS + ('auto',)}.")
    return optax.chain(l2, inner, optax.scale_by_learning_rate(learning_rate))


def build_optimizer(name: str, *, lr0: float, momentum: float, weight_decay: float, labels) -> optax.GradientTransformation:
    """Three groups (decay only on 'weight'), frozen parameters never change; lr and momentum injectable.

    The same arguments give the same transformation object, so a second run in one process (a notebook, the
    test suite) finds its train step already traced and compiled instead of tracing it again."""
    leaves, treedef = jax.tree_util.tree_flatten(labels)
    return _build_optimizer(name, float(lr0), float(momentum), float(weight_decay), tuple(leaves), treedef)


@functools.lru_cache(maxsize=16)
def _build_optimizer(name, lr0, momentum, weight_decay, label_leaves, label_treedef):
    labels = jax.tree_util.tree_unflatten(label_treedef, label_leaves)
    txs = {}
    for group in ("bias", "weight", "bn"):
        wd = weight_decay if group == "weight" else 0.0
        txs[group] = optax.inject_hyperparams(_base_optimizer, static_args=("name",))(
            name=name, learning_rate=lr0, momentum=momentum, weight_decay=wd)
    txs["frozen"] = optax.set_to_zero()
    return optax.multi_transform(txs, labels)


def set_hyperparams(opt_state, lrs: dict[str, jax.Array], momentum: jax.Array):
    """Return ``opt_state`` with each group's learning rate (and momentum) replaced."""
    inner = dict(opt_state.inner_states)
    for group, lr in lrs.items():
        masked = inner[group]
        hp = dict(masked.inner_state.hyperparams)
        hp["learning_rate"] = jnp.asarray(lr, hp["learning_rate"].dtype)
        hp["momentum"] = jnp.asarray(momentum, hp["momentum"].dtype)
        inner[group] = masked._replace(inner_state=masked.inner_state._replace(hyperparams=hp))
    return opt_state._replace(inner_states=inner)


@flax.struct.dataclass
class Schedule:
    """Everything the in-step schedule needs. The numbers are pytree leaves (runtime values carried in the
    train state), so runs that differ only in epochs, lr or dataset size share one compiled step; the
    three flags that change the computation are static."""

    lr0: float
    lrf: float
    epochs: int
    nb: int  # batches per epoch
    nw: int  # warmup iterations (-1: none)
    momentum: float
    warmup_momentum: float
    warmup_bias_lr: float
    accumulate: int = 1  # max(round(nbs / batch), 1)
    nbs_over_batch: float = 1.0
    cos_lr: bool = flax.struct.field(pytree_node=False, default=False)
    compat: str = flax.struct.field(pytree_node=False, default="v8")
    uses_momentum: bool = flax.struct.field(pytree_node=False, default=True)  # SGD/RMSProp warm momentum up

    def as_arrays(self) -> "Schedule":
        return jax.tree.map(lambda v: jnp.asarray(v, jnp.float32), self)

    def lf(self, epoch):
        e = jnp.asarray(epoch, jnp.float32)
        if self.cos_lr:
            return ((1 - jnp.cos(e * math.pi / self.epochs)) / 2) * (self.lrf - 1) + 1
        if self.compat == "current":
            return jnp.maximum(1 - e / self.epochs, 0.0) * (1.0 - self.lrf) + self.lrf
        return (1 - e / self.epochs) * (1.0 - self.lrf) + self.lrf

    def at(self, ni) -> tuple[dict[str, jax.Array], jax.Array, jax.Array]:
        """(lr per group, momentum, accumulate) in effect at global iteration ``ni``."""
        ni = jnp.asarray(ni, jnp.float32)
        epoch = jnp.floor(ni / self.nb)
        target = self.lr0 * self.lf(epoch)
        frac = jnp.clip(ni / jnp.maximum(self.nw, 1), 0.0, 1.0)
        in_warmup = (ni <= self.nw) & (self.nw > 0)
        lrs = {}
        for group in ("bias", "weight", "bn"):
            start = self.warmup_bias_lr if group == "bias" else 0.0
            lrs[group] = jnp.where(in_warmup, start + frac * (target - start), target)
        mom = jnp.where(in_warmup & self.uses_momentum,
                        self.warmup_momentum + frac * (self.momentum - self.warmup_momentum), self.momentum)
        acc_end = self.nbs_over_batch if self.compat == "v8" else self.accumulate
        acc_warm = jnp.maximum(1.0, jnp.round(1.0 + frac * (acc_end - 1.0)))
        accumulate = jnp.where(in_warmup, acc_warm, self.accumulate).astype(jnp.int32)
        return lrs, mom, accumulate


def accumulate_steps(nbs: int, batch: int) -> int:
    """Batches whose gradients are summed into one optimizer step: max(round(nbs / batch), 1)."""
    return max(round(nbs / batch), 1)


def scaled_weight_decay(weight_decay: float, batch: int, nbs: int) -> float:
    """weight_decay * batch * accumulate / nbs (e.g. batch 16 -> 5e-4, 24 -> 5.625e-4, 128 -> 1e-3)."""
    return weight_decay * batch * accumulate_steps(nbs, batch) / nbs


def warmup_iterations(warmup_epochs: float, nb: int, epochs: int, compat: str = "v8") -> int:
    if compat == "v8":
        return max(round(warmup_epochs * nb), 100) if warmup_epochs > 0 else -1
    return round(min(warmup_epochs, max(epochs - 1, 0)) * nb)


def ema_decay(updates, decay: float = 0.9999, tau: float = 2000.0):
    """d = decay * (1 - exp(-updates / tau)); expm1 keeps float32 exact where 1 - exp(x) would cancel."""
    return decay * -jnp.expm1(-jnp.asarray(updates, jnp.float32) / tau)
