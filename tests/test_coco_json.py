"""COCO json writing, and pycocotools' AP on our json equal to the number recorded beside the fixtures."""
from __future__ import annotations

import json

import numpy as np
import pytest

from yolojax.report.coco_json import coco_evaluate, detections_to_coco, labels_to_coco, save_json


def test_detection_dicts_are_coco_format(tmp_path):
    dets = detections_to_coco(7, [[10.0, 20.0, 40.1234, 60.0]], [0.1234567], [2], class_map=[1, 2, 3])
    assert dets == [{"image_id": 7, "category_id": 3, "bbox": [10.0, 20.0, 30.123, 40.0], "score": 0.12346}]
    path = save_json(tmp_path / "sub" / "predictions.json", dets)
    assert json.loads(path.read_text()) == dets
    assert not list(tmp_path.glob("sub/*.tmp"))


def test_labels_to_coco_roundtrip():
    coco = labels_to_coco([(3, (48, 64), [[1, 2, 11, 22]], [1])], ["a", "b"])
    assert coco["images"] == [{"id": 3, "height": 48, "width": 64}]
    assert coco["categories"] == [{"id": 0, "name": "a"}, {"id": 1, "name": "b"}]
    ann = coco["annotations"][0]
    assert ann["bbox"] == [1.0, 2.0, 10.0, 20.0] and ann["area"] == 200.0 and ann["category_id"] == 1


def test_pycocotools_agrees_with_fixture(fixtures_dir, tmp_path):
    pytest.importorskip("pycocotools")
    data = np.load(fixtures_dir / "v82" / "metrics_data.npz")
    nms = np.load(fixtures_dir / "v82" / "metrics_nms.npz")
    ref = json.loads((fixtures_dir / "v82" / "metrics_fixtures.json").read_text())["pycocotools"]["100"]
    hw = tuple(int(v) for v in data["img_hw"])
    images, dets = [], []
    for i in range(data["raw_preds"].shape[0]):
        g = data["gt_batch_idx"] == i
        images.append((i, hw, data["gt_xyxy"][g], data["gt_cls"][g]))
        p = nms["val/det"][nms["val/img"] == i]
        # the fixture's pycocotools run scored the NMS boxes as they are (not clipped to the image)
        dets += detections_to_coco(i, p[:, :4], p[:, 4], p[:, 5])
    anno = save_json(tmp_path / "annotations.json", labels_to_coco(images, [f"class{i}" for i in range(5)]))
    pred = save_json(tmp_path / "predictions.json", dets)
    out = coco_evaluate(pred, anno)
    assert out["AP50-95"] == pytest.approx(ref["AP50_95"], abs=1e-6)
    assert out["AP50"] == pytest.approx(ref["AP50"], abs=1e-6)
    assert out["AP75"] == pytest.approx(ref["AP75"], abs=1e-6)
    assert len(out["summary"]) == 12 and out["summary"][0].startswith(" Average Precision")


def test_missing_file_is_a_clear_error(tmp_path):
    pytest.importorskip("pycocotools")
    with pytest.raises(FileNotFoundError, match="save_json"):
        coco_evaluate(tmp_path / "nope.json", tmp_path / "nope2.json")
