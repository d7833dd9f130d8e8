"""The YOLOv8 classification model (yolov8-cls.yaml): the detector's backbone up to its widest C2f, then Classify.

``YOLOv8Cls(scale="n", num_classes=1000)`` builds the standard network; ``YOLOv8Cls.from_yaml(path)`` any model
YAML whose head is ``Classify``; :func:`model_from_yaml` picks the detection or classification model a YAML (or a
name such as ``yolov8n-cls.yaml``) describes.

    model.apply(variables, images, train=False) -> (B, nc) class probabilities (softmax)
    model.apply(variables, images, train=True, mutable=["batch_stats"]) -> ((B, nc) logits, updates)
    model.apply(variables, images, decode=False) -> (B, nc) logits with running BN statistics

``images`` are float (B, H, W, 3) RGB in [0, 1], any size (global average pooling). With ``dropout`` > 0 a
train-mode call needs ``rngs={"dropout": key}``.
"""
from __future__ import annotations

import pathlib
import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import yaml

from yolojax.nn.blocks import TORCH_BN, BNSettings, Conv, Dtype, torch_conv_init
from yolojax.nn.yolo import YOLOV8_LAYERS, YOLOV8_SCALES, YOLOv8

# yolov8-cls.yaml: the yolov8.yaml backbone without SPPF (layers 0-8), then the Classify head.
YOLOV8_CLS_LAYERS: tuple = YOLOV8_LAYERS[:9] + ((-1, 1, "Classify", ("nc",)),)

# scale -> (depth_multiple, width_multiple, max_channels): the detector's multiples, all capped at 1024 channels.
YOLOV8_CLS_SCALES = {s: (depth, width, 1024) for s, (depth, width, _) in YOLOV8_SCALES.items()}


def _uniform_fan_in(fan_in: int):
    """PyTorch's default Linear bias init, U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / fan_in ** 0.5

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


class Classify(nn.Module):
    """1x1 Conv (BN, SiLU) to ``hidden`` channels -> global average pool -> dropout -> Linear to ``num_classes``.

    (B, H, W, C) -> (B, nc) float32: logits in train mode or with ``decode=False``, softmax probabilities
    otherwise. Variables ``conv/...`` and ``linear/{kernel (hidden, nc), bias (nc,)}`` are Ultralytics'
    ``conv.*`` and ``linear.weight`` (transposed), ``linear.bias``."""

    num_classes: int
    hidden: int = 1280
    dropout: float = 0.0
    bn: BNSettings = BNSettings()
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False, decode: bool = True):
        x = Conv(self.hidden, 1, 1, bn=self.bn, dtype=self.dtype, name="conv")(x, train)
        x = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        # The Linear runs in float32 (as Detect's output convs): logits feed a softmax and the loss directly.
        logits = nn.Dense(self.num_classes, kernel_init=torch_conv_init, bias_init=_uniform_fan_in(x.shape[-1]),
                          dtype=jnp.float32, param_dtype=jnp.float32, name="linear")(x)
        if train or not decode:
            return logits
        return jax.nn.softmax(logits, axis=-1)


class YOLOv8Cls(YOLOv8):
    """YOLOv8 classifier. ``scale`` picks depth/width/max_channels of yolov8-cls.yaml unless ``multiples`` is
    given; ``dropout`` is Ultralytics' ``dropout`` train argument (the Classify head's dropout rate). Its BatchNorms
    keep torch's defaults, as Ultralytics' classifiers do: eps 1e-5, momentum 0.1, running variances from 1 in both
    compats (the classifier has no stride-probe forward)."""

    num_classes: int = 1000
    layers: tuple = YOLOV8_CLS_LAYERS
    dropout: float = 0.0

    HEAD = "Classify"
    SCALES = YOLOV8_CLS_SCALES
    BUILTIN_YAML = r"yolov8[nslmx]?-cls\.yaml"

    def bn_settings(self) -> BNSettings:
        return TORCH_BN

    def head_layer(self, kwargs: dict, bn: BNSettings, name: str) -> nn.Module:
        return Classify(**kwargs, dropout=self.dropout, bn=bn, dtype=self.dtype, name=name)

    @property
    def strides(self) -> tuple[int, ...]:
        """The backbone's output stride (the Classify head pools it away: any input size works)."""
        return (self.plan()[-2][4],)


def model_from_yaml(cfg, **kwargs) -> YOLOv8:
    """The :class:`YOLOv8Cls` or :class:`YOLOv8` that a model YAML (path, parsed dict or a bundled name such as
    ``yolov8n-cls.yaml``) describes, chosen by its head; keywords as ``YOLOv8.from_yaml``."""
    return model_class(cfg).from_yaml(cfg, **kwargs)


def model_class(cfg) -> type[YOLOv8]:
    """:class:`YOLOv8Cls` when ``cfg`` (as for :func:`model_from_yaml`) ends in a Classify head, else YOLOv8."""
    if isinstance(cfg, (str, pathlib.Path)):
        path = pathlib.Path(cfg)
        if not path.is_file():
            return YOLOv8Cls if re.fullmatch(YOLOv8Cls.BUILTIN_YAML, path.name) else YOLOv8

        cfg = yaml.safe_load(path.read_text())
    rows = (list(cfg.get("backbone") or []) + list(cfg.get("head") or [])) if isinstance(cfg, dict) else []
    last: Any = rows[-1][2] if rows and len(rows[-1]) == 4 else None
    return YOLOv8Cls if last == "Classify" else YOLOv8
