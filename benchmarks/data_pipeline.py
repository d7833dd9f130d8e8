"""Training data pipeline throughput: yolojax (Grain) vs Ultralytics' dataloader on the same JPEGs.

    python benchmarks/data_pipeline.py [--imgsz 640] [--batch 16] [--images 64] [--epochs 3] [--workers 1 2]
        [--ul-python ../ulvenv/bin/python] [--hsv-on-device] [--warp-on-device] [--results benchmarks/RESULTS.md]

Generates a synthetic JPEG dataset (``--images`` images of 640×480 with shapes labels) in a temp dir, then measures
images/s of the full training pipeline (load + mosaic + random perspective + HSV + flip + batching, mosaic on) for
each worker count in the steady state: over the epochs after the first (both sides keep their workers across
epochs; the first epoch, which includes worker start-up - Grain spawns its workers, which import JAX - is reported
separately as ``first_epoch_s``). If the given interpreter has ``ultralytics``,
its ``build_yolo_dataset`` + ``build_dataloader`` (default hyperparameters, ``YOLO_OFFLINE=1``) runs on the same
files in a subprocess. Prints one JSON line per result and appends rows to ``--results`` when given.
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

import cv2

from bench_common import write_yolo_split

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from yolojax.data.synthetic import NAMES  # noqa: E402

_UL_SCRIPT = r"""
import json, sys, time
from ultralytics.cfg import get_cfg
from ultralytics.data.build import build_dataloader, build_yolo_dataset
root, imgsz, batch, workers, epochs, names = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), \
    int(sys.argv[5]), json.loads(sys.argv[6])
cfg = get_cfg(overrides={"imgsz": imgsz, "plots": False})
data = {"names": {i: n for i, n in enumerate(names)}, "nc": len(names), "channels": 3}
ds = build_yolo_dataset(cfg, root + "/images/train", batch, data, mode="train")
dl = build_dataloader(ds, batch, workers, shuffle=True, device="cpu")
n, start = 0, time.perf_counter()
for ep in range(epochs):
    for b in dl:
        if ep:
            n += b["img"].shape[0]
    if ep == 0:
        t0 = time.perf_counter()
        first = t0 - start
dt = time.perf_counter() - t0
print("RESULT", json.dumps({"images": n, "seconds": dt, "first_epoch_s": first}))
"""


def make_jpeg_dataset(root: pathlib.Path, n: int, h: int = 480, w: int = 640) -> None:
    write_yolo_split(root, "train", n, seed=42, h=h, w=w, digits=4)


def bench_yolojax(root: pathlib.Path, imgsz: int, batch: int, workers: int, epochs: int,
                  hsv_on_device: bool = False, warp_on_device: bool = False) -> dict:
    from yolojax.data.dataset import DetectionDataset
    from yolojax.data.loader import TrainLoader

    ds = DetectionDataset.from_files(sorted((root / "images" / "train").glob("*.jpg")), dict(enumerate(NAMES)),
                                     imgsz=imgsz, verbose=False)
    loader = TrainLoader(ds, batch_size=batch, seed=0, workers=workers, prefetch=2, hsv_on_device=hsv_on_device,
                         warp_on_device=warp_on_device)
    if warp_on_device and not loader.warp_on_device:
        raise SystemExit(f"--warp-on-device: the loader cannot leave the warp to the device ({loader.warp_obstacle()})")
    it = loader.iterator(0, 0, epochs)
    n, start = 0, time.perf_counter()
    for ep in range(epochs):
        for _ in range(loader.num_batches):
            b = next(it)
            if ep:
                n += b["boxes"].shape[0]
        if ep == 0:
            t0 = time.perf_counter()
            first = t0 - start
    dt = time.perf_counter() - t0
    it.close()
    return {"images": n, "seconds": dt, "first_epoch_s": first}


def bench_ultralytics(py: str, root, imgsz, batch, workers, epochs) -> dict | None:
    env = dict(os.environ, YOLO_OFFLINE="1", OMP_NUM_THREADS="1")
    p = subprocess.run([py, "-c", _UL_SCRIPT, str(root), str(imgsz), str(batch), str(workers), str(epochs),
                        json.dumps(list(NAMES))], capture_output=True, text=True, env=env, timeout=1800)
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    print(f"ultralytics run failed (rc {p.returncode}):\n{p.stderr[-2000:]}", file=sys.stderr)
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--ul-python", default=os.environ.get("ULTRALYTICS_PYTHON", str(pathlib.Path(__file__).resolve().parents[2] / "ulvenv" / "bin" / "python")))
    ap.add_argument("--results", default=None, help="append markdown rows to this file")
    ap.add_argument("--hsv-on-device", action="store_true",
                    help="also time yolojax's loader with the HSV jitter left to the train step")
    ap.add_argument("--warp-on-device", action="store_true",
                    help="also time yolojax's loader with the mosaic, warp, flips and jitter left to the train step "
                         "(the GPU default)")
    args = ap.parse_args()
    try:
        from absl import flags

        flags.FLAGS.mark_as_parsed()  # Grain 0.2.18 workers need parsed flags
    except Exception:
        pass
    import grain

    versions = f"grain {grain.__version__ if hasattr(grain, '__version__') else '?'}, opencv {cv2.__version__}"
    machine = f"{platform.machine()} {os.cpu_count()} cores"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(tmp) / "jpegs"
        make_jpeg_dataset(root, args.images)
        for w in args.workers:
            r = bench_yolojax(root, args.imgsz, args.batch, w, args.epochs)
            rows.append(("yolojax", w, r))
            if args.hsv_on_device:
                r = bench_yolojax(root, args.imgsz, args.batch, w, args.epochs, hsv_on_device=True)
                rows.append(("yolojax (HSV jitter left to the train step)", w, r))
            if args.warp_on_device:
                r = bench_yolojax(root, args.imgsz, args.batch, w, args.epochs, warp_on_device=True)
                rows.append(("yolojax (mosaic, warp, flips and HSV jitter left to the train step)", w, r))
        ul_version = None
        if args.ul_python and shutil.which(args.ul_python):
            probe = subprocess.run([args.ul_python, "-c", "import ultralytics; print(ultralytics.__version__)"],
                                   capture_output=True, text=True)
            ul_version = probe.stdout.strip() if probe.returncode == 0 else None
        if ul_version:
            for w in args.workers:
                r = bench_ultralytics(args.ul_python, root, args.imgsz, args.batch, w, args.epochs)
                if r:
                    rows.append((f"ultralytics {ul_version}", w, r))
    today = datetime.date.today().isoformat()
    lines = []
    for name, w, r in rows:
        ips = r["images"] / r["seconds"]
        rec = {"benchmark": "data_pipeline", "impl": name, "workers": w, "imgsz": args.imgsz, "batch": args.batch,
               "images_per_s": round(ips, 1), "images": r["images"], "seconds": round(r["seconds"], 2),
               "first_epoch_s": round(r["first_epoch_s"], 2), "load": round(os.getloadavg()[0], 1)}
        print(json.dumps(rec))
        lines.append(f"| {today} | {machine} | {versions} | data_pipeline {name} workers={w} | {ips:.1f} img/s | "
                     f"imgsz {args.imgsz}, batch {args.batch}, mosaic on, {args.images} JPEG 640x480, "
                     f"epochs 2-{args.epochs} timed (first epoch {r['first_epoch_s']:.1f} s with start-up), load "
                     f"{os.getloadavg()[0]:.1f} |")
    if args.results:
        path = pathlib.Path(args.results)
        if not path.exists():
            path.write_text("| date | machine | versions | benchmark | result | notes |\n|---|---|---|---|---|---|\n")
        with open(path, "a") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
