"""Every train value is checked once, before anything heavy starts, on every path (issue 22).

The table of bad values below runs through the Python API (``YOLO(...).train(k=v)``: a ``ConfigError``, a
``ValueError``), the ``yolojax`` command in this process (exit code 2, one line) and, for the issue's own values, as a
real ``yolojax`` process (exit code 2, no traceback); ``python -m yolojax.train --config.k=v`` and ``cfg=`` YAML files
get the same checks. Valid values of every form Ultralytics accepts (``batch=0.5``, ``batch=-1``, ``cache=disk``,
``epochs=3.0``, ``save=false``) pass, normalised.
"""
from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

from yolojax import cli
from yolojax.config import ConfigError, check_config, default_config, smart_value
from yolojax.config.checks import RULES, check_values, inapplicable_warnings

REPO = pathlib.Path(__file__).resolve().parents[1]

# The issue's values (lr0=abc ... epochs=-1), then more of every key class: (key, value as typed on a command line).
ISSUE = [("lr0", "abc"), ("imgsz", "abc"), ("patience", "abc"), ("close_mosaic", "abc"), ("mosaic", "2.5"),
         ("workers", "-3"), ("fraction", "0"), ("epochs", "-1")]
BAD = ISSUE + [
    # int keys: a whole number (3.0 is one, 2.5 is not) at least the minimum
    ("epochs", "0"), ("epochs", "2.5"), ("epochs", "true"), ("patience", "-1"), ("close_mosaic", "1.5"),
    ("max_det", "0"), ("nbs", "0"), ("seed", "-1"), ("save_period", "abc"), ("workers", "2.5"),
    ("checkpoint_every", "-1"), ("keep_checkpoints", "0"), ("log_every", "0"),
    # batch: >= 1, -1 or a fraction in (0, 1)
    ("batch", "0"), ("batch", "-2"), ("batch", "2.5"), ("batch", "abc"), ("batch", "1.0e9x"),
    # imgsz: positive whole pixels, or a list of them
    ("imgsz", "0"), ("imgsz", "-64"), ("imgsz", "64.5"), ("imgsz", "[64,0]"), ("imgsz", "[64,64,64]"),
    # float keys
    ("warmup_epochs", "-1"), ("box", "-0.5"), ("cls", "abc"), ("degrees", "abc"), ("degrees", "-10"),
    ("shear", "200"), ("time", "0"), ("time", "-1"), ("lr0", "0"), ("lr0", "1.5"), ("lr0", "nan"),
    ("dist_init_timeout", "0"),
    # fraction keys: [0, 1]
    ("hsv_h", "1.5"), ("fliplr", "-0.1"), ("mixup", "abc"), ("iou", "1.01"), ("conf", "2"), ("fraction", "1.5"),
    ("momentum", "1.0"), ("weight_decay", "-0.001"), ("label_smoothing", "2"), ("scale", "1.5"), ("lrf", "-1"),
    # bool keys: True/False, true/false, 1/0
    ("rect", "maybe"), ("save", "2"), ("val", "yes"), ("amp", "abc"), ("cos_lr", "[1]"), ("multi_scale", "0.5"),
    ("deterministic", "-1"), ("profile", "abc"),
    # choices and structured values
    ("optimizer", "SGDD"), ("compat", "v9"), ("dtype", "float16"), ("split", "holdout"), ("cache", "ssd"),
    ("device", "abc"), ("device", "-1"), ("hsv_on_device", "sometimes"), ("freeze", "-1"), ("freeze", "abc"),
    ("classes", "-1"), ("classes", "[0,0]"), ("classes", "abc"), ("coordinator_address", "nohost"),
    ("num_processes", "0"),
]


def test_the_table_covers_every_key_and_every_class():
    """A rule for every key of configs/default.py; the bad values above span int, float, fraction, bool, choice."""
    assert set(RULES) == set(default_config().to_dict())
    assert len(BAD) >= len(ISSUE) + 20
    assert check_values(default_config().to_dict()) == default_config().to_dict()  # every default is valid


def test_readme_gives_every_argument_a_status():
    import re

    readme = (REPO / "README.md").read_text()
    section = readme.split("\n## Train arguments\n", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1:5] for line in section.splitlines() if line.startswith("| `")]
    keys = [k for cell, *_ in rows for k in re.findall(r"`(\w+)`", cell)]
    assert sorted(keys) == sorted(default_config().to_dict())  # each key once
    statuses = [status.strip() for *_, status in rows]
    assert all(s.startswith(("as Ultralytics", "yolojax:", "no effect:")) for s in statuses), statuses
    from yolojax.config.checks import INAPPLICABLE

    no_effect = {k for (cell, *_), s in zip(rows, statuses) if s.startswith("no effect")
                 for k in re.findall(r"`(\w+)`", cell)}
    assert no_effect == set(INAPPLICABLE)  # what the table calls without effect is what training warns about


@pytest.fixture(scope="module")
def model(tiny_model_yaml):
    from yolojax import YOLO

    return YOLO(str(tiny_model_yaml))


@pytest.mark.parametrize("key, text", BAD)
def test_bad_value_stops_the_python_api_and_the_command_naming_it(key, text, model, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    value = smart_value(text)
    with pytest.raises(ConfigError) as e:  # (a short run, were the value wrongly accepted)
        model.train(**{"epochs": 1, "imgsz": 64, key: value})
    assert isinstance(e.value, ValueError)
    message = str(e.value)
    assert f"{key}=" in message and repr(value) in message and "\n" not in message, message
    assert cli.main(["detect", "train", f"{key}={text}"]) == 2
    err = capsys.readouterr().err
    assert err == f"ERROR: {message}\n", err
    assert not (tmp_path / "runs").exists()  # stopped before any run directory


def _run(args, **env):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env}, cwd=REPO)


@pytest.mark.parametrize("key, text", ISSUE)
def test_issue_values_exit_2_from_the_yolojax_process(key, text, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "yolojax", "detect", "train", f"{key}={text}"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1
    assert proc.stderr.startswith(f"ERROR: {key}={smart_value(text)!r} is not valid: {key} must be ")


def test_config_flags_get_the_same_checks_and_ultralytics_types(tmp_path):
    """``--config.k=v`` values are read as ``k=v`` is (so batch=0.5 and epochs=3.0 get past the flag parser) and
    checked by the same table: exit code 2 and the same line."""
    base = ["-m", "yolojax.train", f"--config={REPO / 'configs' / 'default.py'}", f"--workdir={tmp_path / 'run'}"]
    proc = _run(base + ["--config.lr0=abc", "--config.batch=0.5"])
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip() == "ERROR: lr0='abc' is not valid: lr0 must be a number in (0, 1]."
    proc = _run(base + ["--config.epochs=3.0", "--config.epoch=3", "--config.mosaic", "2.5"])
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "'epoch' is not a valid" in proc.stderr and "Did you mean 'epochs'" in proc.stderr  # keys first
    assert not (tmp_path / "run").exists()


def test_config_flag_words_are_split_off_with_ultralytics_value_types():
    from yolojax.config import split_flag_overrides

    argv = ["prog", "--config=configs/default.py", "--config.batch=0.5", "--config.mosaic", "2.5", "--config.rect",
            "--workdir=w", "--config.device=0,1", "--config.data=tfds:voc/2007", "--config.name", "none"]
    rest, overrides = split_flag_overrides(argv)
    assert rest == ["prog", "--config=configs/default.py", "--workdir=w"]
    assert overrides == {"batch": 0.5, "mosaic": 2.5, "rect": True, "device": (0, 1), "data": "tfds:voc/2007",
                         "name": None}


def test_cfg_yaml_values_are_checked_and_name_the_file(tmp_path):
    cfg = tmp_path / "my.yaml"
    cfg.write_text("epochs: 3\nmosaic: 2.5\n")
    with pytest.raises(ConfigError, match=rf"mosaic=2.5 in {cfg} is not valid: mosaic must be a number in \[0, 1\]"):
        check_config({**default_config().to_dict(), "cfg": str(cfg)})
    cfg.write_text("epochs: 3.0\nsave: 'false'\n")
    config = check_config({**default_config().to_dict(), "cfg": str(cfg)})
    assert (config.epochs, config.save) == (3, False)


@pytest.mark.parametrize("given, expected", [
    # batch: a memory fraction and AutoBatch are valid (Ultralytics' semantics), integral floats are sizes
    ({"batch": 0.5}, {"batch": 0.5}), ({"batch": -1}, {"batch": -1}), ({"batch": 16.0}, {"batch": 16}),
    ({"epochs": 3.0, "workers": 0, "patience": 0}, {"epochs": 3, "workers": 0, "patience": 0}),
    ({"epochs": 1e2}, {"epochs": 100}),
    ({"save": "false", "rect": "True", "val": 0, "plots": 1, "exist_ok": "1", "multi_scale": True, "profile": True},
     {"save": False, "rect": True, "val": False, "plots": True, "exist_ok": True, "multi_scale": True,
      "profile": True}),
    ({"cache": "disk", "time": 0.5, "fraction": 1}, {"cache": "disk", "time": 0.5, "fraction": 1}),
    ({"cache": "RAM"}, {"cache": "ram"}), ({"cache": True}, {"cache": True}),
    ({"optimizer": "sgd", "compat": "v8", "dtype": "bfloat16"}, {"optimizer": "SGD", "compat": "v8",
                                                                 "dtype": "bfloat16"}),
    ({"imgsz": [64, 48.0], "device": "0,1", "freeze": 3.0, "classes": 2},
     {"imgsz": [64, 48], "device": "0,1", "freeze": 3, "classes": [2]}),
    ({"device": (0, 1), "pretrained": "w.pt", "resume": "runs/detect/train", "name": 2},
     {"device": (0, 1), "pretrained": "w.pt", "resume": "runs/detect/train", "name": "2"}),
    ({"model": None, "data": None, "conf": None, "time": None}, {"model": "yolov8n.yaml", "data": "shapes",
                                                                 "conf": None, "time": None}),
    ({"hsv_on_device": "AUTO", "warp_on_device": "false"}, {"hsv_on_device": "auto", "warp_on_device": False}),
])
def test_valid_values_pass_normalised(given, expected):
    got = check_values(given)
    assert got == expected and all(type(got[k]) is type(v) for k, v in expected.items()), got


def test_valid_values_pass_on_the_command_line(monkeypatch):
    """``batch=0.5`` (a GPU memory fraction) and ``batch=-1`` (AutoBatch) get past the checks."""
    from yolojax.model import train_config

    for words in (["batch=0.5"], ["batch=-1"], ["cache=disk", "multi_scale", "rect", "time=0.5", "profile"]):
        _, _, overrides = cli.parse_args(["detect", "train", *words])
        config = train_config(overrides)
        assert {k: config[k] for k in overrides} == overrides


def test_inapplicable_arguments_are_named_with_the_reason():
    assert inapplicable_warnings(default_config().to_dict()) == []
    lines = inapplicable_warnings({**default_config().to_dict(), "label_smoothing": 0.1, "half": True,
                                   "copy_paste": 0.5})
    assert [line.split("=")[0] for line in lines] == ["WARNING: label_smoothing", "WARNING: half",
                                                       "WARNING: copy_paste"]
    assert "detection loss never reads it" in lines[0] and "amp" in lines[1] and "segment" in lines[2]


_DETERMINISM_SCRIPT = """
import os, sys
from yolojax.engine.devices import use_deterministic_ops
first = sys.argv[1] == "on"
assert use_deterministic_ops(first) is first
assert ("--xla_gpu_deterministic_ops=true" in os.environ.get("XLA_FLAGS", "")) is first
assert use_deterministic_ops(not first) is first  # the first decision of the process stands
import jax
print(float(jax.numpy.ones(3).sum()))  # XLA accepted the flag (it aborts on flags it does not know)
"""


@pytest.mark.parametrize("first", ["on", "off"])
def test_deterministic_sets_xla_flag_before_jax_starts(first):
    env = {k: v for k, v in os.environ.items() if k not in ("JAX_PLATFORMS", "XLA_FLAGS")}
    proc = subprocess.run([sys.executable, "-c", _DETERMINISM_SCRIPT, first], capture_output=True, text=True,
                          timeout=120, env=env)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("3.0"), proc.stderr


def test_deterministic_is_left_alone_once_jax_runs_or_on_cpu_only(monkeypatch):
    import jax

    from yolojax.engine import devices

    monkeypatch.setattr(devices, "_DETERMINISM", {"decided": False})
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    jax.numpy.ones(1).block_until_ready()  # this process's JAX has started (and is limited to the CPU)
    assert devices.use_deterministic_ops(True) is False and "XLA_FLAGS" not in os.environ
    monkeypatch.setenv("XLA_FLAGS", "--xla_gpu_deterministic_ops=true")  # the user's own setting is reported
    assert devices.use_deterministic_ops(False) is True
