"""Orbax checkpoints of the whole training state, written atomically.

A checkpoint (``<run>/weights/ckpt/<step>/``) holds the train state's arrays (params, BN statistics, optimizer
state, gradient accumulator, EMA, counters), a ``layout`` item that says where each array lies in them, and a
JSON ``meta`` item: epoch, position in the epoch, best fitness, early-stopping state, running loss means, the
resolved config and the data iterator's state. Orbax writes into a temporary directory and renames it when
complete, so a process killed while saving leaves the previous checkpoint as the latest good one.

The arrays are packed: one flat vector per dtype (``state/float32``, ``state/int32``), the leaves concatenated
in the state's flattening order, and ``layout`` lists each leaf's path, dtype, shape and offset. Orbax's cost is
per array whatever its size, and a YOLOv8 train state has about a thousand leaves, so a few vectors keep each save
short (benchmarks/RESULTS.md). ``read_arrays`` unpacks a checkpoint without a template (one dict of numpy arrays by
path); checkpoints in the unpacked layout (one Orbax array per leaf) restore too.

``Checkpointer(..., asynchronous=True)`` (the trainer's) returns from ``save`` once the packed vectors are made
(fresh arrays, so the next train step may donate the state) and writes them on Orbax's background thread; the next
``save``, any read and ``close`` wait for it. The rename still happens only once the write is complete.
"""
from __future__ import annotations

import json
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from yolojax.engine.distributed import local_value


class CheckpointMismatchError(ValueError):
    """The checkpoint holds a different train state (other model, optimizer or layout) than the one to restore."""


class Checkpointer:
    def __init__(self, directory, *, max_to_keep: int = 2, asynchronous: bool = False):
        self.directory = pathlib.Path(directory).absolute()
        self.asynchronous = asynchronous
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                               enable_async_checkpointing=asynchronous)
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def wait(self) -> None:
        """Block until a background save (``asynchronous=True``) is on disk."""
        self.manager.wait_until_finished()

    def latest_step(self) -> int | None:
        self.wait()
        return self.manager.latest_step()

    def save(self, step: int, state, meta: dict[str, Any]) -> None:
        packed, layout = pack(_dynamic_part(state))
        self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(packed),
                                                         layout=ocp.args.JsonSave({"leaves": layout}),
                                                         meta=ocp.args.JsonSave(_jsonable(meta))), force=True)
        if not self.asynchronous:
            self.wait()

    def restore(self, state_template, step: int | None = None):
        """Restore into the structure (and shardings) of ``state_template``; returns (state, meta)."""
        step = self._step(step)
        template = _dynamic_part(state_template)
        if not self._packed(step):  # written before the packing: one Orbax array per leaf
            abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
            restored = self.manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
            return state_template.replace(**restored["state"]), dict(restored["meta"])
        layout = self._layout(step)
        _check_layout(layout, template, f"{self.directory / str(step)}")
        leaves = jax.tree.leaves(template)
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(_abstract(layout, leaves[0].sharding)), meta=ocp.args.JsonRestore()))
        flat = _unpack(local_value(restored["state"]), layout)
        arrays = [_put(a, leaf.sharding) for a, leaf in zip(flat.values(), leaves)]
        dynamic = jax.tree.unflatten(jax.tree.structure(template), arrays)
        return state_template.replace(**dynamic), dict(restored["meta"])

    def read_arrays(self, step: int | None = None) -> dict[str, np.ndarray]:
        """The checkpoint's arrays as numpy, keyed by their path in the train state (``"['params']['0']..."``),
        without a template (any device count, any process)."""
        step = self._step(step)
        if not self._packed(step):
            raise CheckpointMismatchError(f"{self.directory / str(step)} predates packed checkpoints; restore it "
                                          "with Checkpointer.restore and a train state template.")
        layout = self._layout(step)
        one = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(_abstract(layout, one))))
        return _unpack(local_value(restored["state"]), layout)

    def read_meta(self, step: int | None = None) -> dict:
        step = self._step(step)
        restored = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        return dict(restored["meta"])

    def close(self) -> None:
        self.wait()
        self.manager.close()

    def _step(self, step: int | None) -> int:
        self.wait()
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"No checkpoint in {self.directory}.")
        return step

    def _packed(self, step: int) -> bool:
        return (self.directory / str(step) / "layout").is_dir()

    def _layout(self, step: int) -> list[dict]:
        return list(self.manager.restore(step, args=ocp.args.Composite(layout=ocp.args.JsonRestore()))
                    ["layout"]["leaves"])


_DYNAMIC = ("step", "params", "batch_stats", "opt_state", "grad_accum", "last_opt_step", "ema_params",
            "ema_batch_stats", "ema_updates")


def _dynamic_part(state) -> dict:
    return {k: getattr(state, k) for k in _DYNAMIC}


@jax.jit
def _concatenate(groups: dict[str, list]) -> dict[str, jax.Array]:
    return {dt: jnp.concatenate([x.ravel() for x in xs]) for dt, xs in groups.items()}


def pack(tree) -> tuple[dict[str, jax.Array], list[dict]]:
    """(one flat vector per dtype, the layout): the leaves of ``tree`` concatenated in flattening order, on the
    devices (and sharding) they live on. The layout lists ``{"path", "dtype", "shape", "offset"}`` per leaf."""
    groups: dict[str, list] = {}
    sizes: dict[str, int] = {}
    layout = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        dt = np.dtype(leaf.dtype).name
        layout.append({"path": jax.tree_util.keystr(path), "dtype": dt, "shape": list(leaf.shape),
                       "offset": sizes.get(dt, 0)})
        groups.setdefault(dt, []).append(leaf)
        sizes[dt] = sizes.get(dt, 0) + int(np.prod(leaf.shape))
    return _concatenate(groups), layout


def _abstract(layout: list[dict], sharding) -> dict[str, jax.ShapeDtypeStruct]:
    """The packed vectors' shapes (what to restore), placed with ``sharding``."""
    sizes: dict[str, int] = {}
    for e in layout:
        sizes[e["dtype"]] = sizes.get(e["dtype"], 0) + int(np.prod(e["shape"]))
    return {dt: jax.ShapeDtypeStruct((n,), np.dtype(dt), sharding=sharding) for dt, n in sizes.items()}


def _unpack(vectors: dict[str, np.ndarray], layout: list[dict]) -> dict[str, np.ndarray]:
    return {e["path"]: vectors[e["dtype"]][e["offset"]:e["offset"] + int(np.prod(e["shape"]))].reshape(e["shape"])
            for e in layout}


def _check_layout(layout: list[dict], template, where: str) -> None:
    want = [(jax.tree_util.keystr(p), np.dtype(x.dtype).name, list(x.shape))
            for p, x in jax.tree_util.tree_flatten_with_path(template)[0]]
    have = [(e["path"], e["dtype"], list(e["shape"])) for e in layout]
    if want == have:
        return
    for w, h in zip(want, have):
        if w != h:
            raise CheckpointMismatchError(f"{where} holds a different train state than this run builds: at {h[0]} "
                                          f"it has {h[1]}{tuple(h[2])}, the run {w[0]} {w[1]}{tuple(w[2])} (another "
                                          "model, number of classes or optimizer?).")
    raise CheckpointMismatchError(f"{where} holds {len(have)} arrays, this run's train state {len(want)} (another "
                                  "model or optimizer?).")


def _put(value: np.ndarray, sharding) -> jax.Array:
    return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=lambda o: o.item() if hasattr(o, "item") else str(o)))
