"""The README's researcher's loop runs as printed: trains, advances the state, evaluates like the validator."""
from __future__ import annotations

import math
import pathlib
import re

import jax
import numpy as np

from yolojax.data import DetectionDataset, ValLoader
from yolojax.engine.validate import Validator
from yolojax.nn.yolo import init_variables

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
MARKER = "# researcher's loop"
TINY = (0.33, 0.0625, 1024)  # the tests' model width: 1/16 of yolov8l


def readme_loop() -> str:
    """The README's python block whose first line is the marker comment."""
    blocks = [b for b in re.findall(r"```python\n(.*?)```", README.read_text(), re.S) if b.startswith(MARKER)]
    assert len(blocks) == 1, f"README.md has {len(blocks)} python blocks starting with {MARKER!r}"
    return blocks[0]


def with_settings(code: str, settings: dict[str, str]) -> str:
    """``code`` with each settings line ``NAMES = ...`` replaced by ``NAMES = value``; nothing else changes."""
    for names, value in settings.items():
        pattern = re.compile(rf"^{re.escape(names)} = .*$", re.M)
        assert len(pattern.findall(code)) == 1, f"the README loop has no single line '{names} = ...'"
        code = pattern.sub(lambda _: f"{names} = {value}", code)
    return code


def test_readme_researchers_loop_trains_and_evaluates(shapes_small):
    code = with_settings(readme_loop(), {"DATA": repr(str(shapes_small)), "IMGSZ, BATCH, EPOCHS": "64, 8, 1",
                                         "MULTIPLES": repr(TINY)})
    ns: dict = {}
    exec(compile(code, "README.md (researcher's loop)", "exec"), ns)

    model, state, train_ds = ns["model"], ns["state"], ns["train_ds"]
    assert model.resolved_multiples() == TINY and train_ds.imgsz == 64
    steps = math.ceil(len(train_ds) / 8)  # one epoch of batches of 8 (the last one completed)
    assert int(state.step) == steps and int(state.ema_updates) == steps  # every batch was an optimizer step
    loss = float(ns["train_metrics"]["loss"])
    assert np.isfinite(loss) and loss > 0

    start = jax.tree.leaves(init_variables(model, seed=0)["params"])
    trained = jax.tree.leaves(state.params)
    assert len(start) == len(trained) and all(np.isfinite(np.asarray(p)).all() for p in trained)
    moved = sum(not np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(start, trained))
    assert moved > len(start) // 2, f"only {moved} of {len(start)} parameter arrays changed"

    out = ns["out"]  # the last validation batch's eval_step outputs, fixed-size
    assert out["boxes"].shape == (8, 300, 4) and out["scores"].shape == out["classes"].shape == (8, 300)
    assert out["valid"].shape == (8, 300) and out["valid"].dtype == bool
    assert ns["stats"].seen == len(ns["val_ds"])

    # The hand-written evaluation collects the validator's statistics (every detection's score, class and
    # true-positive row, every label) on the same weights and batches, so it reports the validator's numbers.
    val_ds = DetectionDataset.from_config(str(shapes_small), "val", imgsz=64, verbose=False)
    validator = Validator(model, ValLoader(val_ds, batch_size=8, rect=False), val_ds.names, compute_loss=False,
                          confusion=False)
    result = validator(state.ema_variables)
    got, expected = ns["stats"].stats(), result.accumulator.stats()
    assert len(expected["conf"]) > 0 and len(expected["target_cls"]) > 0  # detections and labels to compare
    for key in ("tp", "pred_cls", "target_cls", "target_img"):
        np.testing.assert_array_equal(got[key], expected[key], err_msg=key)
    np.testing.assert_allclose(got["conf"], expected["conf"], rtol=1e-6)
    mine, theirs = ns["stats"].compute().results_dict, result.metrics.results_dict
    assert mine.keys() == theirs.keys()
    np.testing.assert_allclose([mine[k] for k in mine], [theirs[k] for k in mine], rtol=1e-6, atol=1e-9)
