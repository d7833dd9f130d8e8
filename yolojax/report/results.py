"""``results.csv`` in Ultralytics' v8-era format and the console lines of the training loop.

The CSV is rewritten atomically from the rows kept in the checkpoint, so a killed and resumed run has
exactly one row per finished epoch. As Ultralytics 8.4 writes, a ``time`` column follows ``epoch``: seconds
since training started (after validation, before saving); a resumed run continues from its last row's time.
"""
from __future__ import annotations

import os
import pathlib
import tempfile
from typing import Mapping, Sequence

COLUMNS = ("epoch", "time", "train/box_loss", "train/cls_loss", "train/dfl_loss", "metrics/precision(B)",
           "metrics/recall(B)", "metrics/mAP50(B)", "metrics/mAP50-95(B)", "val/box_loss", "val/cls_loss",
           "val/dfl_loss", "lr/pg0", "lr/pg1", "lr/pg2")
CLASSIFY_COLUMNS = ("epoch", "time", "train/loss", "metrics/accuracy_top1", "metrics/accuracy_top5", "val/loss",
                    "lr/pg0", "lr/pg1", "lr/pg2")
DETECT_LOSS_NAMES = ("box_loss", "cls_loss", "dfl_loss")
FIELD = 23  # every results.csv field is right-aligned in this many characters


class CsvWriter:
    """Rows of per-epoch results, one per epoch (keyed by ``epoch``); ``write()`` renders results.csv.

    A metric writer (``yolojax.report.writers.MetricWriter``) whose step is the 1-based epoch. ``rows`` may be
    handed back from a checkpoint, so a resumed run rewrites the file it had. ``columns`` (``epoch`` first) are the
    file's columns in order: ``COLUMNS`` for detection, ``CLASSIFY_COLUMNS`` for classification; a row's other
    keys are kept in ``rows`` but not written, a missing column is written as 0."""

    def __init__(self, path, rows: Sequence[Mapping[str, float]] | None = None, *,
                 columns: Sequence[str] = COLUMNS):
        if not columns or columns[0] != "epoch":
            raise ValueError(f"CsvWriter: columns must start with 'epoch', got {tuple(columns)!r}")
        self.path = pathlib.Path(path)
        self.columns = tuple(columns)
        self.rows: list[dict] = [dict(r) for r in rows or []]

    def append(self, row: Mapping[str, float]) -> None:
        """Add ``row`` (it must hold ``epoch``), replacing a row of the same epoch; rows stay in epoch order."""
        self.rows = [r for r in self.rows if int(r["epoch"]) != int(row["epoch"])] + [dict(row)]
        self.rows.sort(key=lambda r: int(r["epoch"]))

    def text(self) -> str:
        lines = [",".join(f"{c:>{FIELD}s}" for c in self.columns)]
        for r in self.rows:
            vals = [f"{int(r['epoch']):>{FIELD}d}"] + [f"{float(r.get(c, 0.0)):>{FIELD}.5g}" for c in self.columns[1:]]
            lines.append(",".join(vals))
        return "\n".join(lines) + "\n"

    def write(self) -> None:
        """Rewrite the file atomically (a temporary file in the same directory, then a rename)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".results", suffix=".csv")
        with os.fdopen(fd, "w") as f:
            f.write(self.text())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be shared
        os.replace(tmp, self.path)

    # the metric-writer face: one call per finished epoch
    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        """The row of epoch ``step`` (1-based) is ``scalars``; the file is rewritten at once."""
        self.append({**scalars, "epoch": int(step)})
        self.write()

    def write_images(self, step: int, images) -> None:
        """A CSV holds no pictures: images are for the other writers."""

    def flush(self) -> None:
        """Every ``write_scalars`` already rewrote the file."""

    def close(self) -> None:
        """Nothing stays open between writes."""



def read_results_csv(path) -> list[dict]:
    lines = pathlib.Path(path).read_text().strip().splitlines()
    header = [h.strip() for h in lines[0].split(",")]
    rows = []
    for line in lines[1:]:
        vals = [v.strip() for v in line.split(",")]
        row = {h: float(v) for h, v in zip(header, vals)}
        row["epoch"] = int(row["epoch"])
        rows.append(row)
    return rows


def format_epoch_header(loss_names: Sequence[str] = DETECT_LOSS_NAMES) -> str:
    """The column titles printed at the start of each epoch, one 11-char field per column."""
    return ("%11s" * (len(loss_names) + 4)) % ("Epoch", "GPU_mem", *loss_names, "Instances", "Size")


def format_progress(epoch: int, epochs: int, mem_gb: float, losses, instances: int, size: int) -> str:
    """A progress line under ``format_epoch_header``: ``epoch`` is 0-based, ``losses`` the running means in the
    header's loss order."""
    losses = tuple(losses)
    return ("%11s" * 2 + "%11.4g" * (len(losses) + 2)) % (f"{epoch + 1}/{epochs}", f"{mem_gb:.3g}G", *losses,
                                                          instances, size)
