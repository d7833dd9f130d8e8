"""Value checks of the train arguments: one table, run once before anything heavy starts.

Every key of ``configs/default.py`` has a rule here. A rule takes the value as given (from the command line
after Ultralytics' value parsing, from a ``cfg=`` YAML, from ``--config.k=v`` or from ``YOLO(...).train(k=v)``)
and returns it normalised, or says in words what is valid. The classes are Ultralytics': *int* keys accept
integral floats (``epochs=1e2``) but not ``2.5``; *float* keys any finite number; *fraction* keys a number in
[0, 1]; *bool* keys ``True``/``False`` and the spellings ``true``/``false``/``1``/``0``. Ranges are added where
a value outside them cannot train (``epochs >= 1``, ``workers >= 0``, ``momentum < 1``, ...).

``check_values(mapping) -> dict`` raises :class:`ConfigError` naming the key, the value given and what is valid.
``inapplicable_warnings(mapping)`` lists the arguments that are accepted as Ultralytics accepts them but have no
effect on the training of the config's task (detection or classification), each with its reason.
"""
from __future__ import annotations

import math
import os
from typing import Any, Callable, Mapping

from yolojax.config.errors import ConfigError

Rule = Callable[[Any], Any]  # value -> normalised value; raises _Invalid(what is valid) otherwise


class _Invalid(Exception):
    """Raised by a rule with the words that say what is valid."""


def _is_number(value) -> bool:
    """A finite int or float (not a bool, whose class is an int)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def integer(lo: int | None = None, note: str = "") -> Rule:
    """An int (``3.0`` and ``1e2`` count as ints), at least ``lo``."""
    words = ("an integer" if lo is None else f"an integer >= {lo}") + note

    def rule(value):
        if not _is_number(value) or not float(value).is_integer() or (lo is not None and value < lo):
            raise _Invalid(words)
        return int(value)
    return rule


def number(lo: float, hi: float | None = None, *, lo_open: bool = False, hi_open: bool = False,
           note: str = "") -> Rule:
    """A finite int or float from ``lo`` (to ``hi``); ints stay ints, as Ultralytics keeps ``box=7``."""
    if hi is None:
        words = f"a number {'>' if lo_open else '>='} {lo:g}"
    else:
        words = f"a number in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    words += note

    def rule(value):
        if (not _is_number(value) or value < lo or (lo_open and value == lo)
                or (hi is not None and (value > hi or (hi_open and value == hi)))):
            raise _Invalid(words)
        return value
    return rule


def fraction(note: str = "") -> Rule:
    """Ultralytics' fraction keys: a number in [0, 1]."""
    return number(0.0, 1.0, note=note)


TRUE_WORDS, FALSE_WORDS = ("true", "1"), ("false", "0")


def boolean(value):
    """True/False, or the spellings true/false/1/0 (any case) that command lines and YAML files give."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in TRUE_WORDS + FALSE_WORDS:
        return value.strip().lower() in TRUE_WORDS
    raise _Invalid("True or False")


def choice(*options: str, case: bool = False) -> Rule:
    """One of ``options`` (compared without case unless ``case``); returns the option's own spelling."""
    words = "one of " + ", ".join(options)

    def rule(value):
        if isinstance(value, str):
            for option in options:
                if value == option or (not case and value.lower() == option.lower()):
                    return option
        raise _Invalid(words)
    return rule


def text(value):
    """A non-empty string (a path, a name); a path object becomes its string."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, str) and value.strip():
        return value
    raise _Invalid("a non-empty string")


def dataset(value):
    """A data YAML path, a bundled name, tfds:NAME, or a dataset dict (as ``check_dataset`` takes)."""
    if isinstance(value, Mapping):
        return dict(value)
    try:
        return text(value)
    except _Invalid:
        raise _Invalid("a data YAML path, a bundled dataset name (coco128, coco, VOC, shapes), tfds:NAME or a "
                       "dataset dict") from None


def or_default(default, rule: Rule) -> Rule:
    """``rule``; None means ``default`` (Ultralytics falls back to its default model and dataset likewise)."""
    return lambda value: default if value is None else rule(value)


def name(value):
    """A directory name: a string, or a number used as one (``name=2`` is the directory '2')."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return text(value)


def optional(rule: Rule) -> Rule:
    """``rule``, or None."""
    def wrapped(value):
        if value is None:
            return None
        try:
            return rule(value)
        except _Invalid as e:
            raise _Invalid(f"{e} or None") from None
    return wrapped


def either(*rules: Rule) -> Rule:
    """The first of ``rules`` that accepts the value."""
    def wrapped(value):
        words = []
        for rule in rules:
            try:
                return rule(value)
            except _Invalid as e:
                words.append(str(e))
        raise _Invalid(", or ".join(words))
    return wrapped


def batch(value):
    """Ultralytics' batch: a total size >= 1, -1 (AutoBatch: the size filling 60 % of the GPU memory) or a float in
    (0, 1) (the size filling that fraction of the GPU memory)."""
    if _is_number(value):
        if 0 < value < 1:
            return float(value)
        if float(value).is_integer() and (value >= 1 or value == -1):
            return int(value)
    raise _Invalid("an integer >= 1, -1 (AutoBatch) or a fraction 0 < batch < 1 of the GPU memory")


def imgsz(value):
    """A positive size in pixels, or a list of them (training uses the largest, as Ultralytics)."""
    words = "a positive integer (pixels) or a list of them such as [640, 640]"
    size = integer(1)
    try:
        if isinstance(value, (list, tuple)):
            if not 1 <= len(value) <= 2:
                raise _Invalid(words)
            return [size(v) for v in value]
        return size(value)
    except _Invalid:
        raise _Invalid(words) from None


def class_ids(value):
    """Class ids to train on: one id or a list of distinct ids >= 0."""
    words = "a class id >= 0 or a list of them such as [0, 2]"
    ids = value if isinstance(value, (list, tuple)) else [value]
    try:
        out = [integer(0)(v) for v in ids]
    except _Invalid:
        raise _Invalid(words) from None
    if not out or len(set(out)) != len(out):
        raise _Invalid(words)
    return out


def freeze(value):
    """Ultralytics' freeze: N (layers 0..N-1) or a list of layer indices."""
    words = "an integer N >= 0 (freeze layers 0..N-1) or a list of layer indices such as [0, 1, 2]"
    try:
        if isinstance(value, (list, tuple)):
            return [integer(0)(v) for v in value]
        return integer(0)(value)
    except _Invalid:
        raise _Invalid(words) from None


def cache(value):
    """False, True / 'ram' (decoded images in memory) or 'disk' (.npy files beside the images)."""
    if isinstance(value, str) and value.strip().lower() in ("ram", "disk"):
        return value.strip().lower()
    try:
        return boolean(value)
    except _Invalid:
        raise _Invalid("True, False, 'ram' or 'disk'") from None


def device(value):
    """Ultralytics' device forms (None, 0, '0,1', [0, 1], 'cpu', 'mps', 'tpu', 'all', 'cuda:0')."""
    if value is None:  # the default: no need to import the device module (and JAX) to know it is valid
        return None
    from yolojax.engine.devices import DeviceError, parse_device_ids

    try:
        parse_device_ids(value)
    except DeviceError:
        raise _Invalid("None (first GPU, else CPU), 'cpu', a GPU index such as 0, a list such as '0,1' or [0, 1], "
                       "'mps', 'tpu' or 'all'") from None
    return value


def bool_or_path(value):
    """A bool (or its spellings), else a path string (``pretrained``, ``resume``)."""
    try:
        return boolean(value)
    except _Invalid:
        pass
    if isinstance(value, str) and value.strip():
        return value
    raise _Invalid("True, False or a path")


def on_device(value):
    """auto, True or False (``hsv_on_device``, ``warp_on_device``)."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    try:
        return boolean(value)
    except _Invalid:
        raise _Invalid("auto, True or False") from None


def address(value):
    """host:port."""
    if isinstance(value, str) and value.rpartition(":")[2].isdigit() and value.rpartition(":")[0]:
        return value
    raise _Invalid("host:port, e.g. 10.0.0.1:1234")


OPTIMIZERS = ("SGD", "Adam", "Adamax", "AdamW", "NAdam", "RAdam", "RMSProp", "auto")

# key -> rule. The Ultralytics class of each key is the rule's kind (integer / number / fraction / boolean / choice).
RULES: dict[str, Rule] = {
    "task": choice("detect", "classify", case=True),
    "mode": choice("train", case=True),
    "model": or_default("yolov8n.yaml", text),
    "data": or_default("shapes", dataset),
    "epochs": integer(1),
    "time": optional(number(0, lo_open=True, note=" (hours)")),
    "patience": optional(integer(0, " (0 disables early stopping)")),
    "batch": batch,
    "imgsz": optional(imgsz),  # None: the task's default (yolojax.tasks.configure)
    "save": boolean,
    "save_period": integer(note=" (<= 0: no epoch{N} files)"),
    "cache": cache,
    "device": device,
    "workers": integer(0),
    "project": optional(name),
    "name": optional(name),
    "exist_ok": boolean,
    "pretrained": bool_or_path,
    "optimizer": choice(*OPTIMIZERS),
    "verbose": boolean,
    "seed": integer(0),
    "deterministic": boolean,
    "single_cls": boolean,
    "classes": optional(class_ids),
    "rect": boolean,
    "cos_lr": boolean,
    "close_mosaic": integer(0, " (0: never)"),
    "resume": or_default(False, bool_or_path),
    "amp": boolean,
    "fraction": number(0.0, 1.0, lo_open=True),
    "profile": boolean,
    "freeze": optional(freeze),
    "multi_scale": boolean,
    "val": boolean,
    "split": choice("train", "val", "test", case=True),
    "save_json": boolean,
    "conf": optional(fraction()),
    "iou": fraction(),
    "max_det": integer(1),
    "half": boolean,
    "plots": boolean,
    "lr0": number(0.0, 1.0, lo_open=True),
    "lrf": fraction(" (final learning rate = lr0 * lrf)"),
    "momentum": number(0.0, 1.0, hi_open=True),
    "weight_decay": fraction(),
    "warmup_epochs": number(0.0),
    "warmup_momentum": number(0.0, 1.0, hi_open=True),
    "warmup_bias_lr": fraction(),
    "box": number(0.0),
    "cls": number(0.0),
    "dfl": number(0.0),
    "label_smoothing": fraction(),
    "nbs": integer(1),
    "hsv_h": fraction(),
    "hsv_s": fraction(),
    "hsv_v": fraction(),
    "degrees": number(0.0, 180.0, note=" (+/- degrees)"),
    "translate": fraction(),
    "scale": fraction(),
    "shear": number(0.0, 180.0, note=" (+/- degrees)"),
    "perspective": fraction(),
    "flipud": fraction(" (a probability)"),
    "fliplr": fraction(" (a probability)"),
    "bgr": fraction(" (a probability)"),
    "mosaic": fraction(" (a probability)"),
    "mixup": fraction(" (a probability)"),
    "copy_paste": fraction(" (a probability)"),
    "dropout": fraction(),
    "auto_augment": optional(choice("randaugment", "autoaugment", "augmix", case=True)),
    "erasing": fraction(" (a probability)"),
    "crop_fraction": number(0.0, 1.0, lo_open=True),
    "cfg": optional(text),
    "compat": choice("v8", "current", case=True),
    "dtype": choice("auto", "float32", "bfloat16", case=True),
    "hsv_on_device": on_device,
    "warp_on_device": on_device,
    "bn_sync": boolean,
    "checkpoint_every": integer(0, " (0: only at epoch ends)"),
    "keep_checkpoints": integer(1),
    "tensorboard": boolean,
    "log_every": integer(1),
    "coordinator_address": optional(address),
    "num_processes": optional(integer(1)),
    "process_id": optional(integer(0)),
    "dist_init_timeout": number(0.0, lo_open=True, note=" (seconds)"),
    "dist_heartbeat_timeout": number(0.0, lo_open=True, note=" (seconds)"),
}


def check_value(key: str, value, where: str = ""):
    """``value`` normalised for ``key`` (keys without a rule pass unchanged); ConfigError when it is not valid.
    ``where`` (e.g. " in my.yaml") follows the value in the message."""
    rule = RULES.get(key)
    if rule is None:
        return value
    try:
        return rule(value)
    except _Invalid as e:
        raise ConfigError(f"{key}={value!r}{where} is not valid: {key} must be {e}.") from None


def check_values(values: Mapping[str, Any], where: str = "") -> dict:
    """Every value of ``values`` checked and normalised (a new dict, same keys)."""
    out = {key: check_value(key, value, where) for key, value in values.items()}
    if out.get("num_processes") is not None and out.get("process_id") is not None \
            and out["process_id"] >= out["num_processes"]:
        raise ConfigError(f"process_id={out['process_id']!r} is not valid: process_id must be below num_processes="
                          f"{out['num_processes']} (0..{out['num_processes'] - 1}).")
    return out


# Ultralytics default.yaml keys (8.2.103, and a few of 8.4) that affect neither task's YOLOv8 training: accepted
# with a warning so that argument lists and args.yaml files copied from Ultralytics keep working.
NO_EFFECT_KEYS = frozenset((
    "overlap_mask", "mask_ratio", "pose", "kobj", "save_hybrid", "dnn", "source", "vid_stride",
    "stream_buffer", "visualize", "augment", "agnostic_nms", "retina_masks", "embed", "show",
    "save_frames", "save_txt", "save_conf", "save_crop", "show_labels", "show_conf", "show_boxes", "line_width",
    "format", "keras", "optimize", "int8", "dynamic", "simplify", "opset", "workspace", "nms", "tracker",
    "cutmix", "cls_pw", "compile", "channels_last", "save_dir",
))

_HALF = ("it selects FP16 for standalone val/predict in Ultralytics; training precision is set by amp (bfloat16 "
         "compute on accelerators) and dtype")

# Accepted as Ultralytics accepts them, without effect on YOLOv8 training of either task: key -> (inert value,
# reason for detection, reason for classification).
INAPPLICABLE = {
    "label_smoothing": (0.0, "Ultralytics 8.2.103 accepts it, but its detection loss never reads it (the class "
                             "targets are IoU-aware scores, not one-hot labels); Ultralytics later removed the key",
                        "classification does not use it (Ultralytics 8.2.103 accepts it, but its classification loss "
                        "is plain cross-entropy; Ultralytics later removed the key)"),
    "half": (False, _HALF, _HALF),
    "copy_paste": (0.0, "copy-paste pastes segment masks; YOLOv8 detection datasets have boxes only, where "
                        "Ultralytics' copy-paste does nothing either",
                   "classification does not use it (it is a detection augmentation)"),
}


# Keys only classification reads: key -> its default. Ultralytics' detection ignores them silently; set away from
# the default for detection, they are warned about.
CLASSIFY_ONLY = {"dropout": 0.0, "auto_augment": "randaugment", "erasing": 0.4, "crop_fraction": 1.0}

_GEOMETRY = "it is a detection augmentation; classification crops with scale and flips with fliplr/flipud"

# Keys only detection reads: key -> (its default, what it is). Ultralytics' ClassificationTrainer (8.2.103) ignores
# them silently; set away from the default with task=classify, they are warned about.
DETECT_ONLY = {
    "single_cls": (False, "it merges the detection labels into one class"),
    "classes": (None, "it selects detection labels by class"),
    "rect": (False, "rectangular batches are a detection loader setting; classification batches are square crops"),
    "close_mosaic": (10, "classification has no mosaic to close"),
    "multi_scale": (False, "classification trains at imgsz only"),
    "save_json": (False, "it writes COCO-format detections"),
    "conf": (None, "it is the detections' confidence threshold"),
    "iou": (0.7, "it is the NMS IoU threshold"),
    "max_det": (300, "it caps the detections per image"),
    "box": (7.5, "it is a detection loss gain; classification's loss is cross-entropy"),
    "cls": (0.5, "it is a detection loss gain; classification's loss is cross-entropy"),
    "dfl": (1.5, "it is a detection loss gain; classification's loss is cross-entropy"),
    "degrees": (0.0, _GEOMETRY),
    "translate": (0.1, _GEOMETRY),
    "shear": (0.0, _GEOMETRY),
    "perspective": (0.0, _GEOMETRY),
    "bgr": (0.0, "it is a detection augmentation"),
    "mosaic": (1.0, "it is a detection augmentation"),
    "mixup": (0.0, "it is a detection augmentation"),
    "hsv_on_device": ("auto", "classification augments every image in the loader"),
    "warp_on_device": ("auto", "classification augments every image in the loader"),
}

# Classification's colour jitter: Ultralytics draws it from hsv_* only when no auto_augment policy runs.
HSV_DEFAULTS = {"hsv_h": 0.015, "hsv_s": 0.7, "hsv_v": 0.4}


def inapplicable_warnings(values: Mapping[str, Any]) -> list[str]:
    """One warning line for each argument set away from its inert value that has no effect on the task's training
    (``values["task"]``: detect, the default, or classify), with the reason; defaults never warn."""
    classify = values.get("task", "detect") == "classify"
    task = "classification" if classify else "detection"

    def changed(key: str, default) -> bool:
        return key in values and values[key] != default

    lines = [f"WARNING: {key}={values[key]!r} has no effect on YOLOv8 {task} training: "
             f"{cls_reason if classify else reason}." for key, (inert, reason, cls_reason) in INAPPLICABLE.items()
             if changed(key, inert)]
    if not classify:
        return lines + [f"WARNING: {key}={values[key]!r} has no effect on YOLOv8 detection training: it is a "
                        "classification argument (task=classify)." for key, default in CLASSIFY_ONLY.items()
                        if changed(key, default)]
    lines += [f"WARNING: {key}={values[key]!r} has no effect on YOLOv8 classification training: classification does "
              f"not use it ({what})." for key, (default, what) in DETECT_ONLY.items() if changed(key, default)]
    if values.get("auto_augment") is not None:
        lines += [f"WARNING: {key}={values[key]!r} has no effect on YOLOv8 classification training with "
                  f"auto_augment={values['auto_augment']!r}: the colour jitter that hsv_h/hsv_s/hsv_v set runs only "
                  "with auto_augment=None." for key, default in HSV_DEFAULTS.items() if changed(key, default)]
    return lines
