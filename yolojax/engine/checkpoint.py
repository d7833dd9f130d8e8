"""Orbax checkpoints of the whole training state, written atomically.

A checkpoint (``<run>/weights/ckpt/<step>/``) holds the train state pytree (params, BN statistics,
optimizer state, gradient accumulator, EMA, counters) and a JSON ``meta`` item: epoch, position in the
epoch, best fitness, early-stopping state, running loss means, the resolved config and the data
iterator's state. Orbax writes into a temporary directory and renames it when complete, so a process
killed while saving leaves the previous checkpoint as the latest good one.
"""
from __future__ import annotations

import json
import pathlib
from typing import Any

import jax
import orbax.checkpoint as ocp


class Checkpointer:
    def __init__(self, directory, *, max_to_keep: int = 2):
        self.directory = pathlib.Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                               enable_async_checkpointing=False)
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state, meta: dict[str, Any]) -> None:
        dynamic = _dynamic_part(state)
        self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(dynamic),
                                                         meta=ocp.args.JsonSave(_jsonable(meta))), force=True)
        self.manager.wait_until_finished()

    def restore(self, state_template, step: int | None = None):
        """Restore into the structure (and shardings) of ``state_template``; returns (state, meta)."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"No checkpoint in {self.directory}.")
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, _dynamic_part(state_template))
        restored = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                                                      meta=ocp.args.JsonRestore()))
        return state_template.replace(**restored["state"]), dict(restored["meta"])

    def read_meta(self, step: int | None = None) -> dict:
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"No checkpoint in {self.directory}.")
        restored = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        return dict(restored["meta"])

    def close(self) -> None:
        self.manager.close()


_DYNAMIC = ("step", "params", "batch_stats", "opt_state", "grad_accum", "last_opt_step", "ema_params",
            "ema_batch_stats", "ema_updates")


def _dynamic_part(state) -> dict:
    return {k: getattr(state, k) for k in _DYNAMIC}


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=lambda o: o.item() if hasattr(o, "item") else str(o)))
