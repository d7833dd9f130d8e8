"""Subprocess worker for tests/test_multidevice.py and tests/test_multihost.py (JAX fixes its device count and
process group when it starts, so these runs cannot share the pytest process).

    # 4 CPU devices (XLA_FLAGS=--xla_force_host_platform_device_count=4): 1/2/4-device equivalence, per-device BN
    python tests/multihost_worker.py equivalence --out r.json --ref-out ref4.npz
    # one of 2 processes x 2 CPU devices: 3 steps, a collective checkpoint, then process 1 dies
    python tests/multihost_worker.py train --steps 3 --out p0.npz --ckpt DIR --die-process 1 \
        --coordinator 127.0.0.1:PORT --num-processes 2 --process-id 0
    # one of 2 processes: wait_for_peers with process 1 arriving --late seconds late, then a barrier it skips
    python tests/multihost_worker.py barrier --out unused --late 6 --coordinator 127.0.0.1:PORT \
        --num-processes 2 --process-id 0
    # the trainer (python -m yolojax.train ARGS...), listing in writes.txt every path under DIR it writes
    python tests/multihost_worker.py trainer --out writes.txt --watch DIR -- --config=... --config.num_processes=2 ...

The tiny model: YOLOv8(multiples=(0.33, 0.0625, 1024), num_classes=3), 64x64 inputs, global batch 8, random
boxes; SGD without warmup, so the first step already updates the weights.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import signal
import sys
import time

import numpy as np

IMGSZ, BATCH, MAX_BOXES, NC = 64, 8, 4, 3


def _configure_jax():
    import jax

    cache = os.environ.get("YOLOJAX_TEST_JAX_CACHE")
    if cache:
        jax.config.update("jax_compilation_cache_dir", cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return jax


def tiny_setup(accumulate: int = 1, lr0: float = 0.01):
    """(model, variables, hyper): no warmup, SGD, ``accumulate`` batches per optimizer step."""
    from yolojax.engine.optim import Schedule
    from yolojax.engine.state import TrainHyper
    from yolojax.nn import YOLOv8
    from yolojax.nn.yolo import init_variables

    model = YOLOv8(multiples=(0.33, 0.0625, 1024), num_classes=NC)
    variables = init_variables(model, seed=0)
    schedule = Schedule(lr0=lr0, lrf=0.01, epochs=1, nb=10, nw=-1, momentum=0.9, warmup_momentum=0.8,
                        warmup_bias_lr=0.1, accumulate=accumulate, nbs_over_batch=float(accumulate))
    return model, variables, TrainHyper(schedule=schedule, optimizer="SGD", weight_decay=5e-4)


def synthetic_batch(step: int, batch: int = BATCH) -> dict:
    """Global batch ``step``: random images and 1..MAX_BOXES random boxes per image (pixel xyxy)."""
    rng = np.random.default_rng(1000 + step)
    images = rng.integers(0, 256, (batch, IMGSZ, IMGSZ, 3), dtype=np.uint8)
    wh = rng.uniform(8, 40, (batch, MAX_BOXES, 2))
    x0 = rng.uniform(0, IMGSZ - wh)
    boxes = np.concatenate([x0, x0 + wh], -1).astype(np.float32)
    count = rng.integers(1, MAX_BOXES + 1, batch)
    mask = np.arange(MAX_BOXES)[None] < count[:, None]
    classes = rng.integers(0, NC, (batch, MAX_BOXES)).astype(np.int32)
    return {"images": images, "boxes": boxes * mask[..., None], "classes": classes * mask, "mask": mask}


def flat(tree) -> dict[str, np.ndarray]:
    import jax

    from yolojax.engine.distributed import local_value

    leaves = jax.tree_util.tree_leaves_with_path(local_value(tree))
    return {jax.tree_util.keystr(k): np.asarray(v) for k, v in leaves}


def max_diff(a, b) -> float:
    fa, fb = flat(a), flat(b)
    assert fa.keys() == fb.keys()
    return float(max(np.max(np.abs(fa[k].astype(np.float64) - fb[k])) for k in fa))


_STEP_FNS: dict = {}


def run_steps(devices, steps: int, *, per_device_bn: bool = False, accumulate: int = 1, batch_fn=synthetic_batch,
              setup=None):
    """``steps`` jitted train steps on a mesh over ``devices``; each process feeds its rows of each batch."""
    import jax

    from yolojax.engine.devices import data_sharding, make_mesh, replicated
    from yolojax.engine.distributed import collective_failure_guard, wait_for_peers
    from yolojax.engine.per_device_bn import make_train_step_per_device_bn
    from yolojax.engine.state import create_train_state, train_step

    model, variables, hyper = setup or tiny_setup(accumulate)
    mesh = make_mesh(devices)
    repl, data = replicated(mesh), data_sharding(mesh)
    key = (tuple(d.id for d in devices), per_device_bn)
    if key not in _STEP_FNS:  # one jit wrapper per mesh: runs with the same shapes reuse its compile
        fn = make_train_step_per_device_bn(mesh) if per_device_bn else train_step
        _STEP_FNS[key] = jax.jit(fn, in_shardings=(repl, data), out_shardings=(repl, repl), donate_argnums=0)
    step_fn = _STEP_FNS[key]
    state = jax.device_put(create_train_state(model, variables, hyper), repl)
    metrics = None
    me, n = jax.process_index(), jax.process_count()
    for i in range(steps):  # this process's rows of the global batch, as TrainLoader(process_index=...) splits them
        local = jax.tree.map(lambda x: x[me * x.shape[0] // n:(me + 1) * x.shape[0] // n], batch_fn(i))
        with collective_failure_guard():
            batch = jax.tree.map(lambda x: jax.make_array_from_process_local_data(data, x), local)
            if i == 0:
                step_fn.lower(state, batch).compile()  # as the trainer: compiled ahead, then wait for the peers
                wait_for_peers("compiling the train step")
            state, metrics = step_fn(state, batch)
            jax.block_until_ready(metrics)
        yield i, state, metrics


def last(gen):
    out = None
    for out in gen:
        pass
    return out


def task_equivalence(args):
    """One step over the same global batch on 1, 2, 4 devices (the 4-device run goes on to 3 steps: the
    reference of the 2-process run); per-device BN against its references. Writes JSON + an npz."""
    jax = _configure_jax()
    import jax.numpy as jnp

    from yolojax.engine.devices import select_devices
    from yolojax.engine.state import create_train_state

    devs = jax.devices()
    out = {"n_devices": len(devs), "select": {}}
    for spec in ("cpu", "all", None, "", "CPU"):
        out["select"][repr(spec)] = [d.id for d in select_devices(spec)]
    setup = tiny_setup()
    init = create_train_state(*setup)
    t0 = time.time()
    states = {n: last(run_steps(devs[:n], 1, setup=setup))[1] for n in (1, 2)}
    for i, s, _ in run_steps(devs[:4], 3, setup=setup):
        if i == 0:
            states[4] = jax.tree.map(np.asarray, s)
    np.savez(args.ref_out, **flat({"params": s.params, "batch_stats": s.batch_stats}))
    out["seconds_global"] = time.time() - t0
    out["update_size"] = max_diff(states[1].params, init.params)
    out["global_params_2_vs_1"] = max_diff(states[2].params, states[1].params)
    out["global_params_4_vs_1"] = max_diff(states[4].params, states[1].params)
    out["global_stats_4_vs_1"] = max_diff(states[4].batch_stats, states[1].batch_stats)
    out["global_ema_4_vs_1"] = max_diff(states[4].ema_params, states[1].ema_params)

    t0 = time.time()
    # per-device BN on 1 device == train_step
    pd1 = last(run_steps(devs[:1], 1, per_device_bn=True, setup=setup))[1]
    out["per_device_1_vs_global_1"] = max_diff(pd1.params, states[1].params)
    out["per_device_1_vs_global_1_stats"] = max_diff(pd1.batch_stats, states[1].batch_stats)
    # per-device BN on 2 devices without an optimizer step (accumulate 4): grad_accum is the gradient
    acc_setup = tiny_setup(accumulate=4)
    _, pd2, m2 = last(run_steps(devs[:2], 1, per_device_bn=True, setup=acc_setup))
    halves, half_metrics = [], []
    for h in range(2):  # train_step on each half alone (one device, 4 images): the per-rank references
        half = lambda i, h=h: jax.tree.map(lambda x: x[h * BATCH // 2:(h + 1) * BATCH // 2], synthetic_batch(i))
        _, s, m = last(run_steps(devs[:1], 1, setup=acc_setup, batch_fn=half))
        halves.append(s)
        half_metrics.append(m)
    manual = jax.tree.map(jnp.add, halves[0].grad_accum, halves[1].grad_accum)
    stats_mean = jax.tree.map(lambda a, b: (a + b) / 2, halves[0].batch_stats, halves[1].batch_stats)
    out["seconds_per_device"] = time.time() - t0
    out["per_device_2_grad_vs_manual"] = max_diff(pd2.grad_accum, manual)
    out["grad_scale"] = float(max(np.max(np.abs(v)) for v in flat(manual).values()))
    out["per_device_2_stats_vs_mean_of_halves"] = max_diff(pd2.batch_stats, stats_mean)
    out["per_device_2_stats_vs_global"] = max_diff(pd2.batch_stats, states[1].batch_stats)
    out["per_device_2_optimizer_step"] = bool(m2["optimizer_step"])
    out["per_device_2_loss"] = float(m2["loss"])
    out["halves_loss_sum"] = float(half_metrics[0]["loss"] + half_metrics[1]["loss"])
    out["per_device_2_instances"] = int(m2["instances"])
    out["instances_total"] = int(synthetic_batch(0)["mask"].sum())
    with open(args.out, "w") as f:
        json.dump(out, f)


def task_train(args):
    """``args.steps`` steps on every CPU device of every process, a collective checkpoint, the parameters
    to ``args.out``; then, with ``--die-process P``, process P kills itself and the others try one more step."""
    jax = _join(args) if args.num_processes > 1 else _configure_jax()
    from yolojax.engine.devices import select_devices
    from yolojax.engine.distributed import collective_failure_guard

    devices = select_devices("cpu")
    me = jax.process_index()
    print(f"process {me}/{jax.process_count()}: {len(devices)} devices, local "
          f"{[d.id for d in jax.local_devices()]}", flush=True)
    state = None
    t0 = time.time()
    gen = run_steps(devices, args.steps + (1 if args.die_process is not None else 0))
    for i, state, m in gen:
        print(f"process {me} step {i} loss {float(m['loss']):.4f} ({time.time() - t0:.1f}s)", flush=True)
        if i + 1 == args.steps:
            break
    if args.ckpt:
        from yolojax.engine.checkpoint import Checkpointer

        with collective_failure_guard("saving the checkpoint"):
            ck = Checkpointer(args.ckpt)
            ck.save(args.steps, state, {"processes": jax.process_count()})
            # every process restores it onto the same global mesh (as a multi-host resume does)
            restored, meta = ck.restore(state)
            ck.close()
        got, want = flat(restored), flat(state)
        equal = got.keys() == want.keys() and all(np.array_equal(got[k], want[k]) for k in want)
        n_dev = len(jax.tree.leaves(restored.params)[0].sharding.device_set)
        print(f"process {me} restored step {int(restored.step)} of the {meta['processes']}-process checkpoint on "
              f"{n_dev} devices: {'equal' if equal else 'DIFFERENT'}", flush=True)
    np.savez(args.out, **flat({"params": state.params, "batch_stats": state.batch_stats}))
    print(f"process {me} saved ({time.time() - t0:.1f}s)", flush=True)
    if args.die_process is None:
        return
    if me == args.die_process:
        print(f"process {me} kills itself", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(1.0)  # the peer is gone before the next collective
    print(f"process {me} tries another step at {time.time():.3f}", flush=True)
    next(gen)  # must fail: a DistributedError, or JAX's coordination service terminates the process
    print(f"process {me} finished a step without its peer", flush=True)


def _join(args):
    jax = _configure_jax()
    from yolojax.engine.distributed import maybe_initialize

    maybe_initialize({"coordinator_address": args.coordinator, "num_processes": args.num_processes,
                      "process_id": args.process_id, "dist_init_timeout": 60,
                      "dist_heartbeat_timeout": args.heartbeat})
    return jax


def task_barrier(args):
    """``wait_for_peers`` across processes: process 1 arrives ``args.late`` s late at the first barrier; at the
    second only process 0 arrives (2 s limit) and must get a DistributedError."""
    jax = _join(args)
    from yolojax.engine.distributed import DistributedError, wait_for_peers

    me = jax.process_index()
    if me == 1:
        time.sleep(args.late)
    t = time.time()
    print(f"process {me} at barrier {t:.3f}", flush=True)
    wait_for_peers("the test barrier")
    print(f"process {me} passed barrier {time.time():.3f} waited {time.time() - t:.3f}", flush=True)
    if me == 0:
        try:
            wait_for_peers("the second barrier", timeout_s=2)
            print("process 0 passed the second barrier alone", flush=True)
        except DistributedError as e:
            print(f"DistributedError: {e}", flush=True)
    else:
        time.sleep(4)


def _written_path(event: str, args: tuple) -> str | None:
    """The path an audit event writes, creates, moves or removes (None for reads and other events)."""
    if event == "open":
        path, mode, flags = args
        writes = (any(c in mode for c in "wax+") if isinstance(mode, str)
                  else bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)))
        return path if writes and isinstance(path, (str, bytes, os.PathLike)) else None
    if event in ("os.rename", "os.mkdir", "os.remove", "os.rmdir", "shutil.rmtree"):
        path = args[1] if event == "os.rename" else args[0]
        return path if isinstance(path, (str, bytes, os.PathLike)) else None
    return None


def task_trainer(args):
    """``python -m yolojax.train`` with ``args.rest``, recording (Python audit hooks) every file or folder under
    ``args.watch`` this process writes, creates, renames to or removes; the sorted paths, relative to ``args.watch``,
    go to ``args.out``, one a line, when the run ends (also when it fails). Writes made below Python (Orbax's
    TensorStore, OpenCV) are not seen."""
    import runpy

    watch = os.path.realpath(args.watch)
    seen: set[str] = set()

    def hook(event, hook_args):
        path = _written_path(event, hook_args)
        if path is not None:
            full = os.path.realpath(os.fsdecode(path))
            if full == watch or full.startswith(watch + os.sep):
                seen.add(os.path.relpath(full, watch))

    sys.addaudithook(hook)
    sys.argv = ["yolojax.train", *args.rest]
    try:
        runpy.run_module("yolojax.train", run_name="__main__", alter_sys=True)
    finally:
        with open(args.out, "w") as f:
            f.write("".join(f"{p}\n" for p in sorted(seen)))


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("task", choices=("equivalence", "train", "barrier", "trainer"))
    ap.add_argument("--out", required=True)
    ap.add_argument("--ref-out")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--ckpt")
    ap.add_argument("--coordinator")
    ap.add_argument("--num-processes", type=int, default=1)
    ap.add_argument("--process-id", type=int, default=0)
    ap.add_argument("--die-process", type=int)
    ap.add_argument("--heartbeat", type=int, default=10)
    ap.add_argument("--late", type=float, default=0.0)
    ap.add_argument("--watch", help="trainer: the folder whose writes are recorded")
    argv = list(sys.argv[1:] if argv is None else argv)
    cut = argv.index("--") if "--" in argv else len(argv)  # trainer: python -m yolojax.train's arguments follow --
    args = ap.parse_args(argv[:cut])
    args.rest = argv[cut + 1:]
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    {"equivalence": task_equivalence, "train": task_train, "barrier": task_barrier,
     "trainer": task_trainer}[args.task](args)


# ---- used by the tests (pytest process) -------------------------------------------------------------------

def worker_env(n_devices: int) -> dict:
    import jax

    tests = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ)
    # backend optimisation level 0: a third less compile time; every compared run uses the same flags
    env.update(XLA_FLAGS=f"--xla_force_host_platform_device_count={n_devices} --xla_backend_optimization_level=0",
               JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join([os.path.dirname(tests), env.get("PYTHONPATH", "")]))
    if jax.config.jax_compilation_cache_dir:
        env["YOLOJAX_TEST_JAX_CACHE"] = str(jax.config.jax_compilation_cache_dir)
    return env


@functools.lru_cache(maxsize=None)
def equivalence_results() -> tuple[dict, str]:
    """Run ``equivalence`` once per pytest session (4 CPU devices): (its JSON, path of the 3-step npz).

    test_multidevice.py and test_multihost.py both read it; under pytest-xdist they may run in different worker
    processes, which share one result directory per test run (``PYTEST_XDIST_TESTRUNUID``): the first to take
    its lock runs the worker, the other waits and reads the files."""
    import fcntl
    import subprocess
    import tempfile

    run_id = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if run_id:
        d = os.path.join(tempfile.gettempdir(), f"yolojax_multidevice_{run_id}")
        os.makedirs(d, exist_ok=True)
    else:
        d = tempfile.mkdtemp(prefix="yolojax_multidevice_")
    out, ref = os.path.join(d, "result.json"), os.path.join(d, "ref4.npz")
    with open(os.path.join(d, "lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not os.path.exists(out):
            proc = subprocess.run([sys.executable, os.path.abspath(__file__), "equivalence", "--out", out + ".tmp",
                                   "--ref-out", ref], env=worker_env(4), capture_output=True, text=True, timeout=900)
            if proc.returncode != 0:
                raise AssertionError(f"equivalence worker failed (rc {proc.returncode}):\n{proc.stdout[-3000:]}\n"
                                     f"{proc.stderr[-6000:]}")
            os.replace(out + ".tmp", out)
    with open(out) as f:
        return json.load(f), ref


if __name__ == "__main__":
    main()
