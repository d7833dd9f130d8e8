"""The classification front: the ``yolojax`` command, the ``YOLO`` facade, ``python -m yolojax.val`` and the
README's Classification section, for YOLOv8-cls models.

References: ``classify_predict.classify`` on the same weights (the facade must return exactly its probabilities),
top-1 / top-5 counted by hand from those probabilities (validation must score them so), the run's own files
(what the README's later commands read), and Ultralytics' names (``probs.top1``, ``metrics.results_dict``, ...).
"""
from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import cv2
import numpy as np
import pytest

from yolojax.cli import main
from yolojax.cli_args import CLIError, resolve_task

REPO = pathlib.Path(__file__).resolve().parents[1]
README = REPO / "README.md"


@pytest.fixture(scope="module")
def ckpt(fixtures_dir) -> pathlib.Path:
    return fixtures_dir / "cls" / "ckpt_n_cls.pt"  # yolov8n-cls, nc=10, names '0'..'9', trained at imgsz 64


@pytest.fixture(scope="module")
def ten(tmp_path_factory) -> pathlib.Path:
    """A folder dataset whose classes are the checkpoint's ('0'..'9'): textured images of varied sizes."""
    root = tmp_path_factory.mktemp("ten")
    rng = np.random.default_rng(0)
    for split, n in (("train", 1), ("val", 2)):
        for c in range(10):
            d = root / split / str(c)
            d.mkdir(parents=True)
            for i in range(n):
                h, w = int(rng.integers(40, 90)), int(rng.integers(40, 90))
                img = np.clip(rng.normal(25 * c, 40, (h, w, 3)), 0, 255).astype(np.uint8)
                cv2.imwrite(str(d / f"{i}.png"), img)
    return root


def val_files(root: pathlib.Path) -> tuple[list[str], np.ndarray]:
    files = sorted((root / "val").rglob("*.png"))
    return [str(f) for f in files], np.array([int(f.parent.name) for f in files])


def _user_error(capsys, argv) -> str:
    assert main(argv) == 2, argv
    err = capsys.readouterr().err
    assert err.startswith("ERROR: ") and "Traceback" not in err and err.count("\n") == 1, err
    return err


# ------------------------------------------------------------------------------------------ command-line words
def test_task_comes_from_the_word_the_argument_or_the_model_yaml():
    assert resolve_task(None, {"model": "yolov8n-cls.yaml"}) == "classify"
    assert resolve_task(None, {"model": "yolov8s.yaml"}) == "detect"
    assert resolve_task(None, {"model": "runs/x/weights/best.npz"}) is None  # known once the weights are loaded
    assert resolve_task("classify", {}) == "classify"
    args = {"task": "classify", "model": "yolov8m-cls.yaml"}
    assert resolve_task(None, args) == "classify" and "task" not in args
    with pytest.raises(CLIError, match="model=yolov8n.yaml is a detect model, but the task is classify"):
        resolve_task("classify", {"model": "yolov8n.yaml"})
    with pytest.raises(CLIError, match="disagree"):
        resolve_task("classify", {"task": "detect"})
    with pytest.raises(CLIError, match="task 'pose'"):
        resolve_task("pose", {})


def test_train_lines_pick_the_classifier_with_or_without_the_task_word(monkeypatch, tmp_path):
    from yolojax.model import YOLO, train_config

    calls = []
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(YOLO, "train", lambda self, **kw: calls.append((self.task, self.cfg, kw)))
    for argv in (["classify", "train", "data=shapes-cls", "model=yolov8n-cls.yaml", "epochs=3"],
                 ["train", "model=yolov8n-cls.yaml", "data=shapes-cls", "epochs=3"],
                 ["train", "task=classify", "model=yolov8n-cls.yaml", "data=shapes-cls", "epochs=3"]):
        assert main(argv) == 0, argv
        assert calls.pop() == ("classify", "yolov8n-cls.yaml", {"data": "shapes-cls", "epochs": 3}), argv
    assert main(["classify", "train", "data=shapes-cls"]) == 0  # the task's default model
    assert calls.pop()[:2] == ("classify", "yolov8n-cls.yaml")
    # as Ultralytics' classification trainer: 224 px unless imgsz is given
    assert train_config({"task": "classify"}).imgsz == 224 and train_config({}).imgsz == 640
    assert train_config({"task": "classify", "imgsz": 96}).imgsz == 96


class _Built(Exception):
    """Raised in place of building the run: the settings warnings come before the data and the model."""


def _warnings_before_the_build(monkeypatch, capsys, start) -> list[str]:
    """The WARNING lines ``start()`` prints before the engine builds its run (stopped there)."""
    import yolojax.engine.loop as loop

    def stop(*args, **kwargs):
        raise _Built

    monkeypatch.setattr(loop, "build_run", stop)
    with pytest.raises(_Built):
        start()
    return [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("WARNING")]


def test_detection_settings_given_to_a_classifier_are_named_on_the_command_line_and_the_facade(
        monkeypatch, capsys, tmp_path):
    from yolojax import YOLO

    monkeypatch.chdir(tmp_path)
    common = ["data=shapes-cls", "imgsz=32", "epochs=1"]
    lines = _warnings_before_the_build(monkeypatch, capsys, lambda: main(["classify", "train", *common, "mosaic=0.5",
                                                                           "box=5.0", "single_cls=True"]))
    assert lines == [f"WARNING: {k}={v!r} has no effect on YOLOv8 classification training: classification does not "
                     f"use it ({why})." for k, v, why in (
                         ("single_cls", True, "it merges the detection labels into one class"),
                         ("box", 5.0, "it is a detection loss gain; classification's loss is cross-entropy"),
                         ("mosaic", 0.5, "it is a detection augmentation"))], lines
    lines = _warnings_before_the_build(monkeypatch, capsys, lambda: YOLO("yolov8n-cls.yaml").train(
        data="shapes-cls", imgsz=32, epochs=1, degrees=10.0, close_mosaic=0))
    assert [ln.split(": classification does not use it")[0] for ln in lines] == [
        "WARNING: close_mosaic=0 has no effect on YOLOv8 classification training",
        "WARNING: degrees=10.0 has no effect on YOLOv8 classification training"], lines
    # the defaults (and the classification settings) say nothing
    assert _warnings_before_the_build(monkeypatch, capsys, lambda: main(["classify", "train", *common,
                                                                          "fliplr=0.2", "cache=ram"])) == []
    assert _warnings_before_the_build(monkeypatch, capsys, lambda: YOLO("yolov8n-cls.yaml").train(
        data="shapes-cls", imgsz=32, epochs=1)) == []
    # a detector reads them: no warning
    assert _warnings_before_the_build(monkeypatch, capsys, lambda: main(["detect", "train", "data=shapes", "imgsz=32",
                                                                          "epochs=1", "mosaic=0.5", "box=5.0",
                                                                          "single_cls=True"])) == []
    assert _warnings_before_the_build(monkeypatch, capsys, lambda: YOLO("yolov8n.yaml").train(
        data="shapes", imgsz=32, epochs=1, degrees=10.0, close_mosaic=0)) == []


@pytest.mark.parametrize("name, data", [("imagenet", "imagenet"), ("imagenette", "imagenette")])
def test_classification_configs_check_and_pick_the_classify_task(name, data):
    import importlib.util

    from yolojax.config import check_config
    from yolojax.tasks import configure

    spec = importlib.util.spec_from_file_location(f"cfg_{name}", REPO / "configs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config, task = configure(check_config(module.get_config()))
    assert task.name == "classify" and config.task == "classify" and config.data == data
    assert config.model == "yolov8n-cls.yaml" and config.imgsz == 224 and config.epochs == 100


def test_bad_classify_command_lines_exit_2_with_one_line(capsys, tmp_path, monkeypatch, ckpt, ten):
    monkeypatch.chdir(tmp_path)
    err = _user_error(capsys, ["classify", "train", "model=yolov8n.yaml"])
    assert "model=yolov8n.yaml is a detect model, but the task is classify" in err
    assert "task='detect' does not fit" in _user_error(capsys, ["detect", "val", f"model={ckpt}", f"data={ten}"])
    assert "runs detect and classify" in _user_error(capsys, ["obb", "train"])
    assert "needs data=" in _user_error(capsys, ["classify", "val", f"model={ckpt}"])
    three = tmp_path / "three"
    for split in ("train", "val"):
        for c in "abc":
            (three / split / c).mkdir(parents=True)
            cv2.imwrite(str(three / split / c / "0.png"), np.full((32, 32, 3), 99, np.uint8))
    err = _user_error(capsys, ["classify", "val", f"model={ckpt}", f"data={three}"])
    assert "predicts 10 classes" in err and "3 class folders" in err
    err = _user_error(capsys, ["classify", "val", f"model={ckpt}", f"data={ten}", "iou=0.5"])
    assert "'iou' is not a classification validation argument" in err
    err = _user_error(capsys, ["classify", "predict", f"model={ckpt}", f"source={ten / 'val' / '3'}", "save=True"])
    assert "'save' is not a classification predict argument" in err
    assert "not part of yolojax" in _user_error(capsys, ["export", f"model={ckpt}"])


# ------------------------------------------------------------------------------------------ facade: .pt, val, predict
def test_pt_checkpoint_predicts_what_classify_computes(ckpt, ten, capsys):
    from yolojax import YOLO
    from yolojax.classify_predict import classify

    model = YOLO(str(ckpt))
    assert model.task == "classify" and model.names == {i: str(i) for i in range(10)}
    files, _ = val_files(ten)
    results = model.predict(files)  # imgsz: the checkpoint's training size, 64
    direct = classify(model.model, model.variables, files, imgsz=64, names=model.names)
    assert len(results) == len(files)
    for r, d, f in zip(results, direct, files):
        np.testing.assert_array_equal(r.probs.data, d.probs)
        assert r.probs.top1 == d.top1 == int(np.argmax(d.probs))
        assert r.probs.top5 == [int(i) for i in np.argsort(-d.probs, kind="stable")[:5]]
        assert r.probs.top1conf == pytest.approx(float(d.probs.max()))
        np.testing.assert_array_equal(r.probs.top5conf, d.probs[r.probs.top5])
        assert r.path == f and r.orig_shape == cv2.imread(f).shape[:2] and r.names == model.names
    out = capsys.readouterr().out
    first = results[0]
    assert f"image 1/{len(files)} {files[0]}: 64x64 {model.names[first.probs.top1]} {first.probs.top1conf:.2f}, " in out
    at_32 = model.predict(files[:2], imgsz=32, verbose=False)
    np.testing.assert_array_equal(at_32[1].probs.data, classify(model.model, model.variables, files[:2],
                                                                  imgsz=32)[1].probs)


def test_val_scores_top1_top5_as_counted_by_hand(ckpt, ten, capsys):
    from yolojax import YOLO
    from yolojax.classify_predict import classify
    from yolojax.val import main as val_main

    model = YOLO(str(ckpt))
    files, labels = val_files(ten)
    probs = np.stack([p.probs for p in classify(model.model, model.variables, files, imgsz=64)])
    ranked = np.argsort(-probs, axis=1, kind="stable")[:, :5]
    top1, top5 = float(np.mean(ranked[:, 0] == labels)), float(np.mean((ranked == labels[:, None]).any(1)))
    m = model.val(data=str(ten))  # the checkpoint's imgsz 64
    assert (m.top1, m.top5) == (pytest.approx(top1), pytest.approx(top5)) and m.seen == len(files)
    assert m.fitness == pytest.approx((top1 + top5) / 2)
    assert m.results_dict == {"metrics/accuracy_top1": m.top1, "metrics/accuracy_top5": m.top5, "fitness": m.fitness}
    assert m.confusion.shape == (10, 10) and int(m.confusion.sum()) == len(files)
    assert model.metrics is m
    capsys.readouterr()
    # python -m yolojax.val: the same numbers in Ultralytics' table
    assert val_main(["--weights", str(ckpt), "--data", str(ten), "--imgsz", "64", "--batch", "4"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"classes\s+top1_acc\s+top5_acc", out)
    row = re.search(r"^\s+all\s+(\S+)\s+(\S+)$", out, re.M)
    assert (float(row[1]), float(row[2])) == (pytest.approx(top1, abs=1e-3), pytest.approx(top5, abs=1e-3))
    assert val_main(["--weights", str(ckpt), "--data", str(ten), "--iou", "0.5"]) == 2
    assert "'iou' is not a classification validation argument" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ training (slow)
def readme_section() -> str:
    text = README.read_text()
    start = text.index("## Classification")
    return text[start:text.index("\n## ", start + 3)]


def readme_commands() -> list[str]:
    """The section's offline command lines (those on the synthetic set), in order."""
    blocks = re.findall(r"```bash\n(.*?)```", readme_section(), re.S)
    return [line for b in blocks for line in b.splitlines() if "shapes-cls" in line or "path/to/images" in line]


@pytest.mark.slow
def test_readme_classification_example_and_commands_run_as_written(tmp_path, monkeypatch):
    """One training run serves the section. The Python example runs (``epochs=10, imgsz=64`` -> ``epochs=1,
    imgsz=32``: the written 10 epochs at 64 px take minutes on two cores): train returns the final validation's
    ClassifyMetrics, after which the object holds the best weights, validates them to the same numbers and predicts
    with the dataset's class names. The bash train line, with the same two values added, makes the very same facade
    call (checked through the command line with the call recorded instead of run again); the val, predict and
    ``python -m yolojax.val`` lines then run as written on that run, but for predict's placeholder source."""
    from yolojax.classify_evaluate import ClassifyMetrics
    from yolojax.data.synthetic import NAMES
    from yolojax.model import YOLO

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("YOLOJAX_CACHE", str(tmp_path / "cache"))
    train_calls = []
    real_train = YOLO.train

    def recorded(self, **kw):
        train_calls.append((self.task, self.cfg, kw))
        return real_train(self, **kw)

    monkeypatch.setattr(YOLO, "train", recorded)
    (code,) = re.findall(r"```python\n(.*?)```", readme_section(), re.S)
    code = code.replace("epochs=10, imgsz=64", "epochs=1, imgsz=32, batch=16, workers=0")
    assert "epochs=1, imgsz=32" in code
    ns: dict = {}
    exec(compile(code, "README.md (Classification)", "exec"), ns)
    model, trained, validated, results = ns["model"], ns["metrics"], ns["model"].metrics, ns["results"]  # val last
    assert model.task == "classify" and model.names == dict(enumerate(sorted(NAMES)))
    assert model.ckpt_path.endswith(("best.npz", "last.npz")) and model.overrides["imgsz"] == 32
    assert isinstance(validated, ClassifyMetrics) and validated.seen == 60
    assert isinstance(trained, ClassifyMetrics) and trained is not validated
    assert (validated.top1, validated.top5) == (pytest.approx(trained.top1), pytest.approx(trained.top5))
    assert len(results) == 10 and all(r.probs.data.shape == (6,) for r in results)
    assert all(abs(float(r.probs.data.sum()) - 1.0) < 1e-4 for r in results)
    run = tmp_path / "runs" / "classify" / "train"
    assert (run / "weights" / "best.npz").is_file() and (run / "results.csv").is_file()
    header = (run / "results.csv").read_text().splitlines()[0]
    assert "metrics/accuracy_top1" in header and "metrics/accuracy_top5" in header

    lines = readme_commands()
    assert [ln.split()[:3] for ln in lines] == [["yolojax", "classify", "train"], ["yolojax", "classify", "val"],
                                                ["yolojax", "classify", "predict"],
                                                ["python", "-m", "yolojax.val"]]
    monkeypatch.setattr(YOLO, "train", lambda self, **kw: train_calls.append((self.task, self.cfg, kw)))
    assert main(lines[0].split()[1:] + ["epochs=1", "imgsz=32", "batch=16", "workers=0"]) == 0
    assert len(train_calls) == 2 and train_calls[1] == train_calls[0]  # the example's run is the train line's run

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    outs = []
    for line in lines[1:]:
        argv = line.split()
        if argv[0] == "yolojax":
            argv = [sys.executable, "-m", "yolojax", *argv[1:]]
        else:
            argv = [sys.executable, *argv[1:]]
        if "predict" in argv:  # a folder of the synthetic set, which the example generated
            (folder,) = (tmp_path / "cache").glob("shapes-cls-*/val/star")
            argv = [a.replace("source=path/to/images", f"source={folder}") for a in argv]
        r = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, f"{line}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
        outs.append(r.stdout)
    rows = [re.search(r"^\s+all\s+(\S+)\s+(\S+)$", o, re.M) for o in (outs[0], outs[2])]
    assert rows[0] and rows[1] and rows[0].groups() == rows[1].groups()  # the two val entries agree
    assert 0.0 <= float(rows[0][1]) <= float(rows[0][2]) <= 1.0
    printed = [ln for ln in outs[1].splitlines() if ln.startswith("image ")]
    assert len(printed) == 10 and all(any(f"{n} " in ln for n in NAMES) for ln in printed)
