"""YOLOv8n on the built-in synthetic shapes dataset (generated on first use; no network needed).

    python -m yolojax.train --config=configs/shapes.py

A few minutes on a 2-core CPU; it ends near mAP50 0.97 / mAP50-95 0.68 (the README's results.png).
"""
from __future__ import annotations

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from default import get_config as _default  # noqa: E402


def get_config():
    c = _default()
    c.data = "shapes"
    c.model = "yolov8n.yaml"
    c.epochs = 20
    c.imgsz = 128
    c.batch = 16
    c.nbs = 16  # an optimizer step per batch: 256 images give 16 steps an epoch instead of 4
    c.close_mosaic = 5
    c.workers = 0
    return c
