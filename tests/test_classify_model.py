"""YOLOv8-cls: model sizes, forward, checkpoint import/export, loss and top-k accuracy against Ultralytics 8.2.103."""
from __future__ import annotations

import json
import math
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from yolojax.loss import classification_loss
from yolojax.metrics import top_k_accuracy
from yolojax.nn import YOLOV8_CLS_LAYERS, YOLOv8, YOLOv8Cls, model_from_yaml
from yolojax.nn.yolo import init_variables
from yolojax.weights import (CheckpointFormatError, _model_for_state_dict, load, load_checkpoint, save_state_dict,
                             to_state_dict, transfer)

TINY = (0.33, 0.0625, 1024)  # yolov8-cls at width 1/16: channels 8..64


def nhwc(x):
    return jnp.asarray(np.asarray(x).transpose(0, 2, 3, 1))


def template(model, size=64):
    return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, size, size, 3), jnp.float32)))


@pytest.fixture(scope="module")
def ref_model(fixtures_dir):
    return load(fixtures_dir / "cls" / "model_n_cls_state_dict.npz")


@pytest.mark.parametrize("nc", [1000, 10])
def test_sizes_match_ultralytics_at_every_scale(nc, fixtures_dir):
    info = json.loads((fixtures_dir / "cls" / "model_info.json").read_text())[f"nc{nc}"]
    for scale in "nsmlx":
        shapes = template(YOLOv8Cls(scale=scale, num_classes=nc))
        params = sum(math.prod(p.shape) for p in jax.tree.leaves(shapes["params"]))
        stats = jax.tree_util.tree_flatten_with_path(shapes["batch_stats"])[0]
        n_bn = sum(1 for kp, _ in stats if kp[-1].key == "mean")
        entries = len(jax.tree.leaves(shapes)) + n_bn  # + one num_batches_tracked per BatchNorm
        assert (params, entries) == (info[scale]["parameters"], info[scale]["state_dict_entries"]), scale


def test_summary_matches_ultralytics_model_info(fixtures_dir):
    from yolojax.nn.summary import model_info

    params = json.loads((fixtures_dir / "cls" / "model_info.json").read_text())["nc1000"]
    # Ultralytics 8.4 `YOLO("yolov8<s>-cls.yaml").info()` layers and `get_flops(model, 640)` (n: 26 Conv + 26 BN +
    # the shared SiLU + pool + dropout + Linear = 56 layers); FLOPs within 2%, as for the detector
    ultralytics = {"n": (56, 3.3615), "s": (56, 12.5873), "m": (80, 41.8926), "l": (104, 99.1243),
                   "x": (104, 154.3122)}
    for scale, (layers, gflops) in ultralytics.items():
        got = model_info(YOLOv8Cls(scale))
        assert (got.layers, got.parameters, got.gradients) == (layers, params[scale]["parameters"],
                                                               params[scale]["parameters"]), scale
        assert abs(got.gflops - gflops) / gflops < 0.02, (scale, got.gflops)
    assert model_info(YOLOv8Cls("n")).line().startswith("YOLOv8n-cls summary: 56 layers, 2,719,288 parameters")


@pytest.mark.parametrize("size", [64, 224])
def test_forward_matches_ultralytics(size, ref_model, fixtures_dir):
    model, variables = ref_model
    assert isinstance(model, YOLOv8Cls) and (model.scale, model.num_classes) == ("n", 10)
    ref = np.load(fixtures_dir / "cls" / f"model_n_cls_forward_{size}.npz")
    x = nhwc(ref["x"])
    probs = np.asarray(model.apply(variables, x))
    np.testing.assert_allclose(probs, ref["eval_probs"], atol=1e-4)
    # The fixture's logits carry ~2e-5 of the reference's own rounding (a float64 recomputation of the head from
    # its `feat` differs by as much); they are ~0.05 in size.
    logits = np.asarray(model.apply(variables, x, decode=False))
    np.testing.assert_allclose(logits, ref["train_logits"], atol=1e-4)
    if size == 64:
        feat = YOLOv8Cls(scale="n", num_classes=10, layers=YOLOV8_CLS_LAYERS[:9]).apply(
            {c: {k: v for k, v in t.items() if k != "model_9"} for c, t in variables.items()}, x)
        np.testing.assert_allclose(np.asarray(feat).transpose(0, 3, 1, 2), ref["feat"], atol=5e-4)
        out, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
        assert out.shape == (2, 10) and not np.allclose(np.asarray(out).sum(1), 1.0)  # logits, not probabilities
        assert not np.allclose(updates["batch_stats"]["model_9"]["conv"]["bn"]["mean"],
                               variables["batch_stats"]["model_9"]["conv"]["bn"]["mean"])


def test_pt_checkpoint_imports_without_torch(fixtures_dir, ref_model, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    w = load_checkpoint(fixtures_dir / "cls" / "ckpt_n_cls.pt")
    assert isinstance(w.model, YOLOv8Cls) and (w.model.scale, w.model.num_classes) == ("n", 10)
    assert w.names == {i: str(i) for i in range(10)} and w.meta["epoch"] == -1
    sd, ref_sd = to_state_dict(w.variables), to_state_dict(ref_model[1])
    assert set(sd) == set(ref_sd)
    for k, v in ref_sd.items():  # the .pt holds the same model in half precision
        np.testing.assert_allclose(sd[k], v, rtol=1e-3, atol=1e-4, err_msg=k)
    ref = np.load(fixtures_dir / "cls" / "model_n_cls_forward_64.npz")
    probs = np.asarray(w.model.apply(w.variables, nhwc(ref["x"])))
    np.testing.assert_allclose(probs, ref["eval_probs"], atol=1e-4)


def test_state_dict_round_trip_is_exact(ref_model, fixtures_dir, tmp_path):
    model, variables = ref_model
    src = dict(np.load(fixtures_dir / "cls" / "model_n_cls_state_dict.npz"))
    out = tmp_path / "cls.npz"
    save_state_dict(variables, out, model=model, names={i: f"c{i}" for i in range(10)})
    back = dict(np.load(out))
    assert set(back) == set(src) | {"__model__", "__names__"}  # 158 tensors, no DFL conv
    for k, v in src.items():
        if not k.endswith("num_batches_tracked"):
            np.testing.assert_array_equal(back[k], v, err_msg=k)
    w = load_checkpoint(out)
    assert w.model == model and w.names[3] == "c3"
    for a, b in zip(jax.tree.leaves(w.variables), jax.tree.leaves(variables)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_transfer_skips_the_linear_of_another_class_count(ref_model, capsys):
    _, variables = ref_model
    other = jax.tree.map(lambda s: np.full(s.shape, 7.0, s.dtype), template(YOLOv8Cls("n", 1000)))
    merged, (k, n) = transfer(variables, other)
    assert (k, n) == (156, 158) and "Transferred 156/158 items" in capsys.readouterr().out
    assert np.all(merged["params"]["model_9"]["linear"]["kernel"] == 7.0)
    np.testing.assert_array_equal(merged["params"]["model_9"]["conv"]["conv"]["kernel"],
                                  variables["params"]["model_9"]["conv"]["conv"]["kernel"])


def test_checkpoint_family_comes_from_its_head():
    cls_sd = {"model.0.conv.weight": np.zeros((32, 3, 3, 3), np.float32),
              "model.9.linear.weight": np.zeros((1000, 1280), np.float32),
              "model.9.linear.bias": np.zeros((1000,), np.float32)}
    model = _model_for_state_dict(cls_sd, None)
    assert isinstance(model, YOLOv8Cls) and (model.scale, model.num_classes) == ("s", 1000)
    with pytest.raises(CheckpointFormatError, match="neither a Detect head .* nor a Classify head"):
        _model_for_state_dict({"model.0.conv.weight": cls_sd["model.0.conv.weight"]}, None)
    with pytest.raises(CheckpointFormatError, match="inconsistent"):
        _model_for_state_dict(cls_sd, YOLOv8("n").to_yaml_dict())


def test_yaml_names_and_files_pick_the_family(tmp_path):
    import yaml

    m = model_from_yaml("yolov8s-cls.yaml")
    assert isinstance(m, YOLOv8Cls) and (m.scale, m.num_classes, m.multiples) == ("s", 1000, None)
    assert m.resolved_multiples() == (0.33, 0.5, 1024)
    assert model_from_yaml("yolov8m-cls.yaml").resolved_multiples() == (0.67, 0.75, 1024)  # detect m caps at 768
    assert type(model_from_yaml("yolov8s.yaml")) is YOLOv8
    custom = YOLOv8Cls(scale="n", num_classes=10).to_yaml_dict()
    path = tmp_path / "my-cls.yaml"
    path.write_text(yaml.safe_dump({**custom, "head": custom["backbone"][-1:], "backbone": custom["backbone"][:-1]}))
    assert model_from_yaml(path) == YOLOv8Cls(scale="n", num_classes=10)
    with pytest.raises(ValueError, match="not the Detect head.*model_from_yaml"):
        YOLOv8.from_yaml(custom)
    with pytest.raises(ValueError, match="a Classify head does not belong in a YOLOv8 model"):
        YOLOv8(layers=YOLOV8_CLS_LAYERS).plan()


def test_initialisation_follows_ultralytics():
    model = YOLOv8Cls(scale="n", num_classes=10)
    v = init_variables(model, seed=0)
    assert jax.tree.structure(v) == jax.tree.structure(template(model))
    stats = {tuple(k.key for k in kp): x for kp, x in jax.tree_util.tree_flatten_with_path(v["batch_stats"])[0]}
    # a classifier has no stride-probe forward: running variances stay at torch's 1 (the v8 detector's are 0.9)
    assert all(np.all(x == (1.0 if path[-1] == "var" else 0.0)) for path, x in stats.items())
    bound = 1.0 / math.sqrt(1280)
    kernel, bias = v["params"]["model_9"]["linear"]["kernel"], v["params"]["model_9"]["linear"]["bias"]
    assert kernel.shape == (1280, 10) and np.abs(kernel).max() <= bound and np.abs(bias).max() <= bound
    assert abs(kernel.std() - bound / math.sqrt(3)) < 0.1 * bound  # U(-b, b) has std b / sqrt(3)


def test_dropout_is_active_in_train_mode_only():
    x = jax.random.uniform(jax.random.key(1), (2, 64, 64, 3))
    plain = YOLOv8Cls(num_classes=5, multiples=TINY)
    variables = init_variables(plain)
    dropped = YOLOv8Cls(num_classes=5, multiples=TINY, dropout=0.5)
    np.testing.assert_array_equal(dropped.apply(variables, x), plain.apply(variables, x))
    out, _ = dropped.apply(variables, x, train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.key(0)})
    ref, _ = plain.apply(variables, x, train=True, mutable=["batch_stats"])
    assert not np.allclose(out, ref)


def test_classification_loss_matches_ultralytics(fixtures_dir):
    ref = np.load(fixtures_dir / "cls" / "loss_cls.npz")
    logits, labels = jnp.asarray(ref["logits"]), jnp.asarray(ref["labels"])
    np.testing.assert_allclose(float(jax.jit(classification_loss)(logits, labels)), float(ref["loss"]), rtol=1e-6)
    # the gradient of a batch-mean cross-entropy: (softmax - one_hot) / B
    grad = jax.grad(classification_loss)(logits, labels)
    expected = (jax.nn.softmax(logits) - jax.nn.one_hot(labels, logits.shape[1])) / logits.shape[0]
    np.testing.assert_allclose(grad, expected, atol=1e-7)


def test_top_k_accuracy_hand_computed():
    scores = np.array([
        [0.50, 0.20, 0.10, 0.10, 0.05, 0.05],  # label 0: top-1 hit
        [0.30, 0.25, 0.20, 0.10, 0.10, 0.05],  # label 4: 4th/5th by a tie (lower id first) -> top-5 hit
        [0.05, 0.10, 0.15, 0.20, 0.22, 0.28],  # label 0: lowest -> miss
        [0.10, 0.60, 0.10, 0.10, 0.05, 0.05],  # label 2: ranks 2nd -> top-5 hit
    ])
    out = top_k_accuracy(scores, np.array([0, 4, 0, 2]))
    assert out == {"top1": 0.25, "top5": 0.75, "fitness": 0.5}
    assert top_k_accuracy(scores[:, :3], np.array([0, 2, 0, 2]))["top5"] == 1.0  # nc < 5: top-nc
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 6\); got min 0, max 6"):
        top_k_accuracy(scores, np.array([0, 6, 0, 2]))


def test_yolo_facade_builds_and_loads_classifiers(fixtures_dir, tmp_path, capsys):
    from yolojax import YOLO
    from yolojax.cli import main
    from yolojax.config import ConfigError

    built = YOLO("yolov8n-cls.yaml")
    assert built.task == "classify" and isinstance(built.model, YOLOv8Cls) and built.model.num_classes == 1000
    loaded = YOLO(str(fixtures_dir / "cls" / "ckpt_n_cls.pt"))
    assert loaded.task == "classify" and loaded.model.num_classes == 10
    with pytest.raises(ConfigError, match="export of classification models is not part of yolojax"):
        loaded.export()
    loaded.save(tmp_path / "w.npz")
    again = YOLO(str(tmp_path / "w.npz"))
    assert again.task == "classify" and again.model == loaded.model
    with pytest.raises(ConfigError, match="task='detect' does not fit"):
        YOLO("yolov8n-cls.yaml", task="detect")
    # the command line names it in one line (exit 2), as every user error
    assert main(["export", f"model={fixtures_dir / 'cls' / 'ckpt_n_cls.pt'}"]) == 2
    err = capsys.readouterr().err
    assert "export of classification models is not part of yolojax" in err and err.count("\n") == 1


@pytest.mark.parametrize("dynamic", [False, True])
def test_onnx_graph_of_the_classifier_matches_model_apply(dynamic, ref_model, fixtures_dir):
    ort = pytest.importorskip("onnxruntime")
    from yolojax.export import build_onnx

    model, variables = ref_model
    ref = np.load(fixtures_dir / "cls" / f"model_n_cls_forward_{224 if dynamic else 64}.npz")
    proto = build_onnx(model, variables, imgsz=(64, 64), batch=2, dynamic=dynamic)  # dynamic: run at 224 px
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    (probs,) = session.run(None, {"images": ref["x"]})
    assert probs.shape == (2, 10)
    np.testing.assert_allclose(probs, np.asarray(model.apply(variables, nhwc(ref["x"]))), atol=1e-5)
    np.testing.assert_allclose(probs, ref["eval_probs"], atol=1e-4)


@pytest.mark.parametrize("model", ["yolov8n-cls.yaml", "cls/model_n_cls_state_dict.npz"])
def test_detection_training_refuses_a_classifier_in_one_line(model, fixtures_dir):
    """A classifier given to the detection task stops before any work with the reason, instead of failing later
    inside the detection loss."""
    from yolojax.config import ConfigError, apply_overrides, default_config
    from yolojax.tasks.detect import build_model

    path = model if model.endswith(".yaml") else str(fixtures_dir / model)
    cfg = apply_overrides(default_config(), {"model": path})
    with pytest.raises(ConfigError, match="classification model") as err:
        build_model(cfg, 2, {0: "a", 1: "b"}, jnp.float32)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("family", ["classify", "detect"])
def test_batchnorm_running_statistics_follow_ultralytics_per_family(family, ref_model, fixtures_dir):
    """Ultralytics sets eps 1e-3 and momentum 0.03 on its detectors' BatchNorms; its classifiers keep torch's eps
    1e-5 and momentum 0.1. Checked on the first layer against a hand computation: its convolution's batch mean and
    unbiased variance blended into the running statistics, and its eval output with that eps."""
    model, variables = ref_model if family == "classify" else (YOLOv8("n", num_classes=10), None)
    variables = variables or init_variables(model, seed=0)
    momentum, eps = (0.1, 1e-5) if family == "classify" else (0.03, 1e-3)
    x = nhwc(np.load(fixtures_dir / "cls" / "model_n_cls_forward_64.npz")["x"])
    p, s = variables["params"]["model_0"], variables["batch_stats"]["model_0"]["bn"]
    y = np.asarray(jax.lax.conv_general_dilated(x, p["conv"]["kernel"], (2, 2), ((1, 1), (1, 1)),
                                                dimension_numbers=("NHWC", "HWIO", "NHWC")), np.float64)
    mean, var = y.mean((0, 1, 2)), y.reshape(-1, y.shape[-1]).var(0, ddof=1)
    _, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
    got = updates["batch_stats"]["model_0"]["bn"]
    np.testing.assert_allclose(got["mean"], (1 - momentum) * np.asarray(s["mean"]) + momentum * mean, rtol=1e-4,
                               atol=1e-6)
    np.testing.assert_allclose(got["var"], (1 - momentum) * np.asarray(s["var"]) + momentum * var, rtol=1e-4)
    first = type(model)(model.scale, num_classes=model.num_classes, layers=model.layers[:1])
    out = np.asarray(first.apply({c: {"model_0": t["model_0"]} for c, t in variables.items()}, x))
    z = (y - np.asarray(s["mean"])) / np.sqrt(np.asarray(s["var"]) + eps) * p["bn"]["scale"] + p["bn"]["bias"]
    np.testing.assert_allclose(out, z / (1 + np.exp(-z)), rtol=1e-4, atol=1e-5)
