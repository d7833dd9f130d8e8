"""Detection loss + gradient time: yolojax (compiled JAX) vs Ultralytics' v8DetectionLoss (PyTorch).

Inputs: yolov8n head outputs at 640x640 (A = 8400 anchors, nc = 80), batch 16, up to 64 ground-truth boxes per
image (padded to M = 64), generated from a fixed seed so that both halves see the same numbers. yolojax times
``jax.jit(jax.value_and_grad(detection_loss_from_head))`` (compile separately); Ultralytics times
``v8DetectionLoss`` forward + backward with 2 torch threads. Median of ``--runs`` after ``--warmup``.

    python benchmarks/loss_bench.py                                   # yolojax only
    python benchmarks/loss_bench.py --vs-ultralytics                  # + Ultralytics, via --ultralytics-python

Prints one JSON line per result and appends one row per result to benchmarks/RESULTS.md (``--no-record`` to
skip). The Ultralytics half runs this same file under the other interpreter (``--ultralytics-half``), which
imports neither JAX nor yolojax. Ultralytics is only a benchmark comparison, never a yolojax dependency.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench_common import append_results, median_time

REPO = Path(__file__).resolve().parents[1]
STRIDES = (8, 16, 32)
REG_MAX = 16


def make_inputs(batch: int, imgsz: int, max_boxes: int, num_classes: int, seed: int = 0) -> dict:
    """Head outputs (B, A, 64) / (B, A, nc) and YOLO-format labels (batch_idx, cls, normalised xywh)."""
    rng = np.random.default_rng(seed)
    anchors = sum((imgsz // s) ** 2 for s in STRIDES)
    pred_distri = rng.normal(0.0, 2.0, (batch, anchors, 4 * REG_MAX)).astype(np.float32)
    # Class logits of a partly trained head: mostly confident negatives.
    pred_scores = rng.normal(-6.0, 2.0, (batch, anchors, num_classes)).astype(np.float32)
    counts = rng.integers(max_boxes // 8, max_boxes + 1, batch)
    counts[0] = max_boxes  # the pad size is reached, as Ultralytics pads to the batch maximum
    batch_idx, cls, boxes = [], [], []
    for image, n in enumerate(counts):
        wh = np.exp(rng.uniform(np.log(8), np.log(imgsz / 2), (n, 2)))  # log-uniform 8 px .. half the image
        centre = rng.uniform(wh / 2, imgsz - wh / 2)
        boxes.append(np.concatenate([centre, wh], 1) / imgsz)
        cls.append(rng.integers(0, num_classes, n))
        batch_idx.append(np.full(n, image))
    return {
        "pred_distri": pred_distri,
        "pred_scores": pred_scores,
        "batch_idx": np.concatenate(batch_idx).astype(np.float32),
        "cls": np.concatenate(cls).astype(np.float32)[:, None],
        "bboxes": np.concatenate(boxes).astype(np.float32),
    }


def time_yolojax(inputs: dict, args) -> dict:
    import jax

    from yolojax.loss import detection_loss_from_head, targets_from_yolo

    batch = inputs["pred_distri"].shape[0]
    targets = targets_from_yolo(inputs["batch_idx"], inputs["cls"], inputs["bboxes"], batch,
                                (args.imgsz, args.imgsz), args.max_boxes)

    def make_step(compat):
        def loss(pred_distri, pred_scores, targets):
            return detection_loss_from_head(pred_distri, pred_scores, targets, image_hw=(args.imgsz, args.imgsz),
                                            compat=compat)
        return jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))

    device_args = jax.device_put((inputs["pred_distri"], inputs["pred_scores"], targets))
    step = make_step("v8")
    start = time.perf_counter()
    compiled = step.lower(*device_args).compile()
    compile_s = time.perf_counter() - start
    median_s = median_time(lambda: jax.block_until_ready(compiled(*device_args)), args.warmup, args.runs)[0]
    (total, items), _ = compiled(*device_args)
    # The same inputs under compat="current" (Ultralytics 8.4 assigner), for a value check against Ultralytics.
    (total_current, _), _ = make_step("current")(*device_args)
    return {"median_s": median_s, "compile_s": compile_s, "total": float(total),
            "total_current": float(total_current), "items": {k: float(v) for k, v in items.items()},
            "jax": jax.__version__, "backend": jax.default_backend()}


def time_ultralytics_here(inputs_path: str, warmup: int, runs: int) -> dict:
    """Runs under the Ultralytics interpreter: torch only."""
    import torch
    import ultralytics
    from ultralytics.cfg import get_cfg
    from ultralytics.nn.tasks import DetectionModel
    from ultralytics.utils.loss import v8DetectionLoss

    torch.set_num_threads(2)
    data = np.load(inputs_path)
    model = DetectionModel("yolov8n.yaml", nc=data["pred_scores"].shape[-1], verbose=False)
    model.args = get_cfg()
    criterion = v8DetectionLoss(model)
    batch = data["pred_distri"].shape[0]
    imgsz = int(data["imgsz"])
    feats = [torch.zeros(batch, 1, imgsz // s, imgsz // s) for s in STRIDES]  # only their H, W are read
    boxes_t = torch.from_numpy(data["pred_distri"].transpose(0, 2, 1).copy())
    scores_t = torch.from_numpy(data["pred_scores"].transpose(0, 2, 1).copy())
    labels = {"batch_idx": torch.from_numpy(data["batch_idx"]), "cls": torch.from_numpy(data["cls"]),
              "bboxes": torch.from_numpy(data["bboxes"])}
    result = {}

    def step():
        boxes = boxes_t.clone().requires_grad_(True)
        scores = scores_t.clone().requires_grad_(True)
        loss, items = criterion({"boxes": boxes, "scores": scores, "feats": feats}, labels)
        total = loss.sum()
        total.backward()
        result["total"] = float(total)

    median_s = median_time(step, warmup, runs)[0]
    return {"median_s": median_s, "total": result["total"], "ultralytics": ultralytics.__version__,
            "torch": torch.__version__, "threads": torch.get_num_threads()}


def time_ultralytics(inputs: dict, args) -> dict | None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "inputs.npz"
        np.savez(path, imgsz=args.imgsz, **inputs)
        env = dict(os.environ, YOLO_OFFLINE="1", OMP_NUM_THREADS="2", PYTHONPATH="")
        cmd = [args.ultralytics_python, str(Path(__file__).resolve()), "--ultralytics-half", str(path),
               f"--warmup={args.warmup}", f"--runs={args.runs}"]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600, cwd=tmp)
    if proc.returncode != 0:
        print(f"Ultralytics half failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}", file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--max-boxes", type=int, default=64)
    parser.add_argument("--num-classes", type=int, default=80)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--vs-ultralytics", action="store_true", help="also time Ultralytics' v8DetectionLoss")
    parser.add_argument("--ultralytics-python", default=os.environ.get("ULTRALYTICS_PYTHON", str(pathlib.Path(__file__).resolve().parents[2] / "ulvenv" / "bin" / "python")),
                        help="interpreter with ultralytics + torch installed")
    parser.add_argument("--ultralytics-half", metavar="INPUTS_NPZ", help=argparse.SUPPRESS)
    parser.add_argument("--no-record", action="store_true", help="do not append to benchmarks/RESULTS.md")
    args = parser.parse_args()

    if args.ultralytics_half:
        print(json.dumps(time_ultralytics_here(args.ultralytics_half, args.warmup, args.runs)))
        return

    sys.path.insert(0, str(REPO))
    inputs = make_inputs(args.batch, args.imgsz, args.max_boxes, args.num_classes)
    shape = (f"yolov8n head @{args.imgsz} (A={inputs['pred_distri'].shape[1]}, nc={args.num_classes}), "
             f"B={args.batch}, M={args.max_boxes} ({len(inputs['batch_idx'])} boxes)")
    machine = f"{platform.platform(terse=True)} {platform.machine()}, {os.cpu_count()} cpu"
    date = datetime.date.today().isoformat()
    load = f"load avg {os.getloadavg()[0]:.1f} at start" if hasattr(os, "getloadavg") else "load n/a"
    rows = []

    ours = time_yolojax(inputs, args)
    print(json.dumps({"benchmark": "loss_value_and_grad", "impl": "yolojax", "inputs": shape,
                      "median_ms": round(1000 * ours["median_s"], 1), "compile_s": round(ours["compile_s"], 2),
                      "total": ours["total"], "total_current": ours["total_current"], "items": ours["items"],
                      "backend": ours["backend"]}), flush=True)
    versions = f"python {platform.python_version()}, jax {ours['jax']}"
    rows.append(f"| {date} | {machine} | {versions} | loss_bench: detection loss + grad, yolojax jit "
                f"({ours['backend']}) | {1000 * ours['median_s']:.1f} ms median of {args.runs} | {shape}; compile "
                f"{ours['compile_s']:.1f} s; total {ours['total']:.4f} (compat=v8); {load} |")

    if args.vs_ultralytics:
        if not shutil.which(args.ultralytics_python):
            print(f"--vs-ultralytics: no interpreter at {args.ultralytics_python}; pass --ultralytics-python=PATH "
                  "to a Python with ultralytics installed.", file=sys.stderr)
        else:
            ul = time_ultralytics(inputs, args)
            if ul is not None:
                rel = abs(ul["total"] - ours["total_current"]) / abs(ul["total"])
                print(json.dumps({"benchmark": "loss_value_and_grad", "impl": "ultralytics", "inputs": shape,
                                  "median_ms": round(1000 * ul["median_s"], 1), "total": ul["total"],
                                  "rel_diff_vs_yolojax_current": rel, "ultralytics": ul["ultralytics"],
                                  "torch": ul["torch"], "threads": ul["threads"]}), flush=True)
                rows.append(f"| {date} | {machine} | ultralytics {ul['ultralytics']}, torch {ul['torch']} | "
                            f"loss_bench: v8DetectionLoss forward+backward, torch {ul['threads']} threads | "
                            f"{1000 * ul['median_s']:.1f} ms median of {args.runs} | same inputs; total "
                            f"{ul['total']:.4f}, rel. diff vs yolojax compat=current {rel:.1e}; {load} |")
    if not args.no_record:
        append_results(rows)


if __name__ == "__main__":
    main()
