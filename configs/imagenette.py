"""YOLOv8n-cls from scratch on Imagenette (10 easy ImageNet classes, ~9.5k train / ~3.9k val images) with
Ultralytics' classification defaults: 224 px, random resized crop (scale 0.5), flips, RandAugment, random erasing
0.4, optimizer=auto, val resize + centre crop (crop_fraction 1.0).

    python -m yolojax.train --config=configs/imagenette.py --config.device=0

data=imagenette is downloaded by name on first use (Ultralytics' release asset, ~1.5 GB, into ./datasets); or use
--config.data=tfds:imagenette. Top-1 / top-5 that yolojax reaches: not measured yet.
"""
from __future__ import annotations

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from default import get_config as _default  # noqa: E402


def get_config():
    c = _default()
    c.task = "classify"
    c.data = "imagenette"
    c.model = "yolov8n-cls.yaml"
    c.epochs = 100
    c.imgsz = 224
    return c
