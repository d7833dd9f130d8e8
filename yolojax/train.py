"""Train a YOLOv8 detector: ``python -m yolojax.train --config=configs/shapes.py [--config.key=value ...]``.

``train_and_evaluate(config, workdir)`` is the library entry point; this module's ``main`` only parses
flags. Callbacks (Ultralytics' event names) receive a ``RunContext`` whose fields the loop keeps current.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import math
import pathlib
import sys
import time
from typing import Any, Callable

if __name__ == "__main__":  # `python -m yolojax.train`: restart once with glibc's huge-page malloc, before JAX loads
    from yolojax.startup import begin

    begin(restart=True)

import jax  # noqa: E402
import jax.numpy as jnp
import numpy as np

from yolojax import hostenv
from yolojax.data.loader import ThreadPrefetch, batch_image_shape
from yolojax import config as cfgmod
from yolojax.engine.checkpoint import Checkpointer
from yolojax.engine.devices import (compiler_options, data_sharding, enable_compile_cache, environment_line,
                                    replicated, use_deterministic_ops)
from yolojax.engine.optim import warmup_iterations
from yolojax.engine.state import create_train_state, train_step
from yolojax.engine.trainer import EarlyStopping, _log, setup
from yolojax.engine.validate import Validator
from yolojax.report.phases import PhaseTimer, phase_table, summary_line
from yolojax.report.results import ResultsLog, format_epoch_header, format_progress
from yolojax.startup import exit_code, prepare_jax

EVENTS = ("on_pretrain_routine_end", "on_train_start", "on_train_epoch_start", "on_train_batch_end",
          "on_train_epoch_end", "on_fit_epoch_end", "on_model_save", "on_train_end")


@dataclasses.dataclass
class RunContext:
    """What callbacks see. Fields are updated in place as the run progresses."""

    config: Any = None
    save_dir: pathlib.Path | None = None
    setup: Any = None
    epoch: int = 0
    epochs: int = 0
    step: int = 0  # global iteration
    batch: dict | None = None  # the last host batch (uint8 images, boxes, classes, mask)
    batch_metrics: dict | None = None
    row: dict | None = None  # the last results.csv row
    val: Any = None  # the last ValResult
    metrics: dict = dataclasses.field(default_factory=dict)
    compile_seconds: float = 0.0
    step_shapes: list = dataclasses.field(default_factory=list)  # (image shape, boxes shape) of each compiled step
    images_per_second: float = 0.0
    final: Any = None  # ValResult of the final validation (best weights)
    phases: PhaseTimer | None = None  # seconds per phase of this run (yolojax.report.phases)
    wall_seconds: float = 0.0  # from the start of training to the end of the final validation


def _find_resume(config, workdir):
    """(run dir, Checkpointer) for ``resume=True`` (workdir, else the newest run) or a path."""
    target = config.resume
    if isinstance(target, str) and target not in ("True", "true", "1"):
        p = pathlib.Path(target)
        if p.is_file():  # weights/last.npz or similar: its run directory
            p = p.parent.parent if p.parent.name == "weights" else p.parent
        if p.name == "ckpt":
            p = p.parent.parent
        elif p.name == "weights":
            p = p.parent
        run = p
    elif workdir:
        run = pathlib.Path(workdir)
    else:
        root = pathlib.Path(config.get("project") or "runs/detect")
        runs = sorted(root.glob("*/weights/ckpt"), key=lambda d: d.stat().st_mtime)
        if not runs:
            raise FileNotFoundError(f"resume=True but no checkpoint was found under {root}/*/weights/ckpt. Give the "
                                    f"run directory: --config.resume=runs/detect/train")
        run = runs[-1].parent.parent
    ckdir = run / "weights" / "ckpt"
    if not ckdir.is_dir():
        raise FileNotFoundError(f"resume: {run} holds no checkpoint ({ckdir} is missing).")
    return run, Checkpointer(ckdir, asynchronous=True)


RESUME_OVERRIDES = ("device", "workers", "epochs", "patience", "val", "plots", "save_period", "time", "verbose")


def train_and_evaluate(config, workdir=None, *, callbacks: dict[str, list[Callable]] | None = None) -> dict:
    """Train per ``config`` into ``workdir`` (default runs/detect/trainN); returns the final metrics dict."""
    from yolojax.config import check_config
    from yolojax.config.checks import inapplicable_warnings
    from yolojax.engine.distributed import compile_everywhere, maybe_initialize

    config = check_config(config)  # every value, before anything heavy: a ConfigError names key, value, what is valid
    deterministic = use_deterministic_ops(bool(config.deterministic))  # before JAX's first operation
    enable_compile_cache()  # acts if nothing was compiled yet in this process (see enable_compile_cache)
    from yolojax.report.callbacks import default_callbacks

    maybe_initialize(config)  # multi-host: join the process group before any JAX computation

    merged = default_callbacks(config)
    for event, fns in (callbacks or {}).items():
        merged.setdefault(event, []).extend(fns)
    callbacks = merged
    ckpt = None
    meta: dict | None = None
    if config.resume:
        run, ckpt = _find_resume(config, workdir)
        meta = ckpt.read_meta()
        stored = dict(meta["config"])
        for key in RESUME_OVERRIDES:  # the run's own config wins, except these
            if key in ("epochs",) and config[key] <= stored[key]:
                continue
            if config[key] != cfgmod.default_config()[key] or key == "device":
                stored[key] = config[key]
        finished = meta.get("finished", False)
        if finished and stored["epochs"] <= meta["config"]["epochs"]:
            raise cfgmod.ConfigError(f"{run}: training to {meta['config']['epochs']} epochs is finished, nothing to resume. "
                             f"Start a new run, or extend this one with --config.resume={run} "
                             f"--config.epochs=N (N > {meta['config']['epochs']}).")
        stored["resume"] = str(run)
        config = cfgmod.apply_overrides(cfgmod.default_config(), stored, source="checkpoint key")
        workdir = run
    s = setup(config, workdir)
    config, save_dir, mesh = s.config, s.save_dir, s.mesh
    is_main = jax.process_index() == 0
    for line in inapplicable_warnings(config):
        _log(line)
    if deterministic != bool(config.deterministic) and mesh.devices.flat[0].platform != "cpu":
        _log(f"WARNING: deterministic={config.deterministic} could not be applied: XLA reads its deterministic GPU ops "
             f"flag when JAX starts, and JAX started before this run with it {'on' if deterministic else 'off'}. Set "
             f"XLA_FLAGS=--xla_gpu_deterministic_ops={str(not deterministic).lower()} before starting Python.")
    ctx = RunContext(config=config, save_dir=save_dir, setup=s, epochs=int(config.epochs))
    fire = lambda event: [cb(ctx) for cb in callbacks.get(event, [])]  # noqa: E731

    weights_dir = save_dir / "weights"
    if is_main:
        weights_dir.mkdir(parents=True, exist_ok=True)
        cfgmod.save_args_yaml(config, save_dir / "args.yaml")
    ckpt = ckpt or Checkpointer(weights_dir / "ckpt", max_to_keep=int(config.keep_checkpoints), asynchronous=True)
    # last.npz / best.npz are written on this thread while the next epoch trains; the final validation waits for them
    exporter = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="yolojax-export")
    exports: list[concurrent.futures.Future] = []
    repl, data = replicated(mesh), data_sharding(mesh)
    state = create_train_state(s.model, s.variables, s.hyper)
    state = jax.device_put(state, repl)
    results = ResultsLog(save_dir / "results.csv")
    stopper = EarlyStopping(int(config.patience or 0), config.compat)
    start_epoch, start_step, best_fitness = 0, 0, None
    tsum, tcount = np.zeros(3), 0
    if meta is not None:
        state, meta = ckpt.restore(state)
        state = jax.device_put(state, repl)
        start_epoch, start_step = int(meta["epoch"]), int(meta["step_in_epoch"])
        best_fitness = meta.get("best_fitness")
        stopper.load(meta["stopper"])
        results.rows = list(meta["results"])
        tsum, tcount = np.asarray(meta["tloss_sum"], float), int(meta["tloss_count"])
        if start_step >= s.train_loader.num_batches:
            start_epoch, start_step, tsum, tcount = start_epoch + 1, 0, np.zeros(3), 0
        if "close_mosaic_epoch" in meta:  # as the run had it (a time budget re-plans it)
            s.train_loader.close_mosaic_epoch = meta["close_mosaic_epoch"]
        _log(f"Resuming training {save_dir} from epoch {start_epoch + 1} step {start_step} of "
             f"{config.epochs} epochs")
        if is_main:
            results.write()

    step_fn = _jitted_train_step(mesh, bool(config.bn_sync) or mesh.devices.size == 1)
    put = lambda b: jax.tree.map(  # noqa: E731
        lambda x: jax.make_array_from_process_local_data(data, x), b)
    if jax.process_count() > 1:
        # Multi-host validation: each process validates the whole val set on its first local device with its
        # local copy of the (replicated) EMA weights, so no host statistics need gathering; process 0 reports.
        local = jax.local_devices()[0]
        val_put = lambda b: jax.device_put(b, local)  # noqa: E731
        val_vars = lambda v: jax.tree.map(lambda a: a.addressable_data(0), v)  # noqa: E731
    else:
        val_put, val_vars = put, (lambda v: v)
    validator = Validator(s.model, s.val_loader, s.names, conf=config.conf, iou=config.iou, max_det=config.max_det,
                          single_cls=config.single_cls, compat=config.compat,
                          loss_gains=(config.box, config.cls, config.dfl), put=val_put)
    _log(environment_line(list(s.mesh.devices.flat)))
    if hostenv.active() and s.mesh.devices.flat[0].platform == "cpu":
        _log("Host malloc: transparent huge pages (glibc.malloc.hugetlb=1; YOLOJAX_HUGEPAGES=0 turns it off)")
    if is_main:
        from yolojax.nn.summary import model_info

        _log(model_info(s.model, imgsz=640).line())
    _log(s.optimizer_line)
    nb, epochs = s.train_loader.num_batches, int(config.epochs)
    loader = s.train_loader
    if loader.warp_on_device:
        jitter = " (mosaic, affine warp, flips and HSV jitter in the train step)"
    else:
        jitter = " (HSV jitter in the train step)" if loader.hsv_on_device else ""
        if loader.requested_warp_on_device:
            jitter += f" (warp on the host: {loader.warp_obstacle()})"
    length = f"{config.time} hours" if config.time else f"{epochs} epochs"
    _log(f"Image sizes {config.imgsz} train, {config.imgsz} val\nUsing {loader.workers} dataloader workers"
         f"{jitter}\n"
         f"Logging results to {save_dir}\nStarting training for {length}...")
    fire("on_pretrain_routine_end")
    fire("on_train_start")
    t_start = time.time()
    timer = ctx.phases = PhaseTimer()
    elapsed_before = float(results.rows[-1].get("time", 0.0)) if results.rows else 0.0  # a resumed run's past time
    stop = False
    epoch = start_epoch
    it, batches = _open_batches(s.train_loader, start_epoch, start_step, epochs, put) if start_epoch < epochs else (
        None, None)
    tty = sys.stdout.isatty() and is_main
    last_metrics: dict = {}
    try:
        while it is not None:
            ctx.epoch = epoch
            t_epoch_start = time.perf_counter()
            fire("on_train_epoch_start")
            if s.train_loader.close_mosaic_epoch is not None and epoch == s.train_loader.close_mosaic_epoch:
                _log("Closing dataloader mosaic")
            _log(format_epoch_header())
            first_step = start_step if epoch == start_epoch else 0
            if epoch != start_epoch:
                tsum, tcount = np.zeros(3), 0
            dev_sum = jnp.zeros(3)
            t_epoch = time.time()
            n_images = 0
            shown = None  # the previous step's (loss sums, instances, steps): what a progress line may read
            for i in range(first_step, nb):
                t_wait = time.perf_counter()
                batch, device_batch = next(batches)
                timer.add("data", time.perf_counter() - t_wait)
                key = (batch_image_shape(batch), batch["boxes"].shape)
                t0 = time.time()
                new_shape = key not in ctx.step_shapes  # its first call traces and compiles (or hits a cache)
                if new_shape:  # several processes: all have compiled it before its first collective
                    compile_everywhere(step_fn, state, device_batch,
                                       what=f"compiling the train step for images {key[0]}, boxes {key[1]}")
                state, m = step_fn(state, device_batch)
                if new_shape:
                    jax.block_until_ready(m["loss"])
                    ctx.step_shapes.append(key)
                    dt = time.time() - t0
                    ctx.compile_seconds += dt
                    timer.add("compile", dt)
                    t_epoch += dt  # images/s measures steps, not compiles
                    _log(("\n" if tty and i > first_step else "") + f"compiled train step for images {key[0]}, "
                         f"boxes {key[1]} in {dt:.1f}s ({len(ctx.step_shapes)} shape(s) so far)")
                dev_sum = dev_sum + jnp.stack([m["box_loss"], m["cls_loss"], m["dfl_loss"]])
                n_images += batch["boxes"].shape[0]
                ctx.step, ctx.batch, ctx.batch_metrics = epoch * nb + i, batch, m
                last_metrics = m
                fire("on_train_batch_end")
                done = i + 1 == nb
                current = (dev_sum, m["instances"], i + 1 - first_step)
                if tty or (done and is_main):
                    # Mid-epoch lines show the previous step's running means: reading them waits for that step only,
                    # while this one is already queued, so the device never idles on a progress line. The epoch's last
                    # line is exact.
                    sums, instances, count = current if done or shown is None else shown
                    means = (tsum + np.asarray(sums)) / (tcount + count)
                    line = format_progress(epoch, epochs, _mem_gb(), means, int(instances), int(config.imgsz))
                    print(("\r" if tty else "") + line + f" {i + 1}/{nb}", end="\n" if done else "", flush=True)
                shown = current
                if config.time and time.time() - t_start > float(config.time) * 3600:
                    stop = True  # the time budget is spent: validate and save this epoch, then end
                if int(config.checkpoint_every) > 0 and (i + 1) % int(config.checkpoint_every) == 0 and not done:
                    with timer.phase("checkpoint"):
                        _save(ckpt, state, config, epoch, i + 1, best_fitness, stopper, results,
                              tsum + np.asarray(dev_sum), tcount + i + 1 - first_step, finished=False,
                              close_mosaic_epoch=s.train_loader.close_mosaic_epoch)
                if stop:
                    break
            tsum = tsum + np.asarray(dev_sum)  # waits for the epoch's last step
            # the step phase is the rest of the train loop: dispatching, callbacks, progress lines and the device
            # time the loop waited for (the step runs asynchronously, so that wait lands here, never as a sync per step)
            timer.add("step", time.perf_counter() - t_epoch_start - sum(timer.epoch.values()))
            tcount = tcount + (i + 1 - first_step)
            ctx.images_per_second = n_images / max(time.time() - t_epoch, 1e-9)
            with timer.phase("report"):
                fire("on_train_epoch_end")
            final_epoch = epoch + 1 >= epochs or stop
            row = {"epoch": epoch + 1, **{f"train/{k}": round(float(v), 5)
                                          for k, v in zip(("box_loss", "cls_loss", "dfl_loss"), tsum / max(tcount, 1))}}
            row.update({k: float(last_metrics[k]) for k in ("lr/pg0", "lr/pg1", "lr/pg2")})
            fitness = None
            if config.val or final_epoch or stopper.possible_stop(epoch):
                val = validator(val_vars(state.ema_variables))
                for k, v in val.phases.items():
                    timer.add(k, v)
                ctx.val = val
                for line in val.table[:2]:
                    _log(line)
                row.update(val.metrics.results_dict)
                row.update(val.losses)
                fitness = float(val.metrics.fitness(config.compat))
            row.pop("fitness", None)
            row["time"] = round(elapsed_before + time.time() - t_start, 3)  # seconds since training started
            ctx.row = row
            if fitness is not None and (best_fitness is None or best_fitness < fitness
                                        or (config.compat == "v8" and best_fitness == 0)):
                best_fitness = fitness
                is_best = True
            else:
                is_best = False
            stop = stopper(epoch + 1, fitness) or stop or final_epoch
            if config.time:
                stop = stop or time.time() - t_start > float(config.time) * 3600
                # Re-plan the run to the epochs that fit the budget at the mean epoch time so far: the lr schedule and
                # close_mosaic follow the new end. Before the checkpoint, which a resumed run then continues exactly.
                epochs = ctx.epochs = config.epochs = replan_epochs(float(config.time), time.time() - t_start,
                                                                    epoch + 1 - start_epoch)
                state = state.replace(schedule=jax.device_put(replanned_schedule(
                    state.schedule, epochs, nb, float(config.warmup_epochs), config.compat), repl))
                stop = stop or epoch >= epochs
                closing = replan_close_mosaic(s.train_loader.close_mosaic_epoch, epoch + 1, epochs,
                                              int(config.close_mosaic), config.compat)
                if not stop:
                    moved = _mosaic_from(closing, epoch + 1) != _mosaic_from(s.train_loader.close_mosaic_epoch,
                                                                             epoch + 1)
                    s.train_loader.close_mosaic_epoch = closing
                    if moved or it.end_epoch < epochs + 1:  # the batches read ahead follow the old plan: replace them
                        batches.close()
                        it.close()
                        it, batches = _open_batches(s.train_loader, epoch + 1, 0, epochs + 1, put)
            results.append(row)
            final_epoch = final_epoch or stop
            if config.save or final_epoch:
                with timer.phase("checkpoint"):
                    _save(ckpt, state, config, epoch, nb, best_fitness, stopper, results, tsum, tcount,
                          finished=final_epoch, close_mosaic_epoch=s.train_loader.close_mosaic_epoch)
                if is_main:
                    files = ["last.npz"] + (["best.npz"] if is_best else [])
                    if int(config.save_period) > 0 and epoch % int(config.save_period) == 0:
                        files.append(f"epoch{epoch}.npz")
                    with timer.phase("export"):  # the copy off the device; the files are written in the background
                        ema = jax.tree.map(np.array, jax.device_get(state.ema_variables))
                        for f in exports:
                            f.result()  # one epoch's files at a time, in order (and a write error surfaces here)
                        exports = [exporter.submit(_export_weights, ema, [weights_dir / f for f in files], s)]
                with timer.phase("report"):
                    fire("on_model_save")
            with timer.phase("report"):
                if is_main:
                    results.write()
                ctx.metrics = {**row, "fitness": fitness}
                fire("on_fit_epoch_end")
            if config.profile:
                for line in phase_table(timer.epoch, time.perf_counter() - t_epoch_start, f"Epoch {epoch + 1} time"):
                    _log(line)
            timer.end_epoch()
            if stop:
                if stopper.patience != float("inf") and (epoch + 1 - stopper.best_epoch) >= stopper.patience:
                    _log(f"Stopping training early as no improvement observed in last {stopper.patience} epochs. "
                         f"Best results observed at epoch {stopper.best_epoch}.")
                break
            epoch += 1
    finally:  # also on an error or an interrupt: stop the prefetch thread and the worker processes, finish the writes
        if it is not None:
            batches.close()
            it.close()
        exporter.shutdown(wait=True)
        ckpt.wait()
    for f in exports:
        f.result()
    hours = (time.time() - t_start) / 3600
    _log(f"\n{epoch - start_epoch + 1} epochs completed in {hours:.3f} hours.")
    with timer.phase("final_val"):
        final = _final_eval(validator, weights_dir, config, s)
    ctx.final = final
    ctx.wall_seconds = time.time() - t_start
    _log(summary_line(timer.totals(), ctx.wall_seconds))
    s.val_loader.close()
    ckpt.close()
    out = dict(ctx.metrics)
    if final is not None:
        out.update(final.metrics.results_dict)
        out["fitness"] = float(final.metrics.fitness(config.compat))
    out["save_dir"] = str(save_dir)
    fire("on_train_end")
    return out


def _export_weights(ema, paths, s) -> None:
    from yolojax.weights import save_state_dict

    for path in paths:
        save_state_dict(ema, path, names=s.names, model=s.model)


def replan_epochs(hours: float, elapsed: float, epochs_done: int) -> int:
    """The run length for a ``time`` budget of ``hours``: as many epochs as fit at the mean epoch time so far
    (``elapsed`` seconds over ``epochs_done`` epochs, validation and saving included), rounded up."""
    return math.ceil(hours * 3600 / (elapsed / epochs_done))


def replanned_schedule(schedule, epochs: int, nb: int, warmup_epochs: float, compat: str):
    """``schedule`` (the train state's) for a run of ``epochs``: the lr lambda follows the new end ([current]: so
    does the warmup length). Only leaf values change: the compiled step is reused."""
    nw = warmup_iterations(warmup_epochs, nb, epochs, compat)
    return schedule.replace(epochs=jnp.asarray(epochs, jnp.float32), nw=jnp.asarray(nw, jnp.float32))


def replan_close_mosaic(current: int | None, next_epoch: int, epochs: int, close_mosaic: int,
                        compat: str) -> int | None:
    """The epoch that closes mosaic (None: never) once the run is re-planned to ``epochs`` before ``next_epoch``.
    Closing is final. v8: mosaic closes at the start of epoch ``epochs - close_mosaic`` exactly, so an end that moves
    in front of the next epoch skips it; [current]: at the first epoch at or past it."""
    if close_mosaic <= 0 or (current is not None and current < next_epoch):
        return current
    target = epochs - close_mosaic
    if target >= next_epoch:
        return target
    return None if compat == "v8" else next_epoch


def _mosaic_from(close_at: int | None, first: int):
    """What decides mosaic in epochs ``first`` on (two closing epochs that agree on it give the same batches)."""
    return None if close_at is None else max(close_at, first)


def _open_batches(loader, epoch: int, step: int, end_epoch: int, put):
    """The loader's iterator from (epoch, step) to ``end_epoch`` and (host batch, device batch) pairs from it, two
    ahead: the host copy out of the workers' shared memory and the transfer to the device run in a background
    thread while the device steps (on the GPU they took longer than the step)."""
    it = loader.iterator(epoch, step, end_epoch=end_epoch)
    return it, ThreadPrefetch(_on_device(it, put), 2)


def _on_device(it, put):
    """(host batch, device batch) for each batch of ``it``; returns once the batch is on the device."""
    for batch in it:
        device_batch = put(batch)
        jax.block_until_ready(device_batch)
        yield batch, device_batch


@functools.lru_cache(maxsize=8)
def _jitted_train_step(mesh, bn_sync: bool):
    """The compiled train step for a mesh, shared by the runs of one process (its cache is keyed on the state's
    static parts: model, optimizer and settings)."""
    repl, data = replicated(mesh), data_sharding(mesh)
    step = train_step
    if not bn_sync:  # per-device BN statistics, as Ultralytics DDP
        from yolojax.engine.per_device_bn import make_train_step_per_device_bn

        step = make_train_step_per_device_bn(mesh)
    return jax.jit(step, in_shardings=(repl, data), out_shardings=(repl, repl), donate_argnums=0,
                   compiler_options=compiler_options(mesh.devices.flat[0].platform))


def _final_eval(validator: Validator, weights_dir: pathlib.Path, config, s):
    """Validate best.npz (else last.npz) with the per-class table, as Ultralytics' final_eval does."""
    from yolojax.weights import load

    if jax.process_index() != 0:  # the exported weights live on process 0's disk
        return None
    path = weights_dir / "best.npz"
    if not path.is_file():
        path = weights_dir / "last.npz"
    if not path.is_file():
        return None
    _log(f"\nValidating {path}...")
    _, variables = load(path)
    if jax.process_count() > 1:
        variables = jax.device_put(variables, jax.local_devices()[0])
    else:
        variables = jax.device_put(variables, replicated(s.mesh))
    validator.keep_predictions = bool(config.save_json)
    result = validator(variables)
    for line in result.table if config.verbose else result.table[:2]:
        _log(line)
    if config.save_json and jax.process_index() == 0:
        from yolojax.report.coco_json import write_validation_json

        out = write_validation_json(weights_dir.parent, s.val_loader.dataset, result.predictions, names=s.names)
        _log(f"Saving {out['predictions']}...")
        if out["coco"] is not None:
            _log(f"pycocotools: mAP50-95 {out['coco']['AP50-95']:.4f}, mAP50 {out['coco']['AP50']:.4f}")
    sp = result.speed
    _log(f"Speed: {sp['preprocess']:.1f}ms preprocess, {sp['inference']:.1f}ms inference, {sp['loss']:.1f}ms loss, "
         f"{sp['postprocess']:.1f}ms postprocess per image")
    _log(f"Results saved to {weights_dir.parent}")
    return result


def _save(ckpt, state, config, epoch, step_in_epoch, best_fitness, stopper, results, tsum, tcount, *, finished,
          close_mosaic_epoch=None):
    meta = {"epoch": epoch, "step_in_epoch": step_in_epoch, "best_fitness": best_fitness,
            "close_mosaic_epoch": close_mosaic_epoch,
            "stopper": stopper.state(), "results": results.rows, "tloss_sum": list(map(float, tsum)),
            "tloss_count": int(tcount), "config": cfgmod.to_plain(config), "finished": bool(finished),
            "data_iterator": {"epoch": epoch, "step": step_in_epoch}}
    ckpt.save(int(jax.device_get(state.step)), state, meta)


def _mem_gb() -> float:
    try:
        stats = jax.local_devices()[0].memory_stats() or {}
        return stats.get("peak_bytes_in_use", 0) / 1e9
    except Exception:
        return 0.0


def main(argv=None) -> None:
    from absl import app, flags
    from ml_collections import config_flags

    cfg_flag = config_flags.DEFINE_config_file("config", None, "Training config file (configs/*.py).",
                                               lock_config=True)
    flags.DEFINE_string("workdir", None, "Run directory (default: runs/detect/train, train2, ...).")
    # --config.KEY=VALUE is read here, not by absl: values take Ultralytics' types (batch=0.5, imgsz=[640, 480],
    # epochs=3.0) and every mistake gets the same one-line message as on the yolojax command line
    from_sys = argv is None
    argv, overrides = cfgmod.split_flag_overrides(list(sys.argv if from_sys else argv))
    if from_sys:  # ml_collections' config flag also looks for --config.KEY words in sys.argv
        sys.argv[1:] = argv[1:]

    def _main(_):
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.WARNING)
        prepare_jax()  # before JAX's first operation (train_and_evaluate sets the determinism flag from the config)
        config = cfg_flag.value if cfg_flag.value is not None else cfgmod.default_config()
        code = exit_code(lambda: train_and_evaluate(cfgmod.apply_overrides(config, overrides, source="--config flag"),
                                                    flags.FLAGS.workdir))
        if code:
            raise SystemExit(code)

    app.run(_main, argv=argv)


if __name__ == "__main__":
    main()
