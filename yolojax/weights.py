"""Ultralytics weights in and out: ``.pt`` checkpoints (read safely, no torch) and state-dict ``.npz``.

Flax variable paths map one-to-one to Ultralytics state-dict keys: every path component has ``_`` where
the key has ``.`` (``model_22/cv2_0_2/kernel`` <-> ``model.22.cv2.0.2.weight``), and leaves are renamed

    params     .../conv/kernel (HWIO)  <-> ...conv.weight (OIHW)      (also the bias-carrying head convs)
    params     .../linear/kernel (in, out), linear/bias <-> ...linear.weight (out, in), linear.bias  (Classify)
    params     .../bn/scale, bn/bias   <-> ...bn.weight, bn.bias
    batch_stats .../bn/mean, bn/var    <-> ...bn.running_mean, bn.running_var

``num_batches_tracked`` (unused with a fixed BN momentum) is written as 0 and ignored on import; the frozen
DFL conv ``model.<last>.dfl.conv.weight`` of a detector is the constant ``arange(16)`` in yolojax and is written
out so the files load in Ultralytics. A state dict with a Classify head (``model.<last>.linear.weight``) loads as
a :class:`yolojax.nn.YOLOv8Cls` classifier, any other as a :class:`yolojax.nn.YOLOv8` detector.

    load(path) -> (model, variables)
    save_state_dict(variables, path)
    transfer(src_variables, dst_variables) -> (variables, report)
    attempt_download(path) -> path

Ultralytics' released weights (``yolov8{n,s,m,l,x}.pt`` and ``-cls.pt``) are downloaded on first use when the named
file does not exist, as Ultralytics does: from the ``ultralytics/assets`` release ``WEIGHTS_RELEASE`` (the tag
Ultralytics 8.2 downloads from; ``$YOLOJAX_ASSETS_URL`` replaces the release-assets base) to the path given, so a
bare ``yolov8n.pt`` lands in the working directory, where the next run finds it. The download goes through a
temporary file and is renamed only when complete; one line says whose weights they are and their licence.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import pathlib
import re
import tempfile
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from yolojax.data.download import ASSETS_URL, DownloadError, assets_url, fetch_file
from yolojax.nn import YOLOv8, YOLOv8Cls, model_class
from yolojax.torch_pickle import CheckpointFormatError, UnsafeCheckpointError, load_pt, module_state_dict

log = logging.getLogger(__name__)

__all__ = ["load", "load_checkpoint", "save_state_dict", "transfer", "to_state_dict", "from_state_dict",
           "LoadedWeights", "UnsafeCheckpointError", "CheckpointFormatError", "attempt_download"]

WEIGHTS_RELEASE = "v8.2.0"
OFFICIAL_WEIGHTS = re.compile(r"yolov8[nslmx](-cls)?\.pt")
RELEASES_PAGE = "https://github.com/ultralytics/assets/releases"

_LEAF_OUT = {("params", "kernel"): "weight", ("params", "scale"): "weight", ("params", "bias"): "bias",
             ("batch_stats", "mean"): "running_mean", ("batch_stats", "var"): "running_var"}
_LEAF_IN = {"weight": None, "bias": ("params", "bias"), "running_mean": ("batch_stats", "mean"),
            "running_var": ("batch_stats", "var")}


def _key_of(collection: str, path: tuple[str, ...]) -> str:
    *mods, leaf = path
    return ".".join([m.replace("_", ".") for m in mods] + [_LEAF_OUT[(collection, leaf)]])


def to_state_dict(variables, *, include_buffers: bool = True) -> dict[str, np.ndarray]:
    """Variables (or a params-shaped pytree such as gradients) -> {ultralytics key: torch-layout array}.

    Accepts either ``{"params": ..., "batch_stats": ...}`` or a bare params tree."""
    if "params" not in variables:
        variables = {"params": variables}
    out: dict[str, np.ndarray] = {}
    for collection in ("params", "batch_stats"):
        tree = variables.get(collection)
        if tree is None:
            continue
        for kp, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
            path = tuple(k.key for k in kp)
            arr = np.asarray(jax.device_get(leaf))
            if path[-1] == "kernel":
                arr = arr.transpose(3, 2, 0, 1) if arr.ndim == 4 else arr.T  # HWIO -> OIHW; (in, out) -> (out, in)
            out[_key_of(collection, path)] = arr
    if include_buffers and "batch_stats" in variables:
        for key in [k for k in out if k.endswith(".running_var")]:
            out[key[: -len("running_var")] + "num_batches_tracked"] = np.array(0, np.int64)
    return out


def _dfl_key(state_dict: dict[str, np.ndarray]) -> str | None:
    """The DFL conv key of a detector's state dict (Detect head ``model.<last>.cv2.*``); None for a classifier."""
    head = max(int(k.split(".")[1]) for k in state_dict if k.startswith("model."))
    has_detect = any(k.startswith(f"model.{head}.cv2.") for k in state_dict)
    return f"model.{head}.dfl.conv.weight" if has_detect else None


def from_state_dict(state_dict: dict[str, np.ndarray], template) -> Any:
    """Fill a variables template (e.g. from ``jax.eval_shape(model.init, ...)``) from a state dict.

    Every template leaf must be present with the matching shape; errors name the missing key."""
    expected = {}
    for collection in ("params", "batch_stats"):
        for kp, leaf in jax.tree_util.tree_flatten_with_path(template[collection])[0]:
            path = tuple(k.key for k in kp)
            expected[(collection, path)] = (_key_of(collection, path), leaf.shape)
    missing = [key for key, _ in expected.values() if key not in state_dict]
    if missing:
        raise KeyError(f"state dict lacks {len(missing)} tensors the model needs, e.g. {missing[:3]}; it is for a "
                       f"different architecture (checkpoint from another model?).")
    filled = {"params": {}, "batch_stats": {}}
    for (collection, path), (key, shape) in expected.items():
        arr = np.asarray(state_dict[key], dtype=np.float32)
        if path[-1] == "kernel":
            arr = arr.transpose(2, 3, 1, 0) if arr.ndim == 4 else arr.T  # OIHW -> HWIO; (out, in) -> (in, out)
        if arr.shape != tuple(shape):
            raise ValueError(f"tensor {key}: shape {arr.shape} does not fit the model's {tuple(shape)} "
                             f"(checkpoint from another model or class count?).")
        node = filled[collection]
        for p in path[:-1]:
            node = node.setdefault(p, {})
        node[path[-1]] = arr
    return filled


@dataclasses.dataclass
class LoadedWeights:
    model: YOLOv8
    variables: dict
    names: dict[int, str]
    source: str
    meta: dict


def _model_for_state_dict(sd: dict[str, np.ndarray], yaml_cfg: dict | None) -> YOLOv8:
    """The detector (Detect head: ``model.<n>.cv3.0.2.bias``) or classifier (Classify head:
    ``model.<n>.linear.bias``) the state dict is for; the class count from the head's output tensor."""
    bias_keys = sorted(k for k in sd if k.endswith(".cv3.0.2.bias"))
    linear_keys = sorted(k for k in sd if re.fullmatch(r"model\.\d+\.linear\.bias", k))
    if bias_keys:
        family, nc = YOLOv8, int(sd[bias_keys[0]].shape[0])
    elif linear_keys:
        family, nc = YOLOv8Cls, int(sd[linear_keys[0]].shape[0])
    else:
        raise CheckpointFormatError(
            "the state dict has neither a Detect head (model.<n>.cv3.0.2.bias) nor a Classify head "
            "(model.<n>.linear.bias): not a YOLOv8 detection or classification model. Use yolov8n.pt ... "
            "yolov8x.pt or yolov8n-cls.pt ... yolov8x-cls.pt.")
    if yaml_cfg:
        if model_class(yaml_cfg) is not family:
            raise CheckpointFormatError(f"the checkpoint's tensors are a {family.HEAD} model but its model YAML ends "
                                        f"in another head; the file is inconsistent.")
        return family.from_yaml(yaml_cfg, num_classes=nc)
    first = sd.get("model.0.conv.weight")
    widths = {16: "n", 32: "s", 48: "m", 64: "l", 80: "x"}
    if first is None or first.shape[0] not in widths:
        raise ValueError("cannot infer the YOLOv8 scale from model.0.conv.weight; give the model YAML.")
    scale = widths[first.shape[0]]
    return family(scale=scale, num_classes=nc)


def _variables_template(model: YOLOv8):
    return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3), jnp.float32)))


def release_url(name: str) -> str:
    """Where Ultralytics publishes the weights file ``name`` (before any ``$YOLOJAX_ASSETS_URL`` mirror)."""
    return f"{ASSETS_URL}/{WEIGHTS_RELEASE}/{name}"


def missing_weights_message(path: str | os.PathLike, failure: str | None = None) -> str:
    """One paragraph: a weights file is not on disk (``failure``: why downloading it failed); where to get it."""
    p = pathlib.Path(path)
    stem = re.sub(r"\.(pt|npz)$", "", p.name)
    scratch = stem if re.fullmatch(r"yolov8[nslmx]", stem) else "yolov8n"
    if OFFICIAL_WEIGHTS.fullmatch(p.name):
        where = (f"'{p.name}' is an Ultralytics release file and downloading it failed ({failure}). Download it "
                 f"by hand from Ultralytics' GitHub release assets ({release_url(p.name)}, or any release of "
                 f"{RELEASES_PAGE}) and put it in the working directory ({pathlib.Path.cwd()}) or pass its full "
                 "path. Those weights keep their own licence (AGPL-3.0). ")
    else:
        where = ("Check the path (relative paths are taken from the working directory "
                 f"{pathlib.Path.cwd()}); a yolojax run keeps its weights in <run>/weights/best.npz and last.npz. ")
    return (f"Model weights '{path}' not found. {where}To train from scratch instead, build the model from its YAML: "
            f"YOLO('{scratch}.yaml') or model={scratch}.yaml on the command line.")


def attempt_download(path: str | os.PathLike, *, timeout: float = 30.0) -> pathlib.Path:
    """``path`` if it exists; else Ultralytics' released weights of that name downloaded to ``path``.

    Raises FileNotFoundError (one paragraph: where to get the file) when ``path`` is not a release name, or when
    the download fails (offline, refused, truncated); then no file is left at ``path``."""
    p = pathlib.Path(path)
    if p.exists():
        return p
    if not OFFICIAL_WEIGHTS.fullmatch(p.name):
        raise FileNotFoundError(missing_weights_message(path))

    url = assets_url(release_url(p.name))
    print(f"Downloading {url} to '{p}': Ultralytics' YOLOv8 weights, licensed under AGPL-3.0 "
          "(https://ultralytics.com/license); models trained from them keep that licence.")
    try:
        return fetch_file(url, p, timeout=timeout)
    except DownloadError as e:
        raise FileNotFoundError(missing_weights_message(path, str(e))) from e


def load_checkpoint(path) -> LoadedWeights:
    """Load an Ultralytics ``.pt`` (EMA preferred, else model) or a state-dict ``.npz``; Ultralytics' released
    weights are downloaded first if missing (``attempt_download``)."""
    path = attempt_download(path)
    meta: dict = {}
    names: dict[int, str] | None = None
    yaml_cfg = None
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                sd = {k: z[k] for k in z.files}
        except (OSError, ValueError) as e:
            raise CheckpointFormatError(f"{path}: not a readable .npz state dict ({e}).") from e
        if "__names__" in sd:
            names = {i: str(n) for i, n in enumerate(sd.pop("__names__").tolist())}
        if "__model__" in sd:  # the architecture, as a JSON model dict (yolojax exports)
            yaml_cfg = json.loads(str(sd.pop("__model__")))
    else:
        ckpt = load_pt(path)
        if not isinstance(ckpt, dict):
            raise CheckpointFormatError(f"{path}: expected an Ultralytics checkpoint dict, got {type(ckpt).__name__}.")
        obj = ckpt.get("ema") if ckpt.get("ema") is not None else ckpt.get("model")
        if obj is None or not hasattr(obj, "__dict__") or "_modules" not in obj.__dict__:
            raise CheckpointFormatError(f"{path}: the checkpoint holds no model under 'ema' or 'model'.")
        sd = module_state_dict(obj)
        attrs = obj.__dict__
        yaml_cfg = attrs.get("yaml") if isinstance(attrs.get("yaml"), dict) else None
        raw_names = attrs.get("names")
        if isinstance(raw_names, dict):
            names = {int(k): str(v) for k, v in raw_names.items()}
        elif isinstance(raw_names, (list, tuple)):
            names = dict(enumerate(map(str, raw_names)))
        meta = {k: ckpt.get(k) for k in ("epoch", "best_fitness", "date", "version", "train_args", "updates")}
    model = _model_for_state_dict(sd, yaml_cfg)
    variables = from_state_dict(sd, _variables_template(model))
    if names is None or len(names) != model.num_classes:
        names = {i: f"class{i}" for i in range(model.num_classes)}
    return LoadedWeights(model, variables, names, str(path), meta)


def load(path):
    """``(model, variables)`` from an Ultralytics ``.pt`` or a state-dict ``.npz``; never runs file code."""
    w = load_checkpoint(path)
    return w.model, w.variables


def save_state_dict(variables, path, *, names: dict[int, str] | None = None, model: YOLOv8 | None = None,
                    dfl_key: str | None = None) -> None:
    """Write the Ultralytics-named state dict as ``.npz`` (atomically: temp file, then rename).

    With ``model`` the architecture is stored too (``__model__``, a JSON model dict), so that ``load`` rebuilds
    non-standard widths; with ``names`` the class names (``__names__``). Both keys are ignored by tools that
    only want the tensors."""
    sd = to_state_dict(variables)
    dfl_key = dfl_key or _dfl_key(sd)
    if dfl_key is not None:
        sd[dfl_key] = np.arange(16, dtype=np.float32).reshape(1, 16, 1, 1)
    if names:
        sd["__names__"] = np.array([names[i] for i in sorted(names)])
    if model is not None:
        sd["__model__"] = np.array(json.dumps(model.to_yaml_dict()))
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp.npz")
    os.close(fd)
    try:
        np.savez(tmp, **sd)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def transfer(src_variables, dst_variables, *, verbose: bool = True):
    """Copy every tensor whose Ultralytics key and shape match (``intersect_dicts`` semantics).

    Returns ``(variables, (transferred, total))`` and logs ``Transferred X/Y items from pretrained
    weights`` where counts are over Ultralytics state-dict entries (incl. ``num_batches_tracked`` and DFL)."""
    src = to_state_dict(src_variables) if not _is_state_dict(src_variables) else dict(src_variables)
    dst = to_state_dict(dst_variables)
    dfl = _dfl_key(dst)
    if dfl is not None:
        dst[dfl] = np.arange(16, dtype=np.float32).reshape(1, 16, 1, 1)
        src.setdefault(dfl, dst[dfl])
    matched = {k: v for k, v in src.items() if k in dst and np.shape(v) == np.shape(dst[k])}
    merged = {**dst, **matched}
    out = from_state_dict(merged, dst_variables)
    # keep the destination's device/dtype structure; from_state_dict returns numpy float32
    if verbose:
        log.info("Transferred %d/%d items from pretrained weights", len(matched), len(dst))
        print(f"Transferred {len(matched)}/{len(dst)} items from pretrained weights")
    return out, (len(matched), len(dst))


def _is_state_dict(x) -> bool:
    return isinstance(x, dict) and bool(x) and all(isinstance(k, str) and "." in k for k in x)
