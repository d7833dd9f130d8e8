"""YOLOv8n from scratch on COCO 2017 with Ultralytics' published recipe (500 epochs, 640 px, SGD chosen
by optimizer=auto for runs above 10k iterations, gradients accumulated to the nominal batch 64).

    python -m yolojax.train --config=configs/coco.py --config.device=0,1,2,3,4,5,6,7 --config.batch=128

Downloads COCO (~20 GB) into ./datasets on first use (or use --config.data=tfds:coco/2017). Ultralytics'
published YOLOv8n reaches mAP50-95 37.3 on val2017 with this recipe; yolojax trains the same model, loss,
augmentation and schedule.
"""
from __future__ import annotations

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from default import get_config as _default  # noqa: E402


def get_config():
    c = _default()
    c.data = "coco"
    c.model = "yolov8n.yaml"
    c.epochs = 500
    c.imgsz = 640
    c.batch = 64
    return c
