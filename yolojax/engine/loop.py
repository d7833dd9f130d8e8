"""The training loop: ``train(config, workdir, task, callbacks=) -> final metrics``.

One loop over the epochs' steps with, at each epoch's end, validation, the results row, the checkpoint and the weight
files. It reports through metric writers (``yolojax.report.writers``: results.csv, the console, TensorBoard behind a
background thread) and draws the run's pictures (``yolojax.report.run_pictures``) on that thread; the caller's
callbacks receive a ``yolojax.report.events.TrainEvent`` at Ultralytics' event names. Its state besides the
``TrainState`` is a ``Progress`` (``yolojax.engine.progress``), which is also the checkpoint's metadata: a run killed
at any moment resumes exactly.
What differs between tasks is behind ``task`` (``yolojax.engine.task.Task``); the loop never asks which it runs.
"""
from __future__ import annotations

import dataclasses
import functools
import pathlib
import sys
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from yolojax import config as cfgmod
from yolojax import hostenv
from yolojax.augment.batch import batch_image_shape
from yolojax.config.checks import inapplicable_warnings
from yolojax.engine.background import Feed, WeightWriter, compile_validation, compiles_ahead
from yolojax.engine.builder import Run, build_run
from yolojax.engine.checkpoint import Checkpointer
from yolojax.engine.devices import (compiler_options, data_sharding, enable_compile_cache, environment_line,
                                    replicated, use_deterministic_ops)
from yolojax.engine.distributed import maybe_initialize, wait_for_peers
from yolojax.engine.executables import ExecutableStore, Programs, from_yolojax, store_for_run
from yolojax.engine.log import log
from yolojax.engine.progress import Progress
from yolojax.engine.replan import mosaic_from, replan_close_mosaic, replan_epochs, replanned_schedule
from yolojax.engine.resume import find_resume, resumed_config
from yolojax.engine.state import create_train_state, train_step
from yolojax.engine.task import Task
from yolojax.engine.validate import speed_line
from yolojax.report.events import TrainEvent
from yolojax.report.phases import PhaseTimer, phase_table, summary_line
from yolojax.report.results import CsvWriter
from yolojax.report.run_pictures import RunPictures, draws_train_batch
from yolojax.report.writers import LR_KEYS, ConsoleWriter, epoch_scalars, iteration_scalars, open_board


def train(config, workdir, task: Task, *, callbacks: dict[str, list[Callable]] | None = None) -> dict:
    """Train ``task`` per ``config`` (as ``yolojax.config.check_config`` returns it) into ``workdir`` (default
    runs/<task>/trainN); returns the last results row, the final validation's metrics, fitness and save_dir.
    ``callbacks``: {Ultralytics event name: [fn(TrainEvent)]}, called in order on every process."""
    deterministic = use_deterministic_ops(bool(config.deterministic))  # before JAX's first operation
    enable_compile_cache()  # acts if nothing was compiled yet in this process (see enable_compile_cache)
    maybe_initialize(config)  # multi-host: join the process group before any JAX computation
    callbacks = callbacks or {}
    ckpt, resuming = None, bool(config.resume)
    if resuming:
        workdir, ckpt = find_resume(config, workdir, task.name)
        config = resumed_config(config, ckpt.read_meta(), workdir)
    for line in inapplicable_warnings(config):  # before the data and the model are built
        log(line)
    run = build_run(config, workdir, task)
    config, save_dir, loader = run.config, run.save_dir, run.train_loader
    is_main = jax.process_index() == 0
    _warn_settings(config, run, deterministic)
    weights_dir = save_dir / "weights"
    if is_main:
        weights_dir.mkdir(parents=True, exist_ok=True)
        cfgmod.save_args_yaml(config, save_dir / "args.yaml")
    ckpt = ckpt or Checkpointer(weights_dir / "ckpt", max_to_keep=int(config.keep_checkpoints), asynchronous=True)
    writer = WeightWriter(run)
    repl, data = replicated(run.mesh), data_sharding(run.mesh)
    results = CsvWriter(save_dir / "results.csv", columns=task.columns)  # rows on every process, the file on 0
    state, progress = _initial_state(run, ckpt if resuming else None, results)
    nb, epochs = loader.num_batches, int(config.epochs)
    tty = sys.stdout.isatty() and is_main
    console = ConsoleWriter(epochs=epochs, batches_per_epoch=nb, imgsz=int(config.imgsz), loss_names=task.loss_names,
                            tty=tty)
    bn_sync = bool(config.bn_sync) or run.mesh.devices.size == 1
    put = lambda b: jax.tree.map(lambda x: jax.make_array_from_process_local_data(data, x), b)  # noqa: E731
    val_put, val_vars = _validation_placement(put)
    validator = task.validator(config, run.model, run.val_loader, run.names, val_put)
    _announce(config, run, save_dir)
    board, tensorboard = open_board(save_dir, bool(config.tensorboard)) if is_main else (None, False)
    pictures = RunPictures(board, task, run.names, save_dir) if is_main and config.plots else None
    log_every = int(config.log_every)
    timer = PhaseTimer()
    train_labels = task.train_labels(loader)
    event = TrainEvent(name="", task=task.name, config=config, save_dir=save_dir, names=run.names, epochs=epochs,
                       phases=timer, train_labels=train_labels)

    def fire(name: str, **changes) -> None:
        nonlocal event
        event = dataclasses.replace(event, name=name, **changes)
        for fn in callbacks.get(name, []):
            fn(event)

    if pictures is not None:
        pictures.labels(train_labels)
    fire("on_pretrain_routine_end")
    fire("on_train_start")
    t_start = time.time()
    elapsed_before = float(results.rows[-1].get("time", 0.0)) if results.rows else 0.0  # a resumed run's past time
    start_epoch, stop = progress.epoch, False
    feed = Feed(loader, progress.epoch, progress.step_in_epoch, epochs, put) if progress.epoch < epochs else None
    storable = from_yolojax(type(run.model), type(task), run.hyper.objective)  # else the source hash misses it
    compiles, last = StepCompiles(_jitted_train_step(run.mesh, bn_sync), store_for_run() if storable else None), {}
    # the validation step compiles beside the train step's first compile, on a copy of the EMA weights (the train
    # step donates the state's buffers)
    val_compile = None
    if config.val and feed is not None and compiles_ahead(validator):
        ema_copy = jax.tree.map(lambda a: jax.device_put(a, a.sharding, may_alias=False), state.ema_variables)
        val_compile = compile_validation(validator, val_vars(jax.block_until_ready(ema_copy)))
    try:
        while feed is not None:
            epoch, first_step = progress.epoch, progress.step_in_epoch
            t_epoch_start = time.perf_counter()
            fire("on_train_epoch_start", epoch=epoch)
            if loader.close_mosaic_epoch is not None and epoch == loader.close_mosaic_epoch:
                log("Closing dataloader mosaic")
            if is_main:
                console.header()
            dev_sum = jnp.zeros(len(task.loss_names))
            t_epoch, n_images = time.time(), 0
            shown = None  # the previous step's (loss sums, instances, steps): what a progress line may read
            for i in range(first_step, nb):
                t_wait = time.perf_counter()
                batch, device_batch = next(feed)
                timer.add("data", time.perf_counter() - t_wait)
                state, m, dt = compiles.step(state, device_batch, task.batch_shapes(batch),
                                             newline=tty and i > first_step)
                if dt is not None:
                    timer.add("compile", dt)
                    t_epoch += dt  # images/s measures steps, not compiles
                dev_sum = dev_sum + jnp.stack([m[k] for k in task.loss_names])
                size = batch_image_shape(batch)[0]
                n_images += size
                last, step = m, epoch * nb + i
                if pictures is not None and draws_train_batch(step, nb, loader.close_mosaic_epoch):
                    pictures.train_batch(step, batch)
                if tensorboard and step % log_every == 0:
                    board.write_scalars(step, iteration_scalars(m))  # device values, read on the writer's thread
                fire("on_train_batch_end", step=step, batch=batch, batch_metrics=m,
                     step_shapes=tuple(compiles.shapes), compile_seconds=compiles.seconds)
                done = i + 1 == nb
                current = (dev_sum, m.get("instances", size), i + 1 - first_step)
                if tty or (done and is_main):
                    # The line shows the previous step's sums: reading them back waits for that step only, while
                    # this one is already queued, so the device never idles on a progress line. The epoch's last
                    # line is exact.
                    console.write_scalars(step, _progress_scalars(progress, task.loss_names,
                                                                  current if done or shown is None else shown))
                shown = current
                if config.time and time.time() - t_start > float(config.time) * 3600:
                    stop = True  # the time budget is spent: validate and save this epoch, then end
                if int(config.checkpoint_every) > 0 and (i + 1) % int(config.checkpoint_every) == 0 and not done:
                    with timer.phase("checkpoint"):
                        _save(ckpt, state, dataclasses.replace(
                            progress, step_in_epoch=i + 1, loss_sum=progress.loss_sum + np.asarray(dev_sum),
                            loss_count=progress.loss_count + i + 1 - first_step, finished=False))
                if stop:
                    break
            progress.loss_sum = progress.loss_sum + np.asarray(dev_sum)  # waits for the epoch's last step
            progress.loss_count += i + 1 - first_step
            progress.step_in_epoch = nb
            # the step phase is the rest of the train loop: dispatching, callbacks, progress lines and the device
            # time the loop waited for (the step runs asynchronously, so that wait lands here, never as a sync per step)
            timer.add("step", time.perf_counter() - t_epoch_start - sum(timer.epoch.values()))
            images_per_second = n_images / max(time.time() - t_epoch, 1e-9)
            with timer.phase("report"):
                fire("on_train_epoch_end", images_per_second=images_per_second)
            final_epoch = epoch + 1 >= epochs or stop
            row, fitness = _train_row(task, progress, last), None
            if config.val or final_epoch or progress.stopper.possible_stop(epoch):
                if val_compile is not None:
                    val_compile.result()
                    val_compile = None
                val = _validate(validator, val_vars(state.ema_variables), timer)
                event = dataclasses.replace(event, val=val)
                row.update(task.val_row(val))
                fitness = task.fitness(val, config)
            row["time"] = round(elapsed_before + time.time() - t_start, 3)  # seconds since training started
            event = dataclasses.replace(event, row=row)
            is_best = progress.record_fitness(fitness)
            stop = progress.stopper(epoch + 1, fitness) or stop or final_epoch
            if config.time:
                # Re-plan the run to the epochs that fit the budget at the mean epoch time so far: the lr schedule and
                # close_mosaic follow the new end. Before the checkpoint, which a resumed run then continues exactly.
                stop = stop or time.time() - t_start > float(config.time) * 3600
                epochs = replan_epochs(float(config.time), time.time() - t_start, epoch + 1 - start_epoch)
                config = progress.config = cfgmod.apply_overrides(config, {"epochs": epochs}, source="re-plan")
                event = dataclasses.replace(event, config=config, epochs=epochs)
                console.epochs = epochs
                state = state.replace(schedule=jax.device_put(replanned_schedule(
                    state.schedule, epochs, nb, float(config.warmup_epochs), config.compat), repl))
                stop = stop or epoch >= epochs
                feed = feed if stop else _replan_mosaic(task, loader, progress, feed, config, epoch, epochs, put)
            results.append(row)
            progress.results = results.rows
            final_epoch = final_epoch or stop
            if config.save or final_epoch:
                progress.finished = final_epoch
                _save_epoch(ckpt, writer, state, progress, is_best, weights_dir, timer)
                with timer.phase("report"):
                    fire("on_model_save")
            with timer.phase("report"):
                if is_main:
                    results.write()
                if tensorboard:
                    board.write_scalars(row["epoch"], epoch_scalars(row, images_per_second))
                fire("on_fit_epoch_end", metrics={**row, "fitness": fitness})
            if config.profile:
                for line in phase_table(timer.epoch, time.perf_counter() - t_epoch_start, f"Epoch {epoch + 1} time"):
                    log(line)
            timer.end_epoch()
            if stop:
                _log_early_stop(progress)
                break
            progress.next_epoch()
    except BaseException:
        if board is not None:
            board.close()  # what was queued is written and the writer thread ends; the error goes on
        raise
    finally:  # also on an error or an interrupt: stop the prefetch thread and the worker processes, finish the writes
        if val_compile is not None:
            val_compile.exception()  # waits; training's own error (or none) is what goes on
        if feed is not None:
            feed.close()
        writer.close()
        ckpt.wait()
    writer.wait()
    log(f"\n{progress.epoch - start_epoch + 1} epochs completed in {(time.time() - t_start) / 3600:.3f} hours.")
    with timer.phase("final_val"):
        final = final_eval(validator, weights_dir, config, run)
    wall = time.time() - t_start
    log(summary_line(timer.totals(), wall))
    run.val_loader.close()
    ckpt.close()
    if pictures is not None:
        pictures.final(results.path, final if final is not None else event.val,
                       int(results.rows[-1]["epoch"]) if results.rows else epochs)
    if board is not None:
        board.close()  # every picture and event is written when training returns
    fire("on_train_end", final=final, wall_seconds=wall)
    return _final_metrics(task, event.metrics, final, config, save_dir)


def _initial_state(run: Run, ckpt: Checkpointer | None, results: CsvWriter):
    """(replicated TrainState, Progress) of a new run, or of the run ``ckpt`` holds (resumed: its results rows
    rewritten, the loader's mosaic plan as the run had it - a time budget re-plans it)."""
    loader, repl = run.train_loader, replicated(run.mesh)
    state = jax.device_put(create_train_state(run.model, run.variables, run.hyper), repl)
    if ckpt is None:
        return state, Progress.start(run.config, len(run.task.loss_names), loader.close_mosaic_epoch)
    state, stored = ckpt.restore(state)
    progress = Progress.from_meta(stored, run.config, loader.close_mosaic_epoch)
    if progress.step_in_epoch >= loader.num_batches:
        progress.next_epoch()
    loader.close_mosaic_epoch = progress.close_mosaic_epoch
    log(f"Resuming training {run.save_dir} from epoch {progress.epoch + 1} step {progress.step_in_epoch} of "
        f"{run.config.epochs} epochs")
    results.rows = progress.results
    if jax.process_index() == 0:
        results.write()
    return jax.device_put(state, repl), progress


def _progress_scalars(progress: Progress, loss_names: tuple[str, ...], shown) -> dict:
    """A progress line's values (``ConsoleWriter``) from ``shown`` = (device loss sums, instances, steps) of the
    epoch's steps this run trained: the epoch's running mean losses, the instances, the peak device memory (GB)."""
    sums, instances, count = shown
    means = (progress.loss_sum + np.asarray(sums)) / (progress.loss_count + count)
    return {**dict(zip(loss_names, means)), "instances": int(instances), "gpu_mem": _mem_gb()}


def _train_row(task: Task, progress: Progress, last: dict) -> dict:
    """The epoch's results row so far: epoch, mean train losses, the last step's learning rates."""
    means = progress.loss_sum / max(progress.loss_count, 1)
    return {"epoch": progress.epoch + 1, **{f"train/{k}": round(float(v), 5) for k, v in zip(task.loss_names, means)},
            **{k: float(last[k]) for k in LR_KEYS}}


def _validate(validator, variables, timer: PhaseTimer):
    """One validation of the EMA weights: its phases timed, its summary lines printed."""
    val = validator(variables)
    for k, v in val.phases.items():
        timer.add(k, v)
    for line in val.table[:2]:
        log(line)
    return val


def _log_early_stop(progress: Progress) -> None:
    stopper = progress.stopper
    if stopper.stopped_early(progress.epoch):
        log(f"Stopping training early as no improvement observed in last {stopper.patience} epochs. Best results "
            f"observed at epoch {stopper.best_epoch}.")


def _warn_settings(config, run: Run, deterministic: bool) -> None:
    """Warnings on settings that could not be applied, before anything trains."""
    if deterministic != bool(config.deterministic) and run.mesh.devices.flat[0].platform != "cpu":
        log(f"WARNING: deterministic={config.deterministic} could not be applied: XLA reads its deterministic GPU "
            f"ops flag when JAX starts, and JAX started before this run with it {'on' if deterministic else 'off'}. "
            f"Set XLA_FLAGS=--xla_gpu_deterministic_ops={str(not deterministic).lower()} before starting Python.")


def _announce(config, run: Run, save_dir: pathlib.Path) -> None:
    """The lines before training: devices, model, optimizer, data settings, where results go."""
    log(environment_line(list(run.mesh.devices.flat)))
    if hostenv.active() and run.mesh.devices.flat[0].platform == "cpu":
        log("Host malloc: transparent huge pages (glibc.malloc.hugetlb=1; YOLOJAX_HUGEPAGES=0 turns it off)")
    if jax.process_index() == 0:
        log(run.task.model_line(run.model))
    log(run.optimizer_line)
    length = f"{config.time} hours" if config.time else f"{int(config.epochs)} epochs"
    log(f"Image sizes {config.imgsz} train, {config.imgsz} val\nUsing {run.train_loader.workers} dataloader workers"
        f"{run.task.loader_note(run.train_loader)}\n"
        f"Logging results to {save_dir}\nStarting training for {length}...")


def _validation_placement(put):
    """(put, variables view) for validation. Multi-host: each process validates the whole val set on its first
    local device with its local copy of the (replicated) EMA weights, so no host statistics need gathering;
    process 0 reports."""
    if jax.process_count() == 1:
        return put, (lambda v: v)
    local = jax.local_devices()[0]
    return (lambda b: jax.device_put(b, local)), (lambda v: jax.tree.map(lambda a: a.addressable_data(0), v))


def _replan_mosaic(task: Task, loader, progress: Progress, feed: "Feed", config, epoch: int, epochs: int, put):
    """After a re-plan to ``epochs``: move the epoch mosaic closes at and, when the batches read ahead follow the
    old plan, a new feed from the next epoch."""
    closing = loader.close_mosaic_epoch
    if task.closes_mosaic:
        closing = replan_close_mosaic(closing, epoch + 1, epochs, int(config.close_mosaic), config.compat)
    moved = mosaic_from(closing, epoch + 1) != mosaic_from(loader.close_mosaic_epoch, epoch + 1)
    loader.close_mosaic_epoch = progress.close_mosaic_epoch = closing
    if moved or feed.end_epoch < epochs + 1:
        feed.close()
        return Feed(loader, epoch + 1, 0, epochs + 1, put)
    return feed


class StepCompiles:
    """The train step's programs, one per batch shape, in the order the shapes came, and the seconds their compiles
    (or loads from ``store``, see ``engine.executables``) took."""

    def __init__(self, programs: Programs, store: ExecutableStore | None = None):
        self.programs = programs  # _jitted_train_step: (state treedef, state leaves, batch) -> (leaves, metrics)
        self.store = store
        self.compiled: dict[tuple, jax.stages.Compiled] = {}
        self.shapes: list[tuple] = []
        self.seconds = 0.0

    def step(self, state, device_batch, shapes: dict[str, tuple], *, newline: bool = False):
        """One train step -> (state, metrics, seconds of its compile or None). A new shape's program is made first
        (compiled, or loaded when an earlier run compiled it), and that first step is waited for, timed and logged."""
        leaves, treedef = jax.tree.flatten(state)
        key = tuple(shapes.values())
        program = self.compiled.get(key)
        if program is not None:
            leaves, m = program(leaves, device_batch)
            return jax.tree.unflatten(treedef, leaves), m, None
        what = ", ".join(f"{k} {v}" for k, v in shapes.items())
        t0 = time.time()  # several processes: all have compiled it before its first collective
        program, loaded = self.programs.make((treedef,), (leaves, device_batch), self.store)
        wait_for_peers(f"compiling the train step for {what}")
        leaves, m = program(leaves, device_batch)
        jax.block_until_ready(m["loss"])
        self.compiled[key] = program
        self.shapes.append(key)
        dt = time.time() - t0
        self.seconds += dt
        how, earlier = ("loaded", "compiled by an earlier run; ") if loaded else ("compiled", "")
        log(("\n" if newline else "") + f"{how} train step for {what} in {dt:.1f}s ({earlier}{len(self.shapes)} "
            f"shape(s) so far)")
        return jax.tree.unflatten(treedef, leaves), m, dt


def _flat(step, treedef, leaves, batch):
    state, metrics = step(jax.tree.unflatten(treedef, leaves), batch)
    return jax.tree.leaves(state), metrics


@functools.lru_cache(maxsize=8)
def _jitted_train_step(mesh, bn_sync: bool) -> Programs:
    """The train step's programs for a mesh, shared by the runs of one process: jitted over (state treedef, state
    leaves, batch), the leaves being what is donated and what a stored executable takes, the treedef (model,
    optimizer, step settings) static."""
    repl, data = replicated(mesh), data_sharding(mesh)
    step, name = train_step, "train_step"
    if not bn_sync:  # per-device BN statistics, as Ultralytics DDP
        from yolojax.engine.per_device_bn import make_train_step_per_device_bn

        step, name = make_train_step_per_device_bn(mesh), "train_step_per_device_bn"
    return Programs(functools.partial(_flat, step), name, static_argnums=0, in_shardings=(repl, data),
                    out_shardings=(repl, repl), donate_argnums=1,
                    compiler_options=compiler_options(mesh.devices.flat[0].platform))


def final_eval(validator, weights_dir: pathlib.Path, config, run: Run):
    """Validate best.npz (else last.npz) as Ultralytics' final_eval does: the task's table and extras, the Speed
    line. None on processes other than the first (the exported weights live on its disk) or without weights."""
    if jax.process_index() != 0:
        return None
    path = weights_dir / "best.npz"
    if not path.is_file():
        path = weights_dir / "last.npz"
    if not path.is_file():
        return None
    log(f"\nValidating {path}...")
    variables = run.task.load_weights(path)
    if jax.process_count() > 1:
        variables = jax.device_put(variables, jax.local_devices()[0])
    else:
        variables = jax.device_put(variables, replicated(run.mesh))
    result = run.task.final_validation(validator, variables, config, weights_dir.parent)
    log(speed_line(result.speed))
    log(f"Results saved to {weights_dir.parent}")
    return result


def _save_epoch(ckpt: Checkpointer, writer: WeightWriter, state, progress: Progress, is_best: bool,
                weights_dir: pathlib.Path, timer: PhaseTimer) -> None:
    """The epoch's checkpoint and (process 0) its weight files: last.npz, best.npz when it is the best so far,
    epochN.npz every ``save_period`` epochs."""
    with timer.phase("checkpoint"):
        _save(ckpt, state, progress)
    if jax.process_index() != 0:
        return
    epoch, period = progress.epoch, int(progress.config.save_period)
    files = ["last.npz"] + (["best.npz"] if is_best else []) + ([f"epoch{epoch}.npz"] if period > 0
                                                                  and epoch % period == 0 else [])
    with timer.phase("export"):  # the copy off the device; the files are written in the background
        writer.submit(state.ema_variables, [weights_dir / f for f in files])


def _final_metrics(task: Task, last: dict, final, config, save_dir: pathlib.Path) -> dict:
    """What ``train`` returns: the last epoch's row and fitness, overridden by the final validation's metrics
    (its losses are not: the val losses stay the last epoch's), and ``save_dir``."""
    out = dict(last)
    if final is not None:
        out.update({k: v for k, v in task.val_row(final).items() if not k.startswith("val/")})
        out["fitness"] = task.fitness(final, config)
    out["save_dir"] = str(save_dir)
    return out


def _save(ckpt: Checkpointer, state, progress: Progress) -> None:
    ckpt.save(int(jax.device_get(state.step)), state, progress.to_meta())


def _mem_gb() -> float:
    try:
        stats = jax.local_devices()[0].memory_stats() or {}
        return stats.get("peak_bytes_in_use", 0) / 1e9
    except Exception:
        return 0.0
