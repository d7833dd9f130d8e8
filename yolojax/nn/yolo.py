"""The YOLOv8 detection model, assembled from an Ultralytics-style layer table (the classifier,
:class:`yolojax.nn.classify.YOLOv8Cls`, reuses it with its own head).

``YOLOv8(scale="n", num_classes=80)`` builds the standard yolov8.yaml network; ``YOLOv8.from_yaml(path)``
builds any model YAML of the v8 detect family (custom ``nc``, ``scales`` or ``depth_multiple`` /
``width_multiple`` / ``max_channels``). Layers are stored as a hashable tuple so the module stays a plain
Linen dataclass.

    model.apply(variables, images, train=False) -> (B, A, 4 + nc)
    model.apply(variables, images, train=True, mutable=["batch_stats"]) -> ([P3, P4, P5], updates)
    model.apply(variables, images, decode=False) -> [P3, P4, P5] with running BN statistics

``images`` are float (B, H, W, 3) RGB in [0, 1], H and W multiples of 32.
"""
from __future__ import annotations

import math
import pathlib
import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import yaml

from yolojax.nn.blocks import C2f, SPPF, BNSettings, Concat, Conv, Detect, Upsample, head_bias

# The yolov8.yaml layer table: (from, repeats, module, args), args before width scaling.
YOLOV8_LAYERS: tuple = (
    (-1, 1, "Conv", (64, 3, 2)),
    (-1, 1, "Conv", (128, 3, 2)),
    (-1, 3, "C2f", (128, True)),
    (-1, 1, "Conv", (256, 3, 2)),
    (-1, 6, "C2f", (256, True)),
    (-1, 1, "Conv", (512, 3, 2)),
    (-1, 6, "C2f", (512, True)),
    (-1, 1, "Conv", (1024, 3, 2)),
    (-1, 3, "C2f", (1024, True)),
    (-1, 1, "SPPF", (1024, 5)),
    (-1, 1, "Upsample", (None, 2, "nearest")),
    ((-1, 6), 1, "Concat", (1,)),
    (-1, 3, "C2f", (512,)),
    (-1, 1, "Upsample", (None, 2, "nearest")),
    ((-1, 4), 1, "Concat", (1,)),
    (-1, 3, "C2f", (256,)),
    (-1, 1, "Conv", (256, 3, 2)),
    ((-1, 12), 1, "Concat", (1,)),
    (-1, 3, "C2f", (512,)),
    (-1, 1, "Conv", (512, 3, 2)),
    ((-1, 9), 1, "Concat", (1,)),
    (-1, 3, "C2f", (1024,)),
    ((15, 18, 21), 1, "Detect", ("nc",)),
)

# scale -> (depth_multiple, width_multiple, max_channels)
YOLOV8_SCALES = {
    "n": (0.33, 0.25, 1024),
    "s": (0.33, 0.50, 1024),
    "m": (0.67, 0.75, 768),
    "l": (1.00, 1.00, 512),
    "x": (1.00, 1.25, 512),
}

_MODULE_ALIASES = {"nn.Upsample": "Upsample", "torch.nn.Upsample": "Upsample"}
_SUPPORTED = {"Conv", "C2f", "SPPF", "Upsample", "Concat", "Detect", "Classify"}
_HEADS = ("Detect", "Classify")


def make_divisible(x: float, divisor: int = 8) -> int:
    return int(math.ceil(x / divisor) * divisor)


def guess_scale(name: str) -> str | None:
    """'yolov8s.yaml' -> 's' (the pattern Ultralytics uses: yolo[v]<digits><n|s|m|l|x>)."""
    m = re.search(r"yolov?\d+([nslmx])", pathlib.Path(str(name)).stem)
    return m.group(1) if m else None


class YOLOv8(nn.Module):
    """YOLOv8 detector. ``layers`` defaults to yolov8.yaml; ``scale`` picks depth/width/max_channels
    unless ``multiples`` = (depth, width, max_channels) is given. ``compat`` selects the v8-era
    ("v8") or current ("current") initialisation of the Detect box bias and BN running variance."""

    scale: str = "n"
    num_classes: int = 80
    dtype: Any = jnp.float32
    layers: tuple = YOLOV8_LAYERS
    multiples: tuple | None = None
    compat: str = "v8"

    # The family's head module, its scale table and the model YAML names that build the bundled table.
    HEAD = "Detect"
    SCALES = YOLOV8_SCALES
    BUILTIN_YAML = r"yolov8[nslmx]?\.yaml"

    def resolved_multiples(self) -> tuple[float, float, int]:
        if self.multiples is not None:
            return tuple(self.multiples)
        if self.scale not in self.SCALES:
            raise ValueError(f"Unknown YOLOv8 scale {self.scale!r}; expected one of {sorted(self.SCALES)}.")
        return self.SCALES[self.scale]

    def bn_settings(self) -> BNSettings:
        """Every BatchNorm's settings: eps 1e-3, momentum 0.03; the initial running variance 0.9 for v8-era
        detectors (they ran a train-mode stride probe that left it there), else 1."""
        return BNSettings(init_var=0.9 if self.compat == "v8" else 1.0)

    def head_layer(self, kwargs: dict, bn: BNSettings, name: str) -> nn.Module:
        """The head module of ``plan()``'s last layer, called as ``head(inputs, train, decode)``."""
        box_bias = 1.0 if self.compat == "v8" else 2.0
        return Detect(**kwargs, box_bias=box_bias, bn=bn, dtype=self.dtype, name=name)

    def plan(self):
        """Resolve the layer table: per layer (from, module name, kwargs, out channels, stride)."""
        depth, width, max_ch = self.resolved_multiples()
        chans, strides, plan = [3], [1], []
        for i, (frm, n, module, args) in enumerate(self.layers):
            module = _MODULE_ALIASES.get(module, module)
            if module not in _SUPPORTED:
                raise ValueError(f"Layer {i}: module {module!r} is not part of the YOLOv8 detect/classify families "
                                 f"(supported: {sorted(_SUPPORTED)}).")
            if module in _HEADS and module != self.HEAD:
                raise ValueError(f"Layer {i}: a {module} head does not belong in a {type(self).__name__} model "
                                 f"(its head is {self.HEAD}); build it with yolojax.nn.model_from_yaml.")
            srcs = [frm] if isinstance(frm, int) else list(frm)
            src_idx = [s if s >= 0 else len(plan) + s for s in srcs]
            # chans/strides are indexed by layer+1 (index 0 is the input image)
            c_in = [chans[s + 1] for s in src_idx]
            s_in = [strides[s + 1] for s in src_idx]
            reps = max(round(n * depth), 1) if n > 1 else n
            kwargs: dict = {}
            if module in ("Conv", "C2f", "SPPF"):
                c2 = make_divisible(min(args[0], max_ch) * width, 8)
                if module == "Conv":
                    k = args[1] if len(args) > 1 else 1
                    s = args[2] if len(args) > 2 else 1
                    kwargs = dict(features=c2, kernel=k, stride=s)
                    stride = s_in[0] * s
                elif module == "C2f":
                    kwargs = dict(features=c2, n=reps, shortcut=bool(args[1]) if len(args) > 1 else False)
                    stride = s_in[0]
                else:
                    kwargs = dict(features=c2, k=args[1] if len(args) > 1 else 5)
                    stride = s_in[0]
                c_out = c2
            elif module == "Upsample":
                factor = int(args[1])
                kwargs = dict(factor=factor)
                c_out, stride = c_in[0], s_in[0] // factor
            elif module == "Concat":
                c_out, stride = sum(c_in), s_in[0]
            elif module == "Detect":
                kwargs = dict(num_classes=self.num_classes, strides=tuple(s_in))
                c_out, stride = None, None
            else:  # Classify
                kwargs = dict(num_classes=self.num_classes)
                c_out, stride = None, None
            plan.append((tuple(src_idx), module, kwargs, c_out, stride))
            chans.append(c_out)
            strides.append(stride)
        return plan

    def to_yaml_dict(self) -> dict:
        """An Ultralytics-style model dict that ``from_yaml`` rebuilds this architecture from."""
        depth, width, max_ch = self.resolved_multiples()
        rows = [[frm if isinstance(frm, int) else list(frm), n, module, list(args)]
                for frm, n, module, args in self.layers]
        return {"nc": self.num_classes, "scale": self.scale, "depth_multiple": depth, "width_multiple": width,
                "max_channels": max_ch, "backbone": rows, "head": []}

    @property
    def strides(self) -> tuple[int, ...]:
        return self.plan()[-1][2]["strides"]

    @nn.compact
    def __call__(self, images, train: bool = False, decode: bool = True):
        bn = self.bn_settings()
        outputs, x = [], None
        for i, (src, module, kwargs, _, _) in enumerate(self.plan()):
            if len(src) == 1:
                inp = images.astype(self.dtype) if src[0] < 0 else outputs[src[0]]
            else:
                inp = [outputs[j] for j in src]
            name = f"model_{i}"
            if module == "Conv":
                x = Conv(**kwargs, bn=bn, dtype=self.dtype, name=name)(inp, train)
            elif module == "C2f":
                x = C2f(**kwargs, bn=bn, dtype=self.dtype, name=name)(inp, train)
            elif module == "SPPF":
                x = SPPF(**kwargs, bn=bn, dtype=self.dtype, name=name)(inp, train)
            elif module == "Upsample":
                x = Upsample(**kwargs, name=name)(inp)
            elif module == "Concat":
                x = Concat(name=name)(inp)
            else:
                x = self.head_layer(kwargs, bn, name)(inp, train, decode)
            outputs.append(x)
        return x

    @classmethod
    def from_yaml(cls, cfg, *, num_classes: int | None = None, scale: str | None = None, **kwargs) -> "YOLOv8":
        """Build from an Ultralytics model YAML (path or parsed dict) of this model's family (its head: ``HEAD``).

        A file name such as ``yolov8s.yaml`` (``yolov8s-cls.yaml`` for classification) that does not exist on
        disk builds the bundled table at scale ``s`` (as Ultralytics maps it to its single yolov8.yaml)."""
        name = None
        if isinstance(cfg, (str, pathlib.Path)):
            name = str(cfg)
            path = pathlib.Path(cfg)
            if path.is_file():
                cfg = yaml.safe_load(path.read_text())
            elif re.fullmatch(cls.BUILTIN_YAML, path.name):
                s = scale or guess_scale(path.name) or "n"
                return cls(scale=s, **({"num_classes": num_classes} if num_classes else {}), **kwargs)
            else:
                raise FileNotFoundError(
                    f"Model YAML {name!r} not found. Give a path to an Ultralytics model YAML of the v8 detect or "
                    f"classify family, or a name such as 'yolov8n.yaml' or 'yolov8n-cls.yaml' (scales n/s/m/l/x) to "
                    f"build the standard network.")
        if not isinstance(cfg, dict) or "backbone" not in cfg or cfg.get("head") is None:
            raise ValueError(f"Model YAML {name or ''} needs 'backbone' and 'head' layer lists.")
        nc = int(num_classes if num_classes is not None else cfg.get("nc", cls.num_classes))
        multiples = None
        if "depth_multiple" in cfg or "width_multiple" in cfg:
            multiples = (float(cfg.get("depth_multiple", 1.0)), float(cfg.get("width_multiple", 1.0)),
                         int(cfg.get("max_channels", 1024)))
        scales = cfg.get("scales")
        s = scale or cfg.get("scale") or (guess_scale(name) if name else None)
        if multiples is None and scales:
            s = s if s in scales else next(iter(scales))
            d, w, mc = scales[s]
            multiples = (float(d), float(w), int(mc))
        if multiples is None:
            multiples = (1.0, 1.0, 1024)
        layers = []
        for row in list(cfg["backbone"]) + list(cfg["head"]):
            frm, n, module, args = row
            frm = frm if isinstance(frm, int) else tuple(frm)
            args = tuple("nc" if a == "nc" else a for a in args)
            layers.append((frm, int(n), str(module), args))
        if layers and layers[-1][2] != cls.HEAD:
            raise ValueError(f"Model YAML {name or ''}: its last layer is {layers[-1][2]!r}, not the {cls.HEAD} "
                             f"head of a {cls.__name__}; build it with yolojax.nn.model_from_yaml.")
        if s in cls.SCALES and layers == list(cls.layers) and multiples == cls.SCALES[s]:
            multiples = None  # the standard network: keep the compact form
        return cls(scale=s or "custom", num_classes=nc, layers=tuple(layers), multiples=multiples, **kwargs)


def layer_table(model: YOLOv8) -> list[dict]:
    """One row per top-level layer (index, from, repeats, module, arguments) as in Ultralytics' table."""
    rows = []
    for i, ((frm, n, _, args), (src, module, kwargs, c_out, _)) in enumerate(zip(model.layers, model.plan())):
        rows.append(dict(index=i, frm=frm, n=kwargs.get("n", 1), module=module, args=kwargs, channels=c_out))
    return rows


def init_variables(model: YOLOv8, seed: int = 0):
    """Ultralytics' initialisation, drawn with NumPy on the host so that no ``model.init`` is compiled (only its
    shapes are traced); ``model.init`` gives the same distributions.

    Conv and Linear weights U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (PyTorch's default), so are the Classify Linear
    biases; BN scale 1 / bias 0, running mean 0 and variance ``model.bn_settings().init_var``; Detect biases per
    :func:`yolojax.nn.blocks.head_bias`."""
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3), jnp.float32)))
    rng = np.random.default_rng(seed)
    bn_var = model.bn_settings().init_var
    box_bias = 1.0 if model.compat == "v8" else 2.0

    def uniform(fan_in, shape):
        bound = 1.0 / np.sqrt(fan_in)
        return rng.uniform(-bound, bound, shape).astype(np.float32)

    def fill(kp, leaf):
        path = [k.key for k in kp]
        collection, name = path[0], path[-1]
        if collection == "batch_stats":
            return np.full(leaf.shape, 0.0 if name == "mean" else bn_var, np.float32)
        if name == "kernel":
            return uniform(math.prod(leaf.shape[:-1]), leaf.shape)
        if path[-2] == "bn":
            return np.full(leaf.shape, 1.0 if name == "scale" else 0.0, np.float32)
        if path[-2] == "linear":  # the Classify head's Linear bias; fan_in from its kernel
            node = shapes["params"]
            for key in path[1:-1]:
                node = node[key]
            return uniform(node["kernel"].shape[0], leaf.shape)
        branch, level, _ = path[-2].split("_")  # a Detect head conv bias: cv2_<level>_2 / cv3_<level>_2
        return np.full(leaf.shape, head_bias(branch, model.strides[int(level)], model.num_classes, box_bias),
                       np.float32)

    return jax.tree_util.tree_map_with_path(fill, shapes)
