"""The detection loss and the assigner against Ultralytics' own outputs (fixtures/v82 = default semantics,
fixtures/v84 = compat="current"), plus padding invariance, jit/vmap/grad and sharding."""
from __future__ import annotations

import functools
import json
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import script_env

from yolojax.loss import (
    detection_loss,
    detection_loss_from_head,
    dfl_loss,
    targets_from_yolo,
    task_aligned_assign,
)

CASES = [("v82", "v8"), ("v84", "current")]
ITEMS = ("box_loss", "cls_loss", "dfl_loss")
IMAGE_HW = (64, 64)


def _load(fixtures_dir, version, name):
    return dict(np.load(fixtures_dir / version / f"{name}.npz"))


def _head(d):
    """Fixture head outputs (B, C, A) torch layout -> (B, A, 64), (B, A, 80)."""
    return d["pred_boxes"].transpose(0, 2, 1), d["pred_scores"].transpose(0, 2, 1)


def _targets(d, max_boxes=None):
    return targets_from_yolo(d["batch_idx"], d["cls"], d["bboxes"], 2, IMAGE_HW, max_boxes)


def _rel_err(got, ref):
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    return np.abs(got - ref).max() / np.abs(ref).max()


@functools.lru_cache(maxsize=None)
def _assign_fn(compat):
    return jax.jit(functools.partial(task_aligned_assign, compat=compat))


@functools.lru_cache(maxsize=None)
def _loss_and_grad_fn(compat):
    def loss(pred_distri, pred_scores, targets):
        return detection_loss_from_head(pred_distri, pred_scores, targets, image_hw=IMAGE_HW, compat=compat)

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))


def _assert_assignment_equal(out, ref):
    np.testing.assert_array_equal(np.asarray(out["fg_mask"]), ref["fg_mask"].astype(bool))
    np.testing.assert_array_equal(np.asarray(out["target_gt_idx"]), ref["target_gt_idx"])
    np.testing.assert_array_equal(np.asarray(out["target_labels"]), ref["target_labels"])
    np.testing.assert_allclose(np.asarray(out["target_bboxes"]), ref["target_bboxes"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(np.asarray(out["target_scores"]), ref["target_scores"], rtol=0, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------
def test_dfl_loss_matches_ultralytics(fixtures_dir):
    for version in ("v82", "v84"):
        units = _load(fixtures_dir, version, "loss_units")
        logits = units["dfl_logits"].reshape(40, 64)  # 40 anchors x (4 sides x 16 bins)
        got = jax.jit(dfl_loss)(logits, units["dfl_target"])  # targets outside [0, 14.99] exercise the clamp
        np.testing.assert_allclose(np.asarray(got), units["dfl_loss"][:, 0], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("version,compat", CASES)
def test_assigner_synthetic(fixtures_dir, version, compat):
    d = _load(fixtures_dir, version, "assigner_synth")
    meta = json.loads((fixtures_dir / version / "loss_fixtures.json").read_text())["assigner_synth"]
    out = _assign_fn(compat)(d["pd_scores"], d["pd_bboxes"], d["anc_points"], d["gt_labels"][..., 0].astype(np.int32),
                             d["gt_bboxes"], d["mask_gt"][..., 0] > 0)
    _assert_assignment_equal(out, d)
    assert np.asarray(out["fg_mask"]).sum(1).tolist() == meta["num_fg"]
    np.testing.assert_allclose(np.asarray(out["target_scores"]).sum((1, 2)), meta["target_scores_sum"], rtol=1e-5)


def test_compat_switch_changes_small_box_assignment(fixtures_dir):
    """The 8.4 small-gt enlargement adds anchors (50/26/4 vs 46/26/1); v8 mode must not add them."""
    d = _load(fixtures_dir, "v84", "assigner_synth")
    args = (d["pd_scores"], d["pd_bboxes"], d["anc_points"], d["gt_labels"][..., 0].astype(np.int32), d["gt_bboxes"],
            d["mask_gt"][..., 0] > 0)
    v8 = np.asarray(_assign_fn("v8")(*args)["fg_mask"]).sum(1)
    current = np.asarray(_assign_fn("current")(*args)["fg_mask"]).sum(1)
    assert v8.tolist() == [46, 26, 1] and current.tolist() == [50, 26, 4]
    with pytest.raises(ValueError, match="compat"):
        task_aligned_assign(*args, compat="v5")


@pytest.mark.parametrize("version,compat", CASES)
def test_assigner_on_loss_inputs(fixtures_dir, version, compat):
    d = _load(fixtures_dir, version, "loss_b2_64")
    out = _assign_fn(compat)(d["assign_in/pd_scores"], d["assign_in/pd_bboxes"], d["assign_in/anc_points"],
                             d["assign_in/gt_labels"][..., 0].astype(np.int32), d["assign_in/gt_bboxes"],
                             d["assign_in/mask_gt"][..., 0] > 0)
    _assert_assignment_equal(out, {k[len("assign_out/"):]: v for k, v in d.items() if k.startswith("assign_out/")})


def test_assigner_without_ground_truth(fixtures_dir):
    d = _load(fixtures_dir, "v82", "loss_b2_64_empty")  # M = 0: Ultralytics' early return
    out = task_aligned_assign(d["assign_in/pd_scores"], d["assign_in/pd_bboxes"], d["assign_in/anc_points"],
                              np.zeros((2, 0), np.int32), np.zeros((2, 0, 4), np.float32), np.zeros((2, 0), bool))
    _assert_assignment_equal(out, {k[len("assign_out/"):]: v for k, v in d.items() if k.startswith("assign_out/")})


def test_targets_from_yolo(fixtures_dir):
    d = _load(fixtures_dir, "v82", "loss_b2_64")
    t = _targets(d)
    np.testing.assert_array_equal(t["boxes"], d["assign_in/gt_bboxes"])
    np.testing.assert_array_equal(t["classes"], d["assign_in/gt_labels"][..., 0].astype(np.int32))
    np.testing.assert_array_equal(t["mask"], d["assign_in/mask_gt"][..., 0] > 0)
    padded = _targets(d, max_boxes=24)
    assert padded["boxes"].shape == (2, 24, 4) and padded["mask"].sum() == 6
    np.testing.assert_array_equal(padded["boxes"][:, :6], t["boxes"])
    with pytest.raises(ValueError, match="image 1 of the batch has 6 boxes but max_boxes=4"):
        _targets(d, max_boxes=4)
    with pytest.raises(ValueError, match="batch_idx"):
        targets_from_yolo(d["batch_idx"] + 1, d["cls"], d["bboxes"], 2, IMAGE_HW)


# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("version,compat", CASES)
@pytest.mark.parametrize("name", ["loss_b2_64", "loss_b2_64_empty"])
def test_loss_and_head_gradients_match_ultralytics(fixtures_dir, version, compat, name):
    d = _load(fixtures_dir, version, name)
    pred_distri, pred_scores = _head(d)
    # v82 "empty" runs the static M = 0 path; v84 "empty" pads to the 6 rows of the other case (all masked),
    # which also shares that case's compiled function.
    targets = _targets(d, max_boxes=6 if version == "v84" else None)
    (total, items), (grad_distri, grad_scores) = _loss_and_grad_fn(compat)(pred_distri, pred_scores, targets)
    assert total.dtype == jnp.float32
    np.testing.assert_allclose(float(total), float(d["total_loss"]), rtol=1e-5)
    for key, ref in zip(ITEMS, d["loss_items"]):
        if ref == 0:  # empty foreground: box and DFL terms are exactly zero
            assert float(items[key]) == 0.0, key
        else:
            np.testing.assert_allclose(float(items[key]), float(ref), rtol=1e-5, err_msg=key)
    ref_distri, ref_scores = d["grad_pred_boxes"].transpose(0, 2, 1), d["grad_pred_scores"].transpose(0, 2, 1)
    if not ref_distri.any():
        assert not np.asarray(grad_distri).any()
    else:
        assert _rel_err(grad_distri, ref_distri) < 1e-4
    assert _rel_err(grad_scores, ref_scores) < 1e-4


def test_padding_invariance(fixtures_dir):
    """M = 6 real rows vs 4M rows whose extra (masked) rows hold garbage: identical loss and gradients."""
    d = _load(fixtures_dir, "v82", "loss_b2_64")
    pred_distri, pred_scores = _head(d)
    tight = _targets(d)
    wide = _targets(d, max_boxes=24)
    rng = np.random.default_rng(0)
    wide["boxes"][~wide["mask"]] = rng.uniform(0, 64, (int((~wide["mask"]).sum()), 4)).astype(np.float32)
    wide["classes"][~wide["mask"]] = rng.integers(0, 80, int((~wide["mask"]).sum()))
    fn = _loss_and_grad_fn("v8")
    (total_a, items_a), grads_a = fn(pred_distri, pred_scores, tight)
    (total_b, items_b), grads_b = fn(pred_distri, pred_scores, wide)
    np.testing.assert_allclose(float(total_b), float(total_a), rtol=1e-6)
    for key in ITEMS:
        np.testing.assert_allclose(float(items_b[key]), float(items_a[key]), rtol=1e-6)
    for a, b in zip(grads_a, grads_b):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-9)


def test_vmap_over_batches_with_and_without_targets(fixtures_dir):
    """vmap over two batches (6 boxes / none, both padded to 6 rows) reproduces each Ultralytics total."""
    full = _load(fixtures_dir, "v82", "loss_b2_64")
    empty = _load(fixtures_dir, "v82", "loss_b2_64_empty")
    heads = [_head(full), _head(empty)]
    targets = [_targets(full), _targets(empty, max_boxes=6)]
    assert not targets[1]["mask"].any()
    stacked_heads = [np.stack(parts) for parts in zip(*heads)]
    stacked_targets = jax.tree.map(lambda *xs: np.stack(xs), *targets)

    def loss(pred_distri, pred_scores, targets):
        return detection_loss_from_head(pred_distri, pred_scores, targets, image_hw=IMAGE_HW)[0]

    totals, (grad_distri, grad_scores) = jax.jit(jax.vmap(jax.value_and_grad(loss, argnums=(0, 1))))(
        *stacked_heads, stacked_targets)
    np.testing.assert_allclose(np.asarray(totals), [full["total_loss"], empty["total_loss"]], rtol=1e-5)
    assert np.isfinite(np.asarray(grad_distri)).all() and np.isfinite(np.asarray(grad_scores)).all()
    assert not np.asarray(grad_distri[1]).any()
    assert _rel_err(grad_scores[1], empty["grad_pred_scores"].transpose(0, 2, 1)) < 1e-4


def test_detection_loss_on_nhwc_levels_and_bfloat16(fixtures_dir):
    """The public entry point takes the model's NHWC level maps; bfloat16 maps are upcast and the loss is
    float32."""
    d = _load(fixtures_dir, "v82", "loss_b2_64")
    flat = np.concatenate(_head(d), axis=-1)  # (B, A, 144)
    levels, start = [], 0
    for size in (8, 4, 2):
        levels.append(flat[:, start:start + size * size].reshape(2, size, size, 144))
        start += size * size
    targets = _targets(d)
    fn = jax.jit(functools.partial(detection_loss, num_classes=80))
    total, items = fn(levels, targets)
    np.testing.assert_allclose(float(total), float(d["total_loss"]), rtol=1e-5)

    bf16_levels = [jnp.asarray(level, jnp.bfloat16) for level in levels]
    total_bf16, _ = fn(bf16_levels, targets)
    total_upcast, _ = fn([np.asarray(level.astype(jnp.float32)) for level in bf16_levels], targets)
    assert total_bf16.dtype == jnp.float32
    assert float(total_bf16) == float(total_upcast)
    with pytest.raises(ValueError, match="num_classes"):
        detection_loss(levels, targets, num_classes=7)


_SHARDED_SCRIPT = textwrap.dedent("""
    import os, sys, json
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    os.environ["JAX_PLATFORMS"] = "cpu"
    import jax, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from yolojax.loss import detection_loss_from_head, targets_from_yolo
    d = np.load(sys.argv[1])
    t = targets_from_yolo(d["batch_idx"], d["cls"], d["bboxes"], 2, (64, 64))
    mesh = Mesh(np.array(jax.devices()), ("data",))
    batch = NamedSharding(mesh, P("data"))
    args = jax.device_put((d["pred_boxes"].transpose(0, 2, 1), d["pred_scores"].transpose(0, 2, 1), t), batch)
    fn = jax.jit(jax.value_and_grad(
        lambda a, b, t: detection_loss_from_head(a, b, t, image_hw=(64, 64))[0], argnums=(0, 1)))
    total, (ga, gb) = fn(*args)
    print(json.dumps({"devices": len(jax.devices()), "total": float(total),
                      "grad_sharded": len(gb.sharding.device_set)}))
""")


def test_loss_on_a_batch_sharded_over_two_devices(fixtures_dir, tmp_path):
    script = tmp_path / "sharded.py"
    script.write_text(_SHARDED_SCRIPT)
    env = script_env()
    proc = subprocess.run([sys.executable, str(script), str(fixtures_dir / "v82" / "loss_b2_64.npz")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["devices"] == 2 and result["grad_sharded"] == 2
    ref = float(np.load(fixtures_dir / "v82" / "loss_b2_64.npz")["total_loss"])
    np.testing.assert_allclose(result["total"], ref, rtol=1e-5)
