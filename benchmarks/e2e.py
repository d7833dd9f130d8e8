"""End-to-end training: yolojax's trainer vs Ultralytics' ``model.train``, one epoch's throughput or whole runs.

    python benchmarks/e2e.py [--images 256] [--imgsz 640] [--batch 16] [--workers 2] [--model yolov8n]
        [--width W] [--device cpu|0] [--no-ultralytics] [--ultralytics-python PATH] [--no-record]
    python benchmarks/e2e.py --whole-run shapes [--repeats 2]     # the whole-run comparison (see below)

**Whole runs** (``--whole-run PRESET``): each side's complete ``train`` call - start-up, every epoch with its
validation, checkpoint and weight export, the final validation - timed in its own fresh process, the two sides
alternating (yolojax, Ultralytics, yolojax, ...) ``--repeats`` times so that both see the same machine; the median
wall times and their ratio are printed and recorded. yolojax runs with a warm compilation cache, as a user's second
run: an untimed 2-epoch run of the same settings (mosaic, then not) fills it first (``--no-warmup`` skips it).
Ultralytics runs with ``--threads`` torch threads (default 2). Presets (each flag may still be overridden):

* ``shapes``: the built-in shapes dataset (256 train / 64 val images), yolov8n from scratch, imgsz 128, batch 16,
  nbs 64, SGD lr0 0.01, close_mosaic 5, workers 0, 10 epochs, validation every epoch, plots off.
* ``b8-320`` / ``b16-640``: ``--images`` (default 64) 640x480 JPEGs + 16 val images, batch 8 @320 / 16 @640, 3
  epochs, close_mosaic 1, otherwise as ``shapes``.
* ``gpu-b64-640``: 1024 JPEGs + 256 val images, batch 64 @640, 3 epochs, mosaic throughout (``gpu_suite.sh``).

On an idle 2-core CPU ``--whole-run shapes --repeats 2`` takes about 10 minutes (a yolojax run ~1.5 min, an
Ultralytics run ~3 min, the warm-up ~1 min with a warm cache); each run's JSON line has its CPU seconds too, and the
yolojax lines the run's seconds per phase.

Generates ``--images`` synthetic JPEGs (640x480, the shapes dataset's drawing, 6 classes) plus 8 validation
images in a temp dir, writes one data YAML, then trains 1 epoch on them with both trainers, same files, batch,
image size, workers, SGD lr0 0.01, mosaic on (``close_mosaic=0``), ``val=False``, ``plots=False``:

* yolojax: ``yolojax.train.train_and_evaluate`` in this process (its callbacks time the epoch);
* Ultralytics: ``YOLO(model).train(...)`` in a subprocess under ``--ultralytics-python`` (``YOLO_OFFLINE=1``).

images/s = images after the first batch / (end of the epoch's last step - end of the first step), so start-up,
the first compile / cuDNN autotune, and the final validation are excluded on both sides. One JSON line per
trainer and the ratio; rows appended to benchmarks/RESULTS.md.
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
import ultralytics.engine.trainer as ul_trainer
a = json.loads(sys.argv[1])
# Ultralytics' AMP check downloads yolo26n.pt; offline (the GPU machine) that download's retries only cost time.
# Same outcome as a passing check: AMP on CUDA, off on CPU.
ul_trainer.check_amp = lambda model: next(model.parameters()).device.type == "cuda"
marks = {}
def batch_end(trainer):
    marks.setdefault("first", time.perf_counter())
    marks["batches"] = marks.get("batches", 0) + 1
def epoch_end(trainer):
    marks["end"] = time.perf_counter()
model = YOLO(a["model"])
model.add_callback("on_train_batch_end", batch_end)
model.add_callback("on_train_epoch_end", epoch_end)
t0 = time.perf_counter()
error = None
try:
    model.train(data=a["data"], epochs=1, imgsz=a["imgsz"], batch=a["batch"], workers=a["workers"],
                device=a["device"], val=False, plots=False, mosaic=1.0, close_mosaic=0, optimizer="SGD", lr0=0.01,
                momentum=0.937, project=a["project"], name="ul", exist_ok=True, verbose=False, seed=0,
                deterministic=False)
except Exception as e:  # after the timed epoch (e.g. polars missing for its results.csv read-back): keep the marks
    if "end" not in marks:
        raise
    error = repr(e)[:300]
import ultralytics, torch
print("RESULT " + json.dumps({"first": marks["first"], "end": marks["end"], "batches": marks["batches"],
      "wall_s": time.perf_counter() - t0, "ultralytics": ultralytics.__version__, "torch": torch.__version__,
      "error_after_epoch": error}))
"""


_UL_RUN_SCRIPT = r"""
import json, sys, time
a = json.loads(sys.argv[1])
import torch
import ultralytics.utils.torch_utils as ul_torch_utils
import ultralytics.engine.trainer as ul_trainer
from ultralytics import YOLO
ul_torch_utils.NUM_THREADS = a["threads"]  # select_device sets torch's thread count from it (default: cores - 1)
ul_trainer.check_amp = lambda model: next(model.parameters()).device.type == "cuda"  # offline: as a passing check
model = YOLO(a["model"])
t0 = time.perf_counter()
model.train(**a["train"])
wall = time.perf_counter() - t0
import ultralytics
m = model.trainer.metrics
print("RESULT " + json.dumps({"wall_s": wall, "map50": m.get("metrics/mAP50(B)"), "map50_95": m.get("metrics/mAP50-95(B)"),
      "threads": torch.get_num_threads(), "ultralytics": ultralytics.__version__, "torch": torch.__version__}))
"""

_YJ_RUN_SCRIPT = r"""
import json, sys, time
a = json.loads(sys.argv[1])
from absl import flags
flags.FLAGS.mark_as_parsed()  # Grain workers read absl flags
from yolojax.engine.devices import use_cpu_cores
use_cpu_cores()  # as the entry points (YOLOJAX_CPU_DEVICES)
import jax
from yolojax import config as cfgmod
from yolojax.train import train_and_evaluate
compiles = []
def on_duration(event, seconds, *args, **kwargs):
    if event == "/jax/core/compile/backend_compile_duration":
        compiles.append(float(seconds))
jax.monitoring.register_event_duration_secs_listener(on_duration)
seen = {}
config = cfgmod.apply_overrides(cfgmod.default_config(), a["overrides"])
t0 = time.perf_counter()
out = train_and_evaluate(config, a["workdir"], callbacks={"on_train_end": [lambda ctx: seen.update(ctx=ctx)]})
wall = time.perf_counter() - t0
ctx = seen["ctx"]
print("RESULT " + json.dumps({"wall_s": wall, "map50": out["metrics/mAP50(B)"], "map50_95": out["metrics/mAP50-95(B)"],
      "phases": {k: round(v, 2) for k, v in ctx.phases.totals().items()}, "step_compile_s": ctx.compile_seconds,
      "backend_compile_s": sum(compiles), "programs_compiled": len(compiles), "jax": jax.__version__}))
"""

PRESETS = {  # the settings of each whole-run configuration (flags given on the command line win)
    "shapes": dict(data="shapes", imgsz=128, batch=16, nbs=64, epochs=10, close_mosaic=5),
    "b8-320": dict(data="jpeg", imgsz=320, batch=8, nbs=64, epochs=3, close_mosaic=1),
    "b16-640": dict(data="jpeg", imgsz=640, batch=16, nbs=64, epochs=3, close_mosaic=1),
    # the GPU measurement: mosaic throughout, validation every epoch (gpu_suite.sh adds --device 0 --workers 8)
    "gpu-b64-640": dict(data="jpeg", imgsz=640, batch=64, nbs=64, epochs=3, close_mosaic=0),
}


def make_dataset(root: Path, n_train: int, n_val: int = 8, h: int = 480, w: int = 640) -> Path:
    """JPEG images + YOLO label files under root/images/{train,val}; returns the data YAML path."""
    from yolojax.data.synthetic import NAMES

    for split, n, offset in (("train", n_train, 0), ("val", n_val, 10**6)):
        write_yolo_split(root, split, n, seed=7, offset=offset, h=h, w=w)
    names = "".join(f"  {i}: {n}\n" for i, n in enumerate(NAMES))
    yaml_path = root / "data.yaml"
    yaml_path.write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnames:\n{names}")
    return yaml_path


def model_yaml(args, root: Path) -> str:
    """The model argument both trainers get: a standard name, or a custom-width YAML file."""
    if args.width is None:
        return f"{args.model}.yaml"
    import yaml

    from yolojax.nn.yolo import YOLOV8_SCALES, YOLOv8

    scale = args.model.replace("yolov8", "")[:1] or "n"
    depth, _, max_ch = YOLOV8_SCALES[scale]
    sys.path.insert(0, str(REPO / "benchmarks"))
    from train_step import ultralytics_model_dict

    d = ultralytics_model_dict(YOLOv8(scale=scale, num_classes=6, multiples=(depth, args.width, max_ch)))
    path = root / f"{args.model}-w{args.width}.yaml"
    path.write_text(yaml.safe_dump(d, sort_keys=False))
    return str(path)


def run_yolojax(args, data: Path, model: str, workdir: Path) -> dict:
    from yolojax import config as cfgmod
    from yolojax.train import train_and_evaluate

    import jax

    marks: dict = {"compiles": []}

    def on_duration(event, seconds, *args, **kwargs):  # every XLA compile (or persistent-cache load) in the run
        if event == "/jax/core/compile/backend_compile_duration":
            marks["compiles"].append((str(kwargs.get("fun_name", "?")), round(float(seconds), 2)))

    jax.monitoring.register_event_duration_secs_listener(on_duration)

    def batch_end(ctx):
        marks.setdefault("first", time.perf_counter())
        marks["batches"] = marks.get("batches", 0) + 1

    def epoch_end(ctx):
        marks["end"] = time.perf_counter()
        marks["trainer_images_per_s"] = ctx.images_per_second
        marks["compile_s"] = ctx.compile_seconds

    overrides = {"model": model, "data": str(data), "epochs": 1, "imgsz": args.imgsz, "batch": args.batch,
                 "workers": args.workers, "val": False, "plots": False, "close_mosaic": 0, "optimizer": "SGD",
                 "lr0": 0.01, "momentum": 0.937, "pretrained": False, "verbose": False}
    if args.device is not None:
        overrides["device"] = args.device
    overrides["hsv_on_device"] = args.hsv_on_device
    overrides["warp_on_device"] = args.warp_on_device
    config = cfgmod.apply_overrides(cfgmod.default_config(), overrides)
    t0 = time.perf_counter()
    train_and_evaluate(config, str(workdir),
                       callbacks={"on_train_batch_end": [batch_end], "on_train_epoch_end": [epoch_end]})
    marks["wall_s"] = time.perf_counter() - t0
    return marks


def run_ultralytics(args, data: Path, model: str, project: Path) -> dict | None:
    spec = {"model": model, "data": str(data), "imgsz": args.imgsz, "batch": args.batch, "workers": args.workers,
            "device": args.device if args.device is not None else ("cpu" if not _has_cuda(args) else 0),
            "project": str(project)}
    from yolojax.hostenv import original_env

    env = dict(original_env(), YOLO_OFFLINE="1")  # without yolojax's malloc tunable (yolojax.hostenv)
    env.pop("XLA_FLAGS", None)
    proc = subprocess.run([args.ultralytics_python, "-c", _UL_SCRIPT, json.dumps(spec)], capture_output=True,
                          text=True, env=env, timeout=7200, cwd=project)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    print(f"Ultralytics model.train failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}", file=sys.stderr)
    return None


def _has_cuda(args) -> bool:
    probe = subprocess.run([args.ultralytics_python, "-c", "import torch; print(torch.cuda.is_available())"],
                           capture_output=True, text=True)
    return probe.stdout.strip() == "True"


def _setting(args) -> dict:
    """The whole-run settings: the preset's, then the flags given."""
    chosen = dict(PRESETS[args.whole_run])
    for key in ("data", "imgsz", "batch", "nbs", "epochs", "close_mosaic"):
        if getattr(args, key) is not None:
            chosen[key] = getattr(args, key)
    chosen["images"] = args.images if args.images is not None else (1024 if chosen["batch"] >= 64 else 64)
    chosen["workers"] = args.workers if args.workers is not None else 0
    return chosen


def _whole_run_data(setting: dict, root: Path) -> tuple[Path, str]:
    """(data YAML with an absolute ``path``, what it is): the built-in shapes dataset or generated JPEGs."""
    if setting["data"] == "shapes":
        from yolojax.data.synthetic import shapes_yaml

        src = shapes_yaml()
        (root / "shapes.yaml").write_text(f"path: {src.parent}\n" + src.read_text())  # Ultralytics wants a root
        return root / "shapes.yaml", "built-in shapes dataset (256 train / 64 val images)"
    n_val = max(8, setting["images"] // 4)
    return make_dataset(root / "data", setting["images"], n_val=n_val), \
        f"{setting['images']} train / {n_val} val JPEGs 640x480 (shapes drawing)"


def _subprocess_result(cmd: list[str], env: dict, cwd: Path, what: str) -> dict | None:
    import resource

    t0, r0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=7200, cwd=cwd)
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            out = json.loads(line[7:])
            out["process_s"] = time.perf_counter() - t0  # with the interpreter's start and imports
            # CPU seconds of the process (user + system, all threads): on a busy machine, where a side's share of the
            # cores depends on its thread count, a steadier measure of the work than the wall time
            out["cpu_s"] = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
            return out
    print(f"{what} failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}", file=sys.stderr)
    return None


def run_whole(args, setting: dict, data: Path, root: Path, k: int, *, epochs: int | None = None,
              close_mosaic: int | None = None) -> dict | None:
    """One complete yolojax training call in a fresh process; returns its RESULT dict."""
    overrides = {"model": setting["model"], "data": str(data), "epochs": epochs or setting["epochs"],
                 "imgsz": setting["imgsz"], "batch": setting["batch"], "nbs": setting["nbs"], "optimizer": "SGD",
                 "lr0": 0.01, "momentum": 0.937, "close_mosaic": setting["close_mosaic"] if close_mosaic is None
                 else close_mosaic, "workers": setting["workers"], "plots": False, "val": True, "seed": 0}
    if args.device is not None:
        overrides["device"] = args.device
    spec = {"overrides": overrides, "workdir": str(root / f"yolojax{k}")}
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    return _subprocess_result([sys.executable, "-c", _YJ_RUN_SCRIPT, json.dumps(spec)], env, root, "yolojax train")


def run_whole_ultralytics(args, setting: dict, data: Path, root: Path, k: int) -> dict | None:
    """One complete Ultralytics ``model.train`` call in a fresh process; returns its RESULT dict."""
    train = {"data": str(data), "epochs": setting["epochs"], "imgsz": setting["imgsz"], "batch": setting["batch"],
             "nbs": setting["nbs"], "optimizer": "SGD", "lr0": 0.01, "momentum": 0.937,
             "close_mosaic": setting["close_mosaic"], "workers": setting["workers"], "plots": False, "val": True,
             "seed": 0, "deterministic": False, "device": args.device if args.device is not None else "cpu",
             "project": str(root), "name": f"ul{k}", "exist_ok": True, "verbose": False}
    from yolojax.hostenv import original_env

    env = dict(original_env(), YOLO_OFFLINE="1")  # without yolojax's malloc tunable (yolojax.hostenv)
    env.pop("XLA_FLAGS", None)
    spec = {"model": setting["model"], "threads": args.threads, "train": train}
    return _subprocess_result([args.ultralytics_python, "-c", _UL_RUN_SCRIPT, json.dumps(spec)], env, root,
                              "Ultralytics model.train")


def whole_runs(args) -> None:
    """``--whole-run``: alternate complete train calls of both trainers; JSON lines, the median ratio, a row."""
    import statistics

    import jax

    setting = _setting(args)
    with_ul = not args.no_ultralytics and shutil.which(args.ultralytics_python)
    if not args.no_ultralytics and not with_ul:
        print(f"no interpreter {args.ultralytics_python!r}: Ultralytics half skipped", file=sys.stderr)
    load0 = os.getloadavg()[0]
    ours, theirs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data, data_text = _whole_run_data(setting, root)
        setting["model"] = model_yaml(args, root)
        desc = (f"{args.model}{f' width {args.width}' if args.width else ''} b{setting['batch']} @{setting['imgsz']} nbs {setting['nbs']}, {data_text}, "
                f"{setting['epochs']} epochs, close_mosaic {setting['close_mosaic']}, SGD lr0 0.01, workers "
                f"{setting['workers']}, val every epoch, plots off")
        if not args.no_warmup:  # fill the compilation cache: the mosaic epoch's shapes, then the last epochs'
            run_whole(args, setting, data, root, 0, epochs=2, close_mosaic=1)
        for k in range(1, args.repeats + 1):
            sides = [("yolojax", lambda: run_whole(args, setting, data, root, k))]
            if with_ul:
                sides.append(("ultralytics", lambda: run_whole_ultralytics(args, setting, data, root, k)))
            for impl, fn in sides:
                res = fn()
                if res is None:
                    raise SystemExit(f"{impl} run {k} failed")
                (ours if impl == "yolojax" else theirs).append(res)
                print(json.dumps({"benchmark": "e2e_whole_run", "preset": args.whole_run, "impl": impl, "run": k,
                                  "setting": desc, **{key: (round(v, 4) if isinstance(v, float) else v)
                                                      for key, v in res.items()}}), flush=True)
    med = statistics.median(r["wall_s"] for r in ours)
    summary = {"benchmark": "e2e_whole_run", "preset": args.whole_run, "impl": "summary", "setting": desc,
               "yolojax_wall_s": [round(r["wall_s"], 1) for r in ours], "yolojax_median_s": round(med, 1),
               "yolojax_map50_95": [round(r["map50_95"], 4) for r in ours],
               "yolojax_cpu_s": [round(r["cpu_s"], 1) for r in ours], "load_start": round(load0, 2),
               "load_end": round(os.getloadavg()[0], 2)}
    if theirs:
        umed = statistics.median(r["wall_s"] for r in theirs)
        summary.update(ultralytics_wall_s=[round(r["wall_s"], 1) for r in theirs], ultralytics_median_s=round(umed, 1),
                       ultralytics_map50_95=[round(r["map50_95"], 4) for r in theirs],
                       ultralytics_cpu_s=[round(r["cpu_s"], 1) for r in theirs],
                       cpu_ratio_ultralytics_over_yolojax=round(statistics.median(r["cpu_s"] for r in theirs)
                                                               / statistics.median(r["cpu_s"] for r in ours), 3),
                       ratio_ultralytics_over_yolojax=round(umed / med, 3))
    print(json.dumps(summary), flush=True)
    if args.no_record:
        return
    phases = ", ".join(f"{k} {v:.1f}" for k, v in ours[-1]["phases"].items() if v >= 0.05)
    machine = f"{platform.machine()} {os.cpu_count()} cpu, {jax.devices()[0].device_kind}; load {load0:.1f}"
    row = (f"| {datetime.date.today().isoformat()} | {machine} | jax {ours[-1]['jax']}"
           + (f"; ultralytics {theirs[-1]['ultralytics']}, torch {theirs[-1]['torch']} ({theirs[-1]['threads']} "
              f"threads)" if theirs else "")
           + f" | e2e whole run `{args.whole_run}` | yolojax {med:.1f} s (runs "
           + ", ".join(f"{r['wall_s']:.1f}" for r in ours) + ")"
           + (f", Ultralytics {summary['ultralytics_median_s']:.1f} s (runs "
              + ", ".join(f"{r['wall_s']:.1f}" for r in theirs) + f"): {summary['ratio_ultralytics_over_yolojax']:.2f}x"
              if theirs else "")
           + f" | {desc}; alternating, {args.repeats} each, medians; yolojax compile cache warm; CPU seconds yolojax "
           + ", ".join(f"{r['cpu_s']:.0f}" for r in ours)
           + (", Ultralytics " + ", ".join(f"{r['cpu_s']:.0f}" for r in theirs)
              + f" ({summary['cpu_ratio_ultralytics_over_yolojax']:.2f}x)" if theirs else "")
           + "; mAP50-95 yolojax "
           + ", ".join(f"{r['map50_95']:.3f}" for r in ours)
           + (", Ultralytics " + ", ".join(f"{r['map50_95']:.3f}" for r in theirs) if theirs else "")
           + f"; yolojax's last run by phase (s): {phases}" + (f"; {args.note}" if args.note else "") + " |")
    append_results([row])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--whole-run", choices=tuple(PRESETS), default=None,
                    help="time complete train calls of both trainers, alternating (see the module docstring)")
    ap.add_argument("--repeats", type=int, default=2, help="whole runs per trainer")
    ap.add_argument("--threads", type=int, default=2, help="Ultralytics' torch threads in whole runs")
    ap.add_argument("--epochs", type=int, default=None, help="whole runs: epochs (default: the preset's)")
    ap.add_argument("--nbs", type=int, default=None, help="whole runs: nominal batch size (default: the preset's)")
    ap.add_argument("--close-mosaic", type=int, default=None, help="whole runs: close_mosaic (default: the preset's)")
    ap.add_argument("--data", choices=("shapes", "jpeg"), default=None,
                    help="whole runs: the built-in shapes dataset or --images generated JPEGs (default: the preset's)")
    ap.add_argument("--no-warmup", action="store_true", help="whole runs: no untimed run to fill the compile cache")
    ap.add_argument("--note", default="", help="whole runs: a remark for the RESULTS.md row (e.g. a shared machine)")
    ap.add_argument("--images", type=int, default=None,
                    help="training images (640x480 JPEGs; default 256, whole runs 64 or 1024 at batch >= 64)")
    ap.add_argument("--imgsz", type=int, default=None, help="default 640 (whole runs: the preset's)")
    ap.add_argument("--batch", type=int, default=None, help="default 16 (whole runs: the preset's)")
    ap.add_argument("--workers", type=int, default=None, help="default 2 (whole runs 0)")
    ap.add_argument("--model", default="yolov8n")
    ap.add_argument("--width", type=float, default=None, help="custom width multiple (tiny test models)")
    ap.add_argument("--device", default=None, help="both trainers' device argument (default: GPU 0 if any, else cpu)")
    ap.add_argument("--hsv-on-device", default="auto", choices=("auto", "True", "False"),
                    help="yolojax's config.hsv_on_device (auto: the HSV jitter in the train step on GPU/TPU)")
    ap.add_argument("--warp-on-device", default="auto", choices=("auto", "True", "False"),
                    help="yolojax's config.warp_on_device (auto: mosaic, warp, flips and jitter in the train step on "
                         "GPU/TPU)")
    ap.add_argument("--no-ultralytics", action="store_true")
    ap.add_argument("--ultralytics-python", default=os.environ.get("ULTRALYTICS_PYTHON", str(pathlib.Path(__file__).resolve().parents[2] / "ulvenv" / "bin" / "python")))
    ap.add_argument("--no-record", action="store_true", help="do not append to benchmarks/RESULTS.md")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(REPO))
    if args.whole_run:
        return whole_runs(args)
    args.images = 256 if args.images is None else args.images
    args.imgsz = 640 if args.imgsz is None else args.imgsz
    args.batch = 16 if args.batch is None else args.batch
    args.workers = 2 if args.workers is None else args.workers
    try:
        from absl import flags

        flags.FLAGS.mark_as_parsed()  # Grain 0.2.18 workers read absl flags
    except Exception:
        pass
    import jax

    from yolojax.engine.devices import use_cpu_cores

    use_cpu_cores()  # as the yolojax entry points (YOLOJAX_CPU_DEVICES=N: N host devices)
    from yolojax.engine.devices import largest_divisor_at_most, select_devices
    from yolojax import hostenv
    from yolojax.tasks.detect import hsv_on_device, warp_on_device

    chosen = select_devices(args.device)
    n_dev = len(chosen)
    if jax.default_backend() == "cpu":
        n_dev = largest_divisor_at_most(args.batch, n_dev)  # as the trainer splits the CPU
    load = f"load {os.getloadavg()[0]:.1f}"
    machine = f"{platform.machine()} {os.cpu_count()} cpu, {jax.devices()[0].device_kind}; {load}"
    date = datetime.date.today().isoformat()
    setting = (f"{args.model}{f' width {args.width}' if args.width else ''} b{args.batch} @{args.imgsz}, "
               f"{args.images} JPEG 640x480, mosaic on, workers {args.workers}, 1 epoch; yolojax on "
               f"{n_dev} {jax.default_backend()} device(s), "
               + ("mosaic, warp, flips and HSV jitter in the train step"
                  if warp_on_device(args.warp_on_device, chosen[0].platform) else
                  "HSV jitter " + ("in the train step" if hsv_on_device(args.hsv_on_device, chosen[0].platform)
                                   else "on the host")))
    counted = args.images - min(args.batch, args.images)  # images after the first batch
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = make_dataset(root / "data", args.images)
        model = model_yaml(args, root)
        ours = run_yolojax(args, data, model, root / "yolojax_run")
        ips = counted / max(ours["end"] - ours["first"], 1e-9)
        rec = {"benchmark": "e2e_epoch", "impl": "yolojax", "setting": setting, "images_per_s": round(ips, 2),
               "trainer_images_per_s": round(ours["trainer_images_per_s"], 2),
               "compile_s": round(ours["compile_s"], 2), "wall_s": round(ours["wall_s"], 1),
               "batches": ours["batches"], "jax": jax.__version__, "backend": jax.default_backend(),
               "programs_compiled": len(ours["compiles"]), "host_hugepages": hostenv.active(),
               "programs_over_1s": sorted((c for c in ours["compiles"] if c[1] > 1.0), key=lambda c: -c[1])}
        print(json.dumps(rec), flush=True)
        rows.append(f"| {date} | {machine} | jax {jax.__version__} | e2e yolojax trainer 1 epoch | {ips:.1f} img/s "
                    f"| {setting}; first batch excluded; compile {ours['compile_s']:.1f} s; wall {ours['wall_s']:.0f} s; "
                    f"{len(ours['compiles'])} programs compiled, "
                    f"{sum(c[1] > 1.0 for c in ours['compiles'])} over 1 s"
                    + ("; glibc huge-page malloc" if hostenv.active() else "") + " |")
        if not args.no_ultralytics and not shutil.which(args.ultralytics_python):
            print(f"no interpreter {args.ultralytics_python!r}: Ultralytics half skipped", file=sys.stderr)
        elif not args.no_ultralytics:
            ul = run_ultralytics(args, data, model if args.width else f"{args.model}.yaml", root)
            if ul is not None:
                ul_ips = counted / max(ul["end"] - ul["first"], 1e-9)
                urec = {"benchmark": "e2e_epoch", "impl": "ultralytics", "setting": setting,
                        "images_per_s": round(ul_ips, 2), "wall_s": round(ul["wall_s"], 1), "batches": ul["batches"],
                        "ultralytics": ul["ultralytics"], "torch": ul["torch"],
                        "ratio_yolojax_over_ultralytics": round(ips / ul_ips, 3)}
                print(json.dumps(urec), flush=True)
                rows.append(f"| {date} | {machine} | ultralytics {ul['ultralytics']}, torch {ul['torch']} | e2e "
                            f"ultralytics model.train 1 epoch | {ul_ips:.1f} img/s | {setting}; first batch excluded; "
                            f"wall {ul['wall_s']:.0f} s; yolojax/ultralytics = {ips / ul_ips:.2f}x |")
    if not args.no_record:
        append_results(rows)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    from yolojax.hostenv import restart_with_hugepages

    restart_with_hugepages()  # as the yolojax entry points run (yolojax.hostenv); Ultralytics gets the original env
    main()
