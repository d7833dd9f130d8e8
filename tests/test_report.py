"""Monitoring and pictures: plotting functions on hand-made inputs, the TensorBoard writer/reader round trip,
the run's writers and pictures driven as the loop drives them on a fake run (wiring, plots=False, never blocking
the loop), and one real short training
whose run directory must hold every Ultralytics picture, results.csv and readable TensorBoard events."""
from __future__ import annotations

import contextlib
import io
import pathlib
import sys
import threading
import time
import types

import cv2
import numpy as np
import pytest

from yolojax.report import plots
from yolojax.report.phases import PHASES, PhaseTimer, phase_table, summary_line
from yolojax.report.results import COLUMNS, CsvWriter, read_results_csv
from yolojax.report.run_pictures import RunPictures, draws_train_batch
from yolojax.report.tensorboard import TensorBoardLogger, event_files, read_images, read_scalars
from yolojax.report.writers import epoch_scalars, iteration_scalars, open_board

NAMES = {0: "circle", 1: "square", 2: "star"}
PICTURES = ("results.png", "labels.jpg", "train_batch0.jpg", "train_batch1.jpg", "train_batch2.jpg",
            "val_batch0_labels.jpg", "val_batch0_pred.jpg", "PR_curve.png", "F1_curve.png", "P_curve.png",
            "R_curve.png", "confusion_matrix.png", "confusion_matrix_normalized.png")
FIGURE_SIZES = {  # (width, height) in pixels = inches x 150 dpi
    "results.png": (1800, 900), "labels.jpg": (1200, 1200), "PR_curve.png": (1350, 900),
    "F1_curve.png": (1350, 900), "P_curve.png": (1350, 900), "R_curve.png": (1350, 900),
    "confusion_matrix.png": (1800, 1350), "confusion_matrix_normalized.png": (1800, 1350)}


def _read(path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert img is not None, f"{path} is not a readable image"
    return img


def _assert_not_blank(path, min_std: float = 8.0) -> np.ndarray:
    img = _read(path)
    assert img.std() > min_std, f"{path} looks blank (pixel std {img.std():.2f})"
    return img


# ----------------------------------------------------------------------------------------------- image grids


@pytest.mark.parametrize("n,h,w,expected", [
    (8, 64, 64, (3, 3, 160, 160)),  # upscaled so that a cell's long side is 160 px
    (16, 640, 640, (4, 4, 480, 480)),  # 4 x 640 = 2560 > 1920: shrunk by 0.75
    (1, 96, 128, (1, 1, 120, 160)),  # 160 / 128 = 1.25
    (5, 200, 300, (2, 3, 200, 300)),  # no scaling needed; 3 columns, 2 rows
])
def test_grid_layout_hand_computed(n, h, w, expected):
    assert plots.grid_layout(n, h, w) == expected


def _gray_batch(b=4, s=64, value=128):
    images = np.full((b, s, s, 3), value, np.uint8)
    boxes = np.zeros((b, 2, 4), np.float32)
    boxes[:, 0] = [8, 8, 40, 48]
    classes = np.zeros((b, 2), np.int32)
    classes[:, 0] = np.arange(b) % 3
    mask = np.zeros((b, 2), bool)
    mask[:, 0] = True
    mask[-1, 0] = False  # the last image's box is padding: nothing may be drawn there
    return images, boxes, classes, mask


def test_image_grid_draws_boxes_in_class_colours_and_skips_padding():
    images, boxes, classes, mask = _gray_batch()
    grid = plots.image_grid(images, boxes, classes, mask, NAMES)
    assert grid.shape == (2 * 160, 2 * 160, 3) and grid.dtype == np.uint8  # 4 images: 2x2 cells of 160 px
    scale = 160 / 64
    for i in range(3):
        r, c = divmod(i, 2)
        # left edge of the box, half way down: x = 8 * 2.5 = 20, y = (8 + 48) / 2 * 2.5 = 70 inside the cell
        px = grid[r * 160 + int(28 * scale), c * 160 + int(8 * scale)]
        np.testing.assert_allclose(px, plots.class_color(classes[i, 0]), atol=40)
        centre_right = grid[r * 160 + 150, c * 160 + 150]  # far from the box and its label: untouched gray
        np.testing.assert_array_equal(centre_right, [128, 128, 128])
    cell3 = grid[160 + 3:320 - 3, 160 + 3:320 - 3]  # padding box not drawn: the cell is plain gray
    assert np.all(cell3 == 128)


def test_image_grid_predictions_respect_the_confidence_threshold():
    images, boxes, classes, mask = _gray_batch(b=2)
    mask[:] = [True, False]
    scores = np.array([[0.9, 0.0], [0.1, 0.0]], np.float32)  # image 1's box is below 0.25: not drawn
    grid = plots.image_grid(images, boxes, classes, mask, NAMES, scores=scores)
    assert grid.shape == (160, 320, 3)
    assert not np.all(grid[3:-3, 3:157] == 128)
    assert np.all(grid[3:-3, 163:-3] == 128)


def test_image_grid_rejects_non_rgb_batches():
    with pytest.raises(ValueError, match=r"\(B, H, W, 3\)"):
        plots.image_grid(np.zeros((2, 64, 64)), np.zeros((2, 1, 4)), np.zeros((2, 1)), np.ones((2, 1), bool))


def test_plot_batch_writes_the_mosaic_as_jpeg(tmp_path):
    images, boxes, classes, mask = _gray_batch()
    images[:] = np.random.default_rng(0).integers(0, 255, images.shape, dtype=np.uint8)
    grid = plots.plot_batch(tmp_path / "train_batch0.jpg", images, boxes, classes, mask, NAMES)
    back = _read(tmp_path / "train_batch0.jpg")[..., ::-1]
    assert back.shape == grid.shape
    assert np.abs(back.astype(int) - grid).mean() < 20  # JPEG, quality 90
    assert not list(tmp_path.glob(".*"))  # the temporary file was renamed away


# ----------------------------------------------------------------------------------------------- figures


def test_plot_labels_and_results_sizes_and_content(tmp_path):
    rng = np.random.default_rng(0)
    labels = [np.column_stack([rng.integers(0, 3, 5), rng.uniform(0.2, 0.8, (5, 4)) * [1, 1, 0.5, 0.5]])
              for _ in range(20)] + [np.zeros((0, 5))]
    plots.plot_labels(tmp_path / "labels.jpg", labels, NAMES)
    plots.plot_labels(tmp_path / "empty_labels.jpg", [np.zeros((0, 5))], NAMES)  # no boxes: still a picture
    rows = [{"epoch": e, **{c: 1.0 / e + 0.01 * i for i, c in enumerate(COLUMNS[1:])}} for e in range(1, 8)]
    plots.plot_results(tmp_path / "results.png", rows)
    for name in ("labels.jpg", "results.png"):
        h, w = _assert_not_blank(tmp_path / name).shape[:2]
        assert (w, h) == FIGURE_SIZES[name]
    _assert_not_blank(tmp_path / "empty_labels.jpg")


def test_smooth_gaussian_keeps_constants_and_means():
    np.testing.assert_allclose(plots.smooth_gaussian(np.full(30, 2.5)), 2.5)
    y = np.sin(np.linspace(0, 6, 50))
    s = plots.smooth_gaussian(y)
    assert s.shape == y.shape and np.abs(np.diff(s)).max() <= np.abs(np.diff(y)).max()
    np.testing.assert_array_equal(plots.smooth_gaussian([1.0, 2.0]), [1.0, 2.0])


def test_normalize_confusion_divides_each_true_column_by_its_total():
    m = np.array([[2, 0, 1], [0, 3, 0], [1, 1, 0]])
    expected = np.array([[2 / 3, 0, 1], [0, 3 / 4, 0], [1 / 3, 1 / 4, 0]])
    np.testing.assert_allclose(plots.normalize_confusion(m), expected, atol=1e-8)


def _stats_two_classes():
    """Class 0: 2 labels, 2 confident exact detections; class 1: 1 label, no detection; class 2: no labels."""
    tp = np.zeros((3, 10), bool)
    tp[:2] = True
    return {"tp": tp, "conf": np.array([0.9, 0.8, 0.3], np.float32), "pred_cls": np.array([0, 0, 2], np.float32),
            "target_cls": np.array([0, 0, 1], np.float32), "target_img": np.array([0, 1], np.float32)}


def test_detection_curves_recomputed_when_metrics_are_empty_match_the_metrics_curves():
    from yolojax.metrics import DetMetrics

    s = _stats_two_classes()
    full = DetMetrics.from_stats(s["tp"], s["conf"], s["pred_cls"], s["target_cls"], nc=3)
    a = plots.detection_curves(full, s, NAMES)
    b = plots.detection_curves(DetMetrics(3), s, NAMES)  # v8 leaves metrics empty when nothing matched
    for k in ("x", "p", "r", "f1", "prec", "ap50"):
        np.testing.assert_allclose(a[k], b[k])
    np.testing.assert_array_equal(a["class_ids"], [0, 1])  # classes with labels
    np.testing.assert_array_equal(a["prec_ids"], [0])  # only class 0 has detections (a PR row)
    assert a["ap50"][0] > 0.99 and a["ap50"][1] == 0.0
    # recall of class 0 at a confidence below both detections is 1, above both is 0
    x = a["x"]
    assert a["r"][0][np.searchsorted(x, 0.5)] == pytest.approx(1.0) and a["r"][0][-1] == 0.0


def test_curve_and_confusion_pictures(tmp_path):
    from yolojax.metrics import DetMetrics

    s = _stats_two_classes()
    metrics = DetMetrics.from_stats(s["tp"], s["conf"], s["pred_cls"], s["target_cls"], nc=3)
    files = plots.plot_detection_curves(tmp_path, plots.detection_curves(metrics, s, NAMES))
    assert sorted(f.name for f in files) == ["F1_curve.png", "PR_curve.png", "P_curve.png", "R_curve.png"]
    # nothing at all (no labels): the pictures still exist, with empty axes
    empty = plots.detection_curves(DetMetrics(3), None, NAMES)
    assert empty["p"].shape == (0, 1000) and empty["prec"].shape == (0, 1000)
    plots.plot_pr_curve(tmp_path / "empty_PR.png", empty["x"], empty["prec"], [], [])
    plots.plot_metric_curve(tmp_path / "empty_F1.png", empty["x"], empty["f1"], [], ylabel="F1")
    m = np.array([[2, 0, 0, 1], [0, 1, 0, 0], [0, 0, 0, 0], [0, 1, 0, 0]])
    for normalize, name in ((False, "confusion_matrix.png"), (True, "confusion_matrix_normalized.png")):
        plots.plot_confusion_matrix(tmp_path / name, m, NAMES, normalize=normalize)
    for name in ("PR_curve.png", "F1_curve.png", "P_curve.png", "R_curve.png", "confusion_matrix.png",
                 "confusion_matrix_normalized.png"):
        h, w = _assert_not_blank(tmp_path / name).shape[:2]
        assert (w, h) == FIGURE_SIZES[name]
    for name in ("empty_PR.png", "empty_F1.png"):
        _assert_not_blank(tmp_path / name)


# ----------------------------------------------------------------------------------------------- TensorBoard


def test_tensorboard_scalars_and_images_read_back_exactly(tmp_path):
    tb = TensorBoardLogger(tmp_path)
    tb.scalars({"metrics/mAP50(B)": 0.25, "train/box_loss": 1.5, "bad": float("nan"), "text": "x"}, 1)
    tb.scalars({"metrics/mAP50(B)": 0.5, "train/box_loss": 1.25}, 2)
    img = np.zeros((20, 30, 3), np.uint8)
    img[:, :10] = [255, 0, 0]
    tb.image("train_batch0", img, 0)
    tb.close()
    s = read_scalars(tmp_path)
    assert s == {"metrics/mAP50(B)": [(1, 0.25), (2, 0.5)], "train/box_loss": [(1, 1.5), (2, 1.25)]}
    ims = read_images(tmp_path)
    assert list(ims) == ["train_batch0"] and ims["train_batch0"][0][0] == 0
    np.testing.assert_array_equal(ims["train_batch0"][0][1], img)  # PNG: lossless, RGB order kept


def test_event_reader_rejects_a_corrupted_file(tmp_path):
    tb = TensorBoardLogger(tmp_path)
    tb.scalars({"a": 1.0}, 1)
    tb.close()
    (f,) = event_files(tmp_path)
    data = bytearray(f.read_bytes())
    data[-6] ^= 0xFF  # inside the last record's payload
    f.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="CRC"):
        read_scalars(tmp_path)
    f.write_bytes(bytes(data[:-3]))
    with pytest.raises(ValueError, match="truncated"):
        read_scalars(tmp_path)


# ------------------------------------------------------------------------------------- writers and pictures (fake run)


def _fake_val(nc=3):
    from yolojax.engine.validate import ValResult
    from yolojax.metrics import ConfusionMatrix, DetectionStatsAccumulator

    acc = DetectionStatsAccumulator(nc, NAMES, confusion_matrix=ConfusionMatrix(nc))
    rng = np.random.default_rng(1)
    images = rng.integers(0, 255, (3, 48, 64, 3), dtype=np.uint8)
    gt_boxes = np.array([[[4, 4, 30, 30], [34, 10, 60, 44]]] * 3, np.float32)
    gt_cls = np.array([[0, 1]] * 3, np.int32)
    pred_boxes = np.zeros((3, 5, 4), np.float32)
    pred_boxes[:, :2] = gt_boxes + 1
    scores = np.zeros((3, 5), np.float32)
    scores[:, :2] = [0.9, 0.6]
    pred_cls = np.zeros((3, 5), np.int32)
    pred_cls[:, :2] = [0, 2]  # the second box is predicted as the wrong class
    valid = scores > 0
    for i in range(2):  # image 2 is padding (image_valid False)
        acc.update(pred_boxes[i][valid[i]], scores[i][valid[i]], pred_cls[i][valid[i]], gt_boxes[i], gt_cls[i])
    metrics = acc.compute()
    batch = {"images": images, "boxes": gt_boxes, "classes": gt_cls, "mask": np.ones((3, 2), bool),
             "image_valid": np.array([True, True, False])}
    pred = {"boxes": pred_boxes, "scores": scores, "classes": pred_cls, "valid": valid}
    return ValResult(metrics, {}, {}, [], 2, acc, [{"batch": batch, "pred": pred}])


def _fake_run(tmp_path, *, draw=True, log_every=10, epochs=2, nb=2):
    """Drive the run's writers and pictures as the training loop does on process 0, with hand-made data (mosaic
    closes at the last epoch, as close_mosaic=1 has it); returns the run's background writer, closed."""
    from yolojax.tasks.detect import DetectTask

    rng = np.random.default_rng(0)
    labels = [np.column_stack([rng.integers(0, 3, 4), rng.uniform(0.2, 0.6, (4, 4))]) for _ in range(6)]
    board, tensorboard = open_board(tmp_path, True)
    pictures = RunPictures(board, DetectTask(), NAMES, tmp_path) if draw else None
    if pictures is not None:
        pictures.labels(labels)
    log = CsvWriter(tmp_path / "results.csv")
    images, boxes, classes, mask = _gray_batch()
    for epoch in range(epochs):
        for i in range(nb):
            step = epoch * nb + i
            batch = {"images": images + step, "boxes": boxes, "classes": classes, "mask": mask}
            metrics = {"box_loss": np.float32(3.0 - step), "cls_loss": np.float32(2.0), "dfl_loss": np.float32(1.0),
                       "lr/pg0": np.float32(0.01), "lr/pg1": np.float32(0.02), "lr/pg2": np.float32(0.03)}
            if pictures is not None and draws_train_batch(step, nb, epochs - 1):
                pictures.train_batch(step, batch)
            if tensorboard and step % log_every == 0:
                board.write_scalars(step, iteration_scalars(metrics))
        row = {"epoch": epoch + 1, **{c: 0.1 * (epoch + 1) + 0.001 * k for k, c in enumerate(COLUMNS[1:])}}
        log.write_scalars(epoch + 1, row)
        board.write_scalars(epoch + 1, epoch_scalars(row, 100.0 + epoch))
    if pictures is not None:
        pictures.final(log.path, _fake_val(), epochs)
    board.close()
    return board


def test_run_writers_write_every_picture_and_the_epoch_scalars(tmp_path):
    board = _fake_run(tmp_path, log_every=1)
    assert board.failures == []
    # close_mosaic at epoch 1 of 2 with 2 batches per epoch: iterations 0, 1, 2 and again 2, 3 (spec §3.14)
    assert sorted(p.name for p in tmp_path.glob("train_batch*.jpg")) == [f"train_batch{k}.jpg" for k in range(4)]
    for name in PICTURES:
        _assert_not_blank(tmp_path / name)
    h, w = _read(tmp_path / "val_batch0_pred.jpg").shape[:2]
    assert (h, w) == (120, 320)  # the two valid 48x64 images: 1 row, 2 columns, scaled 2.5x
    s = read_scalars(tmp_path)
    csv = read_results_csv(tmp_path / "results.csv")
    for col in COLUMNS[1:]:
        assert [st for st, _ in s[col]] == [1, 2]
        np.testing.assert_allclose([v for _, v in s[col]], [r[col] for r in csv], rtol=1e-5)
    assert s["speed/images_per_second"] == [(1, 100.0), (2, 101.0)]
    assert [st for st, _ in s["train_iter/box_loss"]] == [0, 1, 2, 3]
    np.testing.assert_allclose([v for _, v in s["train_iter/box_loss"]], [3, 2, 1, 0])
    assert s["train_iter/lr_pg1"][0] == (0, pytest.approx(0.02))
    ims = read_images(tmp_path)
    assert [st for st, _ in ims["train_batch0"]] == [0] and [st for st, _ in ims["val_batch0_pred"]] == [2]


def test_plots_false_writes_only_tensorboard(tmp_path):
    _fake_run(tmp_path, draw=False)
    made = {p.name for p in tmp_path.iterdir() if not p.name.startswith("events.out.tfevents")}
    assert made == {"results.csv"}
    assert "train/box_loss" in read_scalars(tmp_path) and not read_images(tmp_path)


def test_train_batch_pictures_follow_ultralytics_iterations():
    """The first three iterations, and the first three of the epoch that closes mosaic: (epochs - close_mosaic) * nb
    + {0, 1, 2}; 5 batches per epoch, mosaic closing at epoch 3 -> 15, 16, 17."""
    assert [s for s in range(40) if draws_train_batch(s, 5, 3)] == [0, 1, 2, 15, 16, 17]
    assert [s for s in range(40) if draws_train_batch(s, 5, None)] == [0, 1, 2]
    assert [s for s in range(40) if draws_train_batch(s, 1, 1)] == [0, 1, 2, 3]  # one batch per epoch: overlap


def test_open_board_follows_the_tensorboard_key_and_warns_once_without_tensorboardx(tmp_path, monkeypatch, capsys):
    board, on = open_board(tmp_path / "off", False)
    board.close()
    assert not on and not event_files(tmp_path / "off")
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # as if it were not installed: importing it fails
    board, on = open_board(tmp_path / "missing", True)
    board.write_scalars(1, {"train/box_loss": 1.0})  # a writer without TensorBoard takes the calls
    board.close()
    err = capsys.readouterr().err
    assert not on and board.failures == [] and not event_files(tmp_path / "missing")
    assert err.count("WARNING: TensorBoard logging is off") == 1 and "tensorboardX" in err


def test_drawing_never_blocks_the_loop_and_sees_a_copy_of_the_batch(tmp_path, monkeypatch):
    seen, release = [], threading.Event()

    def slow_plot(images, *args, **kw):
        release.wait(5)  # a picture that takes long to draw
        seen.append(float(images.mean()))
        return images[0]

    monkeypatch.setattr(plots, "image_grid", slow_plot)
    from yolojax.tasks.detect import DetectTask

    board, _ = open_board(tmp_path, False)
    pictures = RunPictures(board, DetectTask(), NAMES, tmp_path)
    images, boxes, classes, mask = _gray_batch()
    t0 = time.perf_counter()
    for step in range(3):
        batch = {"images": images.copy(), "boxes": boxes, "classes": classes, "mask": mask}
        pictures.train_batch(step, batch)
        batch["images"][:] = 0  # the loop reuses/changes its buffers: the drawing must not see that
    assert time.perf_counter() - t0 < 1.0  # three 5-second drawings queued, none waited for
    release.set()
    board.close()
    assert seen == [128.0, 128.0, 128.0]


# ----------------------------------------------------------------------------------------------- phase timer


def test_phase_timer_accumulates_per_epoch_and_per_run():
    now = [0.0]
    timer = PhaseTimer(clock=lambda: now[0])
    with timer.phase("data"):
        now[0] += 1.5
    timer.add("step", 2.0)
    timer.add("step", 0.5)
    assert timer.epoch["data"] == 1.5 and timer.epoch["step"] == 2.5 and timer.calls["step"] == 2
    assert timer.totals()["step"] == 2.5  # the unfinished epoch counts in the run's totals
    first = timer.end_epoch()
    assert first["step"] == 2.5 and timer.epoch["step"] == 0.0
    with pytest.raises(ZeroDivisionError), timer.phase("checkpoint"):  # an error still stops the clock
        now[0] += 0.25
        1 / 0
    assert timer.totals() == {**dict.fromkeys(PHASES, 0.0), "data": 1.5, "step": 2.5, "checkpoint": 0.25}
    with pytest.raises(KeyError, match="unknown phase 'stpe'"):
        timer.add("stpe", 1.0)


def test_phase_table_and_summary_line_account_for_the_wall_time():
    seconds = {**dict.fromkeys(PHASES, 0.0), "data": 1.0, "step": 6.0, "val_forward": 2.0}
    lines = phase_table(seconds, 10.0, "Epoch 3 time")
    assert lines[0] == "Epoch 3 time: 10.00s"
    body = {ln.rsplit(None, 2)[0].strip(): (float(ln.split()[-2]), ln.split()[-1]) for ln in lines[2:]}
    assert body == {"waiting for data": (1.0, "10.0%"), "train step (dispatch + wait)": (6.0, "60.0%"),
                    "validation: forward + NMS": (2.0, "20.0%"), "other": (1.0, "10.0%")}
    assert summary_line(seconds, 10.0) == "Time: 10.0s total, data 1.0s, step 6.0s, val_forward 2.0s, other 1.0s"
    # phases are measured with another clock than the wall: a small excess never prints a negative rest
    assert summary_line(seconds, 8.9).endswith("other 0.0s")


# ----------------------------------------------------------------------------------------------- a real run


@pytest.fixture(scope="module")
def short_run(tiny_model_yaml, tmp_path_factory):
    """2 epochs of the tiny model on 16 synthetic images (64 px, batch 8, close_mosaic 1), stdout captured."""
    from yolojax.data import make_shapes_dataset
    from yolojax.config import apply_overrides, default_config
    from yolojax.train import train_and_evaluate

    root = tmp_path_factory.mktemp("report_run")
    data = make_shapes_dataset(root / "shapes", n_train=16, n_val=8, seed=3)
    config = apply_overrides(default_config(), dict(
        model=str(tiny_model_yaml), data=str(data), imgsz=64, batch=8, epochs=2, close_mosaic=1, workers=0,
        plots=True, val=True, profile=True))
    seen = {}
    out, err = io.StringIO(), io.StringIO()  # not TTYs, like a CI log
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        result = train_and_evaluate(config, root / "run",
                                    callbacks={"on_train_end": [lambda ctx: seen.update(ctx=ctx)]})
    return types.SimpleNamespace(dir=pathlib.Path(result["save_dir"]), stdout=out.getvalue(), stderr=err.getvalue(),
                                 final=seen["ctx"].final, ctx=seen["ctx"])


@pytest.mark.slow
def test_short_run_writes_every_picture(short_run):
    d = short_run.dir
    for name in PICTURES:
        img = _assert_not_blank(d / name)
        if name in FIGURE_SIZES:
            assert (img.shape[1], img.shape[0]) == FIGURE_SIZES[name], name
    for k in range(3):  # 8 augmented 64 px images: 3x3 cells of 160 px
        assert _read(d / f"train_batch{k}.jpg").shape == (480, 480, 3)
    b = short_run.final.first_batches[0]["batch"]
    n, h, w = int(b["image_valid"].sum()), *b["images"].shape[1:3]
    rows, cols, ch, cw = plots.grid_layout(n, h, w)
    for name in ("val_batch0_labels.jpg", "val_batch0_pred.jpg"):
        assert _read(d / name).shape == (rows * ch, cols * cw, 3)
    assert "failed" not in short_run.stderr


@pytest.mark.slow
def test_short_run_results_csv_and_tensorboard_agree(short_run):
    rows = read_results_csv(short_run.dir / "results.csv")
    assert [r["epoch"] for r in rows] == [1, 2]
    s = read_scalars(short_run.dir)
    for col in COLUMNS[1:]:
        assert [st for st, _ in s[col]] == [1, 2], col
        np.testing.assert_allclose([v for _, v in s[col]], [r[col] for r in rows], rtol=1e-4, atol=1e-9)
    assert [st for st, _ in s["speed/images_per_second"]] == [1, 2]
    assert all(v > 0 for _, v in s["speed/images_per_second"])
    assert s["train_iter/box_loss"][0][0] == 0 and s["train_iter/lr_pg0"][0][0] == 0
    ims = read_images(short_run.dir)
    assert {"train_batch0", "train_batch1", "train_batch2", "val_batch0_pred"} <= set(ims)
    assert ims["train_batch0"][0][1].shape == (480, 480, 3)


@pytest.mark.slow
def test_short_run_console_is_plain_lines_without_a_tty(short_run):
    out = short_run.stdout
    assert "\r" not in out  # no progress-bar redraws in a log file
    assert out.count("Epoch    GPU_mem   box_loss") == 2
    assert "train step for images" in out and "tensorboard --logdir" in out


@pytest.mark.slow
def test_short_run_times_its_phases(short_run):
    """results.csv's time column grows epoch by epoch; the phases tile the run (their sum is at most its wall
    time), the train step and the validation forward took time; profile=True printed each epoch's table and every
    run prints one Time: line."""
    rows = read_results_csv(short_run.dir / "results.csv")
    header = (short_run.dir / "results.csv").read_text().splitlines()[0].split(",")
    assert [h.strip() for h in header[:2]] == ["epoch", "time"]
    times = [r["time"] for r in rows]
    assert 0 < times[0] < times[1] <= short_run.ctx.wall_seconds
    totals = short_run.ctx.phases.totals()
    assert set(totals) == set(PHASES)
    assert all(v >= 0 for v in totals.values())
    assert sum(totals.values()) <= short_run.ctx.wall_seconds + 0.05
    for k in ("data", "step", "compile", "val_data", "val_forward", "val_matching", "val_metrics", "checkpoint",
              "export", "report", "final_val"):
        assert totals[k] > 0, k
    out = short_run.stdout
    assert out.count("Epoch 1 time:") == 1 and out.count("Epoch 2 time:") == 1
    for label in ("waiting for data", "train step (dispatch + wait)", "validation: forward + NMS", "weight export (.npz)"):
        assert out.count(label) == 2, label
    (line,) = [ln for ln in out.splitlines() if ln.startswith("Time: ")]
    assert " step " in line and " val_forward " in line and "other" in line
