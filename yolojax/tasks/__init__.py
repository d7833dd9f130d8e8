"""The tasks yolojax trains (``yolojax.engine.task.Task``): entry points pick one and hand it to the engine."""
from __future__ import annotations

from yolojax.config.errors import ConfigError

TASKS = ("detect",)


def get_task(name: str):
    """The task called ``name``."""
    if name == "detect":
        from yolojax.tasks.detect import DetectTask

        return DetectTask()
    raise ConfigError(f"task={name!r} is not a yolojax task; valid: {', '.join(TASKS)}.")


def task_for(config):
    """The task a run's ``config`` asks for (``config.task``, detect by default)."""
    return get_task(str(config.get("task") or "detect"))
