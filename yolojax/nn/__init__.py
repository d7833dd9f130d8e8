"""Flax Linen modules of the YOLOv8 detector."""
from yolojax.nn.blocks import C2f, SPPF, BatchNorm, Bottleneck, Concat, Conv, Detect, Upsample, decode_levels
from yolojax.nn.yolo import YOLOV8_LAYERS, YOLOV8_SCALES, YOLOv8, guess_scale

__all__ = ["YOLOv8", "YOLOV8_LAYERS", "YOLOV8_SCALES", "guess_scale", "Conv", "BatchNorm", "Bottleneck",
           "C2f", "SPPF", "Upsample", "Concat", "Detect", "decode_levels"]
