"""Classification training through the engine (``yolojax.tasks.classify.ClassificationTask``): yolov8n-cls at 32 px
on a tiny synthetic class-folder set (6 classes, 8 train / 4 val images each; 2 train images each for the resume).

The end-to-end runs check the results.csv columns, learning above chance, best/last weights that validate to the
numbers reported, and exact resume after a kill -9 (with dropout, on 2 CPU devices) against an uninterrupted run,
which itself matches a 1-device run within float tolerance. The fast tests check task selection, the one-line
refusals, the image-size default, the dropout key of the train step and the classification pictures.
"""
from __future__ import annotations

import os
import pathlib
import random
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import kill_at_checkpoint

from yolojax.config import ConfigError, apply_overrides, check_config, default_config
from yolojax.report.results import CLASSIFY_COLUMNS, read_results_csv

REPO = pathlib.Path(__file__).resolve().parents[1]
NC = 6  # the synthetic set's classes


@pytest.fixture(scope="module")
def cls_dir():
    from yolojax.data.synthetic import shapes_cls_dir

    return shapes_cls_dir(n_train=8, n_val=4, size=32)


def _config(data, **kw):
    base = dict(model="yolov8n-cls.yaml", data=str(data), imgsz=32, batch=4, epochs=2, workers=0, plots=False,
                tensorboard=False, auto_augment=None, erasing=0.0, hsv_h=0.0, hsv_s=0.0, hsv_v=0.0,
                warmup_epochs=0.0)
    return check_config(apply_overrides(default_config(), {**base, **kw}))


# ------------------------------------------------------------------------------------------------ task selection


def test_the_model_or_task_key_picks_classification_and_its_image_size(cls_dir, fixtures_dir):
    from yolojax.config import run_dir
    from yolojax.tasks import configure, task_for

    assert task_for(_config(cls_dir)).name == "classify"  # a -cls YAML, task left at its default
    assert task_for(_config(cls_dir, model=str(fixtures_dir / "cls" / "model_n_cls_state_dict.npz"))).name == \
        "classify"  # a classification checkpoint
    assert task_for(_config(cls_dir, task="classify")).name == "classify"
    assert task_for(_config("coco8.yaml", model="yolov8n.yaml")).name == "detect"
    config, task = configure(_config(cls_dir, imgsz=None))
    assert (task.name, config.task, config.imgsz) == ("classify", "classify", 224)  # Ultralytics' cls default
    config, _ = configure(_config(cls_dir, imgsz=64))
    assert config.imgsz == 64  # a size given is kept
    config, task = configure(_config("coco8.yaml", model="yolov8n.yaml", imgsz=None))
    assert (task.name, config.imgsz) == ("detect", 640)
    assert run_dir(configure(_config(cls_dir, project=None, name="x"))[0]) == pathlib.Path("runs/classify/x")


def test_a_resumed_run_keeps_the_task_it_was_run_with(tmp_path):
    from yolojax.tasks import task_for

    (tmp_path / "weights" / "ckpt").mkdir(parents=True)
    (tmp_path / "args.yaml").write_text("task: classify\nmodel: yolov8n-cls.yaml\n")
    for where in (tmp_path, tmp_path / "weights" / "ckpt", tmp_path / "weights" / "last.npz"):
        assert task_for(_config("shapes", model="yolov8n.yaml", resume=str(where))).name == "classify", where


def test_a_model_and_dataset_of_different_tasks_are_refused_in_one_line(cls_dir):
    from yolojax.tasks import task_for
    from yolojax.tasks.classify import build_model

    with pytest.raises(ConfigError, match="is a classification dataset") as err:
        task_for(_config(cls_dir, model="yolov8n.yaml"))  # a detection model on class folders
    assert "\n" not in str(err.value) and "yolov8n.yaml" in str(err.value)
    with pytest.raises(ConfigError, match="is a detection dataset YAML") as err:
        task_for(_config("coco8.yaml"))  # a classifier on a detection YAML
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="is a detection model") as err:
        build_model(_config(cls_dir, model="yolov8n.yaml", task="classify"), {0: "a", 1: "b"}, jnp.float32)
    assert "\n" not in str(err.value)


def test_checkpoint_weights_transfer_with_the_linear_reset_for_another_class_count(cls_dir, fixtures_dir):
    from yolojax.tasks.classify import build_model
    from yolojax.weights import load

    src = fixtures_dir / "cls" / "model_n_cls_state_dict.npz"
    ref_model, ref = load(src)
    assert ref_model.num_classes == 10
    model, variables = build_model(_config(cls_dir, model=str(src), dropout=0.25), dict(enumerate("abcdef")),
                                   jnp.float32)
    assert (model.num_classes, model.dropout) == (6, 0.25)
    head = sorted(variables["params"])[-1]
    assert variables["params"][head]["linear"]["kernel"].shape[-1] == 6  # a new Linear for 6 classes
    same = jax.tree.map(np.array_equal, variables["params"]["model_0"], ref["params"]["model_0"])
    assert all(jax.tree.leaves(same))  # the backbone came from the checkpoint
    _, fresh = build_model(_config(cls_dir, model=str(src), pretrained=False), dict(enumerate("abcdef")), jnp.float32)
    assert not np.array_equal(fresh["params"]["model_0"]["conv"]["kernel"], ref["params"]["model_0"]["conv"]["kernel"])


# ------------------------------------------------------------------------------------------------ the train step


def _cls_state(dropout: float, seed: int = 0, num_classes: int = 3):
    from yolojax.engine.optim import Schedule
    from yolojax.engine.state import TrainHyper, create_train_state
    from yolojax.loss import ClassificationObjective
    from yolojax.nn.classify import YOLOv8Cls
    from yolojax.nn.yolo import init_variables

    model = YOLOv8Cls(multiples=(0.33, 0.0625, 1024), num_classes=num_classes, dropout=dropout)
    hyper = TrainHyper(schedule=Schedule(lr0=0.01, lrf=0.01, epochs=1, nb=4, nw=-1, momentum=0.9,
                                         warmup_momentum=0.8, warmup_bias_lr=0.0, accumulate=1, nbs_over_batch=1.0),
                       objective=ClassificationObjective(), seed=seed)
    return create_train_state(model, init_variables(model, 0), hyper)


def test_dropout_draws_from_the_seed_and_iteration_and_a_model_without_it_draws_nothing():
    from yolojax.engine.state import train_step

    rng = np.random.default_rng(0)
    batch = {"images": rng.integers(0, 255, (4, 32, 32, 3)).astype(np.uint8), "labels": np.array([0, 1, 2, 1])}
    step = jax.jit(train_step)
    loss = lambda state: float(step(state, batch)[1]["loss"])  # noqa: E731
    assert loss(_cls_state(0.5)) == loss(_cls_state(0.5))  # the same (seed, iteration): the same masks
    assert loss(_cls_state(0.5)) != loss(_cls_state(0.5, seed=1))  # another seed: other masks
    later = _cls_state(0.5).replace(step=jnp.ones((), jnp.int32))
    assert loss(later) != loss(_cls_state(0.5))  # another iteration: other masks
    no_dropout = str(jax.make_jaxpr(train_step)(_cls_state(0.0), batch))
    assert "random_bits" not in no_dropout and "threefry" not in no_dropout
    assert "random_bits" in str(jax.make_jaxpr(train_step)(_cls_state(0.5), batch))


def test_an_augmix_run_config_feeds_the_train_step(cls_dir):
    from yolojax.data.classify import check_cls_dataset
    from yolojax.data.classify_loader import open_cls_split
    from yolojax.engine.state import train_step
    from yolojax.tasks.classify import ClassificationTask

    config = _config(cls_dir, auto_augment="augmix")
    info = check_cls_dataset(cls_dir)
    loader = ClassificationTask().train_loader(config, open_cls_split(info, "train", imgsz=32), batch=4, workers=0,
                                               platform="cpu")
    assert loader.augment["auto_augment"] == "augmix"
    it = loader.iterator(0, 0, 1)
    batch = next(it)
    it.close()
    assert batch["images"].shape == (4, 32, 32, 3) and batch["images"].dtype == np.uint8
    state = _cls_state(0.0, num_classes=NC)
    new, metrics = jax.jit(train_step)(state, batch)
    assert np.isfinite(float(metrics["loss"])) and int(new.step) == 1
    moved = jax.tree.map(lambda a, b: not np.array_equal(a, b), new.params, state.params)
    assert any(jax.tree.leaves(moved))


# ------------------------------------------------------------------------------------------------ pictures


def test_batch_and_validation_pictures(tmp_path):
    import cv2

    from yolojax.classify_val import ClassifyValResult, table_lines
    from yolojax.tasks.classify import ClassificationTask

    task, names = ClassificationTask(), {i: f"class{i}" for i in range(3)}
    images = np.zeros((4, 32, 32, 3), np.uint8)
    images[:, 8:24, 8:24] = (200, 30, 30)
    grid = task.batch_picture({"images": images, "labels": np.array([0, 1, 2, 0])}, names)
    assert grid.dtype == np.uint8 and grid.ndim == 3 and grid.shape[2] == 3 and min(grid.shape[:2]) >= 2 * 32
    confusion = np.array([[3, 0, 1], [0, 2, 0], [0, 1, 0]])
    batch = {"images": images, "labels": np.array([0, 1, 2, 0]), "image_valid": np.array([True, True, True, False])}
    result = ClassifyValResult(0.7, 1.0, {"val/loss": 1.0}, confusion, table_lines(0.7, 1.0), 7, {}, {},
                               [{"batch": batch, "top": np.array([[0, 1, 2], [1, 0, 2], [1, 2, 0], [0, 1, 2]])}])
    out = task.validation_pictures(result, names, tmp_path)
    assert set(out) == {"confusion_matrix.png", "confusion_matrix_normalized.png", "val_batch0_labels.jpg",
                        "val_batch0_pred.jpg"}
    for name, picture in out.items():
        on_disk = cv2.cvtColor(cv2.imread(str(tmp_path / name)), cv2.COLOR_BGR2RGB)
        assert on_disk.shape == picture.shape and picture.dtype == np.uint8, name
    assert not np.array_equal(out["confusion_matrix.png"], out["confusion_matrix_normalized.png"])
    assert not np.array_equal(out["val_batch0_labels.jpg"], out["val_batch0_pred.jpg"])  # image 2: 2 vs 1


# ------------------------------------------------------------------------------------------------ end to end


@pytest.mark.slow
def test_a_run_learns_writes_classify_columns_and_its_weights_validate_to_its_metrics(cls_dir, tmp_path, capsys):
    from yolojax.classify_val import ClassifyValidator
    from yolojax.data.classify import check_cls_dataset
    from yolojax.data.classify_loader import ClassifyValLoader, open_cls_split
    from yolojax.train import train_and_evaluate
    from yolojax.weights import load

    # nbs=4: an optimizer step every batch (accumulate 1); 12 steps an epoch, 168 in all
    out = train_and_evaluate(_config(cls_dir, epochs=14, nbs=4), tmp_path / "run")
    csv = tmp_path / "run" / "results.csv"
    header = tuple(h.strip() for h in csv.read_text().splitlines()[0].split(","))
    assert header == CLASSIFY_COLUMNS
    rows = read_results_csv(csv)
    assert [r["epoch"] for r in rows] == list(range(1, 15))
    assert rows[-1]["train/loss"] < rows[0]["train/loss"]
    best = max(rows, key=lambda r: (r["metrics/accuracy_top1"] + r["metrics/accuracy_top5"]) / 2)
    assert best["metrics/accuracy_top1"] >= 0.4  # chance is 1/6
    # results.csv holds 5 decimals; the final validation reads best.npz
    assert out["metrics/accuracy_top1"] == pytest.approx(best["metrics/accuracy_top1"], abs=1e-5)
    text = capsys.readouterr().out
    assert "YOLOv8n-cls summary" in text and "train step for images (4, 32, 32, 3)" in text  # compiled, or loaded
    assert "AdamW(lr=0.000714" in text  # optimizer=auto, v8: 8.2.103's fallback nc of 10, 0.002 * 5 / (4 + 10)
    val = open_cls_split(check_cls_dataset(str(cls_dir)), "val", imgsz=32)
    for name, row in (("best.npz", best), ("last.npz", rows[-1])):
        model, variables = load(tmp_path / "run" / "weights" / name)
        assert model.num_classes == NC
        res = ClassifyValidator(model, ClassifyValLoader(val, batch_size=8), dict(enumerate("abcdef")))(variables)
        assert res.top1 == pytest.approx(row["metrics/accuracy_top1"], abs=1e-5), name
        assert res.top5 == pytest.approx(row["metrics/accuracy_top5"], abs=1e-5), name


def _train_cmd(workdir, data, extra=()):
    return [sys.executable, "-m", "yolojax.train", f"--config={REPO / 'configs' / 'default.py'}",
            f"--workdir={workdir}", "--config.model=yolov8n-cls.yaml", f"--config.data={data}", "--config.imgsz=32",
            "--config.batch=4", "--config.epochs=2", "--config.workers=0", "--config.val=False",
            "--config.plots=False", "--config.tensorboard=False", "--config.checkpoint_every=1",
            "--config.warmup_epochs=0", "--config.dropout=0.3", "--config.erasing=0.0", *extra]


def _env(devices: int):
    env = dict(os.environ, YOLOJAX_CPU_DEVICES=str(devices), JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1",
               JAX_COMPILATION_CACHE_DIR=os.environ["YOLOJAX_TEST_JAX_CACHE"],
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.5",
               PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return env


def _final_state(workdir):
    from yolojax.engine.checkpoint import Checkpointer

    ck = Checkpointer(pathlib.Path(workdir) / "weights" / "ckpt")
    step = ck.latest_step()
    arrays = ck.read_arrays(step)
    ck.close()
    return step, arrays


@pytest.mark.slow
def test_kill_9_resume_with_dropout_on_two_devices_is_bit_identical_and_one_device_agrees(tmp_path):
    from yolojax.data.synthetic import shapes_cls_dir

    data = shapes_cls_dir(n_train=2, n_val=1, size=32)  # 12 images: 3 steps an epoch at batch 4
    full, killed, single = tmp_path / "full", tmp_path / "killed", tmp_path / "single"
    done = subprocess.run(_train_cmd(full, data), env=_env(2), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    target = random.Random().choice([1, 2, 4, 5])  # not an epoch end
    proc = subprocess.Popen(_train_cmd(killed, data), env=_env(2), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    kill_at_checkpoint(proc, killed / "weights" / "ckpt", target, timeout=900)
    res = subprocess.run(_train_cmd(killed, data, ["--config.task=classify", f"--config.resume={killed}"]),
                         env=_env(2), capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Resuming training" in res.stdout
    (step_a, a), (step_b, b) = _final_state(full), _final_state(killed)
    assert step_a == step_b == 6 and a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert read_results_csv(full / "results.csv") and [r["epoch"] for r in read_results_csv(killed / "results.csv")] \
        == [1, 2]
    one = subprocess.run(_train_cmd(single, data), env=_env(1), capture_output=True, text=True, timeout=900)
    assert one.returncode == 0, one.stderr[-3000:]
    _, c = _final_state(single)
    # the same run on one device: the sums differ in order only; AdamW's normalised steps can flip a weight whose
    # gradient is ~0, so each tensor agrees as a whole (relative L2), not necessarily element by element
    for k in a:
        if "params" in k or "batch_stats" in k:
            x, y = np.asarray(a[k], np.float64), np.asarray(c[k], np.float64)
            assert np.linalg.norm(x - y) <= 1e-3 * np.linalg.norm(y) + 1e-6, k
