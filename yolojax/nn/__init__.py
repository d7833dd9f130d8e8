"""Flax Linen modules of the YOLOv8 detector and classifier."""
from yolojax.nn.blocks import C2f, SPPF, BatchNorm, Bottleneck, Concat, Conv, Detect, Upsample, decode_levels
from yolojax.nn.classify import YOLOV8_CLS_LAYERS, YOLOV8_CLS_SCALES, Classify, YOLOv8Cls, model_class, model_from_yaml
from yolojax.nn.yolo import YOLOV8_LAYERS, YOLOV8_SCALES, YOLOv8, guess_scale

__all__ = ["YOLOv8", "YOLOv8Cls", "YOLOV8_LAYERS", "YOLOV8_SCALES", "YOLOV8_CLS_LAYERS", "YOLOV8_CLS_SCALES",
           "guess_scale", "model_class", "model_from_yaml", "Conv", "BatchNorm", "Bottleneck", "C2f", "SPPF",
           "Upsample", "Concat", "Detect", "Classify", "decode_levels"]
