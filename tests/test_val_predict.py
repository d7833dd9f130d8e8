"""Standalone validation (``python -m yolojax.val``) and prediction, with the real Ultralytics yolov8n checkpoint.

The checkpoint of the fixtures has 80 (COCO) classes; the synthetic shapes images are given a data YAML with
the 80 COCO names so that the model and the dataset agree (labels use classes 0..5).
"""
from __future__ import annotations

import pathlib

import cv2
import numpy as np
import pytest

from yolojax.config import ConfigError
from yolojax.ops.nms import scale_boxes
from yolojax.predict import list_sources, predict
from yolojax.val import main as val_main

from conftest import FIXTURES  # noqa: E402 - $YOLOJAX_FIXTURES, else ../shared/fixtures

FIXTURE_PT = FIXTURES / "v82" / "ckpt_n_last.pt"


@pytest.fixture(scope="module")
def yolov8n(fixtures_dir):
    from yolojax.weights import load_checkpoint

    return load_checkpoint(FIXTURE_PT)


@pytest.fixture(scope="module")
def coco_named_shapes(tmp_path_factory, yolov8n):
    """(data.yaml with the 80 names of the checkpoint, shapes root)."""
    import yaml

    from yolojax.data import make_shapes_dataset

    root = tmp_path_factory.mktemp("valpred")
    shapes = make_shapes_dataset(root / "shapes", n_train=2, n_val=6, seed=3).parent
    data = root / "coco_named.yaml"
    data.write_text(yaml.safe_dump({"path": str(shapes), "train": "images/train", "val": "images/val",
                                    "names": dict(yolov8n.names)}))
    return data, shapes


def test_predict_maps_boxes_back_to_the_original_pixels(yolov8n, coco_named_shapes):
    """An 8:3 image predicted directly must give the boxes of its letterboxed canvas (the smallest 32-multiple
    rectangle, 32x64), un-padded and scaled."""
    from yolojax.augment import letterbox

    _, shapes = coco_named_shapes
    img = cv2.imread(str(sorted((shapes / "images" / "val").glob("*.png"))[0]))
    img = cv2.resize(img, (128, 48), interpolation=cv2.INTER_LINEAR)  # h=48, w=128: gain 0.5, 4 px top/bottom
    canvas, _, r, (left, top), _ = letterbox(img, None, (64, 64), stride=32)
    assert (canvas.shape[:2], r, left, top) == ((32, 64), 0.5, 0, 4)
    kw = dict(imgsz=64, conf=1e-4, names=yolov8n.names, verbose=False)
    (direct,) = predict(yolov8n.model, yolov8n.variables, img, **kw)
    (on_canvas,) = predict(yolov8n.model, yolov8n.variables, canvas, **kw)
    assert direct.input_shape == on_canvas.input_shape == (32, 64)
    assert len(direct) == len(on_canvas) > 0
    expected = (on_canvas.boxes - np.array([left, top, left, top], np.float32)) / np.float32(r)
    expected[:, [0, 2]] = expected[:, [0, 2]].clip(0, 128)
    expected[:, [1, 3]] = expected[:, [1, 3]].clip(0, 48)
    np.testing.assert_allclose(direct.boxes, expected, atol=1e-3)
    np.testing.assert_array_equal(direct.scores, on_canvas.scores)
    np.testing.assert_array_equal(direct.classes, on_canvas.classes)
    assert direct.orig_shape == (48, 128)
    assert np.all(direct.scores >= 1e-4) and np.all(np.diff(direct.scores) <= 0)
    # the same mapping as the validator's (scale_boxes, spec §5.1 step 6)
    np.testing.assert_allclose(direct.boxes, scale_boxes(on_canvas.boxes, ((r, r), (left, top)), (48, 128)), atol=1e-3)


def test_predict_sources_filters_and_saving(yolov8n, coco_named_shapes, tmp_path, capsys):
    _, shapes = coco_named_shapes
    val_dir = shapes / "images" / "val"
    files = sorted(str(p) for p in val_dir.glob("*.png"))
    assert [p for p, _ in list_sources(val_dir)] == files
    assert [p for p, _ in list_sources(str(val_dir / "*.png"))] == files
    assert [p for p, _ in list_sources([files[1], files[0]])] == [files[1], files[0]]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list_sources(tmp_path / "nope.jpg")
    kw = dict(imgsz=64, names=yolov8n.names)
    preds = predict(yolov8n.model, yolov8n.variables, files[:2], conf=1e-4, save=True,
                    project=str(tmp_path), name="predict", **kw)
    out = capsys.readouterr().out
    assert "image 1/2" in out and "image 2/2" in out and f"Results saved to {tmp_path / 'predict'}" in out
    for p, f in zip(preds, files[:2]):
        assert p.path == f
        saved = cv2.imread(str(tmp_path / "predict" / pathlib.Path(f).name))
        assert saved.shape == cv2.imread(f).shape
        assert len(p) > 0 and np.any(saved != cv2.imread(f))  # boxes were drawn
    everything = predict(yolov8n.model, yolov8n.variables, files[0], conf=1e-4, verbose=False, **kw)[0]
    assert len(everything) > 0  # this barely trained checkpoint scores ~1.6e-4 at best
    keep = int(everything.classes[0])
    only = predict(yolov8n.model, yolov8n.variables, files[0], conf=1e-4, classes=[keep], verbose=False, **kw)[0]
    np.testing.assert_array_equal(only.scores, everything.scores[everything.classes == keep])
    with pytest.raises(ConfigError, match="Did you mean 'conf'"):
        predict(yolov8n.model, yolov8n.variables, files[0], confidence=0.5, **kw)


def test_python_m_yolojax_val_prints_the_table_and_speed(coco_named_shapes, capsys):
    data, shapes = coco_named_shapes
    assert val_main([f"--weights={FIXTURE_PT}", f"--data={data}", "--imgsz=64", "--batch=8"]) == 0
    out = capsys.readouterr().out.splitlines()
    labels = [np.loadtxt(f, ndmin=2) for f in sorted((shapes / "labels" / "val").glob("*.txt"))]
    classes = np.concatenate([lb[:, 0] for lb in labels if lb.size]).astype(int)
    header = out.index(next(line for line in out if line.split()[:2] == ["Class", "Images"]))
    assert out[header + 1].split()[:3] == ["all", "6", str(len(classes))]
    # this checkpoint matches nothing here: v8-era validators then print no per-class rows (ap_class_index is
    # empty, spec §5.4), only the Speed line after the `all` row
    assert out[header + 2].startswith("Speed: ")
    assert out[-1].startswith("Speed: ") and out[-1].endswith("ms postprocess per image")


def test_val_errors_are_one_paragraph(coco_named_shapes, capsys, tmp_path):
    _, shapes = coco_named_shapes
    assert val_main([f"--weights={tmp_path / 'missing.npz'}", f"--data={shapes / 'data.yaml'}"]) == 2
    assert "not found" in capsys.readouterr().err
    # the 80-class checkpoint on the 6-class shapes YAML: named mismatch, before any compile
    assert val_main([f"--weights={FIXTURE_PT}", f"--data={shapes / 'data.yaml'}", "--imgsz=64"]) == 2
    err = capsys.readouterr().err
    assert "80 classes" in err and "6" in err and err.count("\n") == 1


def test_yolo_predict_and_the_cli_predict_line(coco_named_shapes, tmp_path, monkeypatch, capsys):
    """YOLO(weights).predict(source) and ``yolojax predict model=... source=...`` (same compiled function)."""
    from yolojax import YOLO
    from yolojax.cli import main

    _, shapes = coco_named_shapes
    image = sorted((shapes / "images" / "val").glob("*.png"))[0]
    monkeypatch.chdir(tmp_path)
    (p,) = YOLO(str(FIXTURE_PT)).predict(str(image), imgsz=64, conf=1e-4)
    assert p.names[0] == "person" and p.orig_shape == cv2.imread(str(image)).shape[:2] and len(p) > 0
    assert all(0 <= b[0] <= b[2] <= p.orig_shape[1] and 0 <= b[1] <= b[3] <= p.orig_shape[0] for b in p.boxes)
    capsys.readouterr()
    assert main(["predict", f"model={FIXTURE_PT}", f"source={image.parent}", "imgsz=64", "conf=0.0001", "save"]) == 0
    out = capsys.readouterr().out
    assert "image 6/6" in out and (tmp_path / "runs" / "detect" / "predict" / image.name).is_file()


def test_val_split_over_two_cpu_devices_matches_one(coco_named_shapes, tmp_path, monkeypatch, capsys):
    """``python -m yolojax.val`` with the CPU split into XLA devices splits each batch over them
    (YOLOJAX_CPU_DEVICES=2, in a fresh process, with a Grain worker process loading); its COCO predictions equal
    the one-device, in-process-loading run's (same boxes, float rounding)."""
    import json
    import os
    import subprocess
    import sys

    data, _ = coco_named_shapes
    args = [f"--weights={FIXTURE_PT}", f"--data={data}", "--imgsz=128", "--batch=8", "--conf=0.0001", "--save_json"]
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir(), two.mkdir()
    monkeypatch.chdir(one)
    assert val_main(args) == 0
    out_one = capsys.readouterr().out
    assert "jax-" in out_one and " CPU\n" in out_one  # one device in this process
    env = dict(os.environ, YOLOJAX_CPU_DEVICES="2", JAX_PLATFORMS="cpu")
    r = subprocess.run([sys.executable, "-m", "yolojax.val", *args, "--workers=1"], cwd=two, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert " CPU x2\n" in r.stdout
    p1 = json.loads((one / "runs" / "detect" / "val" / "predictions.json").read_text())
    p2 = json.loads((two / "runs" / "detect" / "val" / "predictions.json").read_text())
    assert len(p1) == len(p2) > 0
    key = lambda d: (d["image_id"], d["category_id"], -d["score"])  # noqa: E731
    for a, b in zip(sorted(p1, key=key), sorted(p2, key=key)):
        assert (a["image_id"], a["category_id"]) == (b["image_id"], b["category_id"])
        assert abs(a["score"] - b["score"]) < 1e-4
        assert np.allclose(a["bbox"], b["bbox"], atol=1e-2)
