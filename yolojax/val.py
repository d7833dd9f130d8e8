"""Standalone validation: ``python -m yolojax.val --weights=PATH --data=YAML [--imgsz 640] [--batch 16] ...``.

Loads the weights and hands them to :func:`yolojax.evaluate.validate` (a detector: ``ValMetrics``) or
:func:`yolojax.classify_evaluate.validate_classifier` (a YOLOv8-cls classifier, ``--data`` a classification folder
or name: ``ClassifyMetrics``), which print Ultralytics' table and the ``Speed:`` line. Options left unset take the
task's defaults (imgsz 640 for a detector, 224 for a classifier); a detection option given for a classifier is an
error naming it.
"""
from __future__ import annotations

import argparse
import sys



def validate_weights(weights, data, **kwargs):
    """Load ``weights`` (.pt / .npz / run directory) and validate them with their task's validation."""
    from yolojax.model import load_weights
    from yolojax.nn import YOLOv8Cls

    w = load_weights(weights)
    if isinstance(w.model, YOLOv8Cls):
        from yolojax.classify_evaluate import validate_classifier

        return validate_classifier(w.model, w.variables, data=data, names=w.names, **kwargs)
    from yolojax.evaluate import validate

    return validate(w.model, w.variables, data=data, names=w.names, **kwargs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m yolojax.val", description=__doc__.splitlines()[0])
    parser.add_argument("--weights", required=True, help=".pt / .npz weights or a run directory")
    parser.add_argument("--data", required=True, help="dataset YAML or a bundled name (coco128, shapes, ...)")
    parser.add_argument("--imgsz", type=int, default=None, help="default 640 (detector), 224 (classifier)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--conf", type=float, default=None, help="confidence threshold (default 0.001)")
    parser.add_argument("--iou", type=float, default=None, help="NMS IoU threshold (default 0.7)")
    parser.add_argument("--max_det", type=int, default=None, help="detections per image (default 300)")
    parser.add_argument("--split", default="val")
    parser.add_argument("--device", default=None)
    parser.add_argument("--workers", type=int, default=None,
                        help="Grain worker processes (default: 0 on CPU, min(8, cores) with an accelerator)")
    parser.add_argument("--compat", default="v8", choices=("v8", "current"))
    parser.add_argument("--single_cls", action="store_true")
    parser.add_argument("--save_json", action="store_true", help="write COCO predictions.json (+ pycocotools AP)")
    args = parser.parse_args(argv)
    from yolojax.startup import begin, exit_code, prepare_jax

    begin(restart=False)

    def run():
        prepare_jax()
        given = {k: v for k, v in vars(args).items() if v is not None and v is not False}
        validate_weights(given.pop("weights"), given.pop("data"), **given)

    return exit_code(run)


if __name__ == "__main__":
    sys.exit(main())
