"""Data: dataset YAMLs, verified labels + cache, downloads, Grain loaders, synthetic and TFDS data.

    from yolojax.data import check_dataset, DetectionDataset, TrainLoader, ValLoader, shapes_yaml

Names are imported lazily (the loader imports Grain, which imports JAX). See ``loader.py`` for the trainer's usage;
augmentation is ``yolojax.augment``'s.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "check_dataset": "dataset_yaml", "list_images": "dataset_yaml", "img2label_path": "dataset_yaml",
    "DatasetError": "dataset_yaml", "datasets_dir": "dataset_yaml",
    "load_labels": "labels", "LabelSet": "labels",
    "download_zip": "download", "safe_extract": "download",
    "DetectionDataset": "dataset", "val_sample": "dataset",
    "TrainLoader": "loader", "ValLoader": "loader", "BatchIterator": "loader", "pad_boxes": "batching",
    "make_shapes_dataset": "synthetic", "shapes_yaml": "synthetic",
    "TfdsDetectionDataset": "dataset", "check_tfds_dataset": "tfds",
    "check_cls_dataset": "classify", "cls_index": "classify", "ClassificationIndex": "classify",
    "shapes_cls_dir": "synthetic",
    "ClassifyDataset": "classify_loader", "ClassifyTrainLoader": "classify_loader",
    "ClassifyValLoader": "classify_loader", "open_cls_split": "classify_loader",
    "TfdsClassifyDataset": "classify_tfds", "check_tfds_cls_dataset": "classify_tfds",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"yolojax.data.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'yolojax.data' has no attribute {name!r}")
