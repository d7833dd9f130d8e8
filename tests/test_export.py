"""ONNX export: the file onnxruntime runs gives yolojax's outputs on real images, carries the names, and bad
arguments or missing packages give one-line errors.

Tolerances (float32 export vs ``model.apply``): class scores within 1e-4 absolute; boxes, which are in input
pixels, within 1e-4 of the image size (0.0064 px at 64): the DFL softmax turns float32 rounding differences of
the folded Conv+BN graph into box shifts that grow with the stride, so a pixel-absolute 1e-4 is below float32
resolution for coordinates in the hundreds. The untrained yolov8n of the fixtures amplifies rounding more than
that: ``model.apply`` itself moves its scores by up to ~2e-4 between a batch of 1 and a batch of 4, so there the
bound is 1e-4 plus twice that self-disagreement, measured in the test. ``half=True`` (float16 convolutions):
scores within 1e-2, boxes within 1% of the image size.
"""
from __future__ import annotations

import ast
import pathlib
import re
import shutil
import sys

import cv2
import jax
import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from yolojax.cli import main  # noqa: E402
from yolojax.model import YOLO  # noqa: E402

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def _photos(fixtures_dir, n: int, size: int) -> np.ndarray:
    """(n, size, size, 3) float32 RGB in [0, 1]: the augment fixture's images, resized."""
    paths = sorted((fixtures_dir / "augment" / "dataset" / "images").rglob("*.png"))[:n]
    return np.stack([cv2.resize(cv2.imread(str(p))[..., ::-1], (size, size)) for p in paths]).astype(np.float32) / 255


def _reference(yolo: YOLO, x_nhwc: np.ndarray) -> np.ndarray:
    """``model.apply`` in eval mode, laid out as the ONNX output (B, 4 + nc, A)."""
    out = jax.jit(lambda v, x: yolo.model.apply(v, x, train=False))(yolo.variables, x_nhwc)
    return np.asarray(out).transpose(0, 2, 1)


def _run_onnx(path, x_nhwc: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"images": np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2))})[0]


def _assert_close(out, ref, imgsz: int, *, score_tol: float = 1e-4, box_frac: float = 1e-4) -> None:
    assert out.shape == ref.shape and out.dtype == np.float32
    np.testing.assert_allclose(out[:, 4:], ref[:, 4:], rtol=0, atol=score_tol)
    np.testing.assert_allclose(out[:, :4], ref[:, :4], rtol=0, atol=box_frac * imgsz)


def _metadata(path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


@pytest.fixture(scope="module")
def yolov8n_npz(fixtures_dir, tmp_path_factory) -> pathlib.Path:
    """yolov8n with the fixture state dict (randomised BN affine, real running statistics) saved as a yolojax
    ``best.npz`` with names."""
    from yolojax.nn import YOLOv8
    from yolojax.weights import from_state_dict, save_state_dict
    import jax.numpy as jnp

    model = YOLOv8("n", num_classes=80)
    with np.load(fixtures_dir / "model" / "model_n_state_dict.npz") as z:
        sd = {k: z[k] for k in z.files}
    template = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3), jnp.float32)))
    path = tmp_path_factory.mktemp("v8n") / "weights" / "best.npz"
    save_state_dict(from_state_dict(sd, template), path, names={i: f"thing{i}" for i in range(80)}, model=model)
    return path


@pytest.fixture(scope="module")
def tiny_npz(tiny_model_yaml, tmp_path_factory) -> pathlib.Path:
    """The tiny test model with random BN statistics and affine parameters (so that folding them is tested)."""
    yolo = YOLO(str(tiny_model_yaml))
    rng = np.random.default_rng(0)

    def perturb(kp, leaf):
        name = kp[-1].key
        if name in ("mean", "bias"):
            return leaf + rng.uniform(-0.2, 0.2, leaf.shape).astype(np.float32)
        if name in ("var", "scale"):
            return leaf * rng.uniform(0.5, 1.5, leaf.shape).astype(np.float32)
        return leaf

    yolo.variables = jax.tree_util.tree_map_with_path(perturb, yolo.variables)
    path = tmp_path_factory.mktemp("tiny") / "best.npz"
    yolo.save(path)
    return path


def test_cli_export_of_a_saved_npz_matches_model_apply(tiny_npz, fixtures_dir, capsys):
    assert main(["export", f"model={tiny_npz}", "format=onnx", "imgsz=64"]) == 0
    dest = tiny_npz.with_suffix(".onnx")
    assert f"wrote {dest}" in capsys.readouterr().out
    yolo = YOLO(str(tiny_npz))
    x = _photos(fixtures_dir, 1, 64)
    out = _run_onnx(dest, x)
    assert out.shape == (1, 84, 84)
    _assert_close(out, _reference(yolo, x), 64)
    meta = _metadata(dest)
    assert ast.literal_eval(meta["names"]) == yolo.names and meta["task"] == "detect"
    assert ast.literal_eval(meta["imgsz"]) == [64, 64] and meta["stride"] == "32" and meta["batch"] == "1"


def test_yolov8n_export_reproduces_ultralytics_reference_output(yolov8n_npz, fixtures_dir, tmp_path):
    """Independent of yolojax's forward: Ultralytics' own eval output of the same weights (boxes within 1e-3 px,
    the fixture's own thread-count noise)."""
    shutil.copy(yolov8n_npz, tmp_path / "best.npz")
    dest = YOLO(str(tmp_path / "best.npz")).export(imgsz=64, batch=2)
    with np.load(fixtures_dir / "model" / "model_n_forward_64.npz") as z:
        ref = z["eval_decoded"]
    x = np.random.default_rng(0).integers(0, 256, (2, 3, 64, 64), dtype=np.uint8).astype(np.float32) / np.float32(255)
    out = _run_onnx(dest, x.transpose(0, 2, 3, 1))
    np.testing.assert_allclose(out[:, 4:], ref[:, 4:], rtol=0, atol=1e-4)
    np.testing.assert_allclose(out[:, :4], ref[:, :4], rtol=0, atol=1e-3)


def test_yolov8n_on_photos_with_dynamic_batch_1_and_4(yolov8n_npz, fixtures_dir):
    yolo = YOLO(str(yolov8n_npz))
    dest = pathlib.Path(yolo.export(format="onnx", imgsz=128, dynamic=True))
    assert dest == yolov8n_npz.with_suffix(".onnx")
    x = _photos(fixtures_dir, 4, 128)
    ref = _reference(yolo, x)
    self_gap = np.abs(ref - np.concatenate([_reference(yolo, x[i:i + 1]) for i in range(4)]))
    score_tol = 1e-4 + 2 * float(self_gap[:, 4:].max())
    box_frac = 1e-4 + 2 * float(self_gap[:, :4].max()) / 128
    assert score_tol < 1e-3 and box_frac < 1e-3  # the reference itself is float32-exact to this level
    for batch in (x[:1], x):
        _assert_close(_run_onnx(dest, batch), ref[: len(batch)], 128, score_tol=score_tol, box_frac=box_frac)
    meta = _metadata(dest)
    assert ast.literal_eval(meta["names"]) == {i: f"thing{i}" for i in range(80)}
    assert ast.literal_eval(meta["args"])["dynamic"] is True
    from yolojax import __version__

    assert meta["version"] == __version__ and meta["author"] == "yolojax"


def test_fixed_batch_is_fixed_and_rectangular_imgsz_rounds_up(tiny_npz, fixtures_dir, tmp_path, capsys):
    shutil.copy(tiny_npz, tmp_path / "best.npz")
    yolo = YOLO(str(tmp_path / "best.npz"))
    dest = yolo.export(imgsz=(60, 96), batch=2)  # 60 -> 64 with a warning
    assert "exporting at [64, 96]" in capsys.readouterr().out
    session = ort.InferenceSession(dest, providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == [2, 3, 64, 96]
    paths = sorted((fixtures_dir / "augment" / "dataset" / "images").rglob("*.png"))[:2]
    x = np.stack([cv2.resize(cv2.imread(str(p))[..., ::-1], (96, 64)) for p in paths]).astype(np.float32) / 255
    _assert_close(_run_onnx(dest, x), _reference(yolo, x), 96)
    with pytest.raises(Exception, match="images"):  # a batch of 1 does not fit a batch-2 file
        _run_onnx(dest, x[:1])


def test_dynamic_height_and_width_compute_the_anchors_in_the_graph(tiny_npz, fixtures_dir, tmp_path):
    shutil.copy(tiny_npz, tmp_path / "best.npz")
    yolo = YOLO(str(tmp_path / "best.npz"))
    dest = yolo.export(imgsz=64, dynamic=True)
    assert not any(t.name.startswith("anchors") for t in onnx.load(dest).graph.initializer)
    paths = sorted((fixtures_dir / "augment" / "dataset" / "images").rglob("*.png"))[:3]
    for h, w in ((64, 64), (96, 128)):
        x = np.stack([cv2.resize(cv2.imread(str(p))[..., ::-1], (w, h)) for p in paths]).astype(np.float32) / 255
        _assert_close(_run_onnx(dest, x), _reference(yolo, x), max(h, w))


def test_run_directory_exports_its_best_weights_at_the_trained_size(tiny_npz, fixtures_dir, tmp_path, capsys):
    run = tmp_path / "train"
    (run / "weights").mkdir(parents=True)
    shutil.copy(tiny_npz, run / "weights" / "best.npz")
    (run / "args.yaml").write_text("imgsz: 96\nmodel: yolov8-tiny.yaml\n")
    assert main(["export", f"model={run}"]) == 0  # format defaults to onnx, imgsz to the run's
    dest = run / "weights" / "best.onnx"
    assert f"wrote {dest}" in capsys.readouterr().out
    assert ast.literal_eval(_metadata(dest)["imgsz"]) == [96, 96]
    x = _photos(fixtures_dir, 1, 96)
    _assert_close(_run_onnx(dest, x), _reference(YOLO(str(run)), x), 96)


def test_third_party_ultralytics_checkpoint_exports_with_its_names(fixtures_dir, tmp_path):
    src = tmp_path / "last.pt"
    shutil.copy(fixtures_dir / "v82" / "ckpt_n_last.pt", src)  # the export lands beside it
    yolo = YOLO(str(src))
    dest = pathlib.Path(yolo.export(format="onnx", imgsz=64))
    assert dest == tmp_path / "last.onnx"
    assert ast.literal_eval(_metadata(dest)["names"]) == yolo.names and yolo.names[0] == "person"
    x = _photos(fixtures_dir, 1, 64)
    _assert_close(_run_onnx(dest, x), _reference(yolo, x), 64)


def test_half_runs_in_float16_within_its_tolerance(yolov8n_npz, fixtures_dir, tmp_path):
    src = tmp_path / "best.npz"
    shutil.copy(yolov8n_npz, src)
    yolo = YOLO(str(src))
    dest = yolo.export(imgsz=128, half=True)
    weights = [t for t in onnx.load(dest).graph.initializer if t.name.startswith("w_")]
    assert sum(t.data_type == onnx.TensorProto.FLOAT16 for t in weights) > 0.9 * len(weights)
    x = _photos(fixtures_dir, 1, 128)
    _assert_close(_run_onnx(dest, x), _reference(yolo, x), 128, score_tol=1e-2, box_frac=1e-2)


def test_readme_onnxruntime_example_runs_on_an_exported_file(tiny_npz, fixtures_dir, tmp_path, monkeypatch):
    text = README.read_text()
    section = text[text.index("## Export"):]
    snippet = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    weights = tmp_path / "runs" / "detect" / "train" / "weights"
    weights.mkdir(parents=True)
    shutil.copy(tiny_npz, weights / "best.npz")
    photo = sorted((fixtures_dir / "augment" / "dataset" / "images").rglob("*.png"))[0]
    shutil.copy(photo, tmp_path / "bus.jpg")  # the snippet's file name; cv2 reads PNG content whatever the suffix
    monkeypatch.chdir(tmp_path)
    assert main(["export", "model=runs/detect/train/weights/best.npz", "format=onnx", "imgsz=64"]) == 0
    namespace: dict = {}
    exec(compile(snippet, "README.md", "exec"), namespace)
    image = cv2.imread(str(photo))[..., ::-1]
    x = cv2.resize(image, (64, 64)).astype(np.float32)[None] / 255
    ref = _reference(YOLO(str(weights / "best.npz")), x)[0]
    np.testing.assert_allclose(namespace["out"], ref, rtol=0, atol=1e-4 * 64)
    scale = np.array([image.shape[1] / 64, image.shape[0] / 64] * 2)
    np.testing.assert_allclose(namespace["xywh"], ref[:4].T * scale, rtol=1e-4, atol=1e-2)


@pytest.mark.slow
def test_a_trained_runs_best_npz_exports_from_the_command_line(tiny_model_yaml, shapes_small, fixtures_dir,
                                                               tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    YOLO(str(tiny_model_yaml)).train(data=str(shapes_small), epochs=1, imgsz=64, batch=8, workers=0, plots=False)
    best = tmp_path / "runs" / "detect" / "train" / "weights" / "best.npz"
    capsys.readouterr()
    assert main(["export", f"model={best}", "format=onnx"]) == 0  # imgsz 64 from the run's args.yaml
    dest = best.with_suffix(".onnx")
    assert f"wrote {dest}" in capsys.readouterr().out
    yolo = YOLO(str(best))
    assert ast.literal_eval(_metadata(dest)["names"]) == yolo.names and len(yolo.names) > 1
    x = _photos(fixtures_dir, 1, 64)
    _assert_close(_run_onnx(dest, x), _reference(yolo, x), 64)


def _one_line_error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("ERROR: ") and "Traceback" not in err and err.count("\n") == 1, err
    return err


def test_bad_arguments_and_missing_packages_are_one_line_errors(tiny_npz, capsys, monkeypatch):
    model = f"model={tiny_npz}"
    err = _one_line_error(capsys, ["export", model, "format=onxx"])
    assert "format='onxx'" in err and "Did you mean format='onnx'?" in err and "saved_model" in err
    err = _one_line_error(capsys, ["export", model, "format=tflite"])
    assert "does not build" in err and "onnx, saved_model" in err
    assert "Did you mean 'opset'" in _one_line_error(capsys, ["export", model, "opset_version=12"])
    assert "opset=9" in _one_line_error(capsys, ["export", model, "opset=9"])
    assert "batch=0" in _one_line_error(capsys, ["export", model, "batch=0"])
    assert "half and opset apply to format=onnx only" in _one_line_error(
        capsys, ["export", model, "format=saved_model", "half=True"])
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # as if TensorFlow were not installed
    err = _one_line_error(capsys, ["export", model, "format=saved_model"])
    assert "needs TensorFlow" in err and "pip install tensorflow" in err
    monkeypatch.setitem(sys.modules, "onnx", None)  # as if onnx were not installed
    err = _one_line_error(capsys, ["export", model, "format=onnx"])
    assert "needs the 'onnx' package" in err and "pip install onnx" in err
    assert not tiny_npz.with_name("best_saved_model").exists()
