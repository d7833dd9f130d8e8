"""yolojax: YOLOv8 object-detection training in JAX with Ultralytics semantics."""
from __future__ import annotations

__version__ = "0.1.0"


def __getattr__(name):  # lazy: `import yolojax` stays cheap and does not import JAX
    if name == "YOLO":
        from yolojax.model import YOLO

        return YOLO
    raise AttributeError(f"module 'yolojax' has no attribute {name!r}")
