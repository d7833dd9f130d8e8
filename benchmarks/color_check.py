"""The device HSV jitter on this machine's JAX backend: exactness against OpenCV, and its cost in a batch.

    python benchmarks/color_check.py [--batch 64] [--imgsz 640] [--no-record]

``yolojax.ops.color`` reproduces OpenCV's 8-bit BGR <-> HSV conversions; on XLA:CPU they are equal for all 2^24
inputs (tests/test_color.py). A GPU compiler may fuse a multiply and an add of the float half into one rounding,
which can move a pixel by one level: this script counts such differences on the default backend, over all 2^24
inputs of each conversion, and times ``hsv_jitter`` on a (batch, imgsz, imgsz, 3) batch (the work the train step
takes over from the loader). One JSON line per result; a row in benchmarks/RESULTS.md unless --no-record.
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

REPO = Path(__file__).resolve().parents[1]


def all_triples() -> np.ndarray:
    v = np.arange(1 << 24, dtype=np.uint32)
    return np.stack([(v >> 16) & 255, (v >> 8) & 255, v & 255], -1).astype(np.uint8).reshape(4096, 4096, 3)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(REPO))
    import jax

    from yolojax.data.augment import apply_hsv_tables, hsv_tables
    from yolojax.ops.color import bgr_to_hsv, hsv_jitter, hsv_to_bgr

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
    rec = {"benchmark": "color_check", "backend": jax.default_backend(), "device_kind": jax.devices()[0].device_kind,
           "jax": jax.__version__, "opencv": cv2.__version__, **counts,
           "jitter_first4_pixels_differing": batch_diff, "jitter_batch": f"b{args.batch} @{args.imgsz}",
           "jitter_ms": round(ms, 3)}
    print(json.dumps(rec), flush=True)
    if not args.no_record:
        row = (f"| {datetime.date.today().isoformat()} | {platform.machine()} {os.cpu_count()} cpu, "
               f"{rec['device_kind']}; load {os.getloadavg()[0]:.1f} | jax {jax.__version__}, opencv {cv2.__version__} "
               f"| color_check: yolojax.ops.color vs OpenCV, all 2^24 inputs | BGR->HSV "
               f"{counts['bgr_to_hsv']['pixels_differing']} / HSV->BGR {counts['hsv_to_bgr']['pixels_differing']} "
               f"differing | hsv_jitter b{args.batch} @{args.imgsz}: {ms:.2f} ms median of {args.runs}; "
               f"{batch_diff} pixels differ from OpenCV in 4 images |")
        with open(REPO / "benchmarks" / "RESULTS.md", "a") as f:
            f.write(row + "\n")


if __name__ == "__main__":
    main()
