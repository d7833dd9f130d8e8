"""Train a YOLOv8 model: ``python -m yolojax.train --config=configs/shapes.py [--config.key=value ...]``.

``train_and_evaluate(config, workdir)`` is the library entry point: it checks the configuration, picks the task
and hands both to the engine's loop (``yolojax.engine.loop.train``); this module's ``main`` only parses flags.
Callbacks (Ultralytics' event names, ``yolojax.report.events.EVENTS``) receive an immutable
``yolojax.report.events.TrainEvent``.
"""
from __future__ import annotations

import sys
from typing import Callable

if __name__ == "__main__":  # `python -m yolojax.train`: restart once with glibc's huge-page malloc, before JAX loads
    from yolojax.startup import begin

    begin(restart=True)

from yolojax import config as cfgmod  # noqa: E402
from yolojax.startup import exit_code, prepare_jax  # noqa: E402


def train_and_evaluate(config, workdir=None, *, callbacks: dict[str, list[Callable]] | None = None) -> dict:
    """Train per ``config`` into ``workdir`` (default runs/<task>/trainN); returns the final metrics dict."""
    from yolojax.engine.distributed import collective_failure_guard
    from yolojax.engine.loop import train
    from yolojax.tasks import configure

    config = cfgmod.check_config(config)  # every value, before anything heavy: a ConfigError names key, value, valid
    config, task = configure(config)  # the task (from task= or the model) and its default image size
    with collective_failure_guard("training"):  # multi-host: a dead peer ends the run with a DistributedError
        return train(config, workdir, task, callbacks=callbacks)


def main(argv=None) -> None:
    from absl import app, flags
    from ml_collections import config_flags

    cfg_flag = config_flags.DEFINE_config_file("config", None, "Training config file (configs/*.py).",
                                               lock_config=True)
    flags.DEFINE_string("workdir", None, "Run directory (default: runs/detect/train, train2, ...).")
    # --config.KEY=VALUE is read here, not by absl: values take Ultralytics' types (batch=0.5, imgsz=[640, 480],
    # epochs=3.0) and every mistake gets the same one-line message as on the yolojax command line
    from_sys = argv is None
    argv, overrides = cfgmod.split_flag_overrides(list(sys.argv if from_sys else argv))
    if from_sys:  # ml_collections' config flag also looks for --config.KEY words in sys.argv
        sys.argv[1:] = argv[1:]

    def _main(_):
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.WARNING)

        def run():
            prepare_jax()  # before JAX's first operation (train_and_evaluate sets the determinism flag from the config)
            config = cfg_flag.value if cfg_flag.value is not None else cfgmod.default_config()
            return train_and_evaluate(cfgmod.apply_overrides(config, overrides, source="--config flag"),
                                      flags.FLAGS.workdir)

        code = exit_code(run)
        if code:
            raise SystemExit(code)

    app.run(_main, argv=argv)


if __name__ == "__main__":
    main()
