"""Validation throughput: yolojax's ``Validator`` vs Ultralytics' ``model.val`` on the same images and weights.

    python benchmarks/val_bench.py [--images 128] [--imgsz 640] [--batch 16] [--weights PT|NPZ] [--workers 0]
        [--train-epochs 15] [--train-imgsz 128] [--width W] [--no-ultralytics] [--ultralytics-python PATH]
        [--no-record]

Generates ``--images`` synthetic 640x480 JPEGs with labels (the shapes drawing, classes 0-5) as the val split of a
data YAML whose names are the model's. Both sides validate the same weights at conf 0.001, IoU 0.7, max_det 300,
rect batches. The weights are a detector that finds the shapes, so that NMS and matching see what a trained
model gives them (a fresh model's scores stay below 0.001 and leave both with nothing to do): by default yolojax
trains yolov8n on the built-in shapes dataset for ``--train-epochs`` at ``--train-imgsz`` (SGD, batch 16,
kept in ``~/.cache/yolojax/val_bench`` for the next run) and Ultralytics loads the same tensors from its
``last.npz`` into its own yolov8n; ``--weights`` gives an Ultralytics ``.pt`` or a yolojax ``.npz`` instead. The
batches: yolojax through ``yolojax.val.validate`` (jitted forward + decode + NMS on the device, matching and AP on
the host), Ultralytics through ``YOLO(weights).val(...)`` in a subprocess (``YOLO_OFFLINE=1``, ``plots=False``); the yolojax
side is ``yolojax.val.validate``'s pipeline (``ValLoader`` + ``Validator``) with the Validator kept across passes
(with ``--workers``, the loader's worker processes serve both passes, as they serve every epoch's validation in
training; Ultralytics' ``model.val`` builds a new dataloader per call, whose forked workers start quickly).
Each side runs twice in its process; images/s is from the second (warm) pass, so JIT compiles and cuDNN autotune
are excluded on both sides (the first pass is reported too). ``--width`` validates a randomly initialised custom
width yolojax model instead (tiny test runs; no Ultralytics). One JSON line per side; rows appended to
benchmarks/RESULTS.md.
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

from bench_common import append_results, write_yolo_split

REPO = Path(__file__).resolve().parents[1]

_UL_SCRIPT = r"""
import json, sys, time
from ultralytics import YOLO
a = json.loads(sys.argv[1])
if a["weights"].endswith(".npz"):  # yolojax's export: the same tensors, Ultralytics' names, in its own yolov8n
    import numpy as np, torch
    from ultralytics.nn.tasks import DetectionModel
    z = np.load(a["weights"])
    names = {i: str(n) for i, n in enumerate(z["__names__"])}
    net = DetectionModel(a["model_yaml"], nc=len(names), verbose=False)
    own = net.state_dict()
    sd = {k: torch.from_numpy(np.asarray(z[k])).to(own[k].dtype) for k in z.files if k in own}
    missing = [k for k in own if k not in sd and not k.endswith("num_batches_tracked")]
    assert not missing, missing[:5]
    net.load_state_dict(sd, strict=False)
    net.names = names
    model = YOLO(a["model_yaml"])
    model.model = net
else:
    model = YOLO(a["weights"])
out = {}
for run in ("first", "second"):
    t0 = time.perf_counter()
    m = model.val(data=a["data"], imgsz=a["imgsz"], batch=a["batch"], conf=0.001, iou=0.7, max_det=300, rect=True,
                  workers=a["workers"], device=a["device"], plots=False, verbose=False, project=a["project"],
                  name="val", exist_ok=True)
    out[run + "_s"] = time.perf_counter() - t0
out["speed_ms"] = m.speed
out["map50_95"] = float(m.box.map)
out["map50"] = float(m.box.map50)
import ultralytics, torch
out["ultralytics"], out["torch"] = ultralytics.__version__, torch.__version__
print("RESULT " + json.dumps(out))
"""


def make_val_dataset(root: Path, n: int, names: dict[int, str], h: int = 480, w: int = 640) -> Path:
    write_yolo_split(root, "val", n, seed=11, h=h, w=w)
    lines = "".join(f"  {k}: {json.dumps(v)}\n" for k, v in sorted(names.items()))
    path = root / "data.yaml"
    path.write_text(f"path: {root}\ntrain: images/val\nval: images/val\nnames:\n{lines}")
    return path


def train_detector(args) -> Path:
    """``last.npz`` of yolov8n trained by yolojax on the built-in shapes dataset (``--train-epochs`` at
    ``--train-imgsz``, SGD lr0 0.01, batch 16, nbs 16, close_mosaic 2), kept in ``~/.cache/yolojax/val_bench``."""
    cache = Path(os.path.expanduser("~/.cache/yolojax/val_bench"))
    path = cache / f"shapes-yolov8n-e{args.train_epochs}-{args.train_imgsz}.npz"
    if path.is_file():
        return path
    from yolojax import config as cfgmod
    from yolojax.train import train_and_evaluate

    with tempfile.TemporaryDirectory() as tmp:
        config = cfgmod.apply_overrides(cfgmod.default_config(), dict(
            data="shapes", model="yolov8n.yaml", epochs=args.train_epochs, imgsz=args.train_imgsz, batch=16, nbs=16,
            optimizer="SGD", lr0=0.01, close_mosaic=min(2, args.train_epochs - 1), workers=0, val=False, plots=False,
            tensorboard=False, seed=0, **({"device": args.device} if args.device is not None else {})))
        out = train_and_evaluate(config, Path(tmp) / "train")
        print(f"val_bench: trained the shapes detector (mAP50-95 {out['metrics/mAP50-95(B)']:.3f} at "
              f"{args.train_imgsz} px)", file=sys.stderr)
        cache.mkdir(parents=True, exist_ok=True)
        tmp_path = path.with_suffix(".tmp.npz")
        shutil.copy(Path(tmp) / "train" / "weights" / "last.npz", tmp_path)
        os.replace(tmp_path, path)
    return path


def load_model(args):
    if args.width is not None:
        from yolojax.nn.yolo import YOLOV8_SCALES, YOLOv8, init_variables

        depth, _, max_ch = YOLOV8_SCALES["n"]
        model = YOLOv8(scale="n", num_classes=6, multiples=(depth, args.width, max_ch))
        from yolojax.data.synthetic import NAMES

        return model, init_variables(model, seed=0), dict(enumerate(NAMES))
    from yolojax.model import load_weights

    w = load_weights(args.weights)
    return w.model, w.variables, dict(w.names)


def run_yolojax(args, model, variables, data: Path) -> dict:
    """``yolojax.val.validate``'s pipeline with one Validator kept across both passes (one jit, one compile)."""
    import jax

    from yolojax.data import DetectionDataset, ValLoader, check_dataset
    from yolojax.engine.devices import (data_sharding, largest_divisor_at_most, make_mesh, replicated,
                                        select_devices)
    from yolojax.engine.validate import Validator

    info = check_dataset(str(data))
    devices = select_devices(args.device if jax.default_backend() != "cpu" else None)  # as yolojax.val does
    mesh = make_mesh(devices[:largest_divisor_at_most(args.batch, len(devices))])
    ds = DetectionDataset.from_config(info, "val", imgsz=args.imgsz, verbose=False)
    loader = ValLoader(ds, batch_size=args.batch, rect=True, workers=args.workers)
    validator = Validator(model, loader, dict(info["names"]), conf=0.001, iou=0.7, max_det=300, compute_loss=False,
                          put=lambda b: jax.device_put(b, data_sharding(mesh)))
    variables = jax.device_put(variables, replicated(mesh))
    out = {}
    for run in ("first", "second"):
        t0 = time.perf_counter()
        result = validator(variables)
        out[run + "_s"] = time.perf_counter() - t0
    loader.close()
    box = result.metrics.results_dict if hasattr(result.metrics, "results_dict") else {}
    out["map50_95"] = float(box.get("metrics/mAP50-95(B)", float("nan")))
    out["map50"] = float(box.get("metrics/mAP50(B)", float("nan")))
    out["speed_ms"] = dict(result.speed)
    out["seen"] = result.seen
    out["devices"] = mesh.devices.size
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=128)
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--weights", default=None,
                    help="Ultralytics .pt or yolojax .npz (yolov8n) weights for both sides (default: train them)")
    ap.add_argument("--train-epochs", type=int, default=15, help="epochs of the default weights' shapes training")
    ap.add_argument("--train-imgsz", type=int, default=128, help="image size of the default weights' training")
    ap.add_argument("--width", type=float, default=None, help="random-init custom-width model (yolojax only)")
    ap.add_argument("--device", default=None, help="Ultralytics' device (default: 0 with CUDA, else cpu)")
    ap.add_argument("--no-ultralytics", action="store_true")
    ap.add_argument("--ultralytics-python", default=os.environ.get("ULTRALYTICS_PYTHON", str(pathlib.Path(__file__).resolve().parents[2] / "ulvenv" / "bin" / "python")))
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(REPO))
    import jax

    from yolojax.engine.devices import use_cpu_cores

    use_cpu_cores()  # as the yolojax.val entry point (YOLOJAX_CPU_DEVICES=N: N host devices)
    if args.weights is None and args.width is None:
        args.weights = str(train_detector(args))

    model, variables, names = load_model(args)
    machine = f"{platform.machine()} {os.cpu_count()} cpu, {jax.devices()[0].device_kind}; load {os.getloadavg()[0]:.1f}"
    date = datetime.date.today().isoformat()
    what = "custom width {}".format(args.width) if args.width else Path(args.weights).name
    setting = f"{what} @{args.imgsz} b{args.batch}, {args.images} JPEG 640x480, conf 0.001, rect, workers {args.workers}"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = make_val_dataset(Path(tmp) / "data", args.images, names)
        ours = run_yolojax(args, model, variables, data)
        ips = args.images / ours["second_s"]
        setting += f", yolojax on {ours['devices']} {jax.default_backend()} device(s)"
        rec = {"benchmark": "val", "impl": "yolojax", "setting": setting, "images_per_s": round(ips, 2),
               "first_pass_s": round(ours["first_s"], 2), "second_pass_s": round(ours["second_s"], 2),
               "map50_95": ours["map50_95"], "map50": ours["map50"], "speed_ms": ours["speed_ms"],
               "jax": jax.__version__, "backend": jax.default_backend()}
        print(json.dumps(rec), flush=True)
        rows.append(f"| {date} | {machine} | jax {jax.__version__} | val_bench yolojax Validator | {ips:.1f} img/s | "
                    f"{setting}; warm pass; first pass {ours['first_s']:.1f} s; mAP50-95 {ours['map50_95']:.4f} |")
        if args.width is None and not args.no_ultralytics and shutil.which(args.ultralytics_python):
            spec = {"weights": str(Path(args.weights).resolve()), "model_yaml": "yolov8n.yaml", "data": str(data),
                    "imgsz": args.imgsz,
                    "batch": args.batch, "workers": args.workers, "project": tmp,
                    "device": args.device if args.device is not None else
                    ("0" if jax.default_backend() == "gpu" else "cpu")}
            env = dict(os.environ, YOLO_OFFLINE="1")
            env.pop("XLA_FLAGS", None)
            proc = subprocess.run([args.ultralytics_python, "-c", _UL_SCRIPT, json.dumps(spec)], capture_output=True,
                                  text=True, env=env, timeout=3600, cwd=tmp)
            ul = next((json.loads(l[7:]) for l in proc.stdout.splitlines() if l.startswith("RESULT ")), None)
            if ul is None:
                print(f"Ultralytics val failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}", file=sys.stderr)
            else:
                ul_ips = args.images / ul["second_s"]
                urec = {"benchmark": "val", "impl": "ultralytics", "setting": setting, "images_per_s": round(ul_ips, 2),
                        "first_pass_s": round(ul["first_s"], 2), "second_pass_s": round(ul["second_s"], 2),
                        "map50_95": ul["map50_95"], "map50": ul["map50"], "speed_ms": ul["speed_ms"],
                        "ultralytics": ul["ultralytics"], "torch": ul["torch"],
                        "ratio_yolojax_over_ultralytics": round(ips / ul_ips, 3)}
                print(json.dumps(urec), flush=True)
                rows.append(f"| {date} | {machine} | ultralytics {ul['ultralytics']}, torch {ul['torch']} | val_bench "
                            f"ultralytics model.val | {ul_ips:.1f} img/s | {setting}; warm pass; mAP50-95 "
                            f"{ul['map50_95']:.4f}; yolojax/ultralytics = {ips / ul_ips:.2f}x |")
    if not args.no_record:
        append_results(rows)


if __name__ == "__main__":
    main()
