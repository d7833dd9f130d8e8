"""Pure array math: box formats, IoU family, anchors, DFL decode (and NMS in ``yolojax.ops.nms``)."""
from yolojax.ops.boxes import (
    bbox2dist,
    bbox_iou,
    box_iou,
    dfl_decode,
    dist2bbox,
    make_anchors,
    xywh2xyxy,
    xyxy2xywh,
)

__all__ = [
    "bbox2dist",
    "bbox_iou",
    "box_iou",
    "dfl_decode",
    "dist2bbox",
    "make_anchors",
    "xywh2xyxy",
    "xyxy2xywh",
]
