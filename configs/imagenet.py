"""YOLOv8n-cls from scratch on ImageNet-1k (ILSVRC2012) with Ultralytics' classification defaults: 224 px, random
resized crop (scale 0.5: 50-100 % of the area), horizontal flips, RandAugment, random erasing 0.4, SGD/AdamW chosen
by optimizer=auto, gradients accumulated to the nominal batch 64, val resize + centre crop (crop_fraction 1.0).

    python -m yolojax.train --config=configs/imagenet.py --config.device=0,1,2,3,4,5,6,7 --config.batch=256

ImageNet is never downloaded (it needs an account): put it at ./datasets/imagenet/{train,val}/<wnid>/*.JPEG (the
error of data=imagenet says how), or use --config.data=tfds:imagenet2012 with the archives in tfds' manual dir.
Ultralytics publishes top-1 69.0 / top-5 88.3 for YOLOv8n-cls at 224; what yolojax reaches: not measured yet.
"""
from __future__ import annotations

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from default import get_config as _default  # noqa: E402


def get_config():
    c = _default()
    c.task = "classify"
    c.data = "imagenet"
    c.model = "yolov8n-cls.yaml"
    c.epochs = 100
    c.imgsz = 224
    return c
