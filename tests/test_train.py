"""The trainer end to end: a real run learns, writes a complete run directory, and resumes exactly."""
from __future__ import annotations

import importlib.util
import os
import pathlib
import random
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import kill_at_checkpoint

from yolojax.config import ConfigError, apply_overrides, default_config

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_unknown_config_key_names_the_closest():
    with pytest.raises(ConfigError, match="Did you mean 'epochs'"):
        apply_overrides(default_config(), {"epoch": 3})
    with pytest.raises(ConfigError, match="Did you mean 'imgsz'"):
        apply_overrides(default_config(), {"img_size": 64})


def test_run_dirs_increment_and_never_overwrite(tmp_path):
    from yolojax.config import run_dir

    cfg = apply_overrides(default_config(), {"project": str(tmp_path), "name": "train"})
    first = run_dir(cfg)
    assert first == tmp_path / "train"
    first.mkdir()
    assert run_dir(cfg) == tmp_path / "train2"
    (tmp_path / "train2").mkdir()
    assert run_dir(cfg) == tmp_path / "train3"
    assert run_dir(apply_overrides(cfg, {"exist_ok": True})) == tmp_path / "train"


@pytest.fixture(scope="module")
def e2e_run(tiny_model_yaml, tmp_path_factory):
    """One real training run on the synthetic shapes (tiny model, 64 px), shared by the tests below."""
    from yolojax.data import make_shapes_dataset
    from yolojax.train import train_and_evaluate

    data = make_shapes_dataset(tmp_path_factory.mktemp("e2e_data") / "shapes", n_train=64, n_val=16, seed=0)
    workdir = tmp_path_factory.mktemp("e2e") / "train"
    # nbs=8 with batch 8: an optimizer step every batch (the default nbs=64 would accumulate 8 batches, one
    # step per epoch of these 64 images); AdamW at 0.004 without warmup gets a 1/16-width model going fast.
    cfg = apply_overrides(default_config(), dict(
        model=str(tiny_model_yaml), data=str(data), imgsz=64, batch=8, nbs=8, epochs=30, close_mosaic=5,
        workers=0, optimizer="AdamW", lr0=0.004, momentum=0.9, warmup_epochs=0.0, val=False, plots=False,
        tensorboard=False, seed=0))
    t0 = time.time()
    seen = {}
    out = train_and_evaluate(cfg, workdir, callbacks={"on_train_end": [lambda ctx: seen.update(ctx=ctx)]})
    return out, workdir, time.time() - t0, seen["ctx"]


@pytest.mark.slow
def test_training_learns_and_writes_the_run_directory(e2e_run):
    from yolojax.report.results import read_results_csv

    out, workdir, _, _ = e2e_run
    for rel in ("args.yaml", "results.csv", "weights/last.npz", "weights/best.npz"):
        assert (workdir / rel).is_file(), rel
    assert any((workdir / "weights" / "ckpt").iterdir())
    rows = read_results_csv(workdir / "results.csv")
    assert [r["epoch"] for r in rows] == list(range(1, 31))
    first = sum(rows[0][f"train/{k}"] for k in ("box_loss", "cls_loss", "dfl_loss"))
    last = sum(rows[-1][f"train/{k}"] for k in ("box_loss", "cls_loss", "dfl_loss"))
    assert last < 0.8 * first, (first, last)
    # An untrained head scores every class ~1e-5 (Ultralytics' bias init), below the 0.001 validation threshold:
    # no detections, mAP50 exactly 0. This setting reached 0.20 (2-core CPU); 0.1 is far above chance and leaves
    # room for other machines' floating-point differences.
    assert out["metrics/mAP50(B)"] > 0.1, out
    assert rows[-1]["metrics/mAP50(B)"] == pytest.approx(out["metrics/mAP50(B)"], abs=0.05)


@pytest.mark.slow
def test_a_run_compiles_few_train_step_shapes(e2e_run):
    """Issue 10: at most 5 distinct compiled train-step shapes per run. Here 30 epochs, mosaic on then off for the
    last 5 (box counts per batch change a lot): images always (8, 64, 64, 3), boxes padded to a bucket."""
    from yolojax.data.batching import BUCKETS

    shapes = e2e_run[3].step_shapes
    assert 1 <= len(shapes) <= 5 and len(set(shapes)) == len(shapes), shapes
    for images, boxes in shapes:
        assert images == (8, 64, 64, 3) and boxes[0] == 8 and boxes[1] in BUCKETS and boxes[2] == 4, shapes


@pytest.mark.slow
def test_standalone_val_of_the_trained_weights_with_save_json(e2e_run, tmp_path):
    """The run's best weights, validated standalone, reproduce the trainer's final numbers; save_json writes
    COCO files and, when pycocotools is installed, COCO's own AP lands near ours."""
    import json

    from yolojax.val import validate_weights

    out, workdir, _, _ = e2e_run
    data = json.loads(json.dumps(__import__("yaml").safe_load((workdir / "args.yaml").read_text())))["data"]
    m = validate_weights(workdir / "weights" / "best.npz", data, imgsz=64, batch=32, save_json=True,
                         project=str(tmp_path), name="val")
    assert m.box.map50 == pytest.approx(out["metrics/mAP50(B)"], abs=1e-6)
    preds = json.loads((tmp_path / "val" / "predictions.json").read_text())
    anno = json.loads((tmp_path / "val" / "annotations.json").read_text())
    assert len(anno["images"]) == 16 and len(anno["annotations"]) > 0
    assert preds and all(set(p) == {"image_id", "category_id", "bbox", "score"} for p in preds[:10])
    if importlib.util.find_spec("pycocotools") is None:
        return
    from yolojax.report.coco_json import coco_evaluate

    coco = coco_evaluate(tmp_path / "val" / "predictions.json", tmp_path / "val" / "annotations.json")
    # COCO interpolates recall differently and ignores nothing here; on the fixture data the two agree to 0.004
    assert abs(coco["AP50-95"] - m.box.map) < 0.05


def _train_cmd(workdir, model, data, extra=()):
    return [sys.executable, "-m", "yolojax.train", f"--config={REPO / 'configs' / 'default.py'}",
            f"--workdir={workdir}", f"--config.model={model}", f"--config.data={data}", "--config.imgsz=64",
            "--config.batch=8", "--config.epochs=2", "--config.close_mosaic=1", "--config.workers=0",
            "--config.val=False", "--config.plots=False", "--config.checkpoint_every=1", "--config.warmup_epochs=0",
            *extra]


def _env(cpu_split: bool = False):
    env = dict(os.environ)
    if cpu_split:  # data parallel over 2 XLA CPU devices (YOLOJAX_CPU_DEVICES), not conftest's pinned 1
        env["YOLOJAX_CPU_DEVICES"] = "2"
    env.update(JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=os.environ["YOLOJAX_TEST_JAX_CACHE"],
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.5", PYTHONUNBUFFERED="1")
    return env


def _final_state(workdir: pathlib.Path):
    """(step, {path: array}) of the run's latest checkpoint, read without a template (any device count)."""
    from yolojax.engine.checkpoint import Checkpointer

    ck = Checkpointer(workdir / "weights" / "ckpt")
    step = ck.latest_step()
    arrays = ck.read_arrays(step)
    ck.close()
    return step, arrays


def _group(arrays: dict, key: str) -> dict:
    """The arrays of one part of the train state (``params``, ``opt_state``, ...)."""
    part = {k: v for k, v in arrays.items() if k.startswith(f"['{key}']")}
    assert part, key
    return part


def _assert_states_equal(a: dict, b: dict, keys=("params", "batch_stats", "opt_state", "ema_params",
                                                 "ema_batch_stats", "ema_updates")):
    for key in keys:
        pa, pb = _group(a, key), _group(b, key)
        assert pa.keys() == pb.keys(), key
        for k in pa:
            np.testing.assert_array_equal(pa[k], pb[k], err_msg=k)


@pytest.fixture(scope="module")
def full_run(tiny_model_yaml, shapes_small, tmp_path_factory):
    """An uninterrupted 2-epoch run (32 images, batch 8: 4 steps an epoch, a checkpoint after every step) on 2 XLA
    CPU devices (YOLOJAX_CPU_DEVICES=2), the reference of the exactness tests below."""
    full = tmp_path_factory.mktemp("full_run") / "full"
    subprocess.run(_train_cmd(full, tiny_model_yaml, shapes_small), env=_env(cpu_split=True), check=True,
                   capture_output=True, timeout=600)
    return full


@pytest.mark.slow
def test_kill_9_mid_epoch_then_resume_is_bit_identical(full_run, tiny_model_yaml, shapes_small, tmp_path):
    """Killed at a random step, resumed: the same state as the uninterrupted run, on the data-parallel step too."""
    full = full_run
    killed = tmp_path / "killed"
    target = random.Random().choice([1, 2, 3, 5, 6, 7])  # not an epoch end
    proc = subprocess.Popen(_train_cmd(killed, tiny_model_yaml, shapes_small), env=_env(cpu_split=True),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kill_at_checkpoint(proc, killed / "weights" / "ckpt", target, timeout=600)
    assert not (killed / "weights" / "last.npz").exists() or target > 4
    res = subprocess.run(_train_cmd(killed, tiny_model_yaml, shapes_small, [f"--config.resume={killed}"]),
                         env=_env(cpu_split=True), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Resuming training" in res.stdout
    step_full, state_full = _final_state(full)
    step_res, state_res = _final_state(killed)
    assert step_full == step_res == 8
    _assert_states_equal(state_full, state_res)
    a, b = np.load(full / "weights" / "last.npz"), np.load(killed / "weights" / "last.npz")
    for k in a.files:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    from yolojax.report.results import read_results_csv

    assert [r["epoch"] for r in read_results_csv(killed / "results.csv")] == [1, 2]
    # resuming a finished run says so and changes nothing
    again = subprocess.run(_train_cmd(killed, tiny_model_yaml, shapes_small, [f"--config.resume={killed}"]),
                           env=_env(cpu_split=True), capture_output=True, text=True, timeout=600)
    assert again.returncode != 0 and "is finished, nothing to resume" in (again.stdout + again.stderr)
    # ... and extending it with more epochs works on another device count (here one device): the checkpoint is
    # read onto the new mesh
    more = subprocess.run(_train_cmd(killed, tiny_model_yaml, shapes_small, [f"--config.resume={killed}",
                                                                            "--config.epochs=3"]),
                          env=_env(), capture_output=True, text=True, timeout=600)
    assert more.returncode == 0, more.stderr[-3000:]
    assert "Resuming training" in more.stdout and "jax-" in more.stdout and " CPU\n" in more.stdout
    assert [r["epoch"] for r in read_results_csv(killed / "results.csv")] == [1, 2, 3]
    assert _final_state(killed)[0] == 12


def _run_with_pictures(run, model, data, *flags):
    """``full_run``'s training with ``flags``, plots on, checkpoints only at epoch ends (only the end state is read)."""
    res = subprocess.run(_train_cmd(run, model, data, [*flags, "--config.plots=True", "--config.checkpoint_every=0"]),
                         env=_env(cpu_split=True), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


@pytest.mark.slow
def test_hsv_jitter_in_the_train_step_trains_the_same_parameters(full_run, tiny_model_yaml, shapes_small, tmp_path):
    """config.hsv_on_device=True (the default on GPU/TPU): the loader leaves the HSV jitter to the train step, which
    reproduces OpenCV's pixels, so the run ends in the very state of the host-jitter run; the train-batch plots
    show the jittered images."""
    run = tmp_path / "hsv"
    res = _run_with_pictures(run, tiny_model_yaml, shapes_small, "--config.hsv_on_device=True")
    assert "dataloader workers (HSV jitter in the train step)" in res.stdout
    # `python -m yolojax.train` restarted itself with glibc's huge-page malloc (yolojax.hostenv)
    assert ("Host malloc: transparent huge pages" in res.stdout) == sys.platform.startswith("linux")
    (step_a, a), (step_b, b) = _final_state(full_run), _final_state(run)
    assert step_a == step_b == 8
    _assert_states_equal(a, b)
    assert (run / "train_batch0.jpg").is_file()


@pytest.mark.slow
def test_mosaic_and_warp_in_the_train_step_train_the_same_model(full_run, tiny_model_yaml, shapes_small, tmp_path):
    """config.warp_on_device=True (the default on GPU/TPU): the loader ships the batch's decoded images and a plan per
    sample; the train step composes the mosaics (and, after close_mosaic, the letterboxed images), warps, flips and
    jitters them. Its pixels are OpenCV's but for one grey level in about 1 pixel in 10,000: the epochs' losses are
    the host-augmented run's to 4 digits (the assigner's choices may flip on such a pixel, so the weights drift
    apart a little: 1e-3 after 8 steps here); the train-batch plots show the images the step made."""
    run = tmp_path / "warp"
    res = _run_with_pictures(run, tiny_model_yaml, shapes_small, "--config.warp_on_device=True")
    assert "dataloader workers (mosaic, affine warp, flips and HSV jitter in the train step)" in res.stdout
    (step_a, a), (step_b, b) = _final_state(full_run), _final_state(run)
    assert step_a == step_b == 8
    from yolojax.report.results import read_results_csv

    rows_a, rows_b = read_results_csv(full_run / "results.csv"), read_results_csv(run / "results.csv")
    for ra, rb in zip(rows_a, rows_b, strict=True):
        for k in ("train/box_loss", "train/cls_loss", "train/dfl_loss"):
            assert rb[k] == pytest.approx(ra[k], rel=1e-3), (ra["epoch"], k)
    pa, pb = _group(a, "params"), _group(b, "params")
    assert pa.keys() == pb.keys()
    for k in pa:
        np.testing.assert_allclose(pb[k], pa[k], rtol=0, atol=1e-2, err_msg=k)
    assert (run / "train_batch0.jpg").is_file() and (run / "train_batch4.jpg").is_file()  # mosaic, then letterbox
