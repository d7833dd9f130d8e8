"""Export a detector for inference outside JAX: ONNX (built node by node with ``onnx.helper``) or a TF SavedModel.

    export(model, variables, names=..., source="runs/detect/train/weights/best.npz", format="onnx", imgsz=640)
      -> best.onnx beside the weights

The ONNX graph follows Ultralytics' exported layout, so tools written for Ultralytics' files run it unchanged:

    input  ``images``  (B, 3, H, W) float32 RGB in [0, 1] (NCHW)
    output ``output0`` (B, 4 + nc, A): rows 0-3 box centre x, y, width, height in input pixels, then the nc
           sigmoid class scores; anchors ordered P3, P4, P5, row-major (``model.apply`` transposed to NCHW)

Conv + BatchNorm pairs are folded into one Conv; SiLU is Sigmoid * x (every runtime has both); the DFL decode,
the anchors and the strides are in the graph: constants for a fixed input size, computed from the feature-map
shapes when ``dynamic=True`` makes batch, height and width free (as Ultralytics' dynamic export does; H and W
must be multiples of the largest stride). ``half=True`` stores the weights and runs the convolutions in float16
with float32 input and output, and keeps the Detect output convolutions and the box decode in float32 (as
yolojax's bfloat16 compute does). The class names, strides, image size, task, batch and yolojax version are in the
model's ``metadata_props`` under Ultralytics' keys.

A head plugs in through ``HEAD_BUILDERS`` (module name -> graph builder), so the walk over the layer table is
shared by every task.
"""
from __future__ import annotations

import datetime
import os
import pathlib
import shutil
import tempfile
from typing import Any, Callable

import numpy as np

from yolojax.config import ConfigError, closest_key

FORMATS = {"onnx": ".onnx", "saved_model": "_saved_model"}
# Ultralytics formats that yolojax does not build: named in the error instead of a "did you mean".
OTHER_FORMATS = ("torchscript", "openvino", "engine", "coreml", "pb", "tflite", "edgetpu", "tfjs", "paddle",
                 "mnn", "ncnn", "imx", "rknn", "executorch", "axelera")
EXPORT_ARGS = ("format", "imgsz", "batch", "dynamic", "half", "opset")
NO_EFFECT_ARGS = ("simplify", "device", "verbose")  # the graph is built simplified; export runs on the host
MIN_OPSET, DEFAULT_OPSET = 13, 17  # 13: Split/ReduceSum take their sizes and axes as inputs


class ExportError(ConfigError):
    """A bad export argument or a missing optional package."""


def check_format(fmt: Any) -> str:
    """The lower-cased format name, or ExportError naming the closest valid one."""
    name = str(fmt).lower()
    if name in FORMATS:
        return name
    valid = ", ".join(FORMATS)
    if name in OTHER_FORMATS:
        raise ExportError(f"format={fmt!r} is an Ultralytics export format that yolojax does not build; yolojax "
                          f"exports {valid} (convert the ONNX file with that format's own tools).")
    near = closest_key(name, FORMATS)
    hint = f" Did you mean format={near!r}?" if near else ""
    raise ExportError(f"format={fmt!r} is not an export format.{hint} Valid: {valid}.")


def check_args(args: dict[str, Any]) -> dict[str, Any]:
    """Export keyword arguments: unknown keys raise ExportError with the closest valid key; no-effect keys warn."""
    out = {}
    for key, value in args.items():
        if key in EXPORT_ARGS:
            out[key] = value
        elif key in NO_EFFECT_ARGS:
            print(f"WARNING: '{key}={value}' has no effect on a yolojax export; ignored.")
        else:
            near = closest_key(key, EXPORT_ARGS + NO_EFFECT_ARGS)
            hint = f" Did you mean '{near}'?" if near else ""
            raise ExportError(f"'{key}={value}' is not a yolojax export argument.{hint} Valid: "
                              f"{', '.join(EXPORT_ARGS)}.")
    return out


def check_imgsz(imgsz: Any, stride: int) -> tuple[int, int]:
    """``640``, ``[640]`` or ``(h, w)`` -> (h, w), each rounded up to a multiple of ``stride`` with a warning (as
    Ultralytics)."""
    sizes = list(imgsz) if isinstance(imgsz, (list, tuple)) else [imgsz]
    sizes = sizes * 2 if len(sizes) == 1 else sizes
    if len(sizes) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in sizes):
        raise ExportError(f"imgsz={imgsz!r}: give a positive int (square) or [height, width].")
    fixed = tuple(-(-s // stride) * stride for s in sizes)
    if fixed != tuple(sizes):
        print(f"WARNING: imgsz={imgsz} is not a multiple of the model's stride {stride}; exporting at {list(fixed)}.")
    return fixed


def _check_int(key: str, value: Any, lo: int, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo or (hi is not None and value > hi):
        raise ExportError(f"{key}={value!r}: give an integer in [{lo}, {hi if hi is not None else 'inf'}].")
    return value


def _check_bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ExportError(f"{key}={value!r}: give True or False.")
    return value


def _import_onnx():
    try:
        import onnx
    except ImportError:
        raise ExportError("format=onnx needs the 'onnx' package, which is not installed: pip install onnx "
                          "(or pip install 'yolojax[export]'; onnxruntime runs the file).") from None
    return onnx


# -- the ONNX graph ---------------------------------------------------------------------------------------------
class OnnxGraph:
    """Nodes and constant initializers of one graph; ``op`` appends a node and returns its output name(s).
    ``bn_epsilon`` is the model's BatchNorm eps, folded into its convolutions."""

    def __init__(self, onnx_module, conv_dtype, bn_epsilon: float):
        self.onnx, self.conv_dtype, self.bn_epsilon = onnx_module, conv_dtype, bn_epsilon
        self.nodes: list = []
        self.initializers: list = []
        self._count = 0

    def _name(self, stem: str) -> str:
        self._count += 1
        return f"{stem}_{self._count}"

    def const(self, value, stem: str = "const") -> str:
        name = self._name(stem)
        self.initializers.append(self.onnx.numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], n_out: int = 1, **attrs):
        outs = [self._name(op_type.lower()) for _ in range(n_out)]
        self.nodes.append(self.onnx.helper.make_node(op_type, inputs, outs, name=outs[0], **attrs))
        return outs[0] if n_out == 1 else outs


def fold_batchnorm(kernel_hwio, scale, bias, mean, var, eps: float):
    """Conv kernel (kh, kw, Cin, Cout) followed by eval-mode BN -> (OIHW weight, bias) of one Conv, float64."""
    mul = np.asarray(scale, np.float64) / np.sqrt(np.asarray(var, np.float64) + eps)
    weight = np.asarray(kernel_hwio, np.float64).transpose(3, 2, 0, 1) * mul[:, None, None, None]
    return weight, np.asarray(bias, np.float64) - np.asarray(mean, np.float64) * mul


def _sub(v: dict, key: str) -> dict:
    return {"params": v["params"][key], "batch_stats": v.get("batch_stats", {}).get(key, {})}


def _conv(g: OnnxGraph, x: str, v: dict, stride: int = 1, act: bool = True) -> str:
    """yolojax's ``Conv`` (conv, BN, SiLU) as one Conv with the BN folded in, then Sigmoid * x."""
    p, s = v["params"], v["batch_stats"]
    k = int(np.shape(p["conv"]["kernel"])[0])
    w, b = fold_batchnorm(p["conv"]["kernel"], p["bn"]["scale"], p["bn"]["bias"], s["bn"]["mean"], s["bn"]["var"],
                          g.bn_epsilon)
    y = g.op("Conv", [x, g.const(w.astype(g.conv_dtype), "w"), g.const(b.astype(g.conv_dtype), "b")],
             kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4)
    return g.op("Mul", [y, g.op("Sigmoid", [y])]) if act else y


def _c2f(g: OnnxGraph, x: str, v: dict, kw: dict) -> str:
    y = _conv(g, x, _sub(v, "cv1"))
    half = int(np.shape(v["params"]["cv1"]["conv"]["kernel"])[3]) // 2
    parts = list(g.op("Split", [y, g.const(np.array([half, half], np.int64))], n_out=2, axis=1))
    for i in range(kw["n"]):
        m = _sub(v, f"m_{i}")
        z = _conv(g, _conv(g, parts[-1], _sub(m, "cv1")), _sub(m, "cv2"))
        parts.append(g.op("Add", [parts[-1], z]) if kw["shortcut"] else z)
    return _conv(g, g.op("Concat", parts, axis=1), _sub(v, "cv2"))


def _sppf(g: OnnxGraph, x: str, v: dict, kw: dict) -> str:
    k = kw["k"]
    ys = [_conv(g, x, _sub(v, "cv1"))]
    for _ in range(3):
        ys.append(g.op("MaxPool", [ys[-1]], kernel_shape=[k, k], strides=[1, 1], pads=[k // 2] * 4))
    return _conv(g, g.op("Concat", ys, axis=1), _sub(v, "cv2"))


def _upsample(g: OnnxGraph, x: str, kw: dict) -> str:
    f = float(kw["factor"])
    return g.op("Resize", [x, "", g.const(np.array([1, 1, f, f], np.float32))], mode="nearest",
                coordinate_transformation_mode="asymmetric", nearest_mode="floor")


def _grid_anchors(g: OnnxGraph, level: str, stride: int):
    """Anchor centres (1, 2, H*W) and strides (1, 1, H*W) computed in the graph from the level's (B, C, H, W) shape,
    as :func:`yolojax.ops.boxes.make_anchors` does, for exports whose H and W are free."""
    f32 = g.onnx.TensorProto.FLOAT
    shape = g.op("Shape", [level])
    h, w = (g.op("Gather", [shape, g.const(np.array(i, np.int64))]) for i in (2, 3))
    zero, one, half = (g.const(np.array(v, np.float32)) for v in (0.0, 1.0, 0.5))
    xs = g.op("Add", [g.op("Range", [zero, g.op("Cast", [w], to=f32), one]), half])  # (W,)
    ys = g.op("Add", [g.op("Range", [zero, g.op("Cast", [h], to=f32), one]), half])  # (H,)
    hw = g.op("Concat", [g.op("Unsqueeze", [d, g.const(np.array([0], np.int64))]) for d in (h, w)], axis=0)
    gx = g.op("Expand", [g.op("Unsqueeze", [xs, g.const(np.array([0], np.int64))]), hw])  # (H, W)
    gy = g.op("Expand", [g.op("Unsqueeze", [ys, g.const(np.array([1], np.int64))]), hw])
    flat = [g.op("Reshape", [t, g.const(np.array([1, 1, -1], np.int64))]) for t in (gx, gy)]
    strides = g.op("Expand", [g.const(np.full((1, 1, 1), stride, np.float32)), g.op("Shape", [flat[0]])])
    return g.op("Concat", flat, axis=1), strides


def detect_head(g: OnnxGraph, feats: list[str], v: dict, kw: dict, hw: tuple[int, int] | None) -> str:
    """Detect levels -> (B, 4 + nc, A) float32: DFL expectation, then boxes from the anchors and strides
    (constants for a fixed ``hw``; computed from the feature shapes when ``hw`` is None)."""
    from yolojax.ops.boxes import make_anchors

    nc, strides, reg_max = kw["num_classes"], kw["strides"], 16
    levels, grids = [], []
    for i, x in enumerate(feats):
        outs = []
        for branch in ("cv2", "cv3"):
            y = _conv(g, _conv(g, x, _sub(v, f"{branch}_{i}_0")), _sub(v, f"{branch}_{i}_1"))
            if g.conv_dtype != np.float32:  # the output convs and the decode stay float32 (see module docstring)
                y = g.op("Cast", [y], to=g.onnx.TensorProto.FLOAT)
            p = v["params"][f"{branch}_{i}_2"]
            w = np.asarray(p["kernel"], np.float32).transpose(3, 2, 0, 1)
            outs.append(g.op("Conv", [y, g.const(w, "w"), g.const(np.asarray(p["bias"], np.float32), "b")],
                             kernel_shape=[1, 1]))
        level = g.op("Concat", outs, axis=1)
        if hw is None:
            grids.append(_grid_anchors(g, level, strides[i]))
        levels.append(g.op("Reshape", [level, g.const(np.array([0, 4 * reg_max + nc, -1], np.int64))]))
    flat = g.op("Concat", levels, axis=2)
    box, cls = g.op("Split", [flat, g.const(np.array([4 * reg_max, nc], np.int64))], n_out=2, axis=1)
    bins = g.op("Softmax", [g.op("Reshape", [box, g.const(np.array([0, 4, reg_max, -1], np.int64))])], axis=2)
    weighted = g.op("Mul", [bins, g.const(np.arange(reg_max, dtype=np.float32).reshape(1, 1, reg_max, 1))])
    dist = g.op("ReduceSum", [weighted, g.const(np.array([2], np.int64))], keepdims=0)  # (B, 4, A) l, t, r, b
    lt, rb = g.op("Split", [dist, g.const(np.array([2, 2], np.int64))], n_out=2, axis=1)
    if hw is None:
        anc = g.op("Concat", [a for a, _ in grids], axis=2)
        stride_row = g.op("Concat", [s for _, s in grids], axis=2)
    else:
        anchors, stride_col = make_anchors([(hw[0] // s, hw[1] // s) for s in strides], strides)
        anc, stride_row = g.const(anchors.T[None], "anchors"), g.const(stride_col.T[None], "strides")  # (1, k, A)
    x1y1, x2y2 = g.op("Sub", [anc, lt]), g.op("Add", [anc, rb])
    centre = g.op("Div", [g.op("Add", [x1y1, x2y2]), g.const(np.array(2.0, np.float32))])
    xywh = g.op("Mul", [g.op("Concat", [centre, g.op("Sub", [x2y2, x1y1])], axis=1), stride_row])
    return g.op("Concat", [xywh, g.op("Sigmoid", [cls])], axis=1)


def classify_head(g: OnnxGraph, feats: list[str], v: dict, kw: dict, hw: tuple[int, int] | None) -> str:
    """Classify: Conv (BN folded, SiLU) -> GlobalAveragePool -> Gemm -> Softmax: (B, nc) float32 probabilities
    (the pooled features and the Linear in float32, as yolojax computes them)."""
    y = g.op("GlobalAveragePool", [_conv(g, feats[0], _sub(v, "conv"))])
    if g.conv_dtype != np.float32:
        y = g.op("Cast", [y], to=g.onnx.TensorProto.FLOAT)
    p = v["params"]["linear"]
    logits = g.op("Gemm", [g.op("Flatten", [y], axis=1), g.const(np.asarray(p["kernel"], np.float32), "w"),
                           g.const(np.asarray(p["bias"], np.float32), "b")])
    return g.op("Softmax", [logits], axis=1)


HEAD_BUILDERS: dict[str, Callable] = {"Detect": detect_head, "Classify": classify_head}


def build_onnx(model, variables, *, imgsz: tuple[int, int], batch: int = 1, dynamic: bool = False,
               half: bool = False, opset: int = DEFAULT_OPSET, metadata: dict[str, Any] | None = None):
    """The ``onnx.ModelProto`` of ``model`` (a :class:`yolojax.nn.YOLOv8`) with ``variables`` at ``imgsz`` (h, w).

    Input ``images`` (batch, 3, h, w) float32 (``dynamic``: ("batch", 3, "height", "width")); output ``output0``
    as the head builds it (Detect: (B, 4 + nc, A) float32; Classify: (B, nc) float32 probabilities). ``metadata`` values are written as strings into
    ``metadata_props``."""
    onnx = _import_onnx()
    helper = onnx.helper
    variables = {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}
    g = OnnxGraph(onnx, np.float16 if half else np.float32, model.bn_settings().epsilon)
    x = g.op("Cast", ["images"], to=onnx.TensorProto.FLOAT16) if half else "images"
    outputs: list[str] = []
    for i, (src, module, kwargs, _, stride) in enumerate(model.plan()):
        inp = [x if j < 0 else outputs[j] for j in src]
        v = _sub(variables, f"model_{i}") if f"model_{i}" in variables["params"] else {}
        if module == "Conv":
            y = _conv(g, inp[0], v, kwargs["stride"])
        elif module == "C2f":
            y = _c2f(g, inp[0], v, kwargs)
        elif module == "SPPF":
            y = _sppf(g, inp[0], v, kwargs)
        elif module == "Upsample":
            y = _upsample(g, inp[0], kwargs)
        elif module == "Concat":
            y = g.op("Concat", inp, axis=1)
        elif module in HEAD_BUILDERS:
            y = HEAD_BUILDERS[module](g, inp, v, kwargs, None if dynamic else imgsz)
        else:  # the layer table admits only the modules above (YOLOv8.plan checks)
            raise ExportError(f"layer {i}: module {module!r} has no ONNX builder.")
        outputs.append(y)
    g.nodes[-1].output[0] = "output0"  # the head's last node; Ultralytics' output name
    n_out = 4 + model.num_classes
    if model.plan()[-1][1] == "Classify":
        in_shape = ["batch", 3, "height", "width"] if dynamic else [batch, 3, *imgsz]
        out_shape = [in_shape[0], model.num_classes]
    elif dynamic:
        in_shape, out_shape = ["batch", 3, "height", "width"], ["batch", n_out, "anchors"]
    else:
        in_shape = [batch, 3, *imgsz]
        out_shape = [batch, n_out, sum((imgsz[0] // s) * (imgsz[1] // s) for s in model.strides)]
    graph = helper.make_graph(
        g.nodes, "yolojax", [helper.make_tensor_value_info("images", onnx.TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info("output0", onnx.TensorProto.FLOAT, out_shape)],
        initializer=g.initializers)
    opsets = [helper.make_opsetid("", opset)]
    proto = helper.make_model(graph, opset_imports=opsets, producer_name="yolojax",
                              ir_version=helper.find_min_ir_version_for(opsets))
    helper.set_model_props(proto, {key: str(value) for key, value in (metadata or {}).items()})
    onnx.checker.check_model(proto)
    return proto


def export_metadata(model, names: dict[int, str], *, imgsz, batch: int, args: dict, data: str | None = None):
    """Ultralytics' export metadata keys (its runtimes parse the values with ``ast.literal_eval``)."""
    from yolojax import __version__

    from yolojax.nn.yolo import YOLOV8_SCALES

    scale = model.scale if model.scale in YOLOV8_SCALES else ""
    return {
        "description": f"yolojax YOLOv8{scale} model" + (f" trained on {data}" if data else ""),
        "author": "yolojax",
        "date": datetime.datetime.now().astimezone().isoformat(),
        "version": __version__,
        "stride": int(max(model.strides)),
        "task": "detect",
        "batch": batch,
        "imgsz": list(imgsz),
        "names": dict(names),
        "args": args,
        "channels": 3,
        "end2end": False,
    }


# -- entry --------------------------------------------------------------------------------------------------------
def export(model, variables, *, names: dict[int, str], source: str | os.PathLike | None, format: str = "onnx",
           imgsz: Any = 640, batch: int = 1, dynamic: bool = False, half: bool = False, opset: int | None = None,
           data: str | None = None) -> pathlib.Path:
    """Write ``model`` with ``variables`` as ``format`` beside ``source`` (``best.npz`` -> ``best.onnx``; no source:
    ``yolov8<scale>.onnx`` in the working directory) and print where it went and how to run it. Returns the path."""
    fmt = check_format(format)
    hw = check_imgsz(imgsz, int(max(model.strides)))
    batch = _check_int("batch", batch, 1)
    dynamic, half = _check_bool("dynamic", dynamic), _check_bool("half", half)
    stem = pathlib.Path(source).with_suffix("") if source else pathlib.Path(f"yolov8{model.scale}")
    dest = stem.parent / (stem.name + FORMATS[fmt])
    if fmt == "onnx":
        onnx = _import_onnx()
        max_opset = onnx.defs.onnx_opset_version()
        opset = DEFAULT_OPSET if opset is None else _check_int("opset", opset, MIN_OPSET, max_opset)
        meta = export_metadata(model, names, imgsz=hw, batch=batch, data=data,
                               args={"batch": batch, "dynamic": dynamic, "half": half, "opset": opset})
        proto = build_onnx(model, variables, imgsz=hw, batch=batch, dynamic=dynamic, half=half, opset=opset,
                           metadata=meta)
        _atomic_write(dest, proto.SerializeToString())
        shape = ["batch", 3, "height", "width"] if dynamic else [batch, 3, *hw]
        precision = ", float16" if half else ""
        print(f"ONNX export: wrote {dest} ({dest.stat().st_size / 1e6:.1f} MB, opset {opset}{precision}), input "
              f"'images' {shape} float32 RGB in [0, 1], output 'output0' [{shape[0]}, {4 + model.num_classes}, A] "
              f"xywh pixels + class scores. Run it: "
              f"onnxruntime.InferenceSession('{dest}').run(None, {{'images': x}}) (README: Export).")
        return dest
    if half or opset is not None:
        raise ExportError("half and opset apply to format=onnx only; format=saved_model writes float32.")
    return _export_saved_model(model, variables, dest, hw, batch, dynamic)


def _atomic_write(dest: pathlib.Path, payload: bytes) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=dest.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _export_saved_model(model, variables, dest: pathlib.Path, hw, batch: int, dynamic: bool) -> pathlib.Path:
    """TF SavedModel through jax2tf: signature ``serving_default(images (B, 3, H, W) float32) -> (B, 4 + nc, A)``,
    the same layout as the ONNX file, lowered for CPU, CUDA and TPU; ``dynamic`` frees the batch size only."""
    try:
        import tensorflow as tf
        from jax.experimental import jax2tf
    except ImportError:
        raise ExportError("format=saved_model needs TensorFlow, which is not installed: pip install tensorflow "
                          "(or export format=onnx, which needs only the onnx package).") from None
    import jax.numpy as jnp

    def serve(images):
        out = model.apply(variables, jnp.transpose(images, (0, 2, 3, 1)), train=False)
        return jnp.transpose(out, (0, 2, 1))

    poly = ["(b, _, _, _)"] if dynamic else None
    module = tf.Module()
    module.serve = tf.function(jax2tf.convert(serve, polymorphic_shapes=poly, with_gradient=False,
                                              native_serialization_platforms=("cpu", "cuda", "tpu")), autograph=False,
                               input_signature=[tf.TensorSpec([None if dynamic else batch, 3, *hw], tf.float32,
                                                              name="images")])
    tmp = pathlib.Path(tempfile.mkdtemp(dir=dest.parent, prefix=dest.name + ".tmp"))
    try:
        tf.saved_model.save(module, str(tmp), signatures=module.serve)
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    print(f"SavedModel export: wrote {dest}, signature serving_default(images [{'batch' if dynamic else batch}, 3, "
          f"{hw[0]}, {hw[1]}] float32 RGB in [0, 1]) -> [B, {4 + model.num_classes}, A]. Run it: "
          f"tf.saved_model.load('{dest}').signatures['serving_default'](images=x).")
    return dest
