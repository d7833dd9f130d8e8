"""Train arguments that change what the trainer does: ``time``, ``cache='disk'``, ``rect``, AutoBatch, ``multi_scale``."""
from __future__ import annotations

import pathlib

import pytest

from yolojax.engine.config import apply_overrides, default_config


class _Clock:
    """A stand-in for the trainer's clock that moves only when a test says so."""

    def __init__(self):
        self.now = 1000.0

    def time(self) -> float:
        return self.now


def test_time_budget_replans_the_run_and_its_lr_schedule(tiny_model_yaml, shapes_small, tmp_path, monkeypatch,
                                                         capsys):
    """32 images at batch 16 (2 batches per epoch), each batch taking 10 s on the mocked clock, a budget of 35 s:
    after the first epoch (20 s) Ultralytics re-plans to ceil(35 / 20) = 2 epochs, so the second epoch trains at
    lr0 * lf(1) of a 2-epoch linear schedule and close_mosaic=1 closes mosaic at epoch 1 (not 50 - 1)."""
    import yolojax.train as tr
    from yolojax.engine.checkpoint import Checkpointer
    from yolojax.report.results import read_results_csv

    clock = _Clock()
    monkeypatch.setattr(tr, "time", clock)
    seen = []

    def tick(ctx):
        clock.now += 10.0

    def epoch_start(ctx):
        seen.append((ctx.epoch, ctx.epochs, ctx.setup.train_loader.close_mosaic_epoch))

    cfg = apply_overrides(default_config(), dict(
        model=str(tiny_model_yaml), data=str(shapes_small), imgsz=64, batch=16, nbs=16, epochs=50, close_mosaic=1,
        workers=0, optimizer="SGD", lr0=0.01, lrf=0.01, warmup_epochs=0.0, val=False, plots=False,
        tensorboard=False, time=35 / 3600))
    workdir = tmp_path / "run"
    tr.train_and_evaluate(cfg, workdir, callbacks={"on_train_batch_end": [tick],
                                                   "on_train_epoch_start": [epoch_start]})
    assert seen == [(0, 50, 49), (1, 2, 1)]
    assert "Closing dataloader mosaic" in capsys.readouterr().out
    rows = read_results_csv(workdir / "results.csv")
    assert [r["epoch"] for r in rows] == [1, 2]
    lf = lambda e, epochs: (1 - e / epochs) * (1 - 0.01) + 0.01  # noqa: E731 - the linear lambda, by hand
    assert rows[0]["lr/pg0"] == pytest.approx(0.01 * lf(0, 50))
    assert rows[1]["lr/pg0"] == pytest.approx(0.01 * lf(1, 2))  # 0.00505, not lf(1, 50) = 0.00980
    meta = Checkpointer(workdir / "weights" / "ckpt").read_meta()
    assert meta["config"]["epochs"] == 2 and meta["close_mosaic_epoch"] == 1 and meta["finished"]


def test_replan_arithmetic():
    from yolojax.train import replan_close_mosaic, replan_epochs

    assert replan_epochs(1.0, 600.0, 1) == 6
    assert replan_epochs(1.0, 700.0, 2) == 11  # 3600 / 350 = 10.3 -> 11
    assert replan_epochs(0.001, 600.0, 1) == 1
    # mosaic closes close_mosaic epochs before the new end; closing is final
    assert replan_close_mosaic(90, 5, 20, 10, "v8") == 10
    assert replan_close_mosaic(3, 5, 20, 10, "v8") == 3
    assert replan_close_mosaic(None, 5, 20, 0, "v8") is None
    # the new close epoch is already behind: v8 compares for equality (never closes), current closes at once
    assert replan_close_mosaic(90, 5, 12, 10, "v8") is None
    assert replan_close_mosaic(90, 5, 12, 10, "current") == 5


# --- cache='disk' ----------------------------------------------------------------------------------------------------

def _first_batches(ds, n=2):
    from yolojax.data import TrainLoader

    it = TrainLoader(ds, batch_size=4, seed=0, workers=0).iterator(0, 0, 1)
    try:
        return [next(it) for _ in range(n)]
    finally:
        it.close()


def test_disk_cache_writes_npy_beside_the_images_and_reuses_them(tmp_path):
    import cv2
    import numpy as np

    from yolojax.data import DetectionDataset, make_shapes_dataset
    from yolojax.data.npy_cache import npy_path

    data = make_shapes_dataset(tmp_path / "shapes", n_train=8, n_val=2, seed=1)
    plain = DetectionDataset.from_config(data, "train", imgsz=64)
    assert not any(npy_path(f).exists() for f in plain.im_files)
    cached = DetectionDataset.from_config(data, "train", imgsz=64, cache="disk")
    assert cached.disk_cache
    for f in cached.im_files:  # <stem>.npy in the image's folder, holding OpenCV's full-size decode
        npy = npy_path(f)
        assert npy.parent == pathlib.Path(f).parent and npy.name == pathlib.Path(f).stem + ".npy"
        np.testing.assert_array_equal(np.load(npy), cv2.imread(f, cv2.IMREAD_COLOR))
    for a, b in zip(_first_batches(plain), _first_batches(cached)):  # pixel-identical batches
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)

    # A second run reuses the files (not rewritten) and reads them, not the images: garbage in an image file changes
    # nothing once its dataset is built.
    mtimes = [npy_path(f).stat().st_mtime_ns for f in cached.im_files]
    again = DetectionDataset.from_config(data, "train", imgsz=64, cache="disk")
    assert [npy_path(f).stat().st_mtime_ns for f in again.im_files] == mtimes
    expected = plain.load(0)[0]
    pathlib.Path(again.im_files[0]).write_bytes(b"not an image")
    np.testing.assert_array_equal(again.load(0)[0], expected)
    with pytest.raises(Exception, match="could not read"):
        plain._read(0)  # the uncached dataset does read the (now broken) image file


def test_disk_cache_unwritable_folder_warns_and_reads_the_images(tmp_path, monkeypatch):
    import os

    from yolojax.data import DetectionDataset, make_shapes_dataset
    from yolojax.data.npy_cache import npy_path

    data = make_shapes_dataset(tmp_path / "shapes", n_train=4, n_val=2, seed=1)
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if mode == os.W_OK and "images" in str(p)
                        else real_access(p, mode))
    with pytest.warns(UserWarning, match=r"cache='disk': .*images.* is not writable"):
        ds = DetectionDataset.from_config(data, "train", imgsz=64, cache="disk")
    assert not ds.disk_cache and not any(npy_path(f).exists() for f in ds.im_files)
    assert ds.load(0)[0].shape[2] == 3


def test_disk_cache_unreadable_npy_is_removed_and_stale_one_refreshed_in_current(tmp_path):
    import os

    import numpy as np

    from yolojax.data import DetectionDataset, make_shapes_dataset
    from yolojax.data.npy_cache import npy_path

    data = make_shapes_dataset(tmp_path / "shapes", n_train=4, n_val=2, seed=1)
    ds = DetectionDataset.from_config(data, "train", imgsz=64, cache="disk")
    expected = DetectionDataset.from_config(data, "train", imgsz=64).load(1)[0]
    npy = npy_path(ds.im_files[1])
    npy.write_bytes(b"\x93NUMPY garbage")
    with pytest.warns(UserWarning, match="removing the unreadable"):
        np.testing.assert_array_equal(ds.load(1)[0], expected)
    assert not npy.exists()
    # an .npy older than its image: v8 reuses it as it is, current rewrites it
    np.save(npy, np.zeros((5, 5, 3), np.uint8))
    os.utime(npy, (1, 1))
    DetectionDataset.from_config(data, "train", imgsz=64, cache="disk")
    assert np.load(npy).shape == (5, 5, 3)
    DetectionDataset.from_config(data, "train", imgsz=64, cache="disk", compat="current")
    assert np.load(npy).shape != (5, 5, 3)
