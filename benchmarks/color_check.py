"""The device augmentation on this machine's JAX backend: exactness against OpenCV, and its cost in a batch.

    python benchmarks/color_check.py [--batch 64] [--imgsz 640] [--no-record]

``yolojax.augment.color`` reproduces OpenCV's 8-bit BGR <-> HSV conversions; on XLA:CPU they are equal for all 2^24
inputs (tests/test_color.py). A GPU compiler may fuse a multiply and an add of the float half into one rounding,
which can move a pixel by one level: this script counts such differences on the default backend, over all 2^24
inputs of each conversion, and times ``hsv_jitter`` on a (batch, imgsz, imgsz, 3) batch (the work the train step
takes over from the loader). Then the mosaic + affine warp + flip (``yolojax.augment.warp.warp_tiles``, the default
random affine on mosaics of the batch's images): pixels differing from ``cv2.warpAffine`` on 4 samples (where the
backend fuses the bilinear multiply-adds as OpenCV >= 4.11 does, none), and the time of the whole batch. One JSON
line per result; a row in benchmarks/RESULTS.md unless --no-record.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from bench_common import append_results

REPO = Path(__file__).resolve().parents[1]


def all_triples() -> np.ndarray:
    v = np.arange(1 << 24, dtype=np.uint32)
    return np.stack([(v >> 16) & 255, (v >> 8) & 255, v & 255], -1).astype(np.uint8).reshape(4096, 4096, 3)


def check_warp(images: np.ndarray, runs: int) -> dict:
    """warp_tiles on mosaics of ``images`` vs OpenCV (first 4 samples), and its median time on the whole batch."""
    import jax

    sys.path.insert(0, str(REPO / "benchmarks"))
    from train_step import add_warp_plans

    from yolojax.augment.warp import warp_tiles

    layouts: list = []
    plan = add_warp_plans({"images": images}, seed=3, layouts=layouts)
    keys = ("sources", "warp_tiles", "warp_cols", "warp_rows")
    dev = jax.device_put(tuple(plan[k] for k in keys))
    warp = jax.jit(warp_tiles)
    out = np.asarray(jax.block_until_ready(warp(*dev)))
    n, s = images.shape[:2]
    diff = []
    for i, (slots, rects, M, lr) in enumerate(layouts[:4]):
        canvas = np.full((2 * s, 2 * s, 3), 114, np.uint8)
        for j, (x1a, y1a, x2a, y2a, x1b, y1b, x2b, y2b) in zip(slots, rects):
            canvas[y1a:y2a, x1a:x2a] = images[j][y1b:y2b, x1b:x2b]
        ref = cv2.warpAffine(canvas, np.asarray(M, np.float64)[:2], (s, s), borderValue=(114, 114, 114))
        ref = cv2.flip(ref, 1) if lr else ref
        diff.append(np.abs(out[i].astype(np.int16) - ref))
    d = np.stack(diff)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        jax.block_until_ready(warp(*dev))
        times.append(time.perf_counter() - t0)
    return {"warp_first4_pixels_differing": int(d.any(-1).sum()), "warp_max_level_difference": int(d.max()),
            "warp_ms": round(1000 * float(np.median(times)), 3)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(REPO))
    import jax

    from yolojax.augment import apply_hsv_tables, hsv_tables
    from yolojax.augment.color import bgr_to_hsv, hsv_jitter, hsv_to_bgr

    triples = all_triples()
    counts = {}
    for name, fn, code in (("bgr_to_hsv", bgr_to_hsv, cv2.COLOR_BGR2HSV), ("hsv_to_bgr", hsv_to_bgr, cv2.COLOR_HSV2BGR)):
        got = np.asarray(jax.jit(fn)(triples))
        diff = np.abs(got.astype(np.int16) - cv2.cvtColor(triples, code))
        counts[name] = {"pixels_differing": int(diff.any(-1).sum()), "max_level_difference": int(diff.max())}

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.batch, args.imgsz, args.imgsz, 3), dtype=np.uint8)
    tables = np.stack([hsv_tables(rng) for _ in range(args.batch)])
    to_rgb = np.ones(args.batch, bool)
    dev = jax.device_put((images, tables, to_rgb))
    jitter = jax.jit(hsv_jitter)
    out = jax.block_until_ready(jitter(*dev))
    ref = np.stack([apply_hsv_tables(im, t, to_rgb=True) for im, t in zip(images[:4], tables[:4])])
    batch_diff = int((np.asarray(out[:4]) != ref).any(-1).sum())
    times = []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        jax.block_until_ready(jitter(*dev))
        times.append(time.perf_counter() - t0)
    ms = 1000 * float(np.median(times))
    warp = check_warp(images, args.runs)
    rec = {"benchmark": "color_check", "backend": jax.default_backend(), "device_kind": jax.devices()[0].device_kind,
           "jax": jax.__version__, "opencv": cv2.__version__, **counts,
           "jitter_first4_pixels_differing": batch_diff, "jitter_batch": f"b{args.batch} @{args.imgsz}",
           "jitter_ms": round(ms, 3), **warp}
    print(json.dumps(rec), flush=True)
    if not args.no_record:
        row = (f"| {datetime.date.today().isoformat()} | {platform.machine()} {os.cpu_count()} cpu, "
               f"{rec['device_kind']}; load {os.getloadavg()[0]:.1f} | jax {jax.__version__}, opencv {cv2.__version__} "
               f"| color_check: yolojax.augment.color vs OpenCV, all 2^24 inputs | BGR->HSV "
               f"{counts['bgr_to_hsv']['pixels_differing']} / HSV->BGR {counts['hsv_to_bgr']['pixels_differing']} "
               f"differing | hsv_jitter b{args.batch} @{args.imgsz}: {ms:.2f} ms median of {args.runs}; "
               f"{batch_diff} pixels differ from OpenCV in 4 images; warp_tiles (mosaic + affine + flip) "
               f"{warp['warp_ms']:.2f} ms, {warp['warp_first4_pixels_differing']} of {4 * args.imgsz ** 2} pixels "
               f"differ from cv2.warpAffine (max {warp['warp_max_level_difference']} level) |")
        append_results([row])


if __name__ == "__main__":
    main()
