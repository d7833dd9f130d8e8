"""The validation step compiled ahead (``engine.background.compile_validation``): the loop starts it beside the train
step's first compile, so the first validation compiles nothing."""
from __future__ import annotations

import jax
import numpy as np
import pytest

from yolojax.data.dataset import DetectionDataset
from yolojax.data.loader import ValLoader
from yolojax.engine.background import compile_validation, compiles_ahead
from yolojax.engine import validate as validate_module
from yolojax.engine.validate import Validator
from yolojax.nn.yolo import YOLOv8, init_variables

BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"  # the event JAX records for each XLA compile


@pytest.fixture(scope="module")
def val_loader(shapes_small):
    ds = DetectionDataset.from_config(str(shapes_small), "val", imgsz=64, verbose=False)
    return ValLoader(ds, batch_size=4, rect=True)


def _compiles(fn) -> int:
    """How many XLA compiles ``fn()`` ran."""
    seen = []

    def listener(event, seconds, **_):
        if event == BACKEND_COMPILE:
            seen.append(seconds)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        fn()
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    return len(seen)


def test_shape_batches_are_the_first_batch_of_each_shape_of_a_pass(val_loader):
    first: dict[tuple, dict] = {}
    for batch in val_loader:
        first.setdefault(batch["images"].shape, batch)
    assert len(first) > 1  # the set mixes aspect ratios: rectangular batches of two shapes
    got = val_loader.shape_batches()
    assert [b["images"].shape for b in got] == list(first)
    for batch, ref in zip(got, first.values()):
        assert batch.keys() == ref.keys()
        for k in ref:
            np.testing.assert_array_equal(batch[k], ref[k])


def test_the_first_validation_after_compile_validation_compiles_nothing(val_loader, tiny_model_yaml, monkeypatch):
    monkeypatch.setattr(validate_module, "store_for_run", lambda: None)  # compiles to count, not programs to load
    model = YOLOv8.from_yaml(str(tiny_model_yaml), num_classes=6)
    variables = init_variables(model, seed=0)
    names = dict(enumerate("abcdef"))
    # two max_det values: two jitted steps (validators of equal settings share one), neither compiled yet
    cold = Validator(model, val_loader, names, max_det=101)
    assert _compiles(lambda: cold(variables)) >= len(val_loader.shapes)  # the probe sees a pass's compiles
    ahead = Validator(model, val_loader, names, max_det=102)
    compile_validation(ahead, variables).result()
    result = None

    def validate():
        nonlocal result
        result = ahead(variables)

    assert _compiles(validate) == 0
    assert result.seen == len(val_loader.dataset)


def test_only_validators_with_dispatch_and_shape_batches_are_compiled_ahead(val_loader, tiny_model_yaml):
    model = YOLOv8.from_yaml(str(tiny_model_yaml), num_classes=6)
    assert compiles_ahead(Validator(model, val_loader, dict(enumerate("abcdef"))))
    assert not compiles_ahead(lambda variables: {})  # a task's own validator function: validated as it is
    assert not compiles_ahead(Validator(model, [], dict(enumerate("abcdef"))))  # a loader without shape_batches
