"""Shared test setup.

* JAX's persistent compilation cache (compiles are slow on 2 CPU cores; the second run of the suite
  reuses them). It lives in the user cache (``~/.cache/yolojax/jax_tests``, or ``$YOLOJAX_TEST_JAX_CACHE``) so
  that fresh clones on the same machine share it; entries are keyed on the exact program, so a stale entry is
  never used. Subprocess tests get the same directory through ``YOLOJAX_TEST_JAX_CACHE`` (their own scripts) and
  ``YOLOJAX_COMPILE_CACHE`` (the yolojax entry points).
* The trainer's executable store off (``YOLOJAX_STEP_STORE=off``) except in the tests of the store itself.
* absl flags marked as parsed: Grain worker processes read them.
* Release assets (weights, dataset archives) point at a closed local port: no test downloads from the Internet.
* ``fixtures_dir``: the Ultralytics reference outputs, at ``$YOLOJAX_FIXTURES`` when it is set, else
  ``../shared/fixtures`` beside the repository. Without them the parity tests skip, except under CI (``CI=true``),
  where a missing fixture directory fails the run before any test: reference checks cannot disappear silently.
"""
from __future__ import annotations

import os
import pathlib

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One XLA CPU device (the entry points' default; YOLOJAX_CPU_DEVICES=N splits the CPU): pinned so that subprocess
# runs compare with in-process ones exactly. test_devices, test_train and test_val_predict test the split itself.
os.environ.setdefault("YOLOJAX_CPU_DEVICES", "1")
# The trainer's executable store (engine.executables) keys its programs on yolojax's source, so after any change to
# the package every train step of the suite would compile again, where JAX's cache (keyed on the program itself)
# still holds most of them. The store is tested where it is the subject (tests/test_executables.py turns it on).
os.environ.setdefault("YOLOJAX_STEP_STORE", "off")
# No test reaches the Internet: Ultralytics' release assets (weights, dataset zips) resolve to a closed local port
# unless a test serves them itself (tests/test_download.py).
os.environ["YOLOJAX_ASSETS_URL"] = "http://127.0.0.1:9"

import jax  # noqa: E402
import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]


def fixtures_location(environ=os.environ) -> pathlib.Path:
    """Where the reference fixtures are looked for: ``$YOLOJAX_FIXTURES``, else ``../shared/fixtures``."""
    given = environ.get("YOLOJAX_FIXTURES", "").strip()
    return pathlib.Path(given).expanduser() if given else REPO.parent / "shared" / "fixtures"


def in_ci(environ=os.environ) -> bool:
    return environ.get("CI", "").strip().lower() in ("true", "1")


FIXTURES = fixtures_location()
_CACHE = pathlib.Path(os.environ.get("YOLOJAX_TEST_JAX_CACHE",
                                     pathlib.Path.home() / ".cache" / "yolojax" / "jax_tests"))
_CACHE.mkdir(parents=True, exist_ok=True)
os.environ["YOLOJAX_TEST_JAX_CACHE"] = str(_CACHE)  # for the tests' subprocesses
os.environ["YOLOJAX_COMPILE_CACHE"] = str(_CACHE)  # the entry points' own cache, in subprocesses: the same one
jax.config.update("jax_compilation_cache_dir", str(_CACHE))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

try:
    from absl import flags as _absl_flags

    _absl_flags.FLAGS.mark_as_parsed()
except Exception:  # pragma: no cover - absl is a dependency, but never fail collection on it
    pass


def missing_fixtures_message(path: pathlib.Path) -> str:
    return (f"reference fixtures not found at {path} (set YOLOJAX_FIXTURES to the fixture directory, or put it at "
            f"../shared/fixtures beside the repository)")


def pytest_configure(config):
    if in_ci() and not FIXTURES.is_dir():
        raise pytest.UsageError(f"CI=true: {missing_fixtures_message(FIXTURES)}; the parity tests may not be skipped "
                                f"in CI.")


@pytest.fixture(scope="session")
def fixtures_dir() -> pathlib.Path:
    if not FIXTURES.is_dir():
        pytest.skip(missing_fixtures_message(FIXTURES))
    return FIXTURES


TINY_MODEL = {  # yolov8 layer table at width 1/16 (channels 8..64): compiles and trains fast on 2 CPU cores
    "nc": 80, "depth_multiple": 0.33, "width_multiple": 0.0625, "max_channels": 1024,
    "backbone": [[-1, 1, "Conv", [64, 3, 2]], [-1, 1, "Conv", [128, 3, 2]], [-1, 3, "C2f", [128, True]],
                 [-1, 1, "Conv", [256, 3, 2]], [-1, 6, "C2f", [256, True]], [-1, 1, "Conv", [512, 3, 2]],
                 [-1, 6, "C2f", [512, True]], [-1, 1, "Conv", [1024, 3, 2]], [-1, 3, "C2f", [1024, True]],
                 [-1, 1, "SPPF", [1024, 5]]],
    "head": [[-1, 1, "nn.Upsample", ["None", 2, "nearest"]], [[-1, 6], 1, "Concat", [1]], [-1, 3, "C2f", [512]],
             [-1, 1, "nn.Upsample", ["None", 2, "nearest"]], [[-1, 4], 1, "Concat", [1]], [-1, 3, "C2f", [256]],
             [-1, 1, "Conv", [256, 3, 2]], [[-1, 12], 1, "Concat", [1]], [-1, 3, "C2f", [512]],
             [-1, 1, "Conv", [512, 3, 2]], [[-1, 9], 1, "Concat", [1]], [-1, 3, "C2f", [1024]],
             [[15, 18, 21], 1, "Detect", ["nc"]]],
}


@pytest.fixture(scope="session")
def tiny_model_yaml(tmp_path_factory) -> pathlib.Path:
    """A YOLOv8 model YAML 1/16 as wide as yolov8l (yolov8n is 1/4)."""
    import yaml

    path = tmp_path_factory.mktemp("models") / "yolov8-tiny.yaml"
    path.write_text(yaml.safe_dump(TINY_MODEL))
    return path


@pytest.fixture(scope="session")
def shapes_small(tmp_path_factory) -> pathlib.Path:
    """A small synthetic shapes dataset (data.yaml path), generated once per test session."""
    from yolojax.data import make_shapes_dataset

    return make_shapes_dataset(tmp_path_factory.mktemp("data") / "shapes", n_train=32, n_val=16, seed=0)


def script_env() -> dict:
    """The environment of a test's helper script: this checkout first on PYTHONPATH, and the suite's persistent
    compile cache, so that a rerun skips the compile."""
    repo = str(pathlib.Path(__file__).resolve().parent.parent)
    return {**os.environ, "PYTHONPATH": repo + os.pathsep + os.environ.get("PYTHONPATH", ""),
            "JAX_COMPILATION_CACHE_DIR": str(jax.config.jax_compilation_cache_dir or ""),
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0.5"}


def kill_at_checkpoint(proc, ckdir: pathlib.Path, step: int, timeout: float) -> None:
    """SIGKILL the training process ``proc`` as soon as ``ckdir`` holds a checkpoint of ``step`` or later (asserting
    the run was still going), and wait for it to die."""
    import signal
    import time

    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        steps = [int(p.name) for p in ckdir.glob("*") if p.name.isdigit()] if ckdir.is_dir() else []
        if steps and max(steps) >= step:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
