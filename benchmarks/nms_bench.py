"""Jitted NMS at validation settings on yolov8n-640-shaped outputs, with Ultralytics' NMS beside it.

    python benchmarks/nms_bench.py [--batch 16] [--repeats 5] [--no-ultralytics] [--no-record]

Inputs: a batch of (B, 8400, 4 + 80) predictions = yolov8n at 640 on COCO's 80 classes, validation settings
(conf 0.001, iou 0.7, multi_label, max_det 300, max_nms 30000). Two score distributions:

* ``realistic``: what a trained detector emits. Background (anchor, class) logits ~ N(-10, 1.2), so about 0.5 %
  of the 672,000 pairs (~3,400 per image) clear conf 0.001; plus 10 objects per image, each predicted by the
  ~60 anchors nearest its centre (P3..P5) with jittered copies of its box, a high score on its class
  (sigmoid of N(1, 1.5)) and weaker scores on 3 confusable classes. Boxes of background anchors are random boxes
  around the anchor. This is the shape of a val pass on COCO.
* ``saturated``: an untrained head (every score in (0.01, 0.5)): all 672,000 pairs clear the threshold, so
  the max_nms = 30,000 pre-selection and 300 full picks are exercised -- the worst case.

Prints one JSON line per result and appends rows to benchmarks/RESULTS.md. When ../ulvenv/bin/python beside the repository (or
$ULTRALYTICS_PYTHON) has ultralytics, the same inputs go through its ``non_max_suppression`` in a subprocess
(torch, 2 threads), in the same run, and so does a minimal torchvision.ops.nms pipeline of ours (the v8-era
code path: Ultralytics 8.4 replaced torchvision with a Python-loop NMS on CPU, which hits its own time limit
here); the kept counts per image are compared with ours.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench_common import append_results

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import jax  # noqa: E402

from yolojax.ops.nms import non_max_suppression  # noqa: E402

NC, IMGSZ, STRIDES = 80, 640, (8, 16, 32)
SETTINGS = dict(conf_thres=0.001, iou_thres=0.7, multi_label=True, max_det=300, max_nms=30000)


def _anchor_centres():
    pts, strides = [], []
    for s in STRIDES:
        n = IMGSZ // s
        ys, xs = np.meshgrid(np.arange(n) + 0.5, np.arange(n) + 0.5, indexing="ij")
        pts.append(np.stack([xs.ravel(), ys.ravel()], 1) * s)
        strides.append(np.full(n * n, s, np.float32))
    return np.concatenate(pts).astype(np.float32), np.concatenate(strides)


def make_preds(batch: int, kind: str, seed: int = 0) -> np.ndarray:
    """(B, 8400, 84) float32: xywh pixel boxes then class probabilities."""
    rng = np.random.default_rng(seed)
    centres, strides = _anchor_centres()
    num_anchors = centres.shape[0]
    out = np.empty((batch, num_anchors, 4 + NC), np.float32)
    for b in range(batch):
        wh = strides[:, None] * rng.uniform(1.5, 6.0, (num_anchors, 2))
        xy = centres + rng.normal(0, 0.5, (num_anchors, 2)) * strides[:, None]
        if kind == "saturated":
            scores = rng.uniform(0.01, 0.5, (num_anchors, NC))
        else:
            logits = rng.normal(-10.0, 1.2, (num_anchors, NC))
            for _ in range(10):
                c = rng.uniform(40, IMGSZ - 40, 2)
                size = rng.uniform(20, 300, 2)
                near = np.argsort(np.linalg.norm(centres - c, axis=1))[:60]
                xy[near] = c + rng.normal(0, 0.05, (60, 2)) * size
                wh[near] = size * rng.uniform(0.85, 1.15, (60, 2))
                cls = rng.integers(NC)
                logits[near, cls] = rng.normal(1.0, 1.5, 60)
                for other in rng.integers(0, NC, 3):
                    logits[near, other] = np.maximum(logits[near, other], rng.normal(-4.0, 1.5, 60))
            scores = 1 / (1 + np.exp(-logits))
        out[b, :, :2], out[b, :, 2:4], out[b, :, 4:] = xy, wh, scores
    return out


def time_ours(preds: np.ndarray, repeats: int) -> dict:
    dev = jax.device_put(preds)
    t0 = time.perf_counter()
    jax.block_until_ready(non_max_suppression(dev, **SETTINGS))
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = jax.block_until_ready(non_max_suppression(dev, **SETTINGS))
        times.append(time.perf_counter() - t0)
    kept = np.asarray(out[3]).sum(1)
    return {"median_s": float(np.median(times)), "compile_s": compile_s, "kept": kept.tolist()}


_UL_SCRIPT = r"""
import json, sys, time, numpy as np, torch, torchvision
torch.set_num_threads(2)
try:
    from ultralytics.utils.nms import non_max_suppression
except ImportError:
    from ultralytics.utils.ops import non_max_suppression
import ultralytics
which, repeats = sys.argv[2], int(sys.argv[3])
preds = torch.from_numpy(np.load(sys.argv[1])).permute(0, 2, 1).contiguous()  # (B, 4 + nc, A)
kw = dict(conf_thres=0.001, iou_thres=0.7, multi_label=True, max_det=300, max_nms=30000)

def torchvision_nms(p):
    # Our own minimal v8-era-style pipeline: pairs > conf, top max_nms, class offset, torchvision.ops.nms.
    out = []
    for x in p.transpose(1, 2):
        xy, wh = x[:, :2], x[:, 2:4]
        boxes = torch.cat([xy - wh / 2, xy + wh / 2], 1)
        a, c = (x[:, 4:] > kw["conf_thres"]).nonzero(as_tuple=True)
        scores = x[a, 4 + c]
        if scores.numel() > kw["max_nms"]:
            top = scores.topk(kw["max_nms"]).indices
            a, c, scores = a[top], c[top], scores[top]
        keep = torchvision.ops.nms(boxes[a] + c[:, None].float() * 7680, scores, kw["iou_thres"])[: kw["max_det"]]
        out.append(keep)
    return out

fn = (lambda p: non_max_suppression(p, **kw)) if which == "ultralytics" else torchvision_nms
fn(preds)
times = []
for _ in range(repeats):
    t0 = time.perf_counter(); out = fn(preds); times.append(time.perf_counter() - t0)
print(json.dumps({"median_s": float(np.median(times)), "kept": [len(o) for o in out],
                  "version": ultralytics.__version__, "torch": torch.__version__}))
"""


def time_torch(preds: np.ndarray, which: str, repeats: int, python: str, timeout_s: float) -> dict:
    """Run ``which`` ("ultralytics" or "torchvision") in the Ultralytics interpreter; {"error": ...} on failure."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "preds.npy"
        np.save(path, preds)
        env = dict(os.environ, YOLO_OFFLINE="1", OMP_NUM_THREADS="2")
        try:
            proc = subprocess.run([python, "-c", _UL_SCRIPT, str(path), which, str(repeats)], capture_output=True,
                                  text=True, env=env, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return {"error": f"timeout after {timeout_s:.0f} s"}
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"rc {proc.returncode}"}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["warnings"] = "its NMS time limit was exceeded" if "time limit" in proc.stderr + proc.stdout else ""
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-ultralytics", action="store_true")
    parser.add_argument("--no-record", action="store_true", help="do not append to benchmarks/RESULTS.md")
    parser.add_argument("--torch-timeout", type=float, default=180.0, help="seconds per torch subprocess")
    args = parser.parse_args()

    ul_python = os.environ.get("ULTRALYTICS_PYTHON", str(pathlib.Path(__file__).resolve().parents[2] / "ulvenv" / "bin" / "python"))
    use_ul = not args.no_ultralytics and Path(ul_python).exists()
    machine = f"{platform.machine()} {os.cpu_count()} cpu, jax {jax.default_backend()}, load {os.getloadavg()[0]:.1f}"
    date = datetime.date.today().isoformat()
    rows = []
    for kind in ("realistic", "saturated"):
        preds = make_preds(args.batch, kind)
        n_above = int((preds[..., 4:] > SETTINGS["conf_thres"]).sum() / args.batch)
        ours = time_ours(preds, args.repeats)
        result = {"benchmark": "nms_val", "impl": "yolojax", "inputs": kind, "batch": args.batch,
                  "pairs_above_conf_per_image": n_above, "median_s": round(ours["median_s"], 4),
                  "ms_per_image": round(1000 * ours["median_s"] / args.batch, 3),
                  "compile_s": round(ours["compile_s"], 2), "kept_total": int(np.sum(ours["kept"])),
                  "jax": jax.__version__}
        print(json.dumps(result), flush=True)
        rows.append(f"| {date} | {machine} | jax {jax.__version__} | nms_bench {kind} B={args.batch} yolojax | "
                    f"{result['ms_per_image']} ms/img ({result['median_s']} s/batch) | "
                    f"{n_above} pairs > conf/img, compile {result['compile_s']} s, val settings |")
        if use_ul:
            for which in ("ultralytics", "torchvision"):
                res = time_torch(preds, which, min(args.repeats, 3), ul_python, args.torch_timeout)
                out = {"benchmark": "nms_val", "impl": which, "inputs": kind, "batch": args.batch}
                if "error" in res:
                    out["error"] = res["error"]
                    cell, notes = "n/a", res["error"]
                else:
                    out.update(median_s=round(res["median_s"], 4),
                               ms_per_image=round(1000 * res["median_s"] / args.batch, 3),
                               torch=res["torch"], kept_counts_equal=res["kept"] == ours["kept"], kept_total=sum(res["kept"]),
                               warnings=res["warnings"])
                    cell = f"{out['ms_per_image']} ms/img ({out['median_s']} s/batch)"
                    notes = f"kept {out['kept_total']}, counts equal to yolojax: {out['kept_counts_equal']}"
                    notes += f"; {res['warnings']}" if res["warnings"] else ""
                label = f"ultralytics {res.get('version', '?')}" if which == "ultralytics" else "torchvision.ops.nms"
                print(json.dumps(out), flush=True)
                rows.append(f"| {date} | {machine} | {label}, torch {res.get('torch', '?')} (2 threads) | "
                            f"nms_bench {kind} B={args.batch} {which} | {cell} | same inputs; {notes} |")
    if not args.no_record:
        append_results(rows)


if __name__ == "__main__":
    main()
