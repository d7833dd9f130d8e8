"""Training engine: the train state, the pure train/eval steps, optimizer and schedule, checkpoints, devices; the run
builder (``builder.build_run``) and the loop (``loop.train``) that run a ``task.Task``."""
from __future__ import annotations

__all__ = ["TrainState", "TrainHyper", "Schedule", "create_train_state", "train_step", "eval_step"]


def __getattr__(name):  # lazy: importing yolojax.config (the command line's checks) does not import JAX
    if name == "Schedule":
        from yolojax.engine.optim import Schedule

        return Schedule
    if name in __all__:
        from yolojax.engine import state

        return getattr(state, name)
    raise AttributeError(f"module 'yolojax.engine' has no attribute {name!r}")
