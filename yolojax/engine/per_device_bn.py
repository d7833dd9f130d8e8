"""Per-device BatchNorm statistics (``config.bn_sync=False``), as Ultralytics DDP trains (no SyncBatchNorm).

    step = make_train_step_per_device_bn(mesh)          # same signature as state.train_step
    step_fn = jax.jit(step, in_shardings=(repl, data), out_shardings=(repl, repl), donate_argnums=0)

The default train step, jitted with the batch sharded over the mesh, normalises with statistics of the
*global* batch (synchronised BN). Here ``shard_map`` runs ``train_step`` on each device's shard, so every
BatchNorm layer normalises with the statistics of that device's images only, exactly as each DDP rank does.

Loss scaling (what DDP optimises). Rank r computes the detection loss of its sub-batch, already multiplied by
its sub-batch size b = B / W, and Ultralytics multiplies it by the world size W before
``backward``; DDP then *averages* gradients over the W ranks. The applied gradient is therefore
``(1/W) · Σ_r W · ∇L_r = Σ_r ∇L_r``: the **sum** of the per-rank gradients of the per-rank losses. Here each
device takes the gradient of ``detection_loss`` on its shard and the gradients are summed with ``psum``
(inside the model's backward pass, so accumulation, clipping, the optimizer and the EMA in ``train_step``
see the summed gradient and stay identical on every device). The reported ``loss`` is the sum of the
per-device losses (the quantity whose gradient is applied), ``box/cls/dfl_loss`` are their mean, and
``instances`` is the total.

BN running statistics. DDP keeps (v8: broadcasts from rank 0 every forward; current: per rank) rank 0's
buffers and saves those. A replicated JAX state needs one value: ``running_stats="mean"`` (default) stores
the mean over devices of the per-device updated running statistics - for the running mean this equals the
update with the global batch mean, and it uses every image rather than one device's; ``"first"`` keeps
device 0's, as Ultralytics does.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, PartitionSpec as P

from yolojax.engine.devices import DATA_AXIS
from yolojax.engine.state import train_step


def shard_map(f, mesh: Mesh, in_specs, out_specs):
    """``jax.shard_map`` (jax >= 0.7) or the older experimental one, without replication checks.

    Checks are off because the psums here are explicit: with ``check_vma=True`` JAX would also insert its own
    psum when differentiating replicated parameters against sharded data."""
    if hasattr(jax, "shard_map"):
        return jax.shard_map(f, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False)
    from jax.experimental.shard_map import shard_map as legacy  # pragma: no cover - jax < 0.7

    return legacy(f, mesh, in_specs=in_specs, out_specs=out_specs, check_rep=False)


def _grad_psum(axis: str):
    """Identity whose backward pass sums the cotangent over ``axis``."""

    @jax.custom_vjp
    def ident(tree):
        return tree

    def fwd(tree):
        return tree, None

    def bwd(_, cotangent):
        return (jax.lax.psum(cotangent, axis),)

    ident.defvjp(fwd, bwd)
    return ident


def _first_device(x, axis: str):
    return jax.lax.psum(jnp.where(jax.lax.axis_index(axis) == 0, x, jnp.zeros_like(x)), axis)


@dataclasses.dataclass(frozen=True)
class PerDeviceModel:
    """Wraps the model inside ``shard_map``: gradients of the parameters are summed over devices, and the
    updated BN running statistics are combined into one replicated value (``running_stats``)."""

    model: Any
    axis: str = DATA_AXIS
    running_stats: str = "mean"

    def __getattr__(self, name):  # num_classes, strides, ... of the wrapped model
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.model, name)

    def apply(self, variables, *args, mutable=False, **kwargs):
        variables = {**variables, "params": _grad_psum(self.axis)(variables["params"])}
        out = self.model.apply(variables, *args, mutable=mutable, **kwargs)
        if mutable is False or "batch_stats" not in out[1]:
            return out
        y, updates = out
        if self.running_stats == "first":
            stats = jax.tree.map(lambda s: _first_device(s, self.axis), updates["batch_stats"])
        else:
            stats = jax.lax.pmean(updates["batch_stats"], self.axis)
        return y, {**updates, "batch_stats": stats}


def make_train_step_per_device_bn(mesh: Mesh, *, running_stats: str = "mean", axis: str = DATA_AXIS):
    """``train_step`` with per-device BN statistics over ``mesh``'s ``axis``: (state, batch) -> (state, metrics).

    ``state`` is replicated, ``batch`` sharded over ``axis`` (each device gets B / n images). With one device
    it computes exactly what ``train_step`` computes."""
    if running_stats not in ("mean", "first"):
        raise ValueError(f"running_stats={running_stats!r}: use 'mean' (average over devices) or 'first' "
                         f"(device 0's, as Ultralytics DDP keeps rank 0's).")

    def per_device(state, batch):
        model = state.model
        new_state, metrics = train_step(state.replace(model=PerDeviceModel(model, axis, running_stats)), batch)
        metrics = dict(metrics)
        for key in ("loss", "instances"):  # instances: a detection item
            if key in metrics:
                metrics[key] = jax.lax.psum(metrics[key], axis)
        for key in ("box_loss", "cls_loss", "dfl_loss"):
            if key in metrics:
                metrics[key] = jax.lax.pmean(metrics[key], axis)
        return new_state.replace(model=model), metrics

    return shard_map(per_device, mesh, in_specs=(P(), P(axis)), out_specs=(P(), P()))
