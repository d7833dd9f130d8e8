"""Loss gradients through the whole yolov8n, against Ultralytics (fixtures/v82/loss_b2_64*.npz).

The model is imported from the Ultralytics state dict (model/model_n_state_dict.npz) and run in train mode (BN
on batch statistics), the v8 loss is applied to its three level maps, and the gradient of the total w.r.t. the
parameters is mapped back to Ultralytics names and layouts and compared with the 12 listed ``grad/<param>``.
"""
from __future__ import annotations


import jax
import numpy as np
import pytest

from yolojax.loss import detection_loss, targets_from_yolo
from yolojax.weights import load, to_state_dict

MAX_BOXES = 6  # both cases padded to the same M, so one compiled function serves them


@pytest.fixture(scope="module")
def model_and_grad_fn(fixtures_dir):
    model, variables = load(fixtures_dir / "model" / "model_n_state_dict.npz")

    def total_loss(params, batch_stats, images, targets):
        levels, _ = model.apply({"params": params, "batch_stats": batch_stats}, images, train=True,
                                mutable=["batch_stats"])
        return detection_loss(levels, targets, num_classes=model.num_classes)

    return variables, jax.jit(jax.value_and_grad(total_loss, has_aux=True))


@pytest.mark.parametrize("name", ["loss_b2_64", "loss_b2_64_empty"])
def test_parameter_gradients_match_ultralytics(fixtures_dir, model_and_grad_fn, name):
    variables, grad_fn = model_and_grad_fn
    d = np.load(fixtures_dir / "v82" / f"{name}.npz")
    images = d["x"].transpose(0, 2, 3, 1)  # NCHW -> NHWC
    targets = targets_from_yolo(d["batch_idx"], d["cls"], d["bboxes"], 2, images.shape[1:3], MAX_BOXES)
    (total, _), grads = grad_fn(variables["params"], variables["batch_stats"], images, targets)
    np.testing.assert_allclose(float(total), float(d["total_loss"]), rtol=1e-4)

    grads_by_key = to_state_dict(grads, include_buffers=False)
    listed = [k[len("grad/"):] for k in d.files if k.startswith("grad/")]
    assert len(listed) == 12
    for key in listed:
        ref = d[f"grad/{key}"]
        got = grads_by_key[key]
        assert got.shape == ref.shape, key
        if not ref.any():  # e.g. the box branch when there is no foreground
            assert not got.any(), key
            continue
        rel = np.abs(got.astype(np.float64) - ref).max() / np.abs(ref).max()
        assert rel < 1e-3, f"{key}: max |diff| / max |ref| = {rel:.2e}"
