"""Foundation: YOLOv8 forward parity with Ultralytics, weight import/export, sizes, bfloat16."""
from __future__ import annotations

import io
import json
import sys
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from yolojax.nn import YOLOv8
from yolojax.nn.summary import model_info
from yolojax.weights import (CheckpointFormatError, UnsafeCheckpointError, load, load_checkpoint, save_state_dict,
                             transfer)


def nhwc(a):
    return jnp.asarray(np.asarray(a).transpose(0, 2, 3, 1))


@pytest.fixture(scope="module")
def ref_model(fixtures_dir):
    model, variables = load(fixtures_dir / "model" / "model_n_state_dict.npz")
    return model, variables


@pytest.fixture(scope="module")
def eval_fn(ref_model):
    model, _ = ref_model
    return jax.jit(lambda v, x: model.apply(v, x, train=False))


@pytest.fixture(scope="module")
def forward_fixture(fixtures_dir):
    return np.load(fixtures_dir / "model" / "model_n_forward_64.npz")


def test_eval_output_matches_ultralytics(ref_model, eval_fn, forward_fixture):
    _, variables = ref_model
    y = np.asarray(eval_fn(variables, nhwc(forward_fixture["x"])))
    ref = forward_fixture["eval_decoded"].transpose(0, 2, 1)  # (B, A, 4 + nc)
    assert y.shape == ref.shape == (2, 84, 84)
    np.testing.assert_allclose(y[..., 4:], ref[..., 4:], atol=1e-4)
    np.testing.assert_allclose(y[..., :4], ref[..., :4], atol=1e-3)


def test_every_layer_matches_ultralytics(ref_model, fixtures_dir):
    model, variables = ref_model
    layers = np.load(fixtures_dir / "model" / "model_n_layers_64.npz")

    @jax.jit
    def capture(v, x):
        _, state = model.apply(v, x, capture_intermediates=True, mutable=["intermediates"])
        return {k: state["intermediates"][k]["__call__"][0] for k in state["intermediates"] if k.startswith("model_")}

    outs = capture(variables, nhwc(layers["x"]))
    names = [k for k in layers.files if k.startswith("layer")]
    assert len(names) == 23
    for name in names[:-1]:  # the Detect layer's decoded boxes are checked at 1e-3 px above
        ours = np.asarray(outs[f"model_{int(name[5:7])}"]).transpose(0, 3, 1, 2)
        np.testing.assert_allclose(ours, layers[name], atol=1e-4, err_msg=name)


def test_train_mode_levels_match_ultralytics(ref_model, forward_fixture):
    model, variables = ref_model
    levels, updates = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))(
        variables, nhwc(forward_fixture["x"]))
    for lv, key in zip(levels, ("train_raw_p3", "train_raw_p4", "train_raw_p5")):
        np.testing.assert_allclose(np.asarray(lv).transpose(0, 3, 1, 2), forward_fixture[key], atol=1e-4)
    # running statistics moved towards the batch statistics (torch momentum 0.03)
    before = variables["batch_stats"]["model_0"]["bn"]["var"]
    after = updates["batch_stats"]["model_0"]["bn"]["var"]
    assert not np.allclose(before, after)


@pytest.mark.parametrize("version", ["v82", "v84"])
def test_real_checkpoint_without_torch(version, fixtures_dir, eval_fn, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    w = load_checkpoint(fixtures_dir / version / "ckpt_n_last.pt")
    assert w.model.num_classes == 80 and w.model.scale == "n"
    assert w.names[0] == "person"
    ref = np.load(fixtures_dir / version / "ckpt_n_forward_64.npz")
    y = np.asarray(eval_fn(w.variables, nhwc(ref["x"])))
    expected = ref["eval_decoded"].transpose(0, 2, 1)
    np.testing.assert_allclose(y[..., 4:], expected[..., 4:], atol=1e-4)
    np.testing.assert_allclose(y[..., :4], expected[..., :4], atol=1e-3)


def _pt_with_global(module: str, name: str) -> bytes:
    """A torch-style zip whose data.pkl calls module.name (built by hand, nothing is executed here)."""
    payload = b"\x80\x02c" + f"{module}\n{name}\n".encode() + b"X\x04\x00\x00\x00echo\x85R."
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("evil/data.pkl", payload)
        z.writestr("evil/version", "3\n")
    return buf.getvalue()


def test_malicious_pickle_is_refused(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr("os.system", lambda *a: calls.append(a))
    path = tmp_path / "evil.pt"
    path.write_bytes(_pt_with_global("os", "system"))
    with pytest.raises(UnsafeCheckpointError, match=r"os\.system"):
        load(path)
    assert calls == []  # nothing ran
    path.write_bytes(_pt_with_global("builtins", "eval"))
    with pytest.raises(UnsafeCheckpointError, match="builtins.eval"):
        load(path)


def test_truncated_and_non_zip_files_name_the_file(tmp_path, fixtures_dir):
    good = (fixtures_dir / "v82" / "ckpt_n_last.pt").read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointFormatError, match="truncated.pt"):
        load(truncated)
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    with pytest.raises(CheckpointFormatError, match="notes.pt"):
        load(text)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load(tmp_path / "missing.pt")


def test_state_dict_round_trip_is_exact(ref_model, fixtures_dir, tmp_path):
    _, variables = ref_model
    src = dict(np.load(fixtures_dir / "model" / "model_n_state_dict.npz"))
    out = tmp_path / "n.npz"
    save_state_dict(variables, out)
    back = dict(np.load(out))
    assert set(back) == set(src)  # same 355 keys, num_batches_tracked and the DFL conv included
    for k, v in src.items():
        if k.endswith("num_batches_tracked"):
            continue
        assert back[k].shape == v.shape, k
        np.testing.assert_array_equal(back[k], v.astype(np.float32), err_msg=k)
    _, again = load(out)
    for a, b in zip(jax.tree.leaves(again), jax.tree.leaves(variables)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_transfer_counts_like_ultralytics(ref_model, capsys):
    _, variables = ref_model

    def init(nc):
        return jax.eval_shape(lambda: YOLOv8("n", nc).init(jax.random.key(0), jnp.zeros((1, 64, 64, 3))))

    same = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), init(80))
    merged, (k, n) = transfer(variables, same)
    assert (k, n) == (355, 355)
    assert "Transferred 355/355 items" in capsys.readouterr().out
    np.testing.assert_array_equal(merged["params"]["model_0"]["conv"]["kernel"],
                                  variables["params"]["model_0"]["conv"]["kernel"])
    other = jax.tree.map(lambda s: np.full(s.shape, 7.0, s.dtype), init(3))
    merged, (k, n) = transfer(variables, other)
    assert (k, n) == (319, 355)  # the nc-dependent cv3 branch (c3 = max(64, min(nc, 100))) is skipped
    assert np.all(merged["params"]["model_22"]["cv3_0_2"]["bias"] == 7.0)
    np.testing.assert_array_equal(merged["params"]["model_22"]["cv2_0_2"]["bias"],
                                  variables["params"]["model_22"]["cv2_0_2"]["bias"])


def test_sizes_and_gflops_match_ultralytics(fixtures_dir):
    info = json.loads((fixtures_dir / "model" / "model_info.json").read_text())["scales"]
    for scale, ref in info.items():
        got = model_info(YOLOv8(scale))
        assert got.parameters == ref["parameters"], scale
        assert got.gradients == ref["gradients"], scale
        assert got.layers == ref["layers"], scale
        assert abs(got.gflops - ref["gflops_640"]) / ref["gflops_640"] < 0.02, (scale, got.gflops)
    assert model_info(YOLOv8("n")).line().startswith("YOLOv8n summary: 129 layers, 3,157,200 parameters")


def _check_ultralytics_init(v, nc=80):
    head = v["params"]["model_22"]
    np.testing.assert_allclose(head["cv2_0_2"]["bias"], 1.0)  # v8-era box bias
    for level, s in enumerate((8, 16, 32)):
        np.testing.assert_allclose(head[f"cv3_{level}_2"]["bias"], np.log(5 / nc / (640 / s) ** 2), rtol=1e-6)
    bn = v["params"]["model_0"]["bn"]
    np.testing.assert_array_equal(bn["scale"], 1.0)
    np.testing.assert_array_equal(bn["bias"], 0.0)
    np.testing.assert_allclose(v["batch_stats"]["model_0"]["bn"]["var"], 0.9)  # after v8's stride probe
    np.testing.assert_allclose(v["batch_stats"]["model_0"]["bn"]["mean"], 0.0)
    k = np.asarray(v["params"]["model_4"]["m_0"]["cv1"]["conv"]["kernel"])
    bound = 1 / np.sqrt(np.prod(k.shape[:3]))  # PyTorch default: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert np.abs(k).max() <= bound and np.abs(k).max() > 0.9 * bound
    assert abs(k.std() - bound / np.sqrt(3)) < 0.1 * bound / np.sqrt(3)


def test_initialisation_follows_ultralytics():
    from yolojax.nn.yolo import init_variables

    model = YOLOv8("n", num_classes=80)
    fast = init_variables(model, seed=1)
    _check_ultralytics_init(fast)
    # the host-side initialiser and Flax's own model.init agree on structure and distributions
    tiny = YOLOv8("n", num_classes=80, multiples=(0.33, 0.25, 256))
    flax_init = jax.jit(tiny.init)(jax.random.key(1, impl="rbg"), jnp.zeros((1, 64, 64, 3)))
    _check_ultralytics_init(flax_init)
    host_init = init_variables(tiny, seed=1)
    assert jax.tree.structure(host_init) == jax.tree.structure(flax_init)
    for a, b in zip(jax.tree.leaves(host_init), jax.tree.leaves(flax_init)):
        assert a.shape == b.shape and a.dtype == b.dtype
    cur = init_variables(YOLOv8("n", 80, compat="current"))
    np.testing.assert_allclose(cur["params"]["model_22"]["cv2_0_2"]["bias"], 2.0)
    np.testing.assert_allclose(cur["batch_stats"]["model_0"]["bn"]["var"], 1.0)


def test_model_yaml_custom_nc_and_multiples(tmp_path):
    import yaml

    cfg = {"nc": 3, "depth_multiple": 0.33, "width_multiple": 0.125, "max_channels": 1024,
           "backbone": [[-1, 1, "Conv", [64, 3, 2]], [-1, 1, "Conv", [128, 3, 2]], [-1, 3, "C2f", [128, True]],
                        [-1, 1, "Conv", [256, 3, 2]], [-1, 6, "C2f", [256, True]], [-1, 1, "Conv", [512, 3, 2]],
                        [-1, 6, "C2f", [512, True]], [-1, 1, "Conv", [1024, 3, 2]], [-1, 3, "C2f", [1024, True]],
                        [-1, 1, "SPPF", [1024, 5]]],
           "head": [[-1, 1, "nn.Upsample", ["None", 2, "nearest"]], [[-1, 6], 1, "Concat", [1]],
                    [-1, 3, "C2f", [512]], [-1, 1, "nn.Upsample", ["None", 2, "nearest"]],
                    [[-1, 4], 1, "Concat", [1]], [-1, 3, "C2f", [256]], [-1, 1, "Conv", [256, 3, 2]],
                    [[-1, 12], 1, "Concat", [1]], [-1, 3, "C2f", [512]], [-1, 1, "Conv", [512, 3, 2]],
                    [[-1, 9], 1, "Concat", [1]], [-1, 3, "C2f", [1024]], [[15, 18, 21], 1, "Detect", ["nc"]]]}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    model = YOLOv8.from_yaml(path)
    assert model.num_classes == 3
    v = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3))))
    assert v["params"]["model_0"]["conv"]["kernel"].shape == (3, 3, 3, 8)  # 64 * 0.125
    out = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((2, 64, 64, 3))), v)
    assert out.shape == (2, 84, 4 + 3)
    assert YOLOv8.from_yaml("yolov8s.yaml").scale == "s"
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        YOLOv8.from_yaml(tmp_path / "nope.yaml")


def test_bfloat16_compute_stays_close_to_float32(ref_model, eval_fn, forward_fixture):
    model, variables = ref_model
    x = nhwc(forward_fixture["x"])
    f32 = np.asarray(eval_fn(variables, x))
    bf16_model = model.clone(dtype=jnp.bfloat16)
    bf16 = np.asarray(jax.jit(lambda v, x: bf16_model.apply(v, x, train=False))(variables, x))
    assert bf16.dtype == np.float32  # decode and probabilities are float32
    # bfloat16 keeps 8 mantissa bits (relative step 2^-8 = 0.4%). The head's output convs run in float32,
    # so class probabilities agree to ~1e-3; boxes inherit the features' relative error: this randomised-BN
    # model predicts boxes up to ~600 px, so we bound each coordinate's error relative to that box's size: ~23 layers of 0.4% rounding
    # random-walk to ~2% (measured: 99th percentile 1.8%, max 3.0%); we allow 5% + 1 px, median under 1 px.
    assert np.abs(bf16[..., 4:] - f32[..., 4:]).max() < 5e-3
    box_size = np.abs(f32[..., 2:4]).max(-1, keepdims=True)
    assert np.all(np.abs(bf16[..., :4] - f32[..., :4]) <= 0.05 * box_size + 1.0)
    assert np.median(np.abs(bf16[..., :4] - f32[..., :4])) < 1.0
    params = jax.tree.leaves(variables["params"])
    assert all(p.dtype == np.float32 for p in params)


def test_max_pool_equals_reduce_window_and_routes_gradient_like_torch():
    """SPPF's separable max pool: the values of ``lax.reduce_window`` (max, -inf padding) exactly; the gradient that
    of reduce_window on untied data, and on ties (a constant map) each window's whole gradient goes to its first
    element in scan order (top-left), as PyTorch's max pool does - hand-computed."""
    import jax
    import jax.numpy as jnp

    from yolojax.nn.blocks import max_pool_same

    def reference(v):
        return jax.lax.reduce_window(v, -jnp.inf, jax.lax.max, (1, 5, 5, 1), (1, 1, 1, 1),
                                     ((0, 0), (2, 2), (2, 2), (0, 0)))

    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(2, 7, 9, 3)).astype(np.float32))
    g = jnp.asarray(rng.normal(size=(2, 7, 9, 3)).astype(np.float32))
    np.testing.assert_array_equal(np.asarray(max_pool_same(x, 5)), np.asarray(reference(x)))
    grad = jax.vjp(lambda v: max_pool_same(v, 5), x)[1](g)[0]
    np.testing.assert_allclose(np.asarray(grad), np.asarray(jax.vjp(reference, x)[1](g)[0]), atol=1e-5)
    const = jnp.zeros((1, 7, 9, 1), jnp.float32)
    grad = np.asarray(jax.vjp(lambda v: max_pool_same(v, 5), const)[1](g[:1, :, :, :1])[0])
    expected = np.zeros((7, 9), np.float32)
    for i in range(7):
        for j in range(9):
            expected[max(i - 2, 0), max(j - 2, 0)] += float(g[0, i, j, 0])
    np.testing.assert_allclose(grad[0, :, :, 0], expected, rtol=1e-6, atol=1e-6)


def test_pointwise_conv_equals_conv_and_its_kernel_gradient_copies_nothing():
    """``PointwiseConv`` (every 1x1 conv of the model) against ``nn.Conv`` with the same variables: output and the
    gradients for input, kernel and bias agree to float rounding. Compiled for the CPU, the gradient's kernel part is
    a dot straight on the (pixels, Cout) cotangent: no fusion, copy or transpose writes it as (Cout, pixels) first
    (contracting N, H and W as three dimensions did, ~7% of a yolov8n CPU train step)."""
    import re

    import flax.linen as nn

    from yolojax.engine.devices import compiler_options
    from yolojax.nn.blocks import PointwiseConv

    n, h, w, cin, cout = 2, 6, 10, 8, 24
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(n, h, w, cin)).astype(np.float32))
    g = jnp.asarray(rng.normal(size=(n, h, w, cout)).astype(np.float32))
    ours = PointwiseConv(cout, (1, 1), use_bias=True, bias_init=nn.initializers.normal(1.0))
    ref = nn.Conv(cout, (1, 1), use_bias=True)
    params = ours.init(jax.random.PRNGKey(0), x)
    assert jax.tree.map(jnp.shape, params) == jax.tree.map(jnp.shape, ref.init(jax.random.PRNGKey(0), x))

    def grads(module, p, v):
        y, vjp = jax.vjp(lambda p_, v_: module.apply(p_, v_), p, v)
        return y, vjp(g)

    (y, (gp, gx)), (y_ref, (gp_ref, gx_ref)) = grads(ours, params, x), grads(ref, params, x)
    np.testing.assert_allclose(np.asarray(y), np.asarray(y_ref), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(gx), np.asarray(gx_ref), rtol=1e-5, atol=1e-5)
    for a, b in zip(jax.tree.leaves(gp), jax.tree.leaves(gp_ref)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-4)

    def kernel_grad(p, v, dy):  # the cotangent computed in the program, as a SiLU/BN backward hands it on
        return jax.vjp(lambda p_: ours.apply(p_, v), p)[1](jax.nn.silu(dy) * 2.0)[0]

    hlo = jax.jit(kernel_grad, compiler_options=compiler_options("cpu")).lower(params, x, g).compile().as_text()
    transposed = re.findall(rf"= f32\[{cout},{n * h * w}\]\S* (?:fusion|copy|transpose)\(", hlo)
    assert "dot(" in hlo and not transposed, transposed
