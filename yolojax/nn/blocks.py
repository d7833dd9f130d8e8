"""YOLOv8 building blocks as Flax Linen modules (NHWC, HWIO kernels).

Module and submodule names follow the Ultralytics state-dict layout with ``.`` written as ``_``
(``model_2/m_0/cv1/conv/kernel`` is ``model.2.m.0.cv1.conv.weight``), so weight import and export are a
mechanical rename (see :mod:`yolojax.weights`).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from yolojax.ops.boxes import dfl_decode, make_anchors

Dtype = Any

# PyTorch's default Conv2d init: kaiming_uniform(a=sqrt(5)) == U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
torch_conv_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


@dataclasses.dataclass(frozen=True)
class BNSettings:
    """A model's BatchNorm settings, in torch's convention: the running variance it starts from, ``epsilon`` and
    ``momentum`` (the weight of the new batch in the running statistics). The defaults are Ultralytics' detectors
    (its ``initialize_weights`` sets eps 1e-3 and momentum 0.03 on every BatchNorm); its classifiers are never
    passed through it and keep torch's eps 1e-5 and momentum 0.1 (``TORCH_BN``)."""

    init_var: float = 1.0
    epsilon: float = 1e-3
    momentum: float = 0.03


TORCH_BN = BNSettings(epsilon=1e-5, momentum=0.1)


class BatchNorm(nn.Module):
    """BatchNorm with PyTorch semantics (eps and momentum as ``BNSettings``, momentum in torch's convention).

    Training normalises with the biased batch variance and updates the running variance with the
    unbiased one, exactly as ``torch.nn.BatchNorm2d`` does (Flax's own BatchNorm uses the biased one).
    Statistics are computed in float32 over every axis but the last. Under ``jit`` with the batch
    sharded over a mesh, the means are global-batch means (XLA inserts the all-reduce).
    """

    epsilon: float = 1e-3
    momentum: float = 0.03
    init_var: float = 1.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        c = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
        ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((c,), jnp.float32))
        ra_var = self.variable("batch_stats", "var", lambda: jnp.full((c,), self.init_var, jnp.float32))
        if train:
            xf = x.astype(jnp.float32)
            axes = tuple(range(x.ndim - 1))
            mean = jnp.mean(xf, axes)
            var = jnp.maximum(jnp.mean(jnp.square(xf), axes) - jnp.square(mean), 0.0)
            if not self.is_initializing():
                n = math.prod(x.shape[:-1])
                unbiased = var * (n / max(n - 1, 1))
                m = self.momentum
                ra_mean.value = (1.0 - m) * ra_mean.value + m * mean
                ra_var.value = (1.0 - m) * ra_var.value + m * unbiased
        else:
            mean, var = ra_mean.value, ra_var.value
        mul = scale * jax.lax.rsqrt(var + self.epsilon)
        add = bias - mean * mul
        return (x.astype(jnp.float32) * mul + add).astype(self.dtype)


class PointwiseConv(nn.Conv):
    """A 1x1, stride-1 ``nn.Conv`` computed as one matrix product over the channel axis.

    Same variables (``kernel`` (1, 1, Cin, Cout), optional ``bias``), initialisers, dtype promotion and result
    as ``nn.Conv`` (up to float summation order), and still an ``nn.Conv`` for model summaries. Why: with its
    default (YNNPACK) convolutions XLA:CPU runs a 1x1 convolution's forward and backward passes slower than the
    equivalent dot (benchmarks/RESULTS.md); a dot and its gradients (dots) hit the tuned GEMM path on every
    backend.
    """

    @nn.compact
    def __call__(self, x):
        cin = x.shape[-1]
        kernel = self.param("kernel", self.kernel_init, (1, 1, cin, self.features), self.param_dtype)
        bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype) if self.use_bias else None
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        # One contracting dimension: on a (pixels, Cin) view the kernel gradient is pixels^T . dy with no copy;
        # contracting (N, H, W) instead makes XLA write every dy transposed first.
        y = jnp.dot(x.reshape(-1, cin), kernel.reshape(cin, self.features), precision=self.precision)
        y = y.reshape(*x.shape[:-1], self.features)
        return y + bias if bias is not None else y


def conv2d(features: int, kernel: int, stride: int, *, use_bias: bool, dtype: Dtype, name: str, **kwargs) -> nn.Conv:
    """``nn.Conv`` with symmetric k//2 padding, or :class:`PointwiseConv` for 1x1 stride-1 (same variables)."""
    p = kernel // 2
    cls = PointwiseConv if kernel == 1 and stride == 1 else nn.Conv
    return cls(features, (kernel, kernel), strides=(stride, stride), padding=((p, p), (p, p)), use_bias=use_bias,
               kernel_init=torch_conv_init, dtype=dtype, param_dtype=jnp.float32, name=name, **kwargs)


class Conv(nn.Module):
    """Conv2d (no bias, symmetric padding k//2) -> BatchNorm -> SiLU (``act=False``: identity)."""

    features: int
    kernel: int = 1
    stride: int = 1
    act: bool = True
    bn: BNSettings = BNSettings()
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = conv2d(self.features, self.kernel, self.stride, use_bias=False, dtype=self.dtype, name="conv")(x)
        x = BatchNorm(epsilon=self.bn.epsilon, momentum=self.bn.momentum, init_var=self.bn.init_var, dtype=self.dtype,
                      name="bn")(x, train)
        return nn.silu(x) if self.act else x


class Bottleneck(nn.Module):
    """Two 3x3 Convs with an optional residual (only when input and output widths match)."""

    features: int
    shortcut: bool = True
    expand: float = 0.5
    bn: BNSettings = BNSettings()
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        hidden = int(self.features * self.expand)
        kw = dict(bn=self.bn, dtype=self.dtype)
        y = Conv(hidden, 3, 1, name="cv1", **kw)(x, train)
        y = Conv(self.features, 3, 1, name="cv2", **kw)(y, train)
        return x + y if self.shortcut and x.shape[-1] == self.features else y


class C2f(nn.Module):
    """CSP block with 2 convolutions: split, a chain of ``n`` Bottlenecks, concat of every stage."""

    features: int
    n: int = 1
    shortcut: bool = False
    expand: float = 0.5
    bn: BNSettings = BNSettings()
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        c = int(self.features * self.expand)
        kw = dict(bn=self.bn, dtype=self.dtype)
        y = Conv(2 * c, 1, 1, name="cv1", **kw)(x, train)
        parts = [y[..., :c], y[..., c:]]
        for i in range(self.n):
            parts.append(Bottleneck(c, self.shortcut, 1.0, name=f"m_{i}", **kw)(parts[-1], train))
        return Conv(self.features, 1, 1, name="cv2", **kw)(jnp.concatenate(parts, axis=-1), train)


def max_pool_same(x, k: int):
    """Stride-1 k x k max pool with k//2 padding of -inf on each side (padding never wins the max).

    Computed as two separable 1-D passes (along H, then W) of k-1 elementwise selections: the same values as
    ``lax.reduce_window``, whose forward and gradient XLA:CPU runs several times slower (benchmarks/RESULTS.md).
    The gradient goes to one element per window, the first maximum along each pass, as PyTorch's max pool
    sends it to one element (``jnp.maximum`` would split it between ties)."""
    p = k // 2

    def along(v, axis):
        n = v.shape[axis]
        pad = [(0, 0)] * v.ndim
        pad[axis] = (p, p)
        vp = jnp.pad(v, pad, constant_values=-jnp.inf)
        out = jax.lax.slice_in_dim(vp, 0, n, axis=axis)
        for i in range(1, k):
            cand = jax.lax.slice_in_dim(vp, i, i + n, axis=axis)
            out = jnp.where(out >= cand, out, cand)
        return out

    return along(along(x, 1), 2)


class SPPF(nn.Module):
    """Spatial pyramid pooling (fast): three chained 5x5 max pools, concatenated."""

    features: int
    k: int = 5
    bn: BNSettings = BNSettings()
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        kw = dict(bn=self.bn, dtype=self.dtype)
        a = Conv(x.shape[-1] // 2, 1, 1, name="cv1", **kw)(x, train)
        b = max_pool_same(a, self.k)
        c = max_pool_same(b, self.k)
        d = max_pool_same(c, self.k)
        return Conv(self.features, 1, 1, name="cv2", **kw)(jnp.concatenate([a, b, c, d], -1), train)


class Upsample(nn.Module):
    """Nearest-neighbour upsampling by an integer factor (each pixel repeated factor x factor)."""

    factor: int = 2

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = jnp.repeat(x, self.factor, axis=1)
        return jnp.repeat(x, self.factor, axis=2)


class Concat(nn.Module):
    """Channel concatenation in ``from`` order."""

    @nn.compact
    def __call__(self, xs: Sequence[jax.Array], train: bool = False):
        return jnp.concatenate(xs, axis=-1)


class Detect(nn.Module):
    """Decoupled YOLOv8 head: box branch ``cv2`` (4 x reg_max DFL logits) and class branch ``cv3``.

    Train mode returns the raw levels [(B, H, W, 4*reg_max + nc)] for P3, P4, P5. Eval mode returns
    (B, A, 4 + nc): xywh boxes in input pixels, then sigmoid class probabilities; with ``decode=False``
    it returns the raw levels computed with the running BN statistics (for validation losses).
    """

    num_classes: int
    strides: tuple[int, ...] = (8, 16, 32)
    reg_max: int = 16
    box_bias: float = 1.0  # 1.0 in the v8 era, 2.0 in current Ultralytics
    bn: BNSettings = BNSettings()
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, feats: Sequence[jax.Array], train: bool = False, decode: bool = True):
        nc, r = self.num_classes, self.reg_max
        c2 = max(16, feats[0].shape[-1] // 4, 4 * r)
        c3 = max(feats[0].shape[-1], min(nc, 100))
        kw = dict(bn=self.bn, dtype=self.dtype)
        levels = []
        for i, (x, s) in enumerate(zip(feats, self.strides)):
            outs = []
            for branch, hidden, out_ch in (("cv2", c2, 4 * r), ("cv3", c3, nc)):
                bias = head_bias(branch, s, nc, self.box_bias)
                y = Conv(hidden, 3, 1, name=f"{branch}_{i}_0", **kw)(x, train)
                y = Conv(hidden, 3, 1, name=f"{branch}_{i}_1", **kw)(y, train)
                # The output convs run in float32 even under bfloat16 compute: the DFL softmax turns
                # logit rounding into box error (~0.1 bin = 3 px at stride 32), and they are cheap.
                y = conv2d(out_ch, 1, 1, use_bias=True, bias_init=nn.initializers.constant(bias),
                           dtype=jnp.float32, name=f"{branch}_{i}_2")(y.astype(jnp.float32))
                outs.append(y)
            levels.append(jnp.concatenate(outs, axis=-1))
        if train or not decode:
            return levels
        return decode_levels(levels, self.strides, self.reg_max)


def head_bias(branch: str, stride: int, num_classes: int, box_bias: float) -> float:
    """Detect bias init: box logits ``box_bias``; class logits ln(5 / nc / (640 / stride)^2)."""
    if branch == "cv2":
        return box_bias
    return math.log(5.0 / num_classes / (640.0 / stride) ** 2)


def decode_levels(levels: Sequence[jax.Array], strides: Sequence[int], reg_max: int = 16):
    """Raw head levels -> (B, A, 4 + nc): xywh pixels and class probabilities, float32."""
    b = levels[0].shape[0]
    flat = jnp.concatenate([lv.reshape(b, -1, lv.shape[-1]) for lv in levels], axis=1).astype(jnp.float32)
    anchors, stride_col = make_anchors([lv.shape[1:3] for lv in levels], strides)
    dist = dfl_decode(flat[..., : 4 * reg_max], reg_max)
    lt, rb = dist[..., :2], dist[..., 2:]
    x1y1, x2y2 = anchors - lt, anchors + rb
    xywh = jnp.concatenate([(x1y1 + x2y2) / 2, x2y2 - x1y1], -1) * stride_col
    return jnp.concatenate([xywh, jax.nn.sigmoid(flat[..., 4 * reg_max:])], -1)
