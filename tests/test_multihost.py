"""Multi-process data parallelism on jax.distributed (acceptance of issue 8).

Two processes x two CPU devices on 127.0.0.1 (gloo collectives) run 3 train steps, each process feeding only
its half of every global batch through ``jax.make_array_from_process_local_data``; the parameters must match
the single-process 4-device run (``multihost_worker.equivalence_results``, shared with test_multidevice.py).
They then save an Orbax checkpoint collectively and restore it together onto the same 4-device mesh; it also
restores here in one process (one device). Finally process 1 is killed and process 0, trying its next step, must
exit with a clear error within a bounded time instead of hanging (heartbeat timeout 10 s). The README's own
several-hosts command (``python -m yolojax.train`` with coordinator_address / num_processes / process_id) runs
as two processes of one CPU device each; so does a classification run (yolov8n-cls), whose state must equal the
same run's in one process with two CPU devices.
"""
from __future__ import annotations

import pathlib
import re
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

TESTS = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))

import multihost_worker as W  # noqa: E402

EXIT_BOUND_S = 60  # a dead peer must end the survivor within this


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    d = tmp_path_factory.mktemp("multihost")
    port = free_port()
    procs, logs = [], []
    for pid in range(2):
        log = open(d / f"p{pid}.log", "w+")
        cmd = [sys.executable, "-u", str(TESTS / "multihost_worker.py"), "train", "--steps", "3",
               "--out", str(d / f"p{pid}.npz"), "--ckpt", str(d / "ckpt"), "--die-process", "1",
               "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", str(pid),
               "--heartbeat", "10"]
        procs.append(subprocess.Popen(cmd, env=W.worker_env(2), stdout=log, stderr=subprocess.STDOUT))
        logs.append(log)
    exit_times = [None, None]
    deadline = time.time() + 420
    try:
        while any(t is None for t in exit_times) and time.time() < deadline:
            for i, p in enumerate(procs):
                if exit_times[i] is None and p.poll() is not None:
                    exit_times[i] = time.time()
            time.sleep(0.1)
    finally:
        for p in procs:
            if p.poll() is None:  # never leave a hung worker behind
                p.kill()
                p.wait()
    texts = []
    for log in logs:
        log.seek(0)
        texts.append(log.read())
        log.close()
    return {"dir": d, "rc": [p.returncode for p in procs], "exit_times": exit_times, "logs": texts}


def _load(path) -> dict:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def _trainer_env(n_devices: int) -> dict:
    """The environment of a ``python -m yolojax.train`` subprocess on ``n_devices`` CPU devices (the suite's compile
    cache, unbuffered output)."""
    env = W.worker_env(n_devices)
    env.update(JAX_COMPILATION_CACHE_DIR=env.get("YOLOJAX_TEST_JAX_CACHE", ""), PYTHONUNBUFFERED="1")
    return env


def _outputs(procs, timeout: float = 480) -> list[str]:
    """Each process's output once all have ended; any still running (a hung run) is killed."""
    try:
        return [p.communicate(timeout=timeout)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()


@pytest.mark.slow
def test_two_processes_match_single_process_four_devices(two_processes):
    r = two_processes
    for pid in range(2):
        assert (r["dir"] / f"p{pid}.npz").is_file(), f"process {pid} did not finish:\n{r['logs'][pid][-4000:]}"
    assert "process 0/2: 4 devices, local [0, 1]" in r["logs"][0], r["logs"][0][-3000:]
    p0, p1 = _load(r["dir"] / "p0.npz"), _load(r["dir"] / "p1.npz")
    ref = _load(W.equivalence_results()[1])
    assert p0.keys() == ref.keys() and len(ref) > 10
    for k in ref:
        np.testing.assert_array_equal(p0[k], p1[k], err_msg=k)  # replicated: both processes hold the same
        np.testing.assert_allclose(p0[k], ref[k], atol=1e-5, rtol=0, err_msg=k)


@pytest.mark.slow
def test_collective_checkpoint_restores_in_one_process(two_processes):
    from yolojax.engine.checkpoint import Checkpointer
    from yolojax.engine.devices import make_mesh, replicated
    from yolojax.engine.state import create_train_state

    ckdir = two_processes["dir"] / "ckpt"
    assert Checkpointer(ckdir).latest_step() == 3, two_processes["logs"][0][-3000:]
    for pid in range(2):  # restored by both processes onto the global 4-device mesh: the saved state, exactly
        log = two_processes["logs"][pid]
        assert f"process {pid} restored step 3 of the 2-process checkpoint on 4 devices: equal" in log, log[-3000:]
    template = jax.device_put(create_train_state(*W.tiny_setup()), replicated(make_mesh(jax.devices()[:1])))
    state, meta = Checkpointer(ckdir).restore(template)
    assert meta["processes"] == 2 and int(state.step) == 3
    saved = _load(two_processes["dir"] / "p0.npz")
    restored = W.flat({"params": state.params, "batch_stats": state.batch_stats})
    assert restored.keys() == saved.keys()
    for k in saved:
        np.testing.assert_array_equal(restored[k], saved[k], err_msg=k)


@pytest.mark.slow
def test_killed_peer_ends_the_other_process_with_a_clear_error(two_processes):
    r = two_processes
    log0 = r["logs"][0]
    assert r["rc"][1] == -9, r["logs"][1][-3000:]  # process 1 was SIGKILLed
    assert r["rc"][0] not in (0, None), log0[-3000:]  # the survivor did not carry on, nor hang (None)
    assert "finished a step without its peer" not in log0
    m = re.search(r"process 0 tries another step at ([0-9.]+)", log0)
    assert m, log0[-3000:]
    waited = r["exit_times"][0] - float(m.group(1))
    assert waited < EXIT_BOUND_S, f"survivor took {waited:.0f}s to exit"
    clear = ("Another process most likely died" in log0  # our DistributedError (collective failed)
             or "another task died" in log0)  # JAX's coordination service (missed heartbeats)
    assert clear, log0[-3000:]


def test_wait_for_peers_is_a_barrier_with_a_bounded_wait(tmp_path):
    """The barrier the trainer waits at after compiling a program: process 0 waits for a peer arriving 6 s late (longer would
    be the case gloo gives up on after 30 s), then gets a clear error when its peer never comes (2 s limit)."""
    port = free_port()
    procs = [subprocess.Popen([sys.executable, "-u", str(TESTS / "multihost_worker.py"), "barrier", "--out", "-",
                               "--late", "6", "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
                               "--process-id", str(pid)], env=W.worker_env(1), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for pid in range(2)]
    logs = [p.communicate(timeout=180)[0] for p in procs]
    times = {}
    for pid, log in enumerate(logs):
        m = re.search(rf"process {pid} at barrier ([0-9.]+)\n.*process {pid} passed barrier ([0-9.]+)", log, re.S)
        assert m, log[-3000:]
        times[pid] = float(m.group(1)), float(m.group(2))
    assert times[1][0] - times[0][0] > 3, times  # process 1 came late (6 s after joining) ...
    assert times[0][1] >= times[1][0], times  # ... and process 0 left the barrier only after it came
    assert "DistributedError: Process 0 of 2 waited for the others to finish the second barrier" in logs[0], logs[0]
    assert "limit 2 s" in logs[0] and "passed the second barrier alone" not in logs[0]


@pytest.mark.slow
def test_trainer_runs_as_two_processes_as_the_readme_says(tmp_path, tiny_model_yaml, shapes_small):
    """The README's several-hosts command: ``python -m yolojax.train`` twice with coordinator_address,
    num_processes and process_id (here 2 processes x 1 CPU device on 127.0.0.1, one shared disk). Both finish;
    only process 0 logs; the checkpoint is the collective one, and its EMA weights are the ones process 0 exported.
    Each process has a loader worker process (the trainer keeps none on a lone CPU process), which builds its
    batches in shared memory; no block is left behind when the run ends (Python would warn of it at exit)."""
    from yolojax.engine.checkpoint import Checkpointer
    from yolojax.weights import load_checkpoint

    port = free_port()
    run = tmp_path / "run"
    procs = [subprocess.Popen(
        [sys.executable, "-m", "yolojax.train", f"--config={TESTS.parent / 'configs' / 'default.py'}", f"--workdir={run}",
         f"--config.model={tiny_model_yaml}", f"--config.data={shapes_small}", "--config.imgsz=64", "--config.batch=8",
         "--config.epochs=1", "--config.close_mosaic=0", "--config.workers=1", "--config.val=False",
         "--config.plots=False", "--config.warmup_epochs=0", f"--config.coordinator_address=127.0.0.1:{port}",
         "--config.num_processes=2", f"--config.process_id={pid}", "--config.dist_init_timeout=120"],
        env=_trainer_env(1), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for pid in range(2)]
    logs = _outputs(procs)
    for pid, p in enumerate(procs):
        assert p.returncode == 0, f"process {pid}:\n{logs[pid][-4000:]}"
    assert "Starting training for 1 epochs" in logs[0] and "Results saved to" in logs[0], logs[0][-3000:]
    assert "Using 1 dataloader workers" in logs[0], logs[0][-3000:]
    for log in logs:
        assert "leaked shared_memory" not in log, log[-3000:]
    progress = re.compile(r"^\s*1/1\s+[0-9.]+G\s", re.M)  # an epoch's progress line: "  1/1  0G  6.8 ..."
    assert progress.search(logs[0]), logs[0][-3000:]
    for marker in ("Starting training", "box_loss", "Results saved"):  # process 1 trains silently
        assert marker not in logs[1], logs[1][-3000:]
    assert not progress.search(logs[1]), logs[1][-3000:]
    rows = (run / "results.csv").read_text().strip().splitlines()
    assert len(rows) == 2 and rows[1].split(",")[0].strip() == "1", rows
    ck = Checkpointer(run / "weights" / "ckpt")
    assert ck.latest_step() == 4  # 32 images, global batch 8 (4 rows from each process)
    saved = ck.read_arrays()
    ck.close()
    exported = load_checkpoint(run / "weights" / "last.npz").variables
    leaves = jax.tree_util.tree_leaves_with_path(exported)
    assert len(leaves) > 100
    for path, value in leaves:
        key = jax.tree_util.keystr(path)  # "['params'][...]" is the state's "['ema_params'][...]"
        np.testing.assert_array_equal(np.asarray(value), saved["['ema_" + key[2:]], err_msg=key)


def _cls_train_args(run, data) -> list[str]:
    """``python -m yolojax.train`` arguments of the classification runs below: yolov8n-cls at 32 px on the synthetic
    class folders (6 classes x 8 images), one epoch of 6 steps of global batch 8, validated, with dropout and the
    default augmentation (RandAugment, random erasing)."""
    return [f"--config={TESTS.parent / 'configs' / 'default.py'}", f"--workdir={run}",
            "--config.model=yolov8n-cls.yaml", f"--config.data={data}", "--config.imgsz=32", "--config.batch=8",
            "--config.epochs=1", "--config.workers=0", "--config.plots=False", "--config.tensorboard=False",
            "--config.warmup_epochs=0", "--config.dropout=0.2"]


@pytest.mark.slow
def test_classification_trains_as_two_processes_like_one_process_on_two_devices(tmp_path):
    """yolov8n-cls through the trainer as 2 processes x 1 CPU device (jax.distributed on 127.0.0.1) and, at the same
    time, as 1 process with 2 CPU devices. Both processes finish; only process 0 logs and writes the run's files
    (results.csv, args.yaml, the weight files: recorded by the worker's audit hooks); the collective checkpoint holds
    exactly the single-process run's state: with two devices every cross-device sum has two terms, so the two layouts
    add the same numbers and agree bit for bit (dropout and augmentation draws included)."""
    from yolojax.data.synthetic import shapes_cls_dir
    from yolojax.engine.checkpoint import Checkpointer
    from yolojax.report.results import read_results_csv
    from yolojax.weights import load_checkpoint

    data = shapes_cls_dir(n_train=8, n_val=4, size=32)
    port, multi, single = free_port(), tmp_path / "multi", tmp_path / "single"
    dist = ["--config.coordinator_address=127.0.0.1:" + str(port), "--config.num_processes=2",
            "--config.dist_init_timeout=120"]
    procs = [subprocess.Popen(
        [sys.executable, "-u", str(TESTS / "multihost_worker.py"), "trainer", "--out", str(tmp_path / f"w{pid}.txt"),
         "--watch", str(multi), "--", *_cls_train_args(multi, data), *dist, f"--config.process_id={pid}"],
        env=_trainer_env(1), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for pid in range(2)]
    procs.append(subprocess.Popen([sys.executable, "-m", "yolojax.train", *_cls_train_args(single, data)],
                                  env=_trainer_env(2), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    logs = _outputs(procs)
    for i, p in enumerate(procs):
        assert p.returncode == 0, f"run {i}:\n{logs[i][-4000:]}"
    assert "CPU x2" in logs[0] and "CPU x2" in logs[2], (logs[0][-3000:], logs[2][-3000:])
    for marker in ("Starting training for 1 epochs", "top1_acc", "Results saved to"):
        assert marker in logs[0] and marker not in logs[1], (marker, logs[0][-3000:], logs[1][-3000:])

    writes = [set((tmp_path / f"w{pid}.txt").read_text().split()) for pid in range(2)]
    for name in ("results.csv", "args.yaml", "weights/last.npz", "weights/best.npz"):
        assert name in writes[0], sorted(writes[0])  # the hook sees process 0 write the run's files ...
    assert not {p for p in writes[1] if not p.startswith("weights/ckpt")}, sorted(writes[1])  # ... process 1 none

    rows, want = read_results_csv(multi / "results.csv"), read_results_csv(single / "results.csv")
    assert [r["epoch"] for r in rows] == [1]
    for key in ("train/loss", "metrics/accuracy_top1", "metrics/accuracy_top5", "val/loss", "lr/pg0"):
        assert rows[0][key] == want[0][key], key
    arrays = []
    for run in (multi, single):
        ck = Checkpointer(run / "weights" / "ckpt")
        assert ck.latest_step() == 6  # 48 images, global batch 8
        arrays.append(ck.read_arrays())
        ck.close()
    a, b = arrays
    assert a.keys() == b.keys() and len(a) > 100
    for k in b:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    exported = load_checkpoint(multi / "weights" / "last.npz").variables  # process 0's export: the EMA weights
    for path, value in jax.tree_util.tree_leaves_with_path(exported):
        key = jax.tree_util.keystr(path)
        np.testing.assert_array_equal(np.asarray(value), a["['ema_" + key[2:]], err_msg=key)
