"""What a training run tells its observers: one immutable ``TrainEvent`` per Ultralytics event name.

The loop builds a new event for each call (``dataclasses.replace`` of the last one), so an observer that keeps an
event keeps what was true when it fired. Observers (the callbacks given to ``train_and_evaluate`` or added with
``YOLO.add_callback``) read these fields only; they never see the loop's own objects.
"""
from __future__ import annotations

import dataclasses
import pathlib
from typing import Any, Mapping, Sequence

EVENTS = ("on_pretrain_routine_end", "on_train_start", "on_train_epoch_start", "on_train_batch_end",
          "on_train_epoch_end", "on_fit_epoch_end", "on_model_save", "on_train_end")


@dataclasses.dataclass(frozen=True)
class TrainEvent:
    name: str  # one of EVENTS
    task: str  # "detect" | "classify"
    config: Any  # the run's configuration (read it, do not change it)
    save_dir: pathlib.Path
    names: Mapping[int, str]  # class names of the dataset
    epochs: int
    epoch: int = 0  # 0-based epoch the event belongs to
    step: int = 0  # global iteration (batches consumed)
    batch: Mapping[str, Any] | None = None  # the last host batch (on_train_batch_end)
    batch_metrics: Mapping[str, Any] | None = None  # the last step's metrics, device values
    row: Mapping[str, float] | None = None  # the last results.csv row
    val: Any = None  # the last validation result
    metrics: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # row + fitness after on_fit_epoch_end
    compile_seconds: float = 0.0  # seconds spent compiling train steps so far
    step_shapes: Sequence[tuple] = ()  # the batch shapes the train step was compiled for, in order
    images_per_second: float = 0.0  # training throughput of the last epoch (compiles excluded)
    final: Any = None  # result of the final validation (best weights), on_train_end
    phases: Any = None  # yolojax.report.phases.PhaseTimer of the run
    wall_seconds: float = 0.0  # from the start of training to the end of the final validation
    train_labels: Sequence[Any] | None = None  # per-image labels of the training set, for the labels plot
