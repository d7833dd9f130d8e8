"""``results.csv`` in Ultralytics' v8-era format and the console lines of the training loop.

The CSV is rewritten atomically from the rows kept in the checkpoint, so a killed and resumed run has
exactly one row per finished epoch. As Ultralytics 8.4 writes, a ``time`` column follows ``epoch``: seconds
since training started (after validation, before saving); a resumed run continues from its last row's time.
"""
from __future__ import annotations

import os
import pathlib
import tempfile

COLUMNS = ("epoch", "time", "train/box_loss", "train/cls_loss", "train/dfl_loss", "metrics/precision(B)",
           "metrics/recall(B)", "metrics/mAP50(B)", "metrics/mAP50-95(B)", "val/box_loss", "val/cls_loss",
           "val/dfl_loss", "lr/pg0", "lr/pg1", "lr/pg2")


class ResultsLog:
    """Rows of per-epoch results; ``write()`` renders results.csv (each field right-aligned in 23 chars)."""

    def __init__(self, path, rows: list[dict] | None = None, *, columns: tuple[str, ...] = COLUMNS):
        self.path = pathlib.Path(path)
        self.rows: list[dict] = list(rows or [])
        self.columns = tuple(columns)  # the task's; "epoch" first

    def append(self, row: dict) -> None:
        self.rows = [r for r in self.rows if int(r["epoch"]) != int(row["epoch"])] + [row]
        self.rows.sort(key=lambda r: int(r["epoch"]))

    def text(self) -> str:
        lines = [",".join(f"{c:>23s}" for c in self.columns)]
        for r in self.rows:
            vals = [f"{int(r['epoch']):>23d}"] + [f"{float(r.get(c, 0.0)):>23.5g}" for c in self.columns[1:]]
            lines.append(",".join(vals))
        return "\n".join(lines) + "\n"

    def write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".results", suffix=".csv")
        with os.fdopen(fd, "w") as f:
            f.write(self.text())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be shared
        os.replace(tmp, self.path)


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


LOSS_NAMES = ("box_loss", "cls_loss", "dfl_loss")  # detection's


def format_epoch_header(loss_names: tuple[str, ...] = LOSS_NAMES) -> str:
    return ("%11s" * (4 + len(loss_names))) % ("Epoch", "GPU_mem", *loss_names, "Instances", "Size")


def format_progress(epoch: int, epochs: int, mem_gb: float, losses, instances: int, size: int) -> str:
    """One progress line; ``losses`` in the order of the header's loss names."""
    return ("%11s" * 2 + "%11.4g" * (len(losses) + 2)) % (f"{epoch + 1}/{epochs}", f"{mem_gb:.3g}G", *losses,
                                                           instances, size)
