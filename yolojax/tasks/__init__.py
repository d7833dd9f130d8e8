"""The tasks yolojax trains (``yolojax.engine.task.Task``): entry points pick one and hand it to the engine.

    config, task = configure(check_config(config))   # task and image size resolved
    train(config, workdir, task)

``task_for(config)``: ``config.task`` when it is ``classify``; otherwise the model decides (a ``-cls`` YAML, a YAML
ending in a Classify head, or a classification checkpoint trains with the classification task, as Ultralytics
guesses the task from the model). A detection model with a classification dataset (a folder of class folders) or the
other way round is refused in one line before anything is built.
"""
from __future__ import annotations

import pathlib

from yolojax import config as cfgmod
from yolojax.config.errors import ConfigError

TASKS = ("detect", "classify")


def get_task(name: str):
    """The task called ``name``."""
    if name == "detect":
        from yolojax.tasks.detect import DetectTask

        return DetectTask()
    if name == "classify":
        from yolojax.tasks.classify import ClassificationTask

        return ClassificationTask()
    raise ConfigError(f"task={name!r} is not a yolojax task; valid: {', '.join(TASKS)}.")


def model_task(model) -> str:
    """"classify" or "detect": the family of the model a ``model`` value names (a YAML or a weights file; a weights
    file that cannot be read is left to the model builder, which names the problem)."""
    from yolojax.nn import model_class
    from yolojax.nn.classify import YOLOv8Cls

    src = str(model)
    if src.endswith((".yaml", ".yml")):
        return "classify" if model_class(src) is YOLOv8Cls else "detect"
    try:
        from yolojax.weights import load_checkpoint

        return "classify" if isinstance(load_checkpoint(src).model, YOLOv8Cls) else "detect"
    except Exception:  # noqa: BLE001 - missing or unreadable: build_model raises the one-line error
        return "detect"


def _is_classification_data(data) -> bool:
    """A folder that holds ``train/`` class folders (not a YOLO ``images/``/``labels/`` set). A ``tfds:`` name serves
    either task (VOC detection, imagenette classification): the task's own dataset check names a mismatch."""
    s = str(data).strip()
    root = pathlib.Path(s).expanduser()
    train = root / "train"
    return root.is_dir() and train.is_dir() and not (train / "images").is_dir() and not (root / "images").is_dir()


def _resumed_task(resume) -> str | None:
    """The task in the args.yaml of the run a ``resume`` path names (the run, its weights/, ckpt/ or a weights file)."""
    import yaml

    if not isinstance(resume, str) or resume in ("True", "true", "1"):
        return None
    p = pathlib.Path(resume)
    for run in (p, p.parent, p.parent.parent, p.parent.parent.parent):
        args = run / "args.yaml"
        if args.is_file():
            return (yaml.safe_load(args.read_text()) or {}).get("task")
    return None


def task_for(config):
    """The task a run's ``config`` asks for (see the module docstring); a resumed run's is the one it was run with."""
    name = str(config.get("task") or "detect")
    if name == "detect" and config.get("resume"):
        name = _resumed_task(config.resume) or name
    elif name == "detect":
        name = model_task(config.model)
    data = config.get("data")
    if name == "detect" and data is not None and _is_classification_data(data):
        raise ConfigError(f"data={data!r} is a classification dataset (class folders), but model="
                          f"{config.model!r} is a detection model: train a classifier on it (model=yolov8n-cls.yaml, "
                          "task=classify) or give a detection dataset YAML.")
    if name == "classify" and isinstance(data, str) and data.endswith((".yaml", ".yml")):
        raise ConfigError(f"data={data!r} is a detection dataset YAML, but task=classify trains on class folders: "
                          "give a folder with train/<class>/ and val/<class>/ images, a dataset name such as "
                          "imagenette160, or tfds:<name>.")
    return get_task(name)


def configure(config):
    """(config, task): ``task_for(config)`` with ``config.task`` set to its name and, where the image size is None
    (not given), the task's default (640 detection, 224 classification, as Ultralytics' ClassificationTrainer
    when no imgsz is given)."""
    task = task_for(config)
    changes = {"task": task.name}
    if config.get("imgsz") is None:
        changes["imgsz"] = task.default_imgsz
    return cfgmod.apply_overrides(config, changes, source="resolved"), task
