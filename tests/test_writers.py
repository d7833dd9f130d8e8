"""Metric writers: results.csv text and round trip, the console lines per task, the async wrapper's order and
error reporting, fan-out, TensorBoard agreeing with the CSV, and the classify results.png."""
from __future__ import annotations

import io
import threading
import time

import cv2
import jax.numpy as jnp
import numpy as np
import pytest

from yolojax.report import plots
from yolojax.report.results import CLASSIFY_COLUMNS, COLUMNS, CsvWriter, format_epoch_header, read_results_csv
from yolojax.report.tensorboard import read_images, read_scalars
from yolojax.report.writers import AsyncWriter, ConsoleWriter, MultiWriter, TensorBoardWriter, loss_keys


def _field(text: str) -> str:
    return " " * (23 - len(text)) + text  # results.csv: every field right-aligned in 23 characters


class Recorder:
    """A writer that records its calls; ``fail`` names the methods that raise."""

    def __init__(self, fail=(), delay=0.0):
        self.calls, self.fail, self.delay = [], set(fail), delay

    def _record(self, *call):
        time.sleep(self.delay)
        self.calls.append(call)
        if call[0] in self.fail:
            raise OSError(f"disk full in {call[0]}")

    def write_scalars(self, step, scalars):
        self._record("write_scalars", step, dict(scalars))

    def write_images(self, step, images):
        self._record("write_images", step, sorted(images))

    def flush(self):
        self._record("flush")

    def close(self):
        self._record("close")


# ----------------------------------------------------------------------------------------------- CSV


def test_csv_writer_writes_the_hand_written_classify_file_and_reads_back(tmp_path):
    path = tmp_path / "results.csv"
    w = CsvWriter(path, columns=CLASSIFY_COLUMNS)
    w.write_scalars(2, {"time": 7.25, "train/loss": 12345.678, "metrics/accuracy_top1": 0.5,
                        "metrics/accuracy_top5": 1.0, "val/loss": 0.123456, "lr/pg0": 1e-05, "lr/pg1": 0.01,
                        "lr/pg2": 0.01, "fitness": 0.75})  # a key outside the columns is not written
    w.write_scalars(1, {"time": 3.5, "train/loss": 2.0, "metrics/accuracy_top1": 0.25,
                        "metrics/accuracy_top5": 0.875, "val/loss": 1.5})  # missing lr columns: written as 0
    expected = "\n".join([
        ",".join(_field(c) for c in ("epoch", "time", "train/loss", "metrics/accuracy_top1", "metrics/accuracy_top5",
                                     "val/loss", "lr/pg0", "lr/pg1", "lr/pg2")),
        ",".join(_field(v) for v in ("1", "3.5", "2", "0.25", "0.875", "1.5", "0", "0", "0")),
        ",".join(_field(v) for v in ("2", "7.25", "12346", "0.5", "1", "0.12346", "1e-05", "0.01", "0.01")),
    ]) + "\n"
    assert path.read_text() == expected  # rows in epoch order whatever the order of the calls
    rows = read_results_csv(path)
    assert [r["epoch"] for r in rows] == [1, 2]
    assert rows[1]["val/loss"] == pytest.approx(0.12346) and rows[1]["train/loss"] == 12346.0
    assert not list(tmp_path.glob(".results*"))  # the temporary file was renamed into place


def test_csv_writer_restores_rows_and_replaces_an_epoch(tmp_path):
    path = tmp_path / "results.csv"
    first = CsvWriter(path)
    for epoch in (1, 2):
        first.write_scalars(epoch, {c: 0.5 * epoch for c in COLUMNS[1:]})
    resumed = CsvWriter(path, rows=first.rows)  # as a resumed run does from its checkpoint's rows
    resumed.write_scalars(2, {c: 0.75 for c in COLUMNS[1:]})  # epoch 2 done again after a mid-epoch kill
    rows = read_results_csv(path)
    assert [r["epoch"] for r in rows] == [1, 2]
    assert rows[0]["metrics/mAP50(B)"] == 0.5 and rows[1]["metrics/mAP50(B)"] == 0.75
    assert [h.strip() for h in path.read_text().splitlines()[0].split(",")] == list(COLUMNS)
    with pytest.raises(ValueError, match="must start with 'epoch'"):
        CsvWriter(path, columns=("time", "epoch"))


# ----------------------------------------------------------------------------------------------- console


def test_console_lines_for_the_classify_loss_names():
    out = io.StringIO()
    w = ConsoleWriter(epochs=10, batches_per_epoch=4, imgsz=224, loss_names=("loss",), stream=out)
    w.header()
    w.write_scalars(5, {"loss": 0.987654, "instances": 32, "gpu_mem": 1.234})  # epoch 2, batch 2 of 4
    assert out.getvalue().splitlines() == [
        "      Epoch    GPU_mem       loss  Instances       Size",
        "       2/10      1.23G     0.9877         32        224 2/4"]
    tty = io.StringIO()
    w = ConsoleWriter(epochs=10, batches_per_epoch=4, imgsz=224, loss_names=("loss",), stream=tty, tty=True)
    w.write_scalars(4, {"loss": 1.0, "instances": 32})
    w.write_scalars(7, {"loss": 0.5, "instances": 30})  # the epoch's last batch ends the line
    assert tty.getvalue() == ("\r       2/10         0G          1         32        224 1/4"
                              "\r       2/10         0G        0.5         30        224 4/4\n")
    with pytest.raises(KeyError, match=r"needs \['loss'\]"):
        w.write_scalars(0, {"box_loss": 1.0, "instances": 1})


def test_detection_header_is_unchanged_by_default():
    assert format_epoch_header() == ("      Epoch    GPU_mem   box_loss   cls_loss   dfl_loss  Instances       Size")
    out = io.StringIO()
    ConsoleWriter(epochs=3, batches_per_epoch=2, imgsz=640, stream=out).write_scalars(
        1, {"box_loss": 1.5, "cls_loss": 2.25, "dfl_loss": 1.125, "instances": 17, "gpu_mem": 0.0})
    assert out.getvalue() == "        1/3         0G        1.5       2.25      1.125         17        640 2/2\n"


# ----------------------------------------------------------------------------------------------- async, multi


def test_async_writer_keeps_call_order_never_blocks_and_copies_arguments():
    inner = Recorder(delay=0.02)
    w = AsyncWriter(inner)
    scalars = {"a": jnp.float32(1.5)}  # a device value: read on the writer's thread
    t0 = time.perf_counter()
    for step in range(20):
        w.write_scalars(step, scalars)
        if step == 10:
            w.write_images(step, {"pic": np.zeros((2, 2, 3), np.uint8)})
    scalars["a"] = 99.0  # the caller's later change is not what was queued
    assert time.perf_counter() - t0 < 0.2  # 21 calls of 20 ms each queued, none waited for
    w.flush()
    steps = [c[1] for c in inner.calls if c[0] == "write_scalars"]
    assert steps == list(range(20)) and inner.calls[11] == ("write_images", 10, ["pic"])
    assert inner.calls[-1] == ("flush",)
    assert all(c[2] == {"a": 1.5} and type(c[2]["a"]) is float for c in inner.calls if c[0] == "write_scalars")
    w.close()
    assert inner.calls[-1] == ("close",) and w.failures == []
    with pytest.raises(RuntimeError, match="closed"):
        w.write_scalars(0, {})


def test_async_writer_reports_a_failing_call_once_and_keeps_going(capsys):
    inner = Recorder(fail={"write_scalars"})
    w = AsyncWriter(inner)
    for step in range(3):
        w.write_scalars(step, {"x": 1.0})  # never raises here
    w.write_images(3, {"pic": np.zeros((1, 1, 3), np.uint8)})
    w.close()
    assert [c[:2] for c in inner.calls] == [("write_scalars", 0), ("write_scalars", 1), ("write_scalars", 2),
                                            ("write_images", 3), ("close",)]
    assert w.failures == ["write_scalars: OSError('disk full in write_scalars')"] * 3
    warnings = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("WARNING")]
    assert warnings == ["WARNING: write_scalars failed: OSError('disk full in write_scalars')"]


def test_multi_writer_fans_out_in_order_and_a_failure_does_not_starve_the_rest():
    a, bad, b = Recorder(), Recorder(fail={"write_scalars"}), Recorder()
    m = MultiWriter([a, bad, b])
    m.write_images(1, {"x": np.zeros((1, 1, 3), np.uint8)})
    with pytest.raises(OSError, match="disk full"):
        m.write_scalars(2, {"loss": 0.5})
    m.flush()
    m.close()
    expected = [("write_images", 1, ["x"]), ("write_scalars", 2, {"loss": 0.5}), ("flush",), ("close",)]
    assert a.calls == expected and b.calls == expected and bad.calls == expected


def test_tensorboard_and_csv_behind_one_async_writer_agree(tmp_path):
    csv = CsvWriter(tmp_path / "results.csv")
    w = AsyncWriter(MultiWriter([csv, TensorBoardWriter(tmp_path)]))
    for epoch in (1, 2, 3):
        w.write_scalars(epoch, {c: jnp.float32(0.1 * epoch + 0.01 * k) for k, c in enumerate(COLUMNS[1:])})
    img = np.zeros((8, 12, 3), np.uint8)
    img[:, 6:] = [0, 0, 255]
    w.write_images(3, {"val_batch0_pred": img})
    w.close()
    rows, s = read_results_csv(tmp_path / "results.csv"), read_scalars(tmp_path)
    for col in COLUMNS[1:]:
        assert [st for st, _ in s[col]] == [1, 2, 3]
        np.testing.assert_allclose([v for _, v in s[col]], [r[col] for r in rows], rtol=1e-4)
    (step, back), = read_images(tmp_path)["val_batch0_pred"]
    assert step == 3
    np.testing.assert_array_equal(back, img)


# ----------------------------------------------------------------------------------------------- task seams


def test_loss_keys_follow_the_step_metrics():
    det = {"loss": 1, "box_loss": 1, "cls_loss": 1, "dfl_loss": 1, "instances": 3, "lr/pg0": 0.1}
    assert loss_keys(det) == ("box_loss", "cls_loss", "dfl_loss")
    assert loss_keys({"loss": 1, "lr/pg0": 0.1, "grad_norm": 2}) == ("loss",)


def test_results_panels_follow_ultralytics_layout():
    assert plots.results_panels(COLUMNS) == [
        "train/box_loss", "train/cls_loss", "train/dfl_loss", "metrics/precision(B)", "metrics/recall(B)",
        "val/box_loss", "val/cls_loss", "val/dfl_loss", "metrics/mAP50(B)", "metrics/mAP50-95(B)"]
    assert plots.results_panels(CLASSIFY_COLUMNS) == ["train/loss", "metrics/accuracy_top1", "val/loss",
                                                      "metrics/accuracy_top5"]


def test_plot_results_draws_a_classify_results_csv(tmp_path):
    header = ",".join(_field(c) for c in CLASSIFY_COLUMNS)
    lines = [header] + [",".join(_field(v) for v in (str(e), f"{3.1 * e:.1f}", f"{2.5 / e:.4f}", f"{0.2 + 0.1 * e:.2f}",
                                                     f"{0.6 + 0.05 * e:.2f}", f"{2.2 / e:.4f}", "0.01", "0.01", "0.01"))
                        for e in range(1, 6)]
    (tmp_path / "results.csv").write_text("\n".join(lines) + "\n")
    plots.plot_results(tmp_path / "results.png", read_results_csv(tmp_path / "results.csv"))
    img = cv2.imread(str(tmp_path / "results.png"))
    assert img is not None and img.shape[:2] == (900, 900)  # 2x2 panels, (4 + 2) x 6 inches at 150 dpi
    assert img.std() > 8.0
    with pytest.raises(ValueError, match="no results rows"):
        plots.plot_results(tmp_path / "empty.png", [])


def test_async_writer_runs_jobs_on_one_thread():
    w = AsyncWriter(Recorder())
    seen = []
    for k in range(5):
        w.call(f"job{k}", lambda k=k: seen.append((k, threading.current_thread().name)))
    w.close()
    assert [k for k, _ in seen] == list(range(5))
    assert len({name for _, name in seen}) == 1 and seen[0][1] != threading.current_thread().name
