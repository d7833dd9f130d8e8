"""A ``time`` budget re-plans the run after every epoch: its length, the lr schedule and the epoch mosaic closes."""
from __future__ import annotations

import math

import jax.numpy as jnp

from yolojax.engine.optim import warmup_iterations


def replan_epochs(hours: float, elapsed: float, epochs_done: int) -> int:
    """The run length for a ``time`` budget of ``hours``: as many epochs as fit at the mean epoch time so far
    (``elapsed`` seconds over ``epochs_done`` epochs, validation and saving included), rounded up."""
    return math.ceil(hours * 3600 / (elapsed / epochs_done))


def replanned_schedule(schedule, epochs: int, nb: int, warmup_epochs: float, compat: str):
    """``schedule`` (the train state's) for a run of ``epochs``: the lr lambda follows the new end ([current]: so
    does the warmup length). Only leaf values change: the compiled step is reused."""
    nw = warmup_iterations(warmup_epochs, nb, epochs, compat)
    return schedule.replace(epochs=jnp.asarray(epochs, jnp.float32), nw=jnp.asarray(nw, jnp.float32))


def replan_close_mosaic(current: int | None, next_epoch: int, epochs: int, close_mosaic: int,
                        compat: str) -> int | None:
    """The epoch that closes mosaic (None: never) once the run is re-planned to ``epochs`` before ``next_epoch``.
    Closing is final. v8: mosaic closes at the start of epoch ``epochs - close_mosaic`` exactly, so an end that moves
    in front of the next epoch skips it; [current]: at the first epoch at or past it."""
    if close_mosaic <= 0 or (current is not None and current < next_epoch):
        return current
    target = epochs - close_mosaic
    if target >= next_epoch:
        return target
    return None if compat == "v8" else next_epoch


def mosaic_from(close_at: int | None, first: int):
    """What decides mosaic in epochs ``first`` on (two closing epochs that agree on it give the same batches)."""
    return None if close_at is None else max(close_at, first)
