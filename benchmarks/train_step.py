"""Train-step throughput: yolojax's jitted ``train_step`` vs Ultralytics' loss + backward + clip + SGD step.

    python benchmarks/train_step.py --model=yolov8n --batch=64 --imgsz=640 [--devices N] [--dtype bfloat16]
        [--steps K] [--vs-ultralytics] [--breakdown] [--peak-tflops T] [--width 0.0625]
    python benchmarks/train_step.py --model=yolov8n-cls --batch=64 --imgsz=224 --num-classes=1000 --vs-ultralytics

One synthetic batch (uint8 images + up to ``--max-boxes`` boxes per image, fixed seed) goes through the real
``yolojax.engine.state.train_step`` (forward in train mode, TaskAligned assignment, loss, gradient, grad-norm clip
10, SGD-Nesterov, EMA; state donated), jitted with the batch sharded over ``--devices`` devices (on CPU these are
``--xla_force_host_platform_device_count`` host devices). Reported: compile time, median step time (each step
synchronised), pipelined step time (``--steps`` steps dispatched back to back, one sync at the end), images/s,
peak device memory (``device.memory_stats()``, GPU only) and the FLOP utilisation estimated as
3 x model GFLOPs (``yolojax.nn.summary.model_info`` at ``--imgsz``; forward + backward) x images/s over the
device peak (``--peak-tflops``, or a table of known GPUs: bf16 dense tensor peak for bfloat16, TF32 for float32).

A ``-cls`` model (yolov8n-cls ... yolov8x-cls) times the classification step instead: noise images with one class
label each, the same ``train_step`` with the classification objective (cross-entropy; no boxes), beside
Ultralytics' ``ClassificationModel`` with the same optimizer, clipping and EMA.

``--breakdown`` (detection) also times the forward alone, forward + loss, and forward + loss + gradient, to see where
the step's time goes. ``--vs-ultralytics`` runs the same images and boxes through Ultralytics' ``DetectionModel``
in a subprocess (``--ultralytics-python``): ``model.loss(batch)`` + backward + ``clip_grad_norm_(10)`` + SGD
(Nesterov, momentum 0.937) + ``ModelEMA.update`` - under AMP autocast + GradScaler on CUDA only, as its trainer
does - timed the same two ways (synchronised median; pipelined, where GradScaler still reads its inf check each
step) and prints both ratios. One JSON line per result; a row per result is appended to benchmarks/RESULTS.md
(``--no-record`` to skip). The Ultralytics half imports neither JAX nor yolojax.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import statistics
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench_common import append_results, median_time

REPO = Path(__file__).resolve().parents[1]

# Dense peak TFLOP/s by device kind substring: (bfloat16 tensor cores, TF32 tensor cores). XLA on GPU runs
# float32 convolutions on TF32 tensor cores at JAX's default precision.
GPU_PEAKS = {"H200": (989.0, 494.0), "H100 PCIe": (756.0, 378.0), "H100": (989.0, 494.0),
             "A100": (312.0, 156.0), "L4": (121.0, 60.0), "L40S": (362.0, 183.0)}


def make_batch(batch: int, imgsz: int, max_boxes: int, num_classes: int, seed: int = 0) -> dict:
    """A synthetic batch: noise images with bright boxes, ``counts`` boxes per image padded to ``max_boxes``."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 64, (batch, imgsz, imgsz, 3), dtype=np.uint8)
    boxes = np.zeros((batch, max_boxes, 4), np.float32)
    classes = np.zeros((batch, max_boxes), np.int32)
    mask = np.zeros((batch, max_boxes), bool)
    counts = rng.integers(max(1, max_boxes // 4), max_boxes + 1, batch)
    counts[0] = max_boxes
    for i, n in enumerate(counts):
        wh = np.exp(rng.uniform(np.log(6), np.log(imgsz / 2), (n, 2)))
        c = rng.uniform(wh / 2, imgsz - wh / 2)
        xyxy = np.concatenate([c - wh / 2, c + wh / 2], 1).astype(np.float32)
        boxes[i, :n], classes[i, :n], mask[i, :n] = xyxy, rng.integers(0, num_classes, n), True
        for x1, y1, x2, y2 in xyxy.astype(int):
            images[i, y1:y2, x1:x2] = rng.integers(96, 256, 3, dtype=np.uint8)
    return {"images": images, "boxes": boxes, "classes": classes, "mask": mask}


def is_classifier(args) -> bool:
    """A ``yolov8<s>-cls`` model: the classification step is timed."""
    return args.model.endswith("-cls")


def make_cls_batch(batch: int, imgsz: int, num_classes: int, seed: int = 0) -> dict:
    """A synthetic classification batch: noise images and one class id per image."""
    rng = np.random.default_rng(seed)
    return {"images": rng.integers(0, 256, (batch, imgsz, imgsz, 3), dtype=np.uint8),
            "labels": rng.integers(0, num_classes, batch).astype(np.int32)}


def add_warp_plans(batch_np: dict, seed: int = 1, layouts: list | None = None) -> dict:
    """The yolojax batch as ``TrainLoader(warp_on_device=True)`` ships it: the images become the mosaic ``sources``
    and every sample gets a mosaic of 4 of them + the default random affine + a random left-right flip
    (``yolojax.augment.warp``). ``layouts``: a list that receives each sample's (slots, rects, M, flip_lr)."""
    from yolojax import augment

    rng = np.random.default_rng(seed)
    images = batch_np["images"]
    n, s = images.shape[:2]
    tiles, cols, rows = [], [], []
    for _ in range(n):
        slots = rng.integers(0, n, 4)
        rects = augment.mosaic_layout([(s, s)] * 4, s, rng)
        tiles.append([(j, x1a, y1a, x2a, y2a, x1b - x1a, y1b - y1a)
                      for j, (x1a, y1a, x2a, y2a, x1b, y1b, _, _) in zip(slots, rects)])
        M, _ = augment.perspective_matrix(rng, (2 * s, 2 * s), (s, s))
        lr = bool(rng.random() < 0.5)
        c, r = augment.affine_coordinates(M[:2], (s, s), flip_lr=lr)
        cols.append(c), rows.append(r)
        if layouts is not None:
            layouts.append((slots, rects, M, lr))
    out = {k: v for k, v in batch_np.items() if k != "images"}
    out.update(sources=images, warp_tiles=np.asarray(tiles, np.int32), warp_cols=np.stack(cols),
               warp_rows=np.stack(rows), hsv_to_rgb=np.ones(n, bool))
    return out


def build_model(args):
    import jax.numpy as jnp

    from yolojax.nn.classify import YOLOV8_CLS_SCALES, YOLOv8Cls
    from yolojax.nn.yolo import YOLOV8_SCALES, YOLOv8

    scale = args.model.replace("yolov8", "")[:1] or "n"
    dtype = jnp.bfloat16 if args.dtype == "bfloat16" else jnp.float32
    family, scales = (YOLOv8Cls, YOLOV8_CLS_SCALES) if is_classifier(args) else (YOLOv8, YOLOV8_SCALES)
    multiples = None
    if args.width is not None:
        depth, _, max_ch = scales[scale]
        multiples = (depth, args.width, max_ch)
    return family(scale=scale, num_classes=args.num_classes, dtype=dtype, multiples=multiples)


def ultralytics_model_dict(model) -> dict:
    """``model.to_yaml_dict()`` with Ultralytics' module spelling (``nn.Upsample``) for its parse_model."""
    d = model.to_yaml_dict()
    d["backbone"] = [[f, n, "nn.Upsample" if m == "Upsample" else m, a] for f, n, m, a in d["backbone"]]
    return d


def time_yolojax(batch_np: dict, args) -> dict:
    import jax

    from yolojax.engine.devices import compiler_options, data_sharding, make_mesh, replicated
    from yolojax.engine.optim import Schedule
    from yolojax.augment.device import batch_images
    from yolojax.engine.state import TrainHyper, create_train_state, preprocess, train_step
    from yolojax.loss import detection_loss
    from yolojax.nn.summary import model_info
    from yolojax.nn.yolo import init_variables

    model = build_model(args)
    devices = jax.devices()[: args.devices]
    if len(devices) < args.devices:
        raise SystemExit(f"--devices {args.devices}: only {len(jax.devices())} {jax.default_backend()} device(s).")
    if args.batch % len(devices):
        raise SystemExit(f"--batch {args.batch} does not split over {len(devices)} devices.")
    mesh = make_mesh(devices)
    repl, data = replicated(mesh), data_sharding(mesh)
    variables = init_variables(model, seed=0)
    # Every step is an optimizer step (accumulate 1, no warmup), as in the Ultralytics half.
    schedule = Schedule(lr0=0.01, lrf=0.01, epochs=100, nb=1000, nw=-1, momentum=0.937, warmup_momentum=0.8,
                        warmup_bias_lr=0.1, accumulate=1, nbs_over_batch=1.0)
    objective = None
    if is_classifier(args):
        from yolojax.loss import ClassificationObjective

        objective = ClassificationObjective()
    hyper = TrainHyper(schedule=schedule, optimizer="SGD", weight_decay=0.0005 * args.batch / 64, objective=objective)
    state = jax.device_put(create_train_state(model, variables, hyper), repl)
    batch = jax.device_put(batch_np, data)
    opts = compiler_options(mesh.devices.flat[0].platform) if args.xla_options else None
    step = jax.jit(train_step, in_shardings=(repl, data), out_shardings=(repl, repl), donate_argnums=0,
                   compiler_options=opts)

    t0 = time.perf_counter()
    compiled = step.lower(state, batch).compile()
    compile_s = time.perf_counter() - t0
    holder = {"state": state}

    def one():
        holder["state"], m = compiled(holder["state"], batch)
        jax.block_until_ready(m["loss"])
        holder.setdefault("first_loss", float(m["loss"]))  # the loss of the initial weights
        return m

    median_s, times = median_time(one, max(args.warmup, 1), args.steps)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        holder["state"], m = compiled(holder["state"], batch)
    jax.block_until_ready((holder["state"].params, m))
    pipelined_s = (time.perf_counter() - t0) / args.steps
    loss = holder["first_loss"]

    def run_steps(k: int) -> list[float]:  # for --interleave: k synchronised steps, their times
        return median_time(one, 0, k)[1]

    out = {"compile_s": compile_s, "median_s": median_s, "min_s": min(times), "pipelined_s": pipelined_s,
           "run_steps": run_steps, "loss": loss, "jax": jax.__version__, "xla_options": opts,
           "backend": jax.default_backend(),
           "device_kind": devices[0].device_kind, "n_devices": len(devices)}
    stats = devices[0].memory_stats() if hasattr(devices[0], "memory_stats") else None
    if stats:
        out["peak_mem_gib"] = stats.get("peak_bytes_in_use", 0) / 2**30
    out["gflops_per_image"] = model_info(model, imgsz=args.imgsz).gflops
    out["params"] = int(sum(np.prod(p.shape) for p in jax.tree.leaves(variables["params"])))

    if "warp_tiles" in batch or "hsv_tables" in batch:  # what composing + jittering the images costs alone
        fn = jax.jit(batch_images, compiler_options=opts).lower(batch).compile()
        med, _ = median_time(lambda: jax.block_until_ready(fn(batch)), 1, max(3, args.steps // 2))
        out["augment_ms"] = round(1000 * med, 2)
    if args.breakdown and not is_classifier(args):
        targets = {k: batch[k] for k in ("boxes", "classes", "mask")}
        if "images" not in batch:
            batch = dict(batch, images=jax.jit(batch_images)(batch))
        params, stats_ = holder["state"].params, holder["state"].batch_stats

        def forward(params, images):
            levels, _ = model.apply({"params": params, "batch_stats": stats_}, preprocess(images), train=True,
                                    mutable=["batch_stats"])
            return levels

        def loss_fn(params, images, targets):
            levels = forward(params, images)
            total, _ = detection_loss(levels, targets, num_classes=model.num_classes)
            return total

        parts = {"forward": (jax.jit(forward, compiler_options=opts), (params, batch["images"])),
                 "forward_loss": (jax.jit(loss_fn, compiler_options=opts), (params, batch["images"], targets)),
                 "forward_loss_grad": (jax.jit(jax.grad(loss_fn), compiler_options=opts),
                                       (params, batch["images"], targets))}
        out["breakdown_ms"] = {}
        for name, (fn, fargs) in parts.items():
            fn = fn.lower(*fargs).compile()
            med, _ = median_time(lambda: jax.block_until_ready(fn(*fargs)), 1, max(3, args.steps // 2))
            out["breakdown_ms"][name] = round(1000 * med, 1)
        out["breakdown_ms"]["full_step"] = round(1000 * median_s, 1)
    return out


def ultralytics_step(inputs_path: str, args):
    """Runs under the Ultralytics interpreter (torch only): ``(one, sync, info)`` for the same batch - ``one(wait)``
    is one training step, ``info()`` the versions, first loss and peak memory."""
    import torch
    import ultralytics
    from ultralytics.cfg import get_cfg
    from ultralytics.nn.tasks import ClassificationModel, DetectionModel
    from ultralytics.utils.torch_utils import ModelEMA

    data = np.load(inputs_path)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    if not cuda:
        torch.set_num_threads(os.cpu_count() or 1)
    cfg = json.loads(args.model_yaml) if args.model_yaml else f"{args.model}.yaml"
    family = ClassificationModel if is_classifier(args) else DetectionModel
    model = family(cfg, nc=args.num_classes, verbose=False).to(device)
    model.args = get_cfg()
    model.train()
    images = torch.from_numpy(data["images"]).permute(0, 3, 1, 2).contiguous().to(device)  # uint8 BCHW
    if is_classifier(args):
        labels = {"cls": torch.from_numpy(data["labels"].astype(np.int64)).to(device)}
    else:
        mask, boxes, classes = data["mask"], data["boxes"], data["classes"]
        bi, ii = np.nonzero(mask)
        xyxy = boxes[bi, ii] / args.imgsz
        xywh = np.concatenate([(xyxy[:, :2] + xyxy[:, 2:]) / 2, xyxy[:, 2:] - xyxy[:, :2]], 1)
        labels = {"batch_idx": torch.from_numpy(bi.astype(np.float32)).to(device),
                  "cls": torch.from_numpy(classes[bi, ii].astype(np.float32)[:, None]).to(device),
                  "bboxes": torch.from_numpy(xywh.astype(np.float32)).to(device)}
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.937, nesterov=True,
                          weight_decay=0.0005 * args.batch / 64)
    scaler = torch.amp.GradScaler("cuda", enabled=cuda)
    ema = ModelEMA(model)
    result = {}

    def sync():
        if cuda:
            torch.cuda.synchronize()

    def one(wait: bool = True):
        batch = {"img": images.float() / 255, **labels}
        with torch.autocast("cuda", enabled=cuda):
            loss, items = model.loss(batch)
        scaler.scale(loss.sum()).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=10.0)
        scaler.step(opt)
        scaler.update()
        opt.zero_grad()
        ema.update(model)
        if wait:
            sync()
            result.setdefault("loss", float(loss.sum()))  # the loss of the initial weights

    def info() -> dict:
        out = {"loss": result.get("loss"), "ultralytics": ultralytics.__version__, "torch": torch.__version__,
               "threads": torch.get_num_threads(), "device": torch.cuda.get_device_name() if cuda else "cpu"}
        if cuda:
            out["peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
        return out

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    return one, sync, info


def time_ultralytics_here(inputs_path: str, args) -> dict:
    one, sync, info = ultralytics_step(inputs_path, args)
    median_s, times = median_time(one, max(args.warmup, 1), args.steps)
    t0 = time.perf_counter()  # back to back, one sync at the end (GradScaler.step still reads found_inf each step)
    for _ in range(args.steps):
        one(wait=False)
    sync()
    pipelined_s = (time.perf_counter() - t0) / args.steps
    return {"median_s": median_s, "min_s": min(times), "pipelined_s": pipelined_s, **info()}


def serve_ultralytics_here(inputs_path: str, args) -> None:
    """``--interleave``'s Ultralytics side: warm up, say ``ready``, then time ``K`` synchronised steps for each
    ``K`` read from stdin (one JSON list of seconds per line) until EOF; last line: ``info()``."""
    one, _, info = ultralytics_step(inputs_path, args)
    for _ in range(max(args.warmup, 1)):
        one()
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        print(json.dumps(median_time(one, 0, int(line))[1]), flush=True)
    print(json.dumps(info()), flush=True)


def interleaved_times(step_a, step_b, rounds: int, per_round: int, pause_s: float = 0.3) -> dict:
    """Time two step functions in alternating blocks of ``per_round`` steps, ``rounds`` times (the first of each
    pair alternates, so neither always runs after the other's pause), so that both see the same machine: on a shared
    VM the speed drifts by more than the difference being measured. ``step_x(k)`` runs k synchronised steps and
    returns their times in seconds. Returns both medians, their ratio b/a (a's speed-up over b) and the median of
    the per-round ratios."""
    times_a, times_b, ratios = [], [], []
    for r in range(rounds):
        order = (("a", step_a), ("b", step_b)) if r % 2 == 0 else (("b", step_b), ("a", step_a))
        got = {}
        for name, step in order:
            time.sleep(pause_s)  # let the other side's threads go idle
            got[name] = list(step(per_round))
        times_a += got["a"]
        times_b += got["b"]
        ratios.append(statistics.median(got["b"]) / statistics.median(got["a"]))
    med_a, med_b = statistics.median(times_a), statistics.median(times_b)
    return {"median_a_s": med_a, "median_b_s": med_b, "ratio": med_b / med_a,
            "round_ratio_median": statistics.median(ratios), "round_ratios": ratios,
            "times_a": times_a, "times_b": times_b}


def ultralytics_command(inputs_path: Path, args, *extra: str) -> tuple[list[str], dict]:
    """The Ultralytics half's command line and environment (without yolojax's malloc tunable, yolojax.hostenv)."""
    from yolojax.hostenv import original_env

    env = dict(original_env(), YOLO_OFFLINE="1")
    env.pop("XLA_FLAGS", None)
    cmd = [args.ultralytics_python, str(Path(__file__).resolve()), "--ultralytics-half", str(inputs_path),
           f"--model={args.model}", f"--batch={args.batch}", f"--imgsz={args.imgsz}",
           f"--num-classes={args.num_classes}", f"--warmup={args.warmup}", f"--steps={args.steps}", *extra]
    if args.width is not None:  # the same custom-width architecture, as an Ultralytics model dict
        cmd.append(f"--model-yaml={json.dumps(ultralytics_model_dict(build_model(args)))}")
    return cmd, env


def time_ultralytics(batch_np: dict, args) -> dict | None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "inputs.npz"
        np.savez(path, **batch_np)
        cmd, env = ultralytics_command(path, args)
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600, cwd=tmp)
    if proc.returncode != 0:
        print(f"Ultralytics half failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}", file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def interleave_with_ultralytics(batch_np: dict, run_steps, args) -> dict | None:
    """``--interleave``: yolojax's steps (``run_steps``) and Ultralytics' (a server process) in alternating blocks."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "inputs.npz"
        np.savez(path, **batch_np)
        cmd, env = ultralytics_command(path, args, "--serve")
        err_path = Path(tmp) / "stderr.txt"  # a file, not a pipe nobody drains while the steps run
        with open(err_path, "w") as err:
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True,
                                    env=env, cwd=tmp)
        try:
            line = proc.stdout.readline()
            while line and not line.startswith("{"):  # the library's own console lines before the handshake
                line = proc.stdout.readline()
            if json.loads(line or "{}").get("ready") is not True:
                proc.kill()
                print(f"Ultralytics half failed:\n{err_path.read_text()[-3000:]}", file=sys.stderr)
                return None

            def ultralytics_steps(k: int) -> list[float]:
                proc.stdin.write(f"{k}\n")
                proc.stdin.flush()
                return json.loads(proc.stdout.readline())

            result = interleaved_times(run_steps, ultralytics_steps, args.interleave, args.steps)
            proc.stdin.close()
            result["ultralytics"] = json.loads(proc.stdout.readline())
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
    return result


def detect_peak_tflops(device_kind: str, dtype: str) -> float | None:
    for key, (bf16, tf32) in GPU_PEAKS.items():
        if key.lower() in device_kind.lower():
            return bf16 if dtype == "bfloat16" else tf32
    return None


def machine_line(device_kind: str = "") -> str:
    load = f"load {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else "load n/a"
    return f"{platform.machine()} {os.cpu_count()} cpu{', ' + device_kind if device_kind else ''}; {load}"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="yolov8n", help="yolov8n ... yolov8x, or yolov8n-cls ... yolov8x-cls")
    p.add_argument("--width", type=float, default=None, help="override the width multiple (tiny test models)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--devices", type=int, default=None,
                   help="data-parallel devices (CPU: forced host devices). Default: one accelerator; on a CPU-only "
                        "machine what the yolojax entry points use (YOLOJAX_CPU_DEVICES, default 1; as many as "
                        "divide --batch)")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help="compute dtype")
    p.add_argument("--steps", type=int, default=10, help="timed steps (median)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--max-boxes", type=int, default=32)
    p.add_argument("--num-classes", type=int, default=80)
    p.add_argument("--peak-tflops", type=float, default=None, help="device peak for the FLOP utilisation")
    p.add_argument("--breakdown", action="store_true", help="also time forward / +loss / +grad separately")
    p.add_argument("--xla-flags", default="", help="appended to XLA_FLAGS before JAX starts")
    p.add_argument("--no-xla-options", dest="xla_options", action="store_false",
                   help="jit without yolojax's compiler options (devices.compiler_options: XLA:CPU convolutions "
                        "off YNNPACK), i.e. XLA's defaults")
    p.add_argument("--hsv-on-device", action="store_true",
                   help="the step also applies the HSV jitter (as the trainer on GPU/TPU; Ultralytics' step does not)")
    p.add_argument("--warp-on-device", action="store_true",
                   help="the step also composes a mosaic of the batch's images and applies the affine warp, the flips "
                        "and the HSV jitter (as the trainer on GPU/TPU; Ultralytics' step does not)")
    p.add_argument("--vs-ultralytics", action="store_true")
    p.add_argument("--interleave", type=int, default=0, metavar="ROUNDS",
                   help="with --vs-ultralytics: also time both in ROUNDS alternating blocks of --steps steps each "
                        "(Ultralytics as a server process), for a ratio on a machine whose speed drifts")
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--ultralytics-python", default=os.environ.get("ULTRALYTICS_PYTHON", str(pathlib.Path(__file__).resolve().parents[2] / "ulvenv" / "bin" / "python")))
    p.add_argument("--ultralytics-half", metavar="INPUTS_NPZ", help=argparse.SUPPRESS)
    p.add_argument("--model-yaml", default=None, help=argparse.SUPPRESS)
    p.add_argument("--jax-cache", default=os.environ.get("YOLOJAX_BENCH_JAX_CACHE"),
                   help="persistent JAX compilation cache directory (compile_s then measures a cache hit)")
    p.add_argument("--label", default="", help="free text added to the RESULTS.md row (e.g. what changed)")
    p.add_argument("--no-record", action="store_true", help="do not append to benchmarks/RESULTS.md")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.ultralytics_half:
        if args.serve:
            serve_ultralytics_here(args.ultralytics_half, args)
        else:
            print(json.dumps(time_ultralytics_here(args.ultralytics_half, args)))
        return
    flags = os.environ.get("XLA_FLAGS", "")
    if args.devices and args.devices > 1 and "xla_force_host_platform_device_count" not in flags:
        flags += f" --xla_force_host_platform_device_count={args.devices}"  # only CPU reads it
    os.environ["XLA_FLAGS"] = (flags + " " + args.xla_flags).strip()
    sys.path.insert(0, str(REPO))
    if args.devices is None:
        import jax

        from yolojax.engine.devices import largest_divisor_at_most, use_cpu_cores

        use_cpu_cores()  # as the entry points (respects XLA_FLAGS and YOLOJAX_CPU_DEVICES)
        on_cpu = jax.default_backend() == "cpu"
        args.devices = largest_divisor_at_most(args.batch, len(jax.devices())) if on_cpu else 1
    if args.jax_cache:
        import jax

        jax.config.update("jax_compilation_cache_dir", args.jax_cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    date = datetime.date.today().isoformat()
    classify = is_classifier(args)
    if classify and (args.hsv_on_device or args.warp_on_device or args.breakdown):
        raise SystemExit(f"--model {args.model}: --hsv-on-device, --warp-on-device and --breakdown are detection "
                         "settings.")
    batch_np = (make_cls_batch(args.batch, args.imgsz, args.num_classes) if classify
                else make_batch(args.batch, args.imgsz, args.max_boxes, args.num_classes))
    if args.hsv_on_device:  # the trainer's GPU default: the step also applies the HSV jitter (Ultralytics' doesn't)
        from yolojax.augment import hsv_tables

        rng = np.random.default_rng(1)
        batch_np["hsv_tables"] = np.stack([hsv_tables(rng) for _ in range(args.batch)])
        batch_np["hsv_to_rgb"] = np.ones(args.batch, bool)
    yj_batch = batch_np
    if args.warp_on_device:
        yj_batch = add_warp_plans(batch_np)  # (with the jitter's tables when --hsv-on-device added them)
    what = (f"{args.model}{f' width {args.width}' if args.width else ''} b{args.batch} @{args.imgsz} "
            f"{args.dtype}, {args.devices} device(s), "
            + (f"nc={args.num_classes}" if classify else f"M={args.max_boxes} ({int(batch_np['mask'].sum())} boxes)")
            + (", mosaic + warp + flips in the step" if args.warp_on_device else "")
            + (", HSV jitter in the step" if args.hsv_on_device else ""))
    rows = []

    from yolojax import hostenv

    ours = time_yolojax(yj_batch, args)
    ips = args.batch / ours["median_s"]
    peak = args.peak_tflops or detect_peak_tflops(ours["device_kind"], args.dtype)
    achieved = 3 * ours["gflops_per_image"] * ips / 1e3  # TFLOP/s
    rec = {"benchmark": "train_step", "impl": "yolojax", "setting": what, "compile_s": round(ours["compile_s"], 2),
           "median_ms": round(1000 * ours["median_s"], 2), "pipelined_ms": round(1000 * ours["pipelined_s"], 2),
           "images_per_s": round(ips, 1), "images_per_s_pipelined": round(args.batch / ours["pipelined_s"], 1),
           "peak_mem_gib": round(ours["peak_mem_gib"], 3) if "peak_mem_gib" in ours else None,
           "gflops_per_image": round(ours["gflops_per_image"], 2), "achieved_tflops": round(achieved, 3),
           "peak_tflops": peak, "flop_utilisation": round(achieved / peak, 4) if peak else None,
           "loss": ours["loss"], "backend": ours["backend"], "device_kind": ours["device_kind"],
           "jax": ours["jax"], "xla_flags": os.environ.get("XLA_FLAGS", ""),
           "xla_options": ours["xla_options"], "host_hugepages": hostenv.active(), "label": args.label}
    if "breakdown_ms" in ours:
        rec["breakdown_ms"] = ours["breakdown_ms"]
    if "augment_ms" in ours:
        rec["augment_ms"] = ours["augment_ms"]
    print(json.dumps(rec), flush=True)
    machine = machine_line(ours["device_kind"])
    versions = f"python {platform.python_version()}, jax {ours['jax']}"
    notes = (f"{what}; compile {ours['compile_s']:.1f} s; pipelined {rec['images_per_s_pipelined']} img/s; "
             f"{rec['gflops_per_image']} GFLOPs/img"
             + (f"; peak mem {rec['peak_mem_gib']} GiB" if rec["peak_mem_gib"] is not None else "")
             + (f"; FLOP util {100 * rec['flop_utilisation']:.1f}% of {peak} TF" if peak else "")
             + (f"; breakdown ms {ours['breakdown_ms']}" if "breakdown_ms" in ours else "")
             + (f"; augmentation alone {ours['augment_ms']} ms" if "augment_ms" in ours else "")
             + (f"; XLA_FLAGS={rec['xla_flags']}" if rec["xla_flags"] else "")
             + (f"; compiler options {rec['xla_options']}" if rec["xla_options"] else "; XLA default compiler options")
             + ("; glibc huge-page malloc" if rec["host_hugepages"] else "")
             + (f"; {args.label}" if args.label else ""))
    rows.append(f"| {date} | {machine} | {versions} | train_step yolojax ({ours['backend']}) | "
                f"{ips:.1f} img/s ({1000 * ours['median_s']:.1f} ms median of {args.steps}) | {notes} |")

    if args.vs_ultralytics:
        if not shutil.which(args.ultralytics_python):
            print(f"--vs-ultralytics: no interpreter at {args.ultralytics_python}; pass --ultralytics-python=PATH.",
                  file=sys.stderr)
        else:
            ul = time_ultralytics(batch_np, args)
            if ul is not None:
                ul_ips = args.batch / ul["median_s"]
                ul_pipe = args.batch / ul["pipelined_s"]
                urec = {"benchmark": "train_step", "impl": "ultralytics", "setting": what,
                        "median_ms": round(1000 * ul["median_s"], 2), "images_per_s": round(ul_ips, 1),
                        "pipelined_ms": round(1000 * ul["pipelined_s"], 2),
                        "images_per_s_pipelined": round(ul_pipe, 1),
                        "ratio_pipelined": round(rec["images_per_s_pipelined"] / ul_pipe, 3),
                        "peak_mem_gib": round(ul["peak_mem_gib"], 3) if "peak_mem_gib" in ul else None,
                        "loss": ul["loss"], "device": ul["device"], "threads": ul["threads"],
                        "ultralytics": ul["ultralytics"], "torch": ul["torch"],
                        "ratio_yolojax_over_ultralytics": round(ips / ul_ips, 3)}
                print(json.dumps(urec), flush=True)
                mode = "AMP" if ul["device"] != "cpu" else f"{ul['threads']} threads"
                rows.append(f"| {date} | {machine_line(ul['device'])} | ultralytics {ul['ultralytics']}, torch "
                            f"{ul['torch']} | train_step ultralytics (loss+backward+clip+SGD+EMA, {mode}) | "
                            f"{ul_ips:.1f} img/s ({1000 * ul['median_s']:.1f} ms median of {args.steps}) | same "
                            f"batch; yolojax/ultralytics = {ips / ul_ips:.2f}x; pipelined {ul_pipe:.1f} img/s, "
                            f"ratio {urec['ratio_pipelined']:.2f}x"
                            + (f"; peak mem {urec['peak_mem_gib']} GiB" if urec["peak_mem_gib"] is not None else "")
                            + " |")
    if args.vs_ultralytics and args.interleave > 0 and shutil.which(args.ultralytics_python):
        both = interleave_with_ultralytics(batch_np, ours["run_steps"], args)
        if both is not None:
            ul = both["ultralytics"]
            irec = {"benchmark": "train_step", "impl": "interleaved", "setting": what, "rounds": args.interleave,
                    "steps_per_round": args.steps, "yolojax_median_ms": round(1000 * both["median_a_s"], 2),
                    "ultralytics_median_ms": round(1000 * both["median_b_s"], 2),
                    "ratio_yolojax_over_ultralytics": round(both["ratio"], 3),
                    "round_ratio_median": round(both["round_ratio_median"], 3),
                    "round_ratio_range": [round(min(both["round_ratios"]), 3), round(max(both["round_ratios"]), 3)],
                    "device": ul["device"], "ultralytics": ul["ultralytics"], "torch": ul["torch"]}
            print(json.dumps(irec), flush=True)
            rows.append(f"| {date} | {machine_line(ours['device_kind'])} | jax {ours['jax']}, ultralytics "
                        f"{ul['ultralytics']}, torch {ul['torch']} | train_step interleaved: yolojax vs ultralytics, "
                        f"{args.interleave} alternating rounds of {args.steps} synchronised steps each | "
                        f"{1000 * both['median_a_s']:.1f} vs {1000 * both['median_b_s']:.1f} ms median: "
                        f"yolojax/ultralytics = {both['ratio']:.2f}x (per-round ratios: median "
                        f"{both['round_ratio_median']:.2f}x, range {irec['round_ratio_range'][0]:.2f}-"
                        f"{irec['round_ratio_range'][1]:.2f}x) | {what}; both processes alive, one running at a time"
                        + ("; yolojax with glibc huge-page malloc, Ultralytics without" if hostenv.active() else "")
                        + (f"; {args.label}" if args.label else "") + " |")
    if not args.no_record:
        append_results(rows)


if __name__ == "__main__":
    if "--ultralytics-half" not in sys.argv:  # the yolojax half runs as the entry points run (yolojax.hostenv)
        sys.path.insert(0, str(REPO))
        from yolojax.hostenv import restart_with_hugepages

        restart_with_hugepages()
    main()
