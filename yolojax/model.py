"""``YOLO``: Ultralytics' Python API over yolojax. Every train-mode guide example runs unchanged.

    from yolojax import YOLO
    model = YOLO("yolov8n.yaml")                      # build from a model YAML (scale from the name), random init
    model = YOLO("yolov8n.pt")                        # load Ultralytics weights (or a yolojax .npz / run directory)
    model = YOLO("yolov8n.yaml").load("yolov8n.pt")   # build, then transfer matching tensors
    metrics = model.train(data="coco8.yaml", epochs=100, imgsz=640, device=0)
    metrics.box.map, metrics.box.map50, metrics.results_dict
    YOLO("yolov8n-cls.yaml").train(data="shapes-cls", epochs=10)   # a classifier: task == "classify", imgsz 224
    metrics.top1, metrics.top5                        # its val metrics; predict(...)[0].probs.top1
    YOLO("runs/detect/train/weights/last.npz").train(resume=True)
    model.val(data=...), model.predict("bus.jpg"), model.info(), model.names
    model.export(format="onnx")                       # best.npz -> best.onnx beside it

``train`` maps its keyword arguments one-to-one onto the flat config of ``configs/default.py`` (Ultralytics'
names and defaults) and calls :func:`yolojax.train.train_and_evaluate`; afterwards the object holds the run's
best weights, as Ultralytics' does.
"""
from __future__ import annotations

import os
import pathlib
from typing import Any, Callable

import numpy as np


def resolve_weights_path(path: str | os.PathLike) -> pathlib.Path:
    """A run directory -> its weights/best.npz (else last.npz); Ultralytics' ``.../last.pt`` -> yolojax's
    ``last.npz`` beside it when only that exists; Ultralytics' released weights are downloaded if missing; another
    missing file -> FileNotFoundError with advice."""
    p = pathlib.Path(path)
    if p.is_dir():
        for cand in (p / "weights" / "best.npz", p / "weights" / "last.npz", p / "best.npz", p / "last.npz"):
            if cand.is_file():
                return cand
        raise FileNotFoundError(f"{p} is a directory without weights/best.npz or weights/last.npz: not a yolojax run "
                                f"directory. Pass a weights file (.pt or .npz) or a model YAML.")
    if p.is_file():
        return p
    if p.suffix == ".pt" and p.with_suffix(".npz").is_file():  # runs write last.npz where Ultralytics writes last.pt
        print(f"{p} not found; using yolojax's {p.with_suffix('.npz')} (runs save .npz where Ultralytics saves .pt)")
        return p.with_suffix(".npz")
    from yolojax.weights import attempt_download

    return attempt_download(p)


def _run_dir_of(weights: pathlib.Path) -> pathlib.Path | None:
    run = weights.parent.parent if weights.parent.name == "weights" else weights.parent
    return run if (run / "args.yaml").is_file() else None


def _run_args(weights: pathlib.Path) -> dict:
    import yaml

    run = _run_dir_of(weights)
    if run is None:
        return {}
    return yaml.safe_load((run / "args.yaml").read_text()) or {}


def load_weights(path: str | os.PathLike):
    """``LoadedWeights`` for a .pt / .npz / run directory; a .npz without a stored architecture is rebuilt from
    its run's ``args.yaml`` model YAML when the scale cannot be inferred from the tensors."""
    from yolojax.weights import load_checkpoint

    p = resolve_weights_path(path)
    try:
        return load_checkpoint(p)
    except (ValueError, KeyError) as e:
        model_src = str(_run_args(p).get("model") or "")
        if p.suffix != ".npz" or not model_src.endswith((".yaml", ".yml")):
            raise
        import jax
        import jax.numpy as jnp

        from yolojax.nn import YOLOv8
        from yolojax.weights import LoadedWeights, from_state_dict

        with np.load(p, allow_pickle=False) as z:
            sd = {k: z[k] for k in z.files}
        names_arr = sd.pop("__names__", None)
        sd.pop("__model__", None)
        nc = int(next(v for k, v in sd.items() if k.endswith(".cv3.0.2.bias")).shape[0])
        model = YOLOv8.from_yaml(model_src, num_classes=nc)
        template = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3), jnp.float32)))
        try:
            variables = from_state_dict(sd, template)
        except (ValueError, KeyError):
            raise e from None
        names = ({i: str(n) for i, n in enumerate(names_arr.tolist())} if names_arr is not None
                 else {i: f"class{i}" for i in range(nc)})
        return LoadedWeights(model, variables, names, str(p), {})


def train_config(args: dict[str, Any]):
    """The flat training config: defaults of ``configs/default.py`` updated with ``args``.

    Every key must be a config key (an unknown one raises ``ConfigError`` naming the closest); Ultralytics keys
    that have no effect on training (either task) are dropped with a warning. Every value is checked
    (``yolojax.config.checks``: a ``ConfigError`` names the key, the value and what is valid) and keeps its
    given type where several are valid (``pretrained="w.pt"``, ``resume="runs/detect/train"``, ``cache="ram"``,
    ``device=[0, 1]``). ``task=classify`` without ``imgsz`` trains at 224, as Ultralytics' classification trainer."""
    from yolojax.config import ConfigError, closest_key, default_config
    from yolojax.config import check_config
    from yolojax.config.checks import NO_EFFECT_KEYS

    base = default_config().to_dict()
    clean: dict[str, Any] = {}
    for key, value in args.items():
        if key in base:
            clean[key] = list(value) if isinstance(value, tuple) else value
        elif key in NO_EFFECT_KEYS:
            print(f"WARNING: '{key}={value}' is an Ultralytics argument with no effect on YOLOv8 detection or "
                  f"classification training; yolojax ignores it.")
        else:
            near = closest_key(key, base)
            hint = f" Did you mean '{near}'?" if near else ""
            raise ConfigError(f"'{key}' is not a valid yolojax/Ultralytics train argument.{hint} Run 'yolojax cfg' "
                              f"to list every key with its default.")
    from yolojax.tasks import TASKS

    task = clean.get("task", "detect")
    if task not in TASKS:
        raise ConfigError(f"task={task!r}: yolojax trains {' and '.join(TASKS)} models (task={'|'.join(TASKS)}).")
    if task == "classify" and "imgsz" not in clean:
        clean["imgsz"] = 224
    return check_config({**base, **clean})


class YOLO:
    """A YOLOv8 detector or classifier with Ultralytics' methods: ``train``, ``val``, ``predict``, ``export``,
    ``load``, ``info``. A YOLOv8-cls classifier (``task == "classify"``: a ``-cls`` YAML or checkpoint) trains,
    validates (:class:`yolojax.classify_evaluate.ClassifyMetrics`) and predicts
    (:class:`yolojax.classify_predict.ClassifyResult`); its ``export`` raises a ConfigError (detection only).

    Attributes: ``model`` (the :class:`yolojax.nn.YOLOv8` module), ``variables`` ({"params", "batch_stats"}),
    ``names`` ({id: name}), ``ckpt_path`` (the weights file it was loaded from, or None), ``cfg`` (the YAML it
    was built from, or None), ``overrides`` (train arguments inherited from a checkpoint: data, imgsz,
    single_cls), ``metrics`` (the last train/val metrics)."""

    def __init__(self, model: str | os.PathLike = "yolov8n.yaml", task: str | None = None, verbose: bool = False):
        if task not in (None, "detect", "classify"):
            from yolojax.config import ConfigError

            raise ConfigError(f"task={task!r}: yolojax implements detection (task='detect') and builds and loads "
                              f"classification models (task='classify').")
        from yolojax.engine.devices import enable_compile_cache, use_deterministic_ops

        enable_compile_cache()  # before the model's first JAX operation (see enable_compile_cache)
        use_deterministic_ops(True)  # likewise: train's default deterministic=True (see use_deterministic_ops)
        self.callbacks: dict[str, list[Callable]] = {}
        self.metrics = None
        self.overrides: dict[str, Any] = {}
        self._loaded = False  # .load() transferred weights into a built model
        source = str(model)
        if source.endswith((".yaml", ".yml")):
            self._new(source, verbose)
        else:
            self._load(source)
        if task is not None and task != self.task:
            from yolojax.config import ConfigError

            raise ConfigError(f"task={task!r} does not fit {source}, which is a {self.task} model.")

    # -- construction ------------------------------------------------------------------------------------------
    def _new(self, cfg: str, verbose: bool) -> None:
        from yolojax.nn import model_from_yaml
        from yolojax.nn.yolo import init_variables

        self.model = model_from_yaml(cfg)
        self.task = _task_of(self.model)
        self.variables = init_variables(self.model, seed=0)
        self.names = {i: str(i) for i in range(self.model.num_classes)}
        self.cfg, self.ckpt_path = cfg, None
        self.overrides = {"model": cfg}
        if verbose:
            self.info()

    def _load(self, path: str) -> None:
        w = load_weights(path)
        self.model, self.variables, self.names = w.model, w.variables, dict(w.names)
        self.task = _task_of(self.model)
        self.cfg, self.ckpt_path = None, w.source
        args = (w.meta or {}).get("train_args") or _run_args(pathlib.Path(w.source))
        # as Ultralytics: a checkpoint passes on only these train arguments
        self.overrides = {k: args[k] for k in ("imgsz", "data", "single_cls") if args.get(k) is not None}
        self.overrides["model"] = w.source

    def load(self, weights: str | os.PathLike) -> "YOLO":
        """Transfer every tensor of ``weights`` whose name and shape match (prints ``Transferred X/Y items``)."""
        from yolojax.weights import transfer

        w = load_weights(weights)
        self.variables, _ = transfer(w.variables, self.variables)
        if len(w.names) == self.model.num_classes and self.ckpt_path is None:
            self.names = dict(w.names)
        self._loaded = True
        return self

    def add_callback(self, event: str, fn: Callable) -> None:
        """Call ``fn(event)`` at ``event`` (Ultralytics' trainer event names, ``yolojax.report.events.EVENTS``), the
        argument an immutable ``yolojax.report.events.TrainEvent``."""
        self.callbacks.setdefault(event, []).append(fn)

    # -- training ----------------------------------------------------------------------------------------------
    def _resume_target(self, resume) -> str:
        if isinstance(resume, (str, os.PathLike)) and str(resume).lower() not in ("true", "1"):
            return str(resume)
        if self.ckpt_path is None:
            from yolojax.config import ConfigError

            raise ConfigError("resume=True resumes the run this model was loaded from, but this YOLO was built from "
                              f"{self.cfg}. Load the interrupted run's weights first: "
                              "YOLO('runs/detect/train/weights/last.npz').train(resume=True).")
        p = pathlib.Path(self.ckpt_path)
        if _run_dir_of(p) is None or not (_run_dir_of(p) / "weights" / "ckpt").is_dir():
            raise FileNotFoundError(f"resume: {p} is not the weights of a yolojax run (no args.yaml and weights/ckpt "
                                    f"beside it), so there is no optimizer state to resume. An Ultralytics .pt cannot "
                                    f"be resumed in yolojax: start a new run from it with YOLO('{p}').train(...).")
        return str(p)

    def train(self, **kwargs) -> "Any":
        """Train with Ultralytics' arguments; returns the final validation metrics (``yolojax.evaluate.ValMetrics``;
        for a classifier ``yolojax.classify_evaluate.ClassifyMetrics``).

        Merge order as Ultralytics: checkpoint overrides < {data, model, task} < ``kwargs`` < mode='train'."""
        from yolojax.engine.devices import use_cpu_cores
        from yolojax.train import train_and_evaluate

        use_cpu_cores()  # YOLOJAX_CPU_DEVICES=N splits the CPU, if JAX has not run anything yet in this process
        kwargs = dict(kwargs)
        kwargs.pop("mode", None)
        args = {k: v for k, v in self.overrides.items() if k in ("imgsz", "data", "single_cls")}
        args["task"] = self.task
        args["model"] = self.overrides.get("model", self.ckpt_path or self.cfg)
        if self.overrides.get("data"):
            args["data"] = self.overrides["data"]
        args.update(kwargs)
        config = train_config(args)  # every key and value checked first
        if not isinstance(config.pretrained, bool):
            resolve_weights_path(config.pretrained)  # a clear paragraph if it is missing
        workdir = None
        if config.resume:
            config.resume = self._resume_target(config.resume)
        if not config.resume and self._loaded:
            # the transferred weights are the starting point: keep them with the run, so resume can rebuild it
            from yolojax.config import run_dir

            workdir = run_dir(config)
            start = workdir / "weights" / "start.npz"
            _save_weights(self.variables, start, self.names, self.model)
            config.model = str(start)
        captured: dict[str, Any] = {}
        callbacks = {k: list(v) for k, v in self.callbacks.items()}
        callbacks.setdefault("on_train_end", []).append(lambda ctx: captured.update(final=ctx.final, dir=ctx.save_dir))
        out = train_and_evaluate(config, workdir, callbacks=callbacks)
        save_dir = pathlib.Path(out.get("save_dir") or captured.get("dir")).absolute()
        for name in ("best.npz", "last.npz"):
            if (save_dir / "weights" / name).is_file():
                self._load(str(save_dir / "weights" / name))
                self._loaded = False
                break
        final = captured.get("final")
        if final is None:
            self.metrics = None
        elif self.task == "classify":
            from yolojax.classify_evaluate import ClassifyMetrics

            self.metrics = ClassifyMetrics.from_result(final, self.names, save_dir)
        else:
            from yolojax.evaluate import ValMetrics

            self.metrics = ValMetrics.from_result(final, self.names, save_dir, config.compat)
        return self.metrics

    # -- evaluation and inference ------------------------------------------------------------------------------
    def val(self, **kwargs):
        """Validate on ``data`` (default: the dataset the weights were trained on); returns ``ValMetrics``
        (a classifier: ``ClassifyMetrics``, at imgsz 224 unless the weights or ``imgsz`` say otherwise)."""
        from yolojax.engine.devices import use_cpu_cores

        use_cpu_cores()  # YOLOJAX_CPU_DEVICES=N splits the CPU, if JAX has not run anything yet in this process
        args = {k: v for k, v in self.overrides.items() if k in ("imgsz", "data", "single_cls")}
        args.update(kwargs)
        if self.task == "classify":
            from yolojax.classify_evaluate import validate_classifier

            args.pop("single_cls", None)  # a checkpoint's train argument, without meaning for a classifier
            self.metrics = validate_classifier(self.model, self.variables, names=self.names, **args)
        else:
            from yolojax.evaluate import validate

            self.metrics = validate(self.model, self.variables, names=self.names, **args)
        return self.metrics

    def predict(self, source=None, **kwargs):
        """Detect objects in ``source`` (image path, directory, glob, list, or BGR uint8 array) as Ultralytics'
        predictor does; returns a list of :class:`yolojax.predict.Prediction` (boxes xyxy in original pixels,
        scores, classes). Keywords: :func:`yolojax.predict.predict`'s (imgsz, conf, iou, classes, compat, ...).
        A classifier returns :class:`yolojax.classify_predict.ClassifyResult` s (``.probs.top1``, ``.top5``,
        ``.top1conf``, ``.top5conf``, ``.data``); keywords: :func:`yolojax.classify_predict.predict_classes`'s."""
        if source is None:
            raise ValueError("predict needs a source: an image path, a directory, a glob, a list or an array.")
        if self.task == "classify":
            from yolojax.classify_predict import predict_classes

            kwargs.setdefault("imgsz", self.overrides.get("imgsz", 224))
            return predict_classes(self.model, self.variables, source, names=self.names, **kwargs)
        from yolojax.predict import predict

        kwargs.setdefault("imgsz", self.overrides.get("imgsz", 640))
        return predict(self.model, self.variables, source, names=self.names, **kwargs)

    __call__ = predict

    def export(self, format: str = "onnx", **kwargs) -> str:
        """Write the model for inference outside JAX (``format``: onnx, saved_model) beside its weights; returns the
        path. Keywords: imgsz (default: the trained size, else 640), batch, dynamic, half, opset
        (:func:`yolojax.export.export`)."""
        from yolojax.export import check_args, export

        if self.task != "detect":
            from yolojax.config import ConfigError

            raise ConfigError(f"export of classification models is not part of yolojax: this YOLO holds a YOLOv8-cls "
                              f"classifier ({self.ckpt_path or self.cfg}); save its weights with .save('w.npz') or "
                              f"run it as a Flax module (.model.apply(.variables, images)). Detection models export "
                              f"to onnx and saved_model.")
        args = check_args(kwargs)
        args.setdefault("imgsz", self.overrides.get("imgsz", 640))
        return str(export(self.model, self.variables, names=self.names, source=self.ckpt_path or self.cfg,
                          format=format, data=self.overrides.get("data"), **args))

    def info(self, detailed: bool = False, verbose: bool = True):
        """Print and return the model summary (layers, parameters, gradients, GFLOPs at 640)."""
        from yolojax.nn.summary import model_info

        info = model_info(self.model)
        if verbose:
            print(info.line())
        return info

    def save(self, path: str | os.PathLike) -> None:
        """Write the weights as an Ultralytics-named state dict ``.npz``."""
        _save_weights(self.variables, path, self.names, self.model)

    def __repr__(self) -> str:
        src = self.ckpt_path or self.cfg
        return f"YOLO({src!r}, scale={self.model.scale!r}, nc={self.model.num_classes})"


def _task_of(model) -> str:
    from yolojax.nn import YOLOv8Cls

    return "classify" if isinstance(model, YOLOv8Cls) else "detect"


def _save_weights(variables, path, names, model) -> None:
    import inspect

    from yolojax.weights import save_state_dict

    kw = {"model": model} if "model" in inspect.signature(save_state_dict).parameters else {}
    save_state_dict(variables, path, names=names, **kw)
