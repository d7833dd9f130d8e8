"""What the YOLOv8 tasks share: the weights files, the model summary line and AutoBatch's probe state."""
from __future__ import annotations

from typing import Callable

import jax

from yolojax import config as cfgmod


class YoloFiles:
    """The Task members every YOLOv8 task implements alike (mixed into the task classes)."""

    def model_line(self, model) -> str:
        from yolojax.nn.summary import model_info

        return model_info(model, imgsz=640).line()

    def save_weights(self, variables, path, names, model) -> None:
        from yolojax.weights import save_state_dict

        save_state_dict(variables, path, names=dict(names), model=model)

    def load_weights(self, path) -> dict:
        from yolojax.weights import load

        return load(path)[1]


def probe_state(config, model, variables, objective: Callable | None = None, *, example_batch: int) -> Callable:
    """``make_state`` for ``yolojax.engine.autobatch.auto_batch``: the abstract train state of ``model`` with the
    run's optimizer (AutoBatch measures memory, so the schedule's values do not matter; accumulate 2 keeps the
    gradient accumulator in the step). AutoBatch needs a single process: every process must train the same batch."""
    from yolojax.engine.optim import OPTIMIZERS, Schedule
    from yolojax.engine.state import TrainHyper, create_train_state

    if jax.process_count() > 1:
        raise cfgmod.ConfigError(f"batch={config.batch} (AutoBatch) needs a single process: every process must "
                                 f"train with the same batch. Give the global batch size, e.g. batch={example_batch}.")
    name = str(config.optimizer) if str(config.optimizer) in OPTIMIZERS else "SGD"
    probe = TrainHyper(schedule=Schedule(lr0=0.01, lrf=0.01, epochs=1, nb=1, nw=-1, momentum=0.9,
                                         warmup_momentum=0.8, warmup_bias_lr=0.0, accumulate=2,
                                         nbs_over_batch=2.0, compat=config.compat),
                       optimizer=name, compat=config.compat, frozen_layers=cfgmod.parse_freeze(config.freeze),
                       objective=objective, seed=int(config.seed))
    return lambda: jax.eval_shape(lambda v: create_train_state(model, v, probe), variables)
