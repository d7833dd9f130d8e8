"""Standalone validation: ``python -m yolojax.val --weights=PATH --data=YAML [--imgsz 640] [--batch 16] ...``.

Loads the weights and hands them to :func:`yolojax.evaluate.validate`, which prints Ultralytics' table and the
``Speed:`` line and returns a :class:`yolojax.evaluate.ValMetrics`.
"""
from __future__ import annotations

import argparse
import sys

from yolojax.evaluate import ValMetrics, validate


def validate_weights(weights, data, **kwargs) -> ValMetrics:
    """Load ``weights`` (.pt / .npz / run directory) and :func:`yolojax.evaluate.validate` them."""
    from yolojax.model import load_weights

    w = load_weights(weights)
    return validate(w.model, w.variables, data=data, names=w.names, **kwargs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m yolojax.val", description=__doc__.splitlines()[0])
    parser.add_argument("--weights", required=True, help=".pt / .npz weights or a run directory")
    parser.add_argument("--data", required=True, help="dataset YAML or a bundled name (coco128, shapes, ...)")
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--conf", type=float, default=None, help="confidence threshold (default 0.001)")
    parser.add_argument("--iou", type=float, default=0.7)
    parser.add_argument("--max_det", type=int, default=300)
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
        validate_weights(args.weights, args.data, imgsz=args.imgsz, batch=args.batch, conf=args.conf, iou=args.iou,
                         max_det=args.max_det, split=args.split, device=args.device, compat=args.compat,
                         single_cls=args.single_cls, save_json=args.save_json, workers=args.workers)

    return exit_code(run)


if __name__ == "__main__":
    sys.exit(main())
