"""The ``yolojax`` command: Ultralytics' ``yolo`` syntax.

    yolojax [detect | classify] MODE [key=value ...]      MODE: train, val, predict
    yolojax detect train data=coco8.yaml model=yolov8n.pt epochs=100 imgsz=640 device=0,1
    yolojax classify train data=imagenette model=yolov8n-cls.yaml epochs=100 imgsz=224
    yolojax train model=yolov8n-cls.yaml data=shapes-cls      (the task word omitted: the model's task)
    yolojax train resume model=runs/detect/train/weights/last.npz
    yolojax val model=runs/detect/train/weights/best.npz data=coco8.yaml
    yolojax predict model=yolov8n.pt source=images/
    yolojax export model=runs/detect/train/weights/best.npz format=onnx imgsz=640
    yolojax cfg | help | version

Values: none -> None, true/false -> bool (any case), Python literals (numbers, lists, tuples: ``0,1``), else the
string itself. A bare key whose default is a bool (``resume``, ``rect``, ...) means True. User errors (a missing
file, an unknown key, a device that is not here) print one paragraph on stderr and exit with code 2.
"""
from __future__ import annotations

import sys
from typing import Any

from yolojax.cli_args import DEFAULT_MODEL, HELP, CLIError, parse_args, print_cfg, resolve_task


def run(argv: list[str]) -> Any:
    """Execute a command line; returns what the mode returned (metrics, predictions) or None."""
    task, mode, overrides = parse_args(argv)
    if mode in (None, "help"):
        print(HELP)
        return None
    if mode == "version":
        from yolojax import __version__

        print(__version__)
        return None
    if mode == "cfg":
        print_cfg()
        return None
    task = resolve_task(task, overrides)
    if mode not in ("train", "val", "predict", "export"):
        raise CLIError(f"mode '{mode}' is not part of yolojax (train, val, predict and export are; tracking and "
                       f"benchmarks stay with Ultralytics).")
    overrides.pop("mode", None)
    from yolojax.model import YOLO, train_config

    deterministic = True
    if mode == "train":
        # every value is checked first: a mistake costs no JAX start-up and no model build
        config = train_config({**overrides, "task": task} if task else overrides)
        deterministic = bool(config.deterministic)
        overrides = {k: v for k, v in overrides.items() if k in config}  # the keys without effect are warned once
    from yolojax.startup import prepare_jax

    prepare_jax(deterministic=deterministic)
    if mode == "train":
        model_src = overrides.pop("model", None)
        if overrides.get("resume") and model_src is None:
            raise CLIError("resume needs the interrupted run's weights: yolojax train resume "
                           "model=runs/detect/train/weights/last.npz")
        model = YOLO(model_src or DEFAULT_MODEL[task or "detect"], task=task)
        return model.train(**overrides)
    model_src = overrides.pop("model", None)
    if model_src is None:
        raise CLIError(f"yolojax {mode} needs model=WEIGHTS (a .pt, .npz or run directory).")
    model = YOLO(model_src, task=task)  # weights of another task: a ConfigError naming both
    if mode == "val":
        return model.val(**overrides)
    if mode == "export":
        return model.export(**overrides)
    source = overrides.pop("source", None)
    if source is None:
        raise CLIError("yolojax predict needs source=PATH (an image, a directory or a glob).")
    return model.predict(source, **overrides)


def main(argv: list[str] | None = None) -> int:
    """Console entry point; returns the exit code (0 ok, 2 user error)."""
    from yolojax.config import ConfigError
    from yolojax.startup import begin, exit_code

    begin(restart=argv is None)  # the `yolojax` command restarts once with glibc's huge-page malloc
    argv = sys.argv[1:] if argv is None else list(argv)

    def run_quietly_on_a_closed_pipe():
        try:
            run(argv)
        except BrokenPipeError:  # `yolojax cfg | head`: the reader left; not an error
            import os

            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())

    # a value mistake is known without importing the heavier modules of the other error types
    return exit_code(run_quietly_on_a_closed_pipe, extra_user_errors=(CLIError, ConfigError))


if __name__ == "__main__":
    sys.exit(main())
