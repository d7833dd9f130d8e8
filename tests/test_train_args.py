"""Train arguments observed in setups and runs (issue 22): ``classes`` (train and val labels), ``split``, ``freeze``
and the loss gains (what the train step receives), ``amp``/``dtype``, ``save_period`` (epoch{N}.npz files),
``patience`` (early stop with Ultralytics' message), ``keep_checkpoints``, ``save``, ``verbose`` and the warning of an
argument without effect."""
from __future__ import annotations

import csv

import jax
import numpy as np
import pytest

from yolojax.data import DetectionDataset
from yolojax.data.labels import select_classes
from yolojax.config import ConfigError, default_config
from yolojax.config import check_config


def test_select_classes_keeps_rows_and_images_then_merges():
    labels = [np.array([[0, .5, .5, .1, .1], [2, .3, .3, .1, .1], [1, .2, .2, .1, .1]], np.float32),
              np.array([[1, .5, .5, .2, .2]], np.float32), np.zeros((0, 5), np.float32)]
    kept = select_classes(labels, [0, 2])
    assert [lb[:, 0].tolist() for lb in kept] == [[0, 2], [], []]  # the second image stays, as a background
    np.testing.assert_array_equal(kept[0][:, 1:], labels[0][:2, 1:])
    merged = select_classes(labels, [1], single_cls=True)  # select on the dataset's ids first, then merge
    assert [lb[:, 0].tolist() for lb in merged] == [[0], [0], []]
    assert select_classes(labels) == labels


def _class_rows(ds) -> dict[int, int]:
    classes = np.concatenate([lb[:, 0] for lb in ds.labels]).astype(int)
    return {int(c): int(n) for c, n in zip(*np.unique(classes, return_counts=True))}


def test_classes_filters_training_and_validation_labels(shapes_small, tiny_model_yaml, tmp_path):
    from yolojax.engine.builder import build_run
    from yolojax.tasks import get_task

    setup = lambda config, workdir: build_run(config, workdir, get_task("detect"))  # noqa: E731

    full_train = DetectionDataset.from_config(str(shapes_small), "train", imgsz=64, verbose=False)
    full_val = DetectionDataset.from_config(str(shapes_small), "val", imgsz=64, verbose=False)
    keep = [1, 3]
    config = check_config({**default_config().to_dict(), "model": str(tiny_model_yaml), "data": str(shapes_small),
                           "imgsz": 64, "batch": 8, "workers": 0, "classes": keep, "split": "train", "freeze": 3,
                           "box": 5.0, "cls": 1.0, "dfl": 2.0})
    s = setup(config, tmp_path / "run")
    try:
        # split=train: validation reads the training images; classes filters both sets alike
        assert s.val_loader.dataset.im_files == full_train.im_files
        for ds, full in ((s.train_loader.dataset, full_train), (s.val_loader.dataset, full_train)):
            assert len(ds) == len(full)  # images without the kept classes stay as backgrounds
            assert _class_rows(ds) == {c: n for c, n in _class_rows(full).items() if c in keep}
            assert set(_class_rows(full)) - set(keep)  # the unfiltered set had other classes to drop
        # what the train step receives: frozen layers 0..2 and the loss gains
        assert (s.hyper.frozen_layers, s.hyper.box, s.hyper.cls, s.hyper.dfl) == ((0, 1, 2), 5.0, 1.0, 2.0)
    finally:
        s.val_loader.close()
    assert len(full_val) != len(full_train)  # (so the split check above tells the two apart)
    with pytest.raises(ConfigError, match=r"classes=\[1, 6\] is not valid: the dataset has 6 classes, ids 0..5"):
        setup(check_config({**config.to_dict(), "classes": [1, 6]}), tmp_path / "run2")


@pytest.mark.parametrize("platform, amp, dtype, expected", [
    ("gpu", True, "auto", "bfloat16"), ("gpu", False, "auto", "float32"), ("tpu", True, "auto", "bfloat16"),
    ("cpu", True, "auto", "float32"), ("gpu", True, "float32", "float32"), ("cpu", False, "bfloat16", "bfloat16"),
])
def test_amp_is_bfloat16_compute_on_accelerators(platform, amp, dtype, expected):
    import types

    from yolojax.engine.builder import compute_dtype as _compute_dtype

    config = check_config({**default_config().to_dict(), "amp": amp, "dtype": dtype})
    assert np.dtype(_compute_dtype(config, [types.SimpleNamespace(platform=platform)])) == np.dtype(expected)


def _rows(run) -> list[dict]:
    with open(run / "results.csv") as f:
        return [{k.strip(): v.strip() for k, v in row.items()} for row in csv.DictReader(f)]


def _expected_stop(fitness: list[float], patience: int) -> tuple[int | None, int]:
    """(epoch at which Ultralytics' current-era EarlyStopping stops, or None; its best epoch), from the rule:
    improvement when fitness > best or best == 0; stop when epoch - best_epoch >= patience."""
    best, best_epoch = 0.0, 0
    for epoch, f in enumerate(fitness, 1):
        if f > best or best == 0:
            best, best_epoch = f, epoch
        if epoch - best_epoch >= patience:
            return epoch, best_epoch
    return None, best_epoch


def _checkpoint_steps(run) -> int:
    return sum(p.is_dir() and p.name.isdigit() for p in (run / "weights" / "ckpt").iterdir())


def _per_class_rows(out: str) -> list[str]:
    import re

    names = "rectangle|ellipse|triangle|cross|star|diamond"
    return re.findall(rf"^\s+(?:{names})\s+\d+\s+\d+\s", out.split("Validating", 1)[1], re.M)


@pytest.mark.slow
def test_save_period_and_patience_end_to_end(tiny_model_yaml, tmp_path, capsys):
    """Run A trains 12 epochs with save_period=4: weights epoch0, epoch4 and epoch8.npz (0-based epoch % 4 == 0, as
    Ultralytics names epoch{N}.pt). Run B continues from A's weights at a learning rate too small to learn with
    patience=1: validation fitness stalls or dips (BatchNorm statistics still move), so the run stops early with
    Ultralytics' message, at the epoch the rule gives on its own results.csv."""
    from yolojax.data import make_shapes_dataset
    from yolojax.config import apply_overrides
    from yolojax.train import train_and_evaluate
    from yolojax.weights import load

    data = make_shapes_dataset(tmp_path / "shapes", n_train=16, n_val=8, seed=0)
    common = dict(data=str(data), imgsz=64, batch=8, nbs=8, close_mosaic=0, mosaic=0.0, workers=0,
                  optimizer="AdamW", momentum=0.9, warmup_epochs=0.0, plots=False, tensorboard=False, seed=0,
                  compat="current")
    run_a = tmp_path / "a"
    train_and_evaluate(apply_overrides(default_config(), dict(
        common, model=str(tiny_model_yaml), epochs=12, lr0=0.02, save_period=4, patience=0, label_smoothing=0.1,
        keep_checkpoints=1)), run_a)
    out = capsys.readouterr().out
    assert out.count("WARNING: label_smoothing=0.1 has no effect on YOLOv8 detection training") == 1
    assert _checkpoint_steps(run_a) == 1  # keep_checkpoints=1 of the 12 epoch-end checkpoints
    assert _per_class_rows(out)  # verbose: the final validation's per-class table
    assert "Stopping training early" not in out and len(_rows(run_a)) == 12  # patience=0: never stops
    saved = sorted(p.name for p in (run_a / "weights").glob("epoch*.npz"))
    assert saved == ["epoch0.npz", "epoch4.npz", "epoch8.npz"]
    w4, w8 = (jax.tree.leaves(load(run_a / "weights" / f"epoch{n}.npz")[1]["params"]) for n in (4, 8))
    assert any(not np.array_equal(a, b) for a, b in zip(w4, w8))  # two different epochs' weights
    last = _rows(run_a)[-1]
    assert 0.1 * float(last["metrics/mAP50(B)"]) + 0.9 * float(last["metrics/mAP50-95(B)"]) > 0  # B starts positive

    run_b = tmp_path / "b"
    train_and_evaluate(apply_overrides(default_config(), dict(
        common, model=str(run_a / "weights" / "last.npz"), epochs=8, lr0=1e-6, patience=1, save=False,
        verbose=False)), run_b)
    out = capsys.readouterr().out
    assert _checkpoint_steps(run_b) == 1 and (run_b / "weights" / "last.npz").is_file()  # save=False: the last only
    assert not _per_class_rows(out)  # verbose=False: the final validation's "all" row only
    rows = _rows(run_b)
    fitness = [0.1 * float(r["metrics/mAP50(B)"]) + 0.9 * float(r["metrics/mAP50-95(B)"]) for r in rows]
    stop, best_epoch = _expected_stop(fitness, patience=1)
    assert stop == len(rows) < 8, fitness
    assert (f"Stopping training early as no improvement observed in last 1 epochs. Best results observed at epoch "
            f"{best_epoch}.") in out
    assert f"\n{len(rows)} epochs completed in " in out
    assert not list((run_b / "weights").glob("epoch*.npz"))  # save_period=-1: none
