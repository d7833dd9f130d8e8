"""Train arguments that change what the trainer does: time, cache="disk", rect, AutoBatch (batch=-1), multi_scale."""
from __future__ import annotations

import pathlib
import time as _time

import pytest

from yolojax.config import apply_overrides, default_config


class _Clock:
    """A stand-in for the trainer's clock that moves only when a test says so."""

    def __init__(self):
        self.now = 1000.0

    def time(self) -> float:
        return self.now

    @staticmethod
    def perf_counter() -> float:  # the per-phase timers keep the real clock
        return _time.perf_counter()


def test_time_budget_replans_the_run_and_its_lr_schedule(tiny_model_yaml, shapes_small, tmp_path, monkeypatch,
                                                         capsys):
    """32 images at batch 16 (2 batches per epoch), each batch taking 10 s on the mocked clock, a budget of 35 s:
    after the first epoch (20 s) Ultralytics re-plans to ceil(35 / 20) = 2 epochs, so the second epoch trains at
    lr0 * lf(1) of a 2-epoch linear schedule and close_mosaic=1 closes mosaic at epoch 1 (not 50 - 1)."""
    import yolojax.engine.loop as loop
    import yolojax.train as tr
    from yolojax import data
    from yolojax.engine.checkpoint import Checkpointer
    from yolojax.report.results import read_results_csv

    clock = _Clock()
    monkeypatch.setattr(loop, "time", clock)
    seen, loaders = [], []

    class RecordedLoader(data.TrainLoader):  # the run's train loader, to read its mosaic plan
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            loaders.append(self)

    monkeypatch.setattr(data, "TrainLoader", RecordedLoader)

    def tick(ctx):
        clock.now += 10.0

    def epoch_start(ctx):
        seen.append((ctx.epoch, ctx.epochs, loaders[-1].close_mosaic_epoch))

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
    from yolojax.engine.replan import replan_close_mosaic, replan_epochs

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


# --- rect -------------------------------------------------------------------------------------------------------------

# (name, (h, w)): file names in an order unrelated to the aspect ratios h/w
RECT_IMAGES = [("a", (200, 120)), ("b", (100, 200)), ("c", (150, 150)), ("d", (120, 200)), ("e", (90, 200)),
               ("f", (200, 100))]


def _rect_dataset(root: pathlib.Path) -> pathlib.Path:
    import cv2
    import numpy as np

    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for k, (name, (h, w)) in enumerate(RECT_IMAGES):
        cv2.imwrite(str(root / "images" / f"{name}.png"), np.full((h, w, 3), 10 + 20 * k, np.uint8))
        (root / "labels" / f"{name}.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    (root / "data.yaml").write_text(f"path: {root}\ntrain: images\nval: images\nnames:\n  0: thing\n")
    return root / "data.yaml"


def test_rect_training_batches_follow_ultralytics_shapes_in_aspect_order(tmp_path):
    import numpy as np

    from yolojax.data import DetectionDataset, TrainLoader

    ds = DetectionDataset.from_config(_rect_dataset(tmp_path / "rect"), "train", imgsz=128)
    still = dict(hsv_h=0, hsv_s=0, hsv_v=0, translate=0, scale=0, fliplr=0, mosaic=1.0)
    loader = TrainLoader(ds, batch_size=2, seed=0, workers=0, hyp=still, rect=True)
    assert loader.hyp["mosaic"] == 0 and loader.warp_obstacle()
    # By hand: aspect ratios sorted .45 (e) .5 (b) | .6 (d) 1 (c) | 1.67 (a) 2 (f); pad 0.0, stride 32, imgsz 128:
    # [.45, .5] -> [max, 1] -> ceil(.5 * 4) * 32 = 64 high; [.6, 1] -> square; [1.67, 2] -> [1, 1 / 1.67] -> 96 wide
    names = [pathlib.Path(f).stem for f in ds.im_files]
    it = loader.iterator(0, 0, 2)
    try:
        batches = [next(it) for _ in range(2 * loader.num_batches)]
    finally:
        it.close()
    assert [b["images"].shape[1:3] for b in batches] == [(64, 128), (128, 128), (128, 96)] * 2
    order = [names[i] for i in loader.epoch_order(0)]
    assert order == ["e", "b", "d", "c", "a", "f"] and list(loader.epoch_order(1)) == list(loader.epoch_order(0))
    # a (200 x 120) -> long side 128: 128 x 77, letterboxed into 128 x 96 without scaling: 9.5 px each side (9 left);
    # its centred half-size box: x 19.25..57.75 + 9.5, y 32..96; the fill colour inside, 114 in the border
    img, boxes = batches[2]["images"][0], batches[2]["boxes"][0][batches[2]["mask"][0]]
    np.testing.assert_allclose(boxes, [[28.75, 32.0, 67.25, 96.0]], atol=1e-4)
    assert (img[:, :9] == 114).all() and (img[:, 9 + 77:] == 114).all() and (img[:, 10:85] == 10).all()
    # the epoch's order pads the last batch with its first images (the shape stays the real images')
    odd = TrainLoader(ds, batch_size=4, seed=0, workers=0, hyp=still, rect=True)
    assert [names[i] for i in odd.epoch_order(0)] == ["e", "b", "d", "c", "a", "f", "e", "b"]
    assert [tuple(s) for s in odd.batch_shapes] == [(128, 128), (128, 96)]


def test_rect_shape_count_bound():
    """At most 2 * imgsz / 32 - 1 distinct shapes, whatever the aspect ratios (here 400 random ones, batch 1)."""
    import numpy as np

    from yolojax.data.batching import rect_batch_shapes

    hw = np.random.default_rng(0).integers(16, 4000, size=(400, 2))
    _, shapes = rect_batch_shapes(hw, 1, 640, 32, pad=0.0)
    distinct = {tuple(s) for s in shapes}
    assert len(distinct) <= 2 * 640 // 32 - 1
    assert all(h % 32 == 0 and w % 32 == 0 and max(h, w) == 640 for h, w in distinct)


@pytest.mark.slow
def test_rect_training_run_compiles_one_step_per_batch_shape(tiny_model_yaml, shapes_small, tmp_path, monkeypatch):
    from yolojax import data
    from yolojax.train import train_and_evaluate

    seen, loaders = {}, []

    class RecordedLoader(data.TrainLoader):  # the run's train loader, to read its batch shapes
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            loaders.append(self)

    monkeypatch.setattr(data, "TrainLoader", RecordedLoader)
    cfg = apply_overrides(default_config(), dict(
        model=str(tiny_model_yaml), data=str(shapes_small), imgsz=128, batch=8, nbs=8, epochs=1, workers=0, rect=True,
        optimizer="SGD", warmup_epochs=0.0, val=False, plots=False, tensorboard=False))
    train_and_evaluate(cfg, tmp_path / "run", callbacks={"on_train_end": [lambda ctx: seen.update(ctx=ctx)]})
    ctx = seen["ctx"]
    shapes = {(8, int(h), int(w), 3) for h, w in loaders[-1].batch_shapes}
    assert len(shapes) > 1  # the shapes dataset mixes landscape, square and portrait images
    assert {key[0] for key in ctx.step_shapes} == shapes
    assert len(ctx.step_shapes) == len(set(ctx.step_shapes))  # each (images, boxes) shape compiled once


# --- AutoBatch --------------------------------------------------------------------------------------------------------

def test_autobatch_fit_on_synthetic_measurements():
    from yolojax.engine.autobatch import fit_batch, memory_fraction, wants_autobatch

    gib = float(1 << 30)
    sizes = (1, 2, 4, 8, 16)
    used = [gib * (1.0 + 0.5 * b) for b in sizes]  # 1 GiB fixed + 0.5 GiB per image
    # 60 % of 20.2 GiB = 12.12 GiB -> (12.12 - 1) / 0.5 = 22.24 -> 22
    assert fit_batch(sizes, used, 20.2 * gib, 0.6) == (22, "")
    assert fit_batch(sizes, used, 20.2 * gib, 0.3) == (10, "")  # (6.06 - 1) / 0.5 = 10.12
    # a size that failed (batch 8) caps the batch at the size before it
    assert fit_batch(sizes, used[:3] + [None, None], 20 * gib, 0.6) == (4, "")
    # a flat line, too few points, or a batch beyond 1024: the default 16 and why
    b, why = fit_batch(sizes, [gib] * 5, 20 * gib, 0.6)
    assert b == 16 and "does not grow" in why
    assert fit_batch(sizes, [gib, None, None, None, None], 20 * gib, 0.6)[0] == 16
    b, why = fit_batch(sizes, [gib * 0.001 * b for b in sizes], 20 * gib, 0.6)
    assert b == 16 and "outside 1..1024" in why
    assert wants_autobatch(-1) and wants_autobatch(0.7) and not wants_autobatch(16) and not wants_autobatch(1)
    assert memory_fraction(-1) == 0.6 and memory_fraction(0.75) == 0.75


def test_autobatch_on_cpu_falls_back_to_16_with_a_warning(tiny_model_yaml, shapes_small, tmp_path, capsys):
    from yolojax.engine.builder import build_run
    from yolojax.tasks import get_task

    cfg = apply_overrides(default_config(), dict(model=str(tiny_model_yaml), data=str(shapes_small), imgsz=64,
                                                 batch=-1, workers=0, plots=False))
    s = build_run(cfg, tmp_path / "run", get_task("detect"))
    out = capsys.readouterr().out
    assert s.config.batch == 16 and s.train_loader.global_batch == 16
    assert "AutoBatch: WARNING" in out and "default batch size 16" in out


@pytest.mark.slow
def test_autobatch_measures_the_compiled_train_step(tiny_model_yaml, shapes_small, tmp_path, monkeypatch, capsys):
    """The whole measuring path on this CPU, told it has 1 GiB available: the compiled step's bytes at batch 1..16
    grow with the batch, and the batch taken is the fit of those measurements at the fraction asked for."""
    from yolojax.engine import autobatch
    from yolojax.engine.builder import build_run
    from yolojax.tasks import get_task

    measured = []
    real_measure = autobatch.measure
    monkeypatch.setattr(autobatch, "available_bytes", lambda device: float(1 << 30))
    monkeypatch.setattr(autobatch, "measure", lambda *a, **k: measured.extend(real_measure(*a, **k)) or measured)
    cfg = apply_overrides(default_config(), dict(model=str(tiny_model_yaml), data=str(shapes_small), imgsz=64,
                                                 batch=0.5, workers=0, plots=False))
    s = build_run(cfg, tmp_path / "run", get_task("detect"))
    assert len(measured) == len(autobatch.PROBE_SIZES) and None not in measured
    assert all(b > a for a, b in zip(measured, measured[1:]))
    expected, why = autobatch.fit_batch(autobatch.PROBE_SIZES, measured, float(1 << 30), 0.5)
    assert not why and s.config.batch == min(expected, 32)  # then capped at the dataset's 32 images
    assert f"Using batch-size {expected}" in capsys.readouterr().out


# --- multi_scale ------------------------------------------------------------------------------------------------------

def test_multi_scale_sizes_are_stride_multiples_in_range_and_bucketed():
    import numpy as np

    from yolojax.data.batching import multi_scale_shape, multi_scale_size, multi_scale_sizes

    assert multi_scale_sizes(640) == (320, 480, 640, 800, 960)
    assert multi_scale_sizes(64) == (32, 64, 96)
    rng = np.random.default_rng(0)
    drawn = [multi_scale_size(rng, 640) for _ in range(2000)]
    assert set(drawn) == {320, 480, 640, 800, 960}  # every bucket, nothing else
    assert abs(np.mean(drawn) - 640) < 10  # Ultralytics' draw is uniform over 320..960: mean 640
    # the nearest bucket of Ultralytics' own draw: 320..384 -> 320 (3 of its 21 sizes) ... 416..544 -> 480 (5 of 21)
    counts = np.array([drawn.count(s) for s in (320, 480, 640, 800, 960)]) / len(drawn)
    np.testing.assert_allclose(counts, np.array([3, 5, 5, 5, 3]) / 21, atol=0.03)
    assert multi_scale_shape((640, 640), 480) == (480, 480)
    assert multi_scale_shape((480, 640), 800) == (608, 800)  # 480 * 1.25 = 600 -> up to 608


def test_resize_bilinear_matches_pytorch_rule_by_hand():
    import numpy as np

    from yolojax.augment.resize import resize_bilinear, source_coordinates

    # 2 -> 4 pixels: sources max((i + .5) / 2 - .5, 0) = 0, .25, .75, 1.25 (clamped to the last pixel)
    np.testing.assert_allclose(source_coordinates(2, 4), [0, 0.25, 0.75, 1.25])
    img = np.array([[0.0, 1.0], [2.0, 3.0]], np.float32)[None, :, :, None]
    rows, cols = source_coordinates(2, 4)[None], source_coordinates(2, 4)[None]
    out = np.asarray(resize_bilinear(img, rows, cols))[0, :, :, 0]
    line = np.array([0, 0.25, 0.75, 1.0])
    np.testing.assert_allclose(out, 2 * line[:, None] + line[None, :], atol=1e-6)
    # shrinking 4 -> 2 samples at 1 and 3 (x 2 - .5 from centres .5, 1.5): no antialiasing
    x = np.arange(4, dtype=np.float32)[None, None, :, None] * np.ones((1, 1, 1, 1), np.float32)
    np.testing.assert_allclose(np.asarray(resize_bilinear(x, np.zeros((1, 1), np.float32),
                                                          source_coordinates(4, 2)[None]))[0, 0, :, 0], [0.5, 2.5])


def test_multi_scale_batches_scale_boxes_and_take_few_shapes(shapes_small):
    import numpy as np

    from yolojax.data import DetectionDataset, TrainLoader
    from yolojax.augment.batch import batch_image_shape

    ds = DetectionDataset.from_config(shapes_small, "train", imgsz=64)
    plain, multi = (TrainLoader(ds, batch_size=4, seed=0, workers=0, multi_scale=m) for m in (False, True))
    shapes = set()
    for a, b in zip(_batches(plain, 3), _batches(multi, 3)):
        shape = batch_image_shape(b)
        shapes.add(shape)
        np.testing.assert_array_equal(a["images"], b["images"])  # the host image is not resized: the device does it
        h, w = shape[1:3]
        assert h % 32 == 0 and 32 <= h <= 96 and (h, w) in ((32, 32), (64, 64), (96, 96))
        np.testing.assert_allclose(b["boxes"], a["boxes"] * np.float32(h / 64), rtol=1e-6)
        if (h, w) == (64, 64):
            assert "scale_rows" not in b
        else:
            assert b["scale_rows"].shape == (4, h) and b["scale_cols"].shape == (4, w)
    assert 1 < len(shapes) <= 3


def _batches(loader, epochs):
    it = loader.iterator(0, 0, epochs)
    try:
        return list(it)
    finally:
        it.close()


@pytest.mark.slow
def test_multi_scale_training_run_compiles_at_most_the_bucket_count(tiny_model_yaml, shapes_small, tmp_path):
    from yolojax.data.batching import multi_scale_sizes
    from yolojax.train import train_and_evaluate

    seen = {}
    cfg = apply_overrides(default_config(), dict(
        model=str(tiny_model_yaml), data=str(shapes_small), imgsz=64, batch=8, nbs=8, epochs=3, workers=0,
        multi_scale=True, optimizer="SGD", warmup_epochs=0.0, val=False, plots=False, tensorboard=False))
    out = train_and_evaluate(cfg, tmp_path / "run", callbacks={"on_train_end": [lambda ctx: seen.update(ctx=ctx)]})
    sizes = {shape[0][1] for shape in seen["ctx"].step_shapes}
    assert 1 < len(sizes) and sizes <= set(multi_scale_sizes(64))
    assert len(seen["ctx"].step_shapes) == len(set(seen["ctx"].step_shapes))
    assert out["save_dir"]
