"""COCO-format detection json (``save_json``) and, when available, the official COCO evaluation beside ours.

Detections are written as Ultralytics writes them: ``bbox`` is ``[x_min, y_min, width, height]`` in original
image pixels rounded to 3 decimals, ``score`` rounded to 5. The evaluator is optional: ``pycocotools`` or
``faster_coco_eval`` (same API) is used if importable; neither is a dependency of yolojax.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np


def detections_to_coco(image_id, boxes_xyxy, scores, classes, class_map: Sequence[int] | None = None) -> list[dict]:
    """One image's detections as COCO result dicts.

    Args:
      image_id: the COCO image id (int, or the file stem when it is not numeric).
      boxes_xyxy: (D, 4) original-image pixels; scores (D,); classes (D,) our class indices.
      class_map: our class index -> COCO category id (e.g. the 80 -> 91 COCO map); identity when None.
    """
    boxes = np.asarray(boxes_xyxy, np.float64).reshape(-1, 4)
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
    out = []
    for box, score, cls in zip(xywh, np.asarray(scores).reshape(-1), np.asarray(classes).reshape(-1)):
        category = int(cls) if class_map is None else int(class_map[int(cls)])
        out.append({"image_id": image_id, "category_id": category, "bbox": [round(float(v), 3) for v in box],
                    "score": round(float(score), 5)})
    return out


def labels_to_coco(images: Iterable[tuple], names: Sequence[str] | Mapping[int, str],
                   class_map: Sequence[int] | None = None) -> dict:
    """A COCO ground-truth dict from our labels, for datasets that ship no COCO json.

    Args:
      images: ``(image_id, (height, width), boxes_xyxy (L, 4) pixels, classes (L,))`` per image.
      names: class names, index -> name.
    """
    names = dict(enumerate(names)) if not isinstance(names, Mapping) else dict(names)
    coco = {"images": [], "annotations": [], "categories": []}
    for idx, name in sorted(names.items()):
        coco["categories"].append({"id": int(idx) if class_map is None else int(class_map[idx]), "name": str(name)})
    for image_id, (height, width), boxes, classes in images:
        coco["images"].append({"id": image_id, "height": int(height), "width": int(width)})
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        for box, cls in zip(boxes, np.asarray(classes).reshape(-1)):
            w, h = float(box[2] - box[0]), float(box[3] - box[1])
            coco["annotations"].append({
                "id": len(coco["annotations"]) + 1, "image_id": image_id,
                "category_id": int(cls) if class_map is None else int(class_map[int(cls)]),
                "bbox": [float(box[0]), float(box[1]), w, h], "area": w * h, "iscrowd": 0,
            })
    return coco


def save_json(path: str | os.PathLike, data) -> Path:
    """Write ``data`` (a detections list or a COCO dict) as json, atomically (temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)
    return path


def coco_backend():
    """``(COCO, COCOeval)`` from pycocotools or faster_coco_eval, or None when neither is installed."""
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
        return COCO, COCOeval
    except ImportError:
        pass
    try:
        from faster_coco_eval import COCO, COCOeval_faster
        return COCO, COCOeval_faster
    except ImportError:
        return None


def coco_evaluate(pred_json: str | os.PathLike, anno_json: str | os.PathLike, *, image_ids=None,
                  max_dets: Sequence[int] = (1, 10, 100)) -> dict | None:
    """COCO bbox evaluation of a detections json against an annotations json.

    Returns ``{"AP50-95", "AP50", "AP75", "stats", "summary"}`` (summary = the evaluator's printed lines), or None
    when no COCO evaluator is installed (``pip install pycocotools``).
    """
    backend = coco_backend()
    if backend is None:
        return None
    COCO, COCOeval = backend
    for p in (pred_json, anno_json):
        if not Path(p).is_file():
            raise FileNotFoundError(f"coco_evaluate: {p} does not exist; write it with save_json first")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        gt = COCO(str(anno_json))
        dt = gt.loadRes(str(pred_json))
        ev = COCOeval(gt, dt, "bbox")
        if image_ids is not None:
            ev.params.imgIds = list(image_ids)
        ev.params.maxDets = list(max_dets)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = [float(s) for s in ev.stats]
    summary = [line for line in printed.getvalue().splitlines() if "Average" in line]
    return {"AP50-95": stats[0], "AP50": stats[1], "AP75": stats[2], "stats": stats, "summary": summary}


def image_id_of(path: str | os.PathLike):
    """COCO image id from a file name: the stem as an int when numeric (COCO's own files), else the stem."""
    stem = Path(path).stem
    return int(stem) if stem.isnumeric() else stem


def write_validation_json(save_dir, dataset, predictions, *, names) -> dict:
    """``predictions.json`` (COCO results) and, when the dataset has no COCO annotations, ``annotations.json``
    from its labels; then COCO's own AP when pycocotools (or faster-coco-eval) is installed.

    ``predictions``: (dataset index, boxes xyxy original pixels, scores, classes) per image (``Validator`` with
    ``keep_predictions=True``). Returns {"predictions": path, "annotations": path, "coco": results or None}."""
    save_dir = Path(save_dir)
    results = []
    for index, boxes, scores, classes in predictions:
        results.extend(detections_to_coco(image_id_of(dataset.im_files[index]), boxes, scores, classes))
    pred_path = save_json(save_dir / "predictions.json", results)
    images = []
    for i, (file, (h, w), labels) in enumerate(zip(dataset.im_files, dataset.shapes, dataset.labels)):
        lb = np.asarray(labels, np.float64).reshape(-1, 5)
        xyxy = np.stack([(lb[:, 1] - lb[:, 3] / 2) * w, (lb[:, 2] - lb[:, 4] / 2) * h,
                         (lb[:, 1] + lb[:, 3] / 2) * w, (lb[:, 2] + lb[:, 4] / 2) * h], 1)
        images.append((image_id_of(file), (h, w), xyxy, lb[:, 0].astype(int)))
    anno_path = save_json(save_dir / "annotations.json", labels_to_coco(images, names))
    coco = coco_evaluate(pred_path, anno_path) if results else None
    return {"predictions": pred_path, "annotations": anno_path, "coco": coco}
