"""Model summary like Ultralytics' ``model.info()``: layers, parameters, gradients, GFLOPs at 640.

Everything is computed from the model, not tabled: parameters from ``jax.eval_shape(model.init)``, FLOPs by
tracing one 640x640 forward with ``capture_intermediates`` and counting the multiply-accumulates of every
convolution (2 FLOPs per MAC, plus the bias adds and BatchNorm's scale and shift, which is what the ``thop``
counter behind Ultralytics' number counts; a classifier's Linear counts once, whatever the image size).
"Layers" counts leaf layers as current Ultralytics does (each conv, BatchNorm, the shared SiLU once, pools,
upsamples, concats, the DFL conv; a classifier's pool, dropout and Linear).
"""
from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from yolojax.nn.yolo import YOLOv8

DFL_PARAMS = 16  # the frozen DFL conv: a parameter in Ultralytics' count, a constant in yolojax


@dataclasses.dataclass
class ModelInfo:
    name: str
    layers: int
    parameters: int
    gradients: int
    gflops: float

    def line(self) -> str:
        return (f"{self.name} summary: {self.layers} layers, {self.parameters:,} parameters, "
                f"{self.gradients:,} gradients, {self.gflops:.1f} GFLOPs")


def _conv_and_bn_flops(model: YOLOv8, imgsz: int) -> tuple[float, int, dict]:
    """(FLOPs of one imgsz x imgsz image, number of nn.Conv and nn.Dense modules, the variables' shapes) from one
    shape-only trace."""
    x = jax.ShapeDtypeStruct((1, imgsz, imgsz, 3), jnp.float32)

    def run(images):  # init runs the forward pass once: its convolutions' outputs are captured on the way
        variables = dict(model.init(jax.random.key(0), images, mutable=True,
                                    capture_intermediates=lambda m, _: isinstance(m, (nn.Conv, nn.Dense))))
        return variables, variables.pop("intermediates")

    variables, inter = jax.eval_shape(run, x)
    params = variables["params"]
    flops, n_conv = 0.0, 0
    flat_params = {tuple(k.key for k in kp): leaf for kp, leaf in jax.tree_util.tree_flatten_with_path(params)[0]}
    for kp, out in jax.tree_util.tree_flatten_with_path(inter)[0]:
        path = tuple(k.key for k in kp[:-2])  # strip ("__call__", 0)
        kernel = flat_params[path + ("kernel",)]
        cout = kernel.shape[-1]
        spatial = math.prod(out.shape[1:-1])  # 1 for a Dense output (B, features)
        macs = spatial * math.prod(kernel.shape)
        has_bias = (path + ("bias",)) in flat_params
        flops += 2 * macs + (spatial * cout if has_bias else 0)
        bn_path = path[:-1] + ("bn", "scale")
        if bn_path in flat_params:
            flops += 2 * spatial * cout  # BN scale + shift
        n_conv += 1
    return flops, n_conv, variables


def model_info(model: YOLOv8, imgsz: int = 640) -> ModelInfo:
    flops, n_conv, variables = _conv_and_bn_flops(model, imgsz)
    trainable = sum(math.prod(p.shape) for p in jax.tree.leaves(variables["params"]))
    n_bn = len([1 for kp, _ in jax.tree_util.tree_flatten_with_path(variables["batch_stats"])[0]
                if kp[-1].key == "mean"])
    plan = model.plan()
    n_pool = sum(1 for _, m, *_ in plan if m == "SPPF")
    n_up = sum(1 for _, m, *_ in plan if m == "Upsample")
    n_cat = sum(1 for _, m, *_ in plan if m == "Concat")
    detect = plan[-1][1] == "Detect"
    # + the shared SiLU; then the DFL conv (Detect) or the pool and dropout (Classify; its Linear is in n_conv)
    layers = n_conv + n_bn + 1 + n_pool + n_up + n_cat + (1 if detect else 2)
    name = f"YOLOv8{model.scale}" if model.scale in "nsmlx" else "YOLOv8"
    name += "" if detect else "-cls"
    return ModelInfo(name, layers, trainable + (DFL_PARAMS if detect else 0), trainable, flops / 1e9)
