"""The Python examples of Ultralytics' train-mode guide, run verbatim with ``ultralytics`` -> ``yolojax``.

Substitutions: ``data="coco8.yaml"`` -> a 16/8-image synthetic shapes set, ``epochs=100`` -> 2 (the schedule is
part of the compiled step, so every run, the interrupted one included, uses the same number of epochs),
``imgsz=640`` -> 64, ``yolov8n.pt`` -> the real Ultralytics 8.2.103 checkpoint of the fixtures copied into the
working directory under that name. Every run uses yolov8n, so all runs share one compiled train step (the
persistent compilation cache serves the later ones). Devices that do not exist here (``device=0``, ``[0, 1]``,
``mps``) must give their one-paragraph error; on a machine that has them the same examples train.

The CLI examples of the guide that train are here too (one module, one set of compiled functions).
"""
from __future__ import annotations

import contextlib
import io
import pathlib
import shutil
import types

import jax
import numpy as np
import pytest

from yolojax import YOLO
from yolojax.config import ConfigError
from yolojax.engine.devices import DeviceError

from conftest import FIXTURES  # noqa: E402 - $YOLOJAX_FIXTURES, else ../shared/fixtures

FIXTURE_PT = FIXTURES / "v82" / "ckpt_n_last.pt"
SHAPES = ("rectangle", "ellipse", "triangle", "cross", "star", "diamond")


def _gpus() -> int:
    return sum(d.platform in ("gpu", "cuda", "rocm") for d in jax.devices())


@pytest.fixture(scope="module", autouse=True)
def ws(tmp_path_factory, fixtures_dir):
    """A working directory as a user has it: yolov8n.pt beside the data; runs go to ./runs/detect."""
    from yolojax.data import make_shapes_dataset

    root = tmp_path_factory.mktemp("guide")
    data = make_shapes_dataset(root / "shapes", n_train=16, n_val=8, seed=0)
    shutil.copy(FIXTURE_PT, root / "yolov8n.pt")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        yield types.SimpleNamespace(root=root, data=str(data), runs=root / "runs" / "detect")


def _run(fn):
    """(result, printed text) of fn(), echoing the text so -s shows it."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        result = fn()
    print(buf.getvalue())
    return result, buf.getvalue()


def _results_rows(run: pathlib.Path) -> list[list[str]]:
    lines = (run / "results.csv").read_text().strip().splitlines()
    return [[c.strip() for c in line.split(",")] for line in lines]


def _check_metrics(metrics, run: pathlib.Path):
    """The returned object has Ultralytics' DetMetrics surface and agrees with the run's results.csv."""
    keys = ["metrics/precision(B)", "metrics/recall(B)", "metrics/mAP50(B)", "metrics/mAP50-95(B)", "fitness"]
    assert list(metrics.results_dict) == keys
    box = metrics.box
    for v in (box.map, box.map50, box.map75, box.mp, box.mr):
        assert 0.0 <= v <= 1.0
    assert metrics.fitness == pytest.approx(0.1 * box.map50 + 0.9 * box.map)  # v8-era fitness (spec §5.3)
    assert box.maps.shape == (6,)
    assert metrics.names == dict(enumerate(SHAPES))
    assert [row["name"] for row in metrics.summary()] == [SHAPES[int(c)] for c in box.ap_class_index]
    assert metrics.save_dir == run
    header, *rows = _results_rows(run)
    # the final validation is of best.npz: the weights validated at one of the epochs in results.csv
    per_epoch = [(float(r["metrics/mAP50(B)"]), float(r["metrics/mAP50-95(B)"])) for r in map(dict, (zip(header, row)
                                                                                                   for row in rows))]
    assert any(abs(a - box.map50) < 1e-4 and abs(b - box.map) < 1e-4 for a, b in per_epoch), (per_epoch, box.map)


# ----------------------------------------------------------------------------------------------- no training


def test_build_from_yaml_scale_from_name_and_info(capsys):
    model = YOLO("yolov8n.yaml")
    assert (model.model.scale, model.model.num_classes, model.ckpt_path) == ("n", 80, None)
    assert YOLO("yolov8s.yaml").model.scale == "s"
    info = model.info()
    # Ultralytics' yolov8n summary (spec §1.6): 3,157,200 parameters, 3,157,184 gradients, 8.855 GFLOPs
    assert "YOLOv8n summary:" in capsys.readouterr().out
    assert (info.parameters, info.gradients) == (3_157_200, 3_157_184)
    assert info.gflops == pytest.approx(8.855, rel=0.02)


def test_load_pt_and_yaml_plus_load_transfer_everything(capsys):
    from yolojax.weights import load_checkpoint

    ref = load_checkpoint(FIXTURE_PT)
    pt = YOLO("yolov8n.pt")
    assert pt.names[0] == "person" and len(pt.names) == 80
    assert pt.overrides["imgsz"] == 64  # the checkpoint's train args pass on imgsz/data, as in Ultralytics
    built = YOLO("yolov8n.yaml").load("yolov8n.pt")
    assert "Transferred 355/355 items from pretrained weights" in capsys.readouterr().out  # spec §3.12
    for a, b in zip(jax.tree.leaves(built.variables), jax.tree.leaves(ref.variables)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_missing_weights_give_one_paragraph_on_where_to_get_them(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as e:
        YOLO("yolov8n.pt")
    msg = str(e.value)
    assert "github.com/ultralytics/assets/releases" in msg and "yolov8n.yaml" in msg and str(tmp_path) in msg
    assert "\n" not in msg
    with pytest.raises(FileNotFoundError, match="does not exist|not found"):
        YOLO("yolov8n.yaml").load("elsewhere/my_weights.npz")


def test_unknown_train_argument_names_the_closest_before_any_work():
    with pytest.raises(ConfigError, match="Did you mean 'epochs'"):
        YOLO("yolov8n.yaml").train(data="coco8.yaml", epoch=3)
    with pytest.raises(ConfigError, match="Did you mean 'imgsz'"):
        YOLO("yolov8n.yaml").train(img_size=64)
    with pytest.raises(ConfigError, match="resume"):
        YOLO("yolov8n.yaml").train(resume=True)  # nothing was loaded that could be resumed


@pytest.mark.skipif(_gpus() >= 1, reason="a GPU is present: the example trains (see test_single_gpu_example)")
@pytest.mark.parametrize("device", [0, "0", [0, 1], "0,1"])
def test_gpu_examples_without_a_gpu_raise_the_device_error(ws, device):
    with pytest.raises(DeviceError, match="no GPU") as e:
        YOLO("yolov8n.pt").train(data=ws.data, epochs=2, imgsz=64, device=device)
    assert "device=cpu" in str(e.value)


def test_mps_example_without_metal_raises_the_device_error(ws):
    if any(d.platform.lower() in ("metal", "mps") for d in jax.devices()):
        pytest.skip("a Metal device is present")
    with pytest.raises(DeviceError, match="Metal") as e:
        YOLO("yolov8n.pt").train(data=ws.data, epochs=2, imgsz=64, device="mps")
    assert "device=cpu" in str(e.value)


# Spec §3.1, the train arguments of Ultralytics 8.2.103 (v8-era) with their defaults, written from the spec table.
SPEC_3_1 = {
    "task": "detect", "mode": "train", "model": None, "data": None, "epochs": 100, "time": None, "patience": 100,
    "batch": 16, "imgsz": 640, "save": True, "save_period": -1, "cache": False, "device": None, "workers": 8,
    "project": None, "name": None, "exist_ok": False, "pretrained": True, "optimizer": "auto", "verbose": True,
    "seed": 0, "deterministic": True, "single_cls": False, "rect": False, "cos_lr": False, "close_mosaic": 10,
    "resume": False, "amp": True, "fraction": 1.0, "profile": False, "freeze": None, "multi_scale": False,
    "val": True, "split": "val", "save_json": False, "conf": None, "iou": 0.7, "max_det": 300, "half": False,
    "plots": True, "lr0": 0.01, "lrf": 0.01, "momentum": 0.937, "weight_decay": 0.0005, "warmup_epochs": 3.0,
    "warmup_momentum": 0.8, "warmup_bias_lr": 0.1, "box": 7.5, "cls": 0.5, "dfl": 1.5, "label_smoothing": 0.0,
    "nbs": 64, "hsv_h": 0.015, "hsv_s": 0.7, "hsv_v": 0.4, "degrees": 0.0, "translate": 0.1, "scale": 0.5,
    "shear": 0.0, "perspective": 0.0, "flipud": 0.0, "fliplr": 0.5, "bgr": 0.0, "mosaic": 1.0, "mixup": 0.0,
    "copy_paste": 0.0, "cfg": None,
}
# Deliberate differences: with no model/data given, yolojax builds yolov8n.yaml and trains on the bundled synthetic
# shapes (offline), where Ultralytics needs model= and falls back to coco8 (a download).
YOLOJAX_DEFAULTS = {"model": "yolov8n.yaml", "data": "shapes"}


def test_every_spec_train_argument_is_accepted_with_the_same_default():
    from yolojax.config import default_config
    from yolojax.model import train_config

    defaults = default_config().to_dict()
    for key, value in SPEC_3_1.items():
        assert key in defaults, key
        assert defaults[key] == YOLOJAX_DEFAULTS.get(key, value), (key, defaults[key], value)
        assert type(defaults[key]) is type(YOLOJAX_DEFAULTS.get(key, value)), key  # 3.0 stays a float, 0 an int
    config = train_config(dict(SPEC_3_1))  # all of them at once, as model.train(**args) receives them
    assert {k: config[k] for k in SPEC_3_1} == {**SPEC_3_1, **YOLOJAX_DEFAULTS}  # model/data None: the defaults


def test_train_passes_every_argument_through_unchanged(monkeypatch, ws):
    """model.train(**kwargs) hands each spec key to the trainer's config as given (Ultralytics' merge order)."""
    import yolojax.train

    seen = {}

    def fake_train_and_evaluate(config, workdir=None, *, callbacks=None):
        seen.update(config.to_dict())
        return {"save_dir": str(ws.root / "nowhere")}

    monkeypatch.setattr(yolojax.train, "train_and_evaluate", fake_train_and_evaluate)
    values = {  # a non-default value of each kind, including Ultralytics' path/str forms of bool keys
        "epochs": 7, "patience": 5, "batch": 32, "imgsz": 320, "save": False, "save_period": 2, "cache": "ram",
        "device": [0, 1], "workers": 2, "project": "p", "name": "n", "exist_ok": True, "pretrained": "yolov8n.pt",
        "optimizer": "SGD", "verbose": False, "seed": 3, "deterministic": False, "single_cls": True, "rect": True,
        "cos_lr": True, "close_mosaic": 0, "amp": False, "fraction": 0.5, "freeze": [0, 1], "val": False,
        "split": "test", "conf": 0.1, "iou": 0.6, "max_det": 100, "lr0": 0.02, "lrf": 0.1, "momentum": 0.9,
        "weight_decay": 0.001, "warmup_epochs": 1.5, "warmup_momentum": 0.5, "warmup_bias_lr": 0.0, "box": 5.0,
        "cls": 1.0, "dfl": 1.0, "nbs": 32, "hsv_h": 0.0, "hsv_s": 0.0, "hsv_v": 0.0, "degrees": 10.0,
        "translate": 0.2, "scale": 0.9, "shear": 2.0, "perspective": 0.001, "flipud": 0.5, "fliplr": 0.0,
        "bgr": 0.1, "mosaic": 0.5, "mixup": 0.1, "copy_paste": 0.1, "time": 0.5, "data": "other.yaml",
    }
    YOLO("yolov8n.yaml").train(**values)
    assert {k: seen[k] for k in values} == values
    assert (seen["model"], seen["task"], seen["mode"]) == ("yolov8n.yaml", "detect", "train")
    seen.clear()
    YOLO("yolov8n.pt").train(epochs=1)  # checkpoint args pass on data and imgsz, kwargs win over them
    assert (seen["imgsz"], seen["data"], seen["epochs"]) == (64, "datasets/synth_ckpt/data.yaml", 1)
    assert seen["model"].endswith("yolov8n.pt")


# ------------------------------------------------------------------------------------------------ training


@pytest.fixture(scope="module")
def run_yaml(ws):
    """Guide: model = YOLO("yolov8n.yaml"); results = model.train(data=..., epochs=..., imgsz=...)."""
    model = YOLO("yolov8n.yaml")
    metrics, text = _run(lambda: model.train(data=ws.data, epochs=2, imgsz=64))
    return model, metrics, text


@pytest.fixture(scope="module")
def run_pt(ws, run_yaml):
    """Guide: model = YOLO("yolov8n.pt"); results = model.train(...) (device automatic: the CPU here)."""
    model = YOLO("yolov8n.pt")
    metrics, text = _run(lambda: model.train(data=ws.data, epochs=2, imgsz=64, plots=False))
    return model, metrics, text


@pytest.mark.slow
def test_train_from_yaml(ws, run_yaml):
    model, metrics, text = run_yaml
    run = ws.runs / "train"
    assert (run / "weights" / "best.npz").is_file() and (run / "weights" / "last.npz").is_file()
    assert "Transferred" not in text  # from scratch
    _check_metrics(metrics, run)
    # the YOLO object now holds the run's best weights, for the dataset's classes
    assert model.ckpt_path == str(run / "weights" / "best.npz")
    assert model.names == dict(enumerate(SHAPES)) and model.model.num_classes == 6
    assert model.overrides["imgsz"] == 64 and model.overrides["data"] == ws.data


@pytest.mark.slow
def test_train_from_pt_transfers_all_but_the_class_head(ws, run_pt):
    _, metrics, text = run_pt
    assert "Transferred 319/355 items from pretrained weights" in text  # nc 80 -> 6 (spec §3.12)
    _check_metrics(metrics, ws.runs / "train2")


@pytest.mark.slow
def test_train_from_yaml_plus_load(ws, run_pt):
    metrics, text = _run(lambda: YOLO("yolov8n.yaml").load("yolov8n.pt").train(data=ws.data, epochs=2, imgsz=64,
                                                                                 plots=False))
    # once at .load() (same model, 355/355), once into the trainer's 6-class model (319/355), as Ultralytics
    assert text.index("Transferred 355/355") < text.index("Transferred 319/355")
    run = ws.runs / "train3"
    _check_metrics(metrics, run)
    import yaml

    args = yaml.safe_load((run / "args.yaml").read_text())
    assert args["model"].endswith("weights/start.npz") and (run / "weights" / "start.npz").is_file()


class _Killed(Exception):
    pass


@pytest.fixture(scope="module")
def interrupted(ws, run_pt):
    """A 2-epoch run stopped after its first epoch (as by Ctrl-C), plus a copy for the CLI resume example."""
    model = YOLO("yolov8n.pt")

    def kill_after_first_epoch(ctx):
        if ctx.epoch == 0:
            raise _Killed

    model.add_callback("on_fit_epoch_end", kill_after_first_epoch)
    with pytest.raises(_Killed):
        _run(lambda: model.train(data=ws.data, epochs=2, imgsz=64, name="partial", plots=False))
    run = ws.runs / "partial"
    assert len(_results_rows(run)) == 2  # header + epoch 1
    shutil.copytree(run, ws.runs / "partial_cli")
    return run, ws.runs / "partial_cli"


@pytest.mark.slow
def test_resume_python_example(ws, interrupted):
    """Guide: model = YOLO("path/to/last.pt"); results = model.train(resume=True)."""
    run, _ = interrupted
    model = YOLO(str(run / "weights" / "last.pt"))  # the guide's name; yolojax runs write last.npz beside it
    assert model.ckpt_path == str(run / "weights" / "last.npz")
    metrics, text = _run(lambda: model.train(resume=True))
    assert "Resuming training" in text
    rows = _results_rows(run)
    assert [r[0] for r in rows[1:]] == ["1", "2"]  # the same run directory, continued to epoch 2
    _check_metrics(metrics, run)
    assert not (ws.runs / "partial2").exists()


@pytest.mark.slow
def test_resume_cli_example(ws, interrupted):
    """Guide: yolo train resume model=path/to/last.pt."""
    from yolojax.cli import main

    _, run = interrupted
    rc, text = _run(lambda: main(["train", "resume", f"model={run / 'weights' / 'last.npz'}"]))
    assert rc == 0 and "Resuming training" in text
    assert [r[0] for r in _results_rows(run)[1:]] == ["1", "2"]


@pytest.mark.slow
def test_cli_train_with_pretrained_on_cpu(ws, run_pt):
    """Guide CLI: yolo detect train data=... model=yolov8n.yaml pretrained=yolov8n.pt epochs=... imgsz=...
    (device=cpu given explicitly). The CLI examples without pretrained= map to the Python calls above: test_cli.py."""
    from yolojax.cli import main

    before = {p.name for p in ws.runs.iterdir()}
    rc, text = _run(lambda: main(["detect", "train", f"data={ws.data}", "model=yolov8n.yaml", "pretrained=yolov8n.pt",
                                  "epochs=2", "imgsz=64", "device=cpu", "plots=False"]))
    assert rc == 0 and "Transferred 319/355 items from pretrained weights" in text
    (new,) = sorted({p.name for p in ws.runs.iterdir()} - before)
    assert (ws.runs / new / "weights" / "best.npz").is_file()
    n_labels = sum(len(f.read_text().split("\n")) - 1 for f in (ws.root / "shapes" / "labels" / "val").glob("*.txt"))
    assert f"all          8 {n_labels:10d}" in text  # the final validation table: 8 images, every val label


@pytest.mark.slow
@pytest.mark.skipif(_gpus() < 1, reason="needs a GPU (the no-GPU error is tested above)")
def test_single_gpu_example(ws):
    metrics = YOLO("yolov8n.pt").train(data=ws.data, epochs=2, imgsz=64, device=0)
    assert 0.0 <= metrics.box.map <= 1.0


@pytest.mark.slow
@pytest.mark.skipif(_gpus() < 2, reason="needs two GPUs (the error is tested above)")
def test_multi_gpu_example(ws):
    metrics = YOLO("yolov8n.pt").train(data=ws.data, epochs=2, imgsz=64, device=[0, 1])
    assert 0.0 <= metrics.box.map <= 1.0


# ---------------------------------------------------------------------------------- val / predict on a run


@pytest.mark.slow
def test_val_of_the_trained_model_matches_the_final_validation(ws, run_yaml):
    """YOLO(run dir).val() reproduces the trainer's final validation of best weights (same batch: 2 x 16)."""
    _, metrics, _ = run_yaml
    again = YOLO(str(ws.runs / "train")).val(data=ws.data, imgsz=64, batch=32)
    for k, v in metrics.results_dict.items():
        assert again.results_dict[k] == pytest.approx(v, abs=1e-6), k
