"""The ``yolojax`` command line's words: Ultralytics' ``yolo`` syntax parsed into (task, mode, overrides), the help
text and ``yolojax cfg``'s listing. ``yolojax.cli`` runs what they ask for.
"""
from __future__ import annotations

import pathlib
import sys
from typing import Any

from yolojax.config import smart_value

TASKS = ("detect", "segment", "classify", "pose", "obb")
MODES = ("train", "val", "predict", "export", "track", "benchmark")
SPECIAL = ("help", "cfg", "version", "copy-cfg", "settings", "checks")
HELP = """yolojax: YOLOv8 detection and classification training in JAX, with Ultralytics' command line.

    yolojax [detect | classify] MODE [key=value ...]   (no task word: the model's task)

    MODE      train | val | predict | export   (also: help, cfg, version)
    key=value any Ultralytics argument, e.g. data=coco8.yaml model=yolov8n.pt epochs=100 imgsz=640 device=0

Examples
    yolojax detect train data=coco8.yaml model=yolov8n.yaml epochs=100 imgsz=640
    yolojax detect train data=coco8.yaml model=yolov8n.pt epochs=100 imgsz=640 device=0,1
    yolojax detect train data=coco8.yaml model=yolov8n.yaml pretrained=yolov8n.pt epochs=100 imgsz=640
    yolojax train resume model=runs/detect/train/weights/last.npz
    yolojax val model=runs/detect/train/weights/best.npz data=coco8.yaml imgsz=640
    yolojax predict model=runs/detect/train/weights/best.npz source=path/to/images save=True
    yolojax export model=runs/detect/train/weights/best.npz format=onnx imgsz=640 dynamic=True
    yolojax classify train data=shapes-cls model=yolov8n-cls.yaml epochs=10 imgsz=64
    yolojax classify val model=runs/classify/train/weights/best.npz data=shapes-cls
    yolojax classify predict model=runs/classify/train/weights/best.npz source=path/to/images
    yolojax cfg        (every train argument with its default)

yolov8n.pt (and s/m/l/x) is downloaded into the working directory on first use (Ultralytics' weights, AGPL-3.0).
Runs go to runs/detect/train (runs/classify/train), train2, ... with weights/best.npz and weights/last.npz.
Python: from yolojax import YOLO; YOLO("yolov8n.yaml").train(data="coco8.yaml", epochs=3)
"""


class CLIError(ValueError):
    """A malformed command line."""


def merge_equals(args: list[str]) -> list[str]:
    """Join ``key = value``, ``key= value`` and ``key =value`` into ``key=value`` (as Ultralytics does)."""
    out: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        if a == "=" and out and i + 1 < len(args):
            out[-1] += "=" + args[i + 1]
            i += 2
            continue
        if a.endswith("=") and i + 1 < len(args) and "=" not in args[i + 1]:
            out.append(a + args[i + 1])
            i += 2
            continue
        if a.startswith("=") and out:
            out[-1] += a
            i += 1
            continue
        out.append(a)
        i += 1
    return out


def parse_args(argv: list[str]) -> tuple[str | None, str | None, dict[str, Any]]:
    """``(task, mode, overrides)`` from the command line words."""
    from yolojax.config import default_config

    defaults = default_config().to_dict()
    task = mode = None
    overrides: dict[str, Any] = {}
    for word in merge_equals(list(argv)):
        if word.startswith("-"):
            print(f"WARNING: argument '{word}' does not need leading dashes; using '{word.lstrip('-')}'.",
                  file=sys.stderr)
            word = word.lstrip("-")
        if "=" in word:
            key, _, value = word.partition("=")
            if not key:
                raise CLIError(f"'{word}' has no key before '='. Write key=value, e.g. epochs=10.")
            overrides[key] = smart_value(value)
        elif word in TASKS and task is None and mode is None:
            task = word
        elif word in MODES + SPECIAL and mode is None:
            mode = word
        elif word in defaults and isinstance(defaults[word], bool):
            overrides[word] = True
        elif word in defaults:
            raise CLIError(f"'{word}' needs a value: write {word}=VALUE (default {defaults[word]!r}).")
        else:
            from yolojax.config import closest_key

            near = closest_key(word, list(defaults) + list(MODES) + list(SPECIAL))
            raise CLIError(f"'{word}' is not a yolojax mode, task or argument." + (f" Did you mean '{near}'?" if near
                                                                                  else "") + " Run 'yolojax help'.")
    return task, mode, overrides


# The model a task trains when model= is not given.
DEFAULT_MODEL = {"detect": "yolov8n.yaml", "classify": "yolov8n-cls.yaml"}


def model_task(model: str | None) -> str | None:
    """The task of a model YAML (``classify`` for a Classify head, else ``detect``); None for weights, whose task
    is known once they are loaded."""
    if model is None or not str(model).endswith((".yaml", ".yml")):
        return None
    from yolojax.tasks import model_task as task_of_model

    return task_of_model(model)


def resolve_task(task: str | None, overrides: dict[str, Any]) -> str | None:
    """The run's task from the task word, a ``task=`` argument and a model YAML (popping ``task`` from
    ``overrides``); None when only loading the weights tells. A CLIError names a task yolojax does not run or a
    task that does not fit the model."""
    given = overrides.pop("task", None)
    if task is not None and given is not None and given != task:
        raise CLIError(f"the task word '{task}' and task={given} disagree; give one of them.")
    task = task or given
    if task is not None and task not in DEFAULT_MODEL:
        raise CLIError(f"task '{task}': yolojax runs {' and '.join(DEFAULT_MODEL)} "
                       f"(yolojax {' | '.join(DEFAULT_MODEL)} MODE ...); {task} stays with Ultralytics.")
    model = overrides.get("model")
    found = model_task(model)
    if task is not None and found is not None and found != task:
        raise CLIError(f"model={model} is a {found} model, but the task is {task}: use a {task} model (e.g. "
                       f"model={DEFAULT_MODEL[task]}) or 'yolojax {found} ...'.")
    return task or found


def print_cfg() -> None:
    """Every train argument with its default, in ``configs/default.py`` order, with its comment."""
    import re

    from yolojax.config import REPO_CONFIGS, default_config

    values = default_config().to_dict()
    comments: dict[str, str] = {}
    for path in (REPO_CONFIGS / "default.py", pathlib.Path(__file__).parent / "cfg" / "default.py"):
        if path.is_file():
            for m in re.finditer(r"^\s*c\.(\w+)\s*=.*?(?:#\s*(.*))?$", path.read_text(), re.M):
                comments.setdefault(m.group(1), (m.group(2) or "").strip())
            break
    order = [k for k in comments if k in values] + sorted(k for k in values if k not in comments)
    for key in order:
        value = values[key]
        text = "null" if value is None else str(value)
        note = f"  # {comments[key]}" if comments.get(key) else ""
        print(f"{key}: {text}{note}")
