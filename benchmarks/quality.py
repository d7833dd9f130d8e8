"""Learning quality: yolojax and Ultralytics train the same model on the same data with the same settings.

    python benchmarks/quality.py [--task=detect] --epochs=30 --imgsz=128 --batch=16 [--seeds=0,1,2]
    python benchmarks/quality.py --task=classify --epochs=10 --imgsz=64 --batch=16 --seeds=0,1,2,3,4

detect: both train YOLOv8n from scratch on the built-in synthetic shapes dataset and report the final validation of
their best weights (mAP50, mAP50-95). classify: both train YOLOv8n-cls from scratch on the built-in synthetic
classification set (6 shape classes) and report top-1 / top-5 of their best weights. With several seeds the two
libraries alternate seed by seed, so a spread of each is measured in the same run. Ultralytics runs in a subprocess
with its own interpreter (never a dependency of yolojax): ``--ultralytics-python``, else ``$ULTRALYTICS_PYTHON``,
else ``../ulvenv/bin/python`` beside the checkout. One JSON line per result; a row per result is appended to
benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import statistics
import subprocess
import tempfile
import time

from bench_common import append_results

HERE = pathlib.Path(__file__).resolve().parent
METRICS = {"detect": {"map50": "metrics/mAP50(B)", "map": "metrics/mAP50-95(B)"},
           "classify": {"top1": "metrics/accuracy_top1", "top5": "metrics/accuracy_top5"}}
MODELS = {"detect": "yolov8n.yaml", "classify": "yolov8n-cls.yaml"}

ULTRALYTICS_SNIPPET = r"""
import json, sys, time
from ultralytics import YOLO
args, keys = json.loads(sys.argv[1]), json.loads(sys.argv[2])
t = time.time()
model = YOLO(args.pop("model"))
model.train(**args)
rd = model.trainer.metrics
print("RESULT " + json.dumps({**{k: float(rd[v]) for k, v in keys.items()}, "seconds": time.time() - t}))
"""


def default_ultralytics_python() -> str | None:
    path = os.environ.get("ULTRALYTICS_PYTHON") or str(HERE.parent.parent / "ulvenv" / "bin" / "python")
    return path if pathlib.Path(path).is_file() else None


def settings(task: str, data: str, args, seed: int) -> dict:
    s = dict(model=MODELS[task], data=data, epochs=args.epochs, imgsz=args.imgsz, batch=args.batch, workers=0,
             seed=seed, plots=False, nbs=args.nbs)
    if task == "detect":
        s["close_mosaic"] = args.close_mosaic
    return s


def run_yolojax(task: str, data: str, args, seed: int, compat: str, workdir: pathlib.Path) -> dict:
    from yolojax.config import apply_overrides, default_config
    from yolojax.train import train_and_evaluate

    cfg = apply_overrides(default_config(), dict(settings(task, data, args, seed), compat=compat, tensorboard=False))
    t = time.time()
    out = train_and_evaluate(cfg, workdir)
    return {**{k: float(out[v]) for k, v in METRICS[task].items()}, "seconds": time.time() - t}


def run_ultralytics(python: str, task: str, data: str, args, seed: int, workdir: pathlib.Path) -> dict:
    train_args = dict(settings(task, data, args, seed), device="cpu", project=str(workdir), name=f"ul{seed}",
                      exist_ok=True, verbose=False, amp=False)
    env = dict(os.environ, YOLO_OFFLINE="1", OMP_NUM_THREADS=str(os.cpu_count()))
    res = subprocess.run([python, "-c", ULTRALYTICS_SNIPPET, json.dumps(train_args), json.dumps(METRICS[task])],
                         env=env, capture_output=True, text=True, cwd=workdir)
    for line in res.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"Ultralytics run failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")


def spread(rows: list[dict], key: str) -> str:
    vals = [r[key] for r in rows]
    sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return f"{key} mean {statistics.mean(vals):.4f} sd {sd:.4f} min {min(vals):.4f} max {max(vals):.4f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=sorted(MODELS), default="detect")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--imgsz", type=int, default=128)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--close-mosaic", type=int, default=10, help="detect only")
    p.add_argument("--nbs", type=int, default=64, help="nominal batch size (gradient accumulation target)")
    p.add_argument("--seeds", default="0", help="comma separated; the libraries alternate seed by seed")
    p.add_argument("--compat", default="v8,current", help="yolojax semantics to run, comma separated")
    p.add_argument("--ultralytics-python", default=default_ultralytics_python(),
                   help="interpreter with ultralytics installed (none: yolojax only)")
    p.add_argument("--no-results-md", action="store_true")
    args = p.parse_args()

    import jax

    from yolojax.data import shapes_yaml
    from yolojax.data.synthetic import shapes_cls_dir

    data = str(shapes_yaml() if args.task == "detect" else shapes_cls_dir())
    seeds = [int(s) for s in args.seeds.split(",") if s]
    work = pathlib.Path(tempfile.mkdtemp(prefix="yolojax_quality_"))
    ul_version = None
    if args.ultralytics_python:
        ul_version = subprocess.run([args.ultralytics_python, "-c", "import ultralytics, torch; "
                                     "print(ultralytics.__version__, torch.__version__)"], capture_output=True,
                                    text=True).stdout.split()
    results: dict[str, list[dict]] = {}
    for seed in seeds:
        for compat in [c for c in args.compat.split(",") if c]:
            r = run_yolojax(args.task, data, args, seed, compat, work / f"yolojax_{compat}_{seed}")
            trainer = f"yolojax compat={compat}"
            results.setdefault(trainer, []).append({"versions": f"jax {jax.__version__}", "seed": seed, **r})
            print(json.dumps({"benchmark": "quality", "task": args.task, "trainer": trainer, **results[trainer][-1]}),
                  flush=True)
        if ul_version:
            r = run_ultralytics(args.ultralytics_python, args.task, data, args, seed, work)
            trainer = f"ultralytics {ul_version[0]}"
            results.setdefault(trainer, []).append(
                {"versions": f"ultralytics {ul_version[0]}, torch {ul_version[1]}", "seed": seed, **r})
            print(json.dumps({"benchmark": "quality", "task": args.task, "trainer": trainer, **results[trainer][-1]}),
                  flush=True)
    for trainer, rows in results.items():
        summary = "; ".join(spread(rows, k) for k in METRICS[args.task])
        print(json.dumps({"benchmark": "quality", "task": args.task, "trainer": trainer, "seeds": seeds,
                          "summary": summary}), flush=True)
    if not args.no_results_md:
        machine = f"{platform.machine()} {os.cpu_count()} cpu, load {os.getloadavg()[0]:.1f}"
        if args.task == "detect":
            setting = (f"yolov8n from scratch, shapes dataset (256 train / 64 val), close_mosaic {args.close_mosaic}")
        else:
            setting = "yolov8n-cls from scratch, shapes-cls dataset (6 classes, 240 train / 60 val)"
        setting += f", {args.epochs} epochs, imgsz {args.imgsz}, batch {args.batch}, nbs {args.nbs}"
        lines = []
        for trainer, rows in results.items():
            for r in rows:
                vals = ", ".join(f"{k} {r[k]:.4f}" for k in METRICS[args.task])
                lines.append(f"| {time.strftime('%Y-%m-%d')} | {machine} | {r['versions']} | quality {trainer} | "
                             f"{vals} | {setting}, seed {r['seed']}; {r['seconds']:.0f} s |")
            if len(rows) > 1:
                lines.append(f"| {time.strftime('%Y-%m-%d')} | {machine} | {rows[0]['versions']} | quality {trainer} "
                             f"seeds {','.join(str(r['seed']) for r in rows)} | "
                             f"{'; '.join(spread(rows, k) for k in METRICS[args.task])} | {setting} |")
        append_results(lines)

if __name__ == "__main__":
    main()
