"""The ``yolojax`` command line: Ultralytics' ``key=value`` syntax, the guide's CLI examples, clear user errors.

The CLI examples that train for real (``pretrained=``, ``resume``) run in ``test_yolo_api.py`` beside the Python
examples (one set of compiled functions); here each guide example is checked to become exactly the Python call
the guide pairs it with, and every user error to end with exit code 2 and one paragraph on stderr.
"""
from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys

import jax
import pytest

from yolojax import cli
from yolojax.cli import main
from yolojax.cli_args import CLIError, merge_equals, parse_args, smart_value

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("text, value", [
    ("none", None), ("None", None), ("true", True), ("False", False), ("TRUE", True),
    ("640", 640), ("0.01", 0.01), ("1e-3", 0.001), ("-1", -1),
    ("0,1", (0, 1)), ("[0,1]", [0, 1]), ("[0, 1]", [0, 1]),
    ("coco8.yaml", "coco8.yaml"), ("runs/detect/train/weights/last.npz", "runs/detect/train/weights/last.npz"),
    ("mps", "mps"), ("cpu", "cpu"), ("'0'", "0"), ("SGD", "SGD"),
])
def test_values_are_converted_like_ultralytics(text, value):
    got = smart_value(text)
    assert got == value and type(got) is type(value)


def test_spaces_around_equals_are_merged():
    assert merge_equals(["imgsz", "=", "64"]) == ["imgsz=64"]
    assert merge_equals(["imgsz=", "64", "epochs", "=3"]) == ["imgsz=64", "epochs=3"]
    assert merge_equals(["train", "resume"]) == ["train", "resume"]


def test_parse_task_mode_overrides_and_bare_bools(capsys):
    assert parse_args(["detect", "train", "data=coco8.yaml", "model=yolov8n.pt", "epochs=100", "imgsz=640"]) == (
        "detect", "train", {"data": "coco8.yaml", "model": "yolov8n.pt", "epochs": 100, "imgsz": 640})
    assert parse_args(["train", "resume", "model=path/to/last.npz"]) == (
        None, "train", {"resume": True, "model": "path/to/last.npz"})
    assert parse_args(["train", "rect", "cos_lr"])[2] == {"rect": True, "cos_lr": True}  # bool defaults only
    assert parse_args(["train", "--epochs=3"])[2] == {"epochs": 3}
    assert "does not need leading dashes" in capsys.readouterr().err
    with pytest.raises(CLIError, match="Did you mean 'train'"):
        parse_args(["trian", "epochs=3"])
    with pytest.raises(CLIError, match="needs a value"):
        parse_args(["train", "epochs"])


@pytest.fixture
def fixture_pt(fixtures_dir) -> pathlib.Path:
    return fixtures_dir / "v82" / "ckpt_n_last.pt"


@pytest.fixture
def recorded(monkeypatch, tmp_path, fixture_pt):
    """Runs CLI lines with ``YOLO.train`` recording (model source, kwargs) instead of training."""
    from yolojax.model import YOLO

    calls = []

    def fake_train(self, **kwargs):
        calls.append((self.ckpt_path or self.cfg, kwargs))
        return "metrics"

    monkeypatch.chdir(tmp_path)
    shutil.copy(fixture_pt, tmp_path / "yolov8n.pt")
    monkeypatch.setattr(YOLO, "train", fake_train)
    return calls


def test_guide_cli_examples_become_the_python_calls(recorded):
    common = ["data=coco8.yaml", "epochs=100", "imgsz=640"]
    kw = {"data": "coco8.yaml", "epochs": 100, "imgsz": 640}
    lines_and_calls = [
        (["detect", "train", *common, "model=yolov8n.yaml"], ("yolov8n.yaml", kw)),
        (["detect", "train", *common, "model=yolov8n.pt"], ("yolov8n.pt", kw)),
        (["detect", "train", *common, "model=yolov8n.yaml", "pretrained=yolov8n.pt"],
         ("yolov8n.yaml", {**kw, "pretrained": "yolov8n.pt"})),
        (["detect", "train", *common, "model=yolov8n.pt", "device=0,1"], ("yolov8n.pt", {**kw, "device": (0, 1)})),
        (["detect", "train", *common, "model=yolov8n.pt", "device=[0,1]"], ("yolov8n.pt", {**kw, "device": [0, 1]})),
        (["detect", "train", *common, "model=yolov8n.pt", "device=mps"], ("yolov8n.pt", {**kw, "device": "mps"})),
        (["train", *common, "model=yolov8n.pt"], ("yolov8n.pt", kw)),
    ]
    for argv, (source, kwargs) in lines_and_calls:
        assert main(argv) == 0
        got_source, got_kwargs = recorded.pop()
        assert pathlib.Path(got_source).name == source and got_kwargs == kwargs, argv


def test_resume_line_loads_the_weights_and_passes_resume(recorded, tmp_path, fixture_pt):
    weights = tmp_path / "runs" / "detect" / "train" / "weights"
    weights.mkdir(parents=True)
    shutil.copy(fixture_pt, weights / "last.pt")
    assert main(["train", "resume", f"model={weights / 'last.pt'}"]) == 0
    ((source, kwargs),) = recorded
    assert source == str(weights / "last.pt") and kwargs == {"resume": True}


def _user_error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("ERROR: ") and "Traceback" not in err and err.count("\n") == 1, err
    return err


def test_user_errors_exit_2_with_one_paragraph(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    err = _user_error(capsys, ["detect", "train", "data=coco8.yaml", "model=yolov8n.pt", "epochs=1"])
    assert "github.com/ultralytics/assets" in err and "yolov8n.yaml" in err
    err = _user_error(capsys, ["train", "model=yolov8n.yaml", "epoch=3"])
    assert "Did you mean 'epochs'" in err
    assert "runs detect and classify" in _user_error(capsys, ["segment", "train", "model=yolov8n.yaml"])
    assert "track" in _user_error(capsys, ["track", "model=yolov8n.pt"])
    assert "resume needs" in _user_error(capsys, ["train", "resume"])
    assert "source=" in _user_error(capsys, ["predict", "model=yolov8n.yaml"])


@pytest.mark.skipif(any(d.platform != "cpu" for d in jax.devices()), reason="an accelerator is present")
def test_devices_that_are_not_here_exit_2(capsys, tmp_path, monkeypatch):
    from yolojax.data import make_shapes_dataset

    data = make_shapes_dataset(tmp_path / "shapes", n_train=4, n_val=2)
    monkeypatch.chdir(tmp_path)
    for device in ("0", "0,1", "[0,1]"):
        err = _user_error(capsys, ["detect", "train", f"data={data}", "model=yolov8n.yaml", "epochs=1", "imgsz=64",
                                   f"device={device}"])
        assert "no GPU" in err and "device=cpu" in err
    err = _user_error(capsys, ["detect", "train", f"data={data}", "model=yolov8n.yaml", "device=mps"])
    assert "Metal" in err


def test_cfg_prints_every_key_with_its_default(capsys):
    from yolojax.config import default_config

    assert main(["cfg"]) == 0
    printed = {}
    for line in capsys.readouterr().out.splitlines():
        key, _, rest = line.partition(": ")
        printed[key] = rest.split("  #")[0]
    defaults = default_config().to_dict()
    assert set(printed) == set(defaults)
    assert printed["epochs"] == "100" and printed["imgsz"] == "640" and printed["lr0"] == "0.01"
    assert printed["device"] == "null" and printed["optimizer"] == "auto" and printed["close_mosaic"] == "10"


def test_help_in_process_and_as_python_m_yolojax(capsys):
    assert main(["help"]) == 0 and "yolojax detect train" in capsys.readouterr().out
    assert main([]) == 0 and "yolojax [detect | classify] MODE" in capsys.readouterr().out
    proc = subprocess.run([sys.executable, "-m", "yolojax", "help"], capture_output=True, text=True, cwd=REPO,
                          timeout=120)
    assert proc.returncode == 0 and "yolojax detect train" in proc.stdout, proc.stderr


def test_console_script_is_declared():
    text = (REPO / "pyproject.toml").read_text()
    assert 'yolojax = "yolojax.cli:main"' in text
    assert cli.main is main
