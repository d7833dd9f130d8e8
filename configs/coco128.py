"""YOLOv8n on COCO128 (the first 128 COCO train images, validated on the same images).

    python -m yolojax.train --config=configs/coco128.py

Downloads coco128.zip (7 MB) into ./datasets on first use. Starting from the released yolov8n.pt
(--config.model=yolov8n.pt, downloaded into the working directory on first use) mAP50-95 starts near 0.45
(these images are part of COCO train2017);
from scratch (the default here) 100 epochs reach only a few points: 128 images are a smoke test, not a benchmark.
"""
from __future__ import annotations

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from default import get_config as _default  # noqa: E402


def get_config():
    c = _default()
    c.data = "coco128"
    c.model = "yolov8n.yaml"
    c.epochs = 100
    c.imgsz = 640
    c.batch = 16
    return c
