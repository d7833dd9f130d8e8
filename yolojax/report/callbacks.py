"""The run's built-in callbacks (Ultralytics event names -> functions of a ``yolojax.train.RunContext``).

Only process 0 attaches them. Drawing and event writing must stay off the train step's critical path.
"""
from __future__ import annotations


def default_callbacks(config) -> dict[str, list]:
    """Callbacks every training run gets (monitoring, plots); ``{}`` attaches none."""
    return {}
