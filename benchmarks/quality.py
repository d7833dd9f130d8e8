"""Learning quality: yolojax and Ultralytics train the same model on the same data with the same settings.

    python benchmarks/quality.py --epochs=30 --imgsz=128 --batch=16 [--ultralytics-python=/path/to/venv/bin/python]

Both train YOLOv8n from scratch on the built-in synthetic shapes dataset (generated on first use) and report
the final validation of their best weights (mAP50, mAP50-95). Ultralytics runs in a subprocess with its own
interpreter (it is never a dependency of yolojax). One JSON line per result; a row per result is appended to
benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import subprocess
import tempfile
import time

from bench_common import append_results

HERE = pathlib.Path(__file__).resolve().parent

ULTRALYTICS_SNIPPET = r"""
import json, sys, time
from ultralytics import YOLO
args = json.loads(sys.argv[1])
t = time.time()
model = YOLO(args.pop("model"))
m = model.train(**args)
rd = m.results_dict
print("RESULT " + json.dumps({"map50": rd["metrics/mAP50(B)"], "map": rd["metrics/mAP50-95(B)"],
                              "seconds": time.time() - t}))
"""


def run_yolojax(data: str, args, compat: str, workdir: pathlib.Path) -> dict:
    from yolojax.config import apply_overrides, default_config
    from yolojax.train import train_and_evaluate

    cfg = apply_overrides(default_config(), dict(
        model="yolov8n.yaml", data=data, epochs=args.epochs, imgsz=args.imgsz, batch=args.batch, workers=0,
        seed=0, plots=False, compat=compat, close_mosaic=args.close_mosaic, tensorboard=False, nbs=args.nbs))
    t = time.time()
    out = train_and_evaluate(cfg, workdir)
    return {"map50": out["metrics/mAP50(B)"], "map": out["metrics/mAP50-95(B)"], "seconds": time.time() - t}


def run_ultralytics(python: str, data: str, args, workdir: pathlib.Path) -> dict:
    train_args = dict(model="yolov8n.yaml", data=data, epochs=args.epochs, imgsz=args.imgsz, batch=args.batch,
                      workers=0, seed=0, plots=False, device="cpu", close_mosaic=args.close_mosaic, nbs=args.nbs,
                      project=str(workdir), name="ul", exist_ok=True, verbose=False, amp=False)
    env = dict(os.environ, YOLO_OFFLINE="1", OMP_NUM_THREADS=str(os.cpu_count()))
    res = subprocess.run([python, "-c", ULTRALYTICS_SNIPPET, json.dumps(train_args)], env=env, capture_output=True,
                         text=True, cwd=workdir)
    for line in res.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"Ultralytics run failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--imgsz", type=int, default=128)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--close-mosaic", type=int, default=10)
    p.add_argument("--nbs", type=int, default=64, help="nominal batch size (gradient accumulation target)")
    p.add_argument("--compat", default="v8,current", help="yolojax semantics to run, comma separated")
    p.add_argument("--ultralytics-python", default=None, help="interpreter with ultralytics installed")
    p.add_argument("--no-results-md", action="store_true")
    args = p.parse_args()

    from yolojax.data import shapes_yaml
    import jax

    data = str(shapes_yaml())
    work = pathlib.Path(tempfile.mkdtemp(prefix="yolojax_quality_"))
    rows = []
    for compat in [c for c in args.compat.split(",") if c]:
        r = run_yolojax(data, args, compat, work / f"yolojax_{compat}")
        rows.append({"trainer": f"yolojax compat={compat}", "versions": f"jax {jax.__version__}", **r})
        print(json.dumps({"benchmark": "quality", **rows[-1]}), flush=True)
    if args.ultralytics_python:
        ver = subprocess.run([args.ultralytics_python, "-c", "import ultralytics, torch; "
                              "print(ultralytics.__version__, torch.__version__)"], capture_output=True,
                             text=True).stdout.split()
        r = run_ultralytics(args.ultralytics_python, data, args, work)
        rows.append({"trainer": f"ultralytics {ver[0]}", "versions": f"ultralytics {ver[0]}, torch {ver[1]}", **r})
        print(json.dumps({"benchmark": "quality", **rows[-1]}), flush=True)
    if not args.no_results_md:
        machine = f"{platform.machine()} {os.cpu_count()} cpu, load {os.getloadavg()[0]:.1f}"
        setting = (f"yolov8n from scratch, shapes dataset (256 train / 64 val), {args.epochs} epochs, imgsz "
                   f"{args.imgsz}, batch {args.batch}, nbs {args.nbs}, close_mosaic {args.close_mosaic}, seed 0")
        append_results([f"| {time.strftime('%Y-%m-%d')} | {machine} | {r['versions']} | quality {r['trainer']} | "
                        f"mAP50 {r['map50']:.4f}, mAP50-95 {r['map']:.4f} | {setting}; {r['seconds']:.0f} s |"
                        for r in rows])


if __name__ == "__main__":
    main()
