"""What the benchmark scripts share: timing a call, appending rows to RESULTS.md, writing a YOLO-format split.

The scripts run by path (``python benchmarks/x.py``), so this folder is on ``sys.path`` and ``import bench_common``
finds this file. It imports neither JAX nor yolojax at module level: the Ultralytics halves of the benchmarks
import it under Ultralytics' own Python.
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Callable

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
HEADER = "| date | machine | versions | benchmark | result | notes |\n|---|---|---|---|---|---|\n"


def median_time(fn: Callable[[], object], warmup: int, runs: int) -> tuple[float, list[float]]:
    """(median seconds, every run's seconds) of ``runs`` calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def append_results(rows: list[str], path: Path = RESULTS) -> None:
    """Append table ``rows`` (one Markdown line each, no newline) to RESULTS.md, writing its header first when the
    file does not exist."""
    if not path.exists():
        path.write_text(HEADER)
    with open(path, "a") as f:
        f.writelines(row + "\n" for row in rows)


def write_yolo_split(root: Path, split: str, n: int, *, seed: int, offset: int = 0, h: int = 480, w: int = 640,
                     digits: int = 5) -> None:
    """``n`` synthetic shapes images (JPEG quality 90) and their YOLO label files under ``root/images/<split>`` and
    ``root/labels/<split>``; image ``i`` is drawn from ``default_rng([seed, offset + i])`` and named ``i`` padded to
    ``digits``."""
    import cv2  # the scripts that write datasets run in yolojax's environment; the Ultralytics halves never call it
    import numpy as np

    from yolojax.data.synthetic import make_image

    (root / "images" / split).mkdir(parents=True)
    (root / "labels" / split).mkdir(parents=True)
    for i in range(n):
        img, rows = make_image(np.random.default_rng([seed, offset + i]), h, w)
        cv2.imwrite(str(root / "images" / split / f"{i:0{digits}d}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 90])
        (root / "labels" / split / f"{i:0{digits}d}.txt").write_text(
            "".join(f"{int(r[0])} {r[1]:.6f} {r[2]:.6f} {r[3]:.6f} {r[4]:.6f}\n" for r in rows))
