"""``device`` semantics (spec §3.16), mesh/sharding helpers, Metal/TPU messages and multi-host settings.

The pytest process has one CPU device; GPU forms are checked against stand-in GPU lists (objects with the
``id``/``platform``/``process_index`` a jax Device has), which is all ``select_devices`` reads. Four real CPU
devices are covered in test_multidevice.py (subprocess).
"""
from __future__ import annotations

import os

import types

import jax
import numpy as np
import pytest

from yolojax.engine import devices as devmod
from yolojax.engine.devices import (DeviceError, check_batch_divides, data_sharding, make_mesh, parse_device_ids,
                                    replicated, select_devices)
from yolojax.engine.distributed import (DistributedError, collective_failure_guard,
                                        distributed_settings, maybe_initialize)


def fake_gpus(n, processes=1):
    return [types.SimpleNamespace(id=p * 100 + i, platform="gpu", process_index=p)
            for p in range(processes) for i in range(n)]


@pytest.fixture
def two_gpus(monkeypatch):
    gpus = fake_gpus(2)
    monkeypatch.setattr(devmod, "_gpus", lambda: gpus)
    return gpus


# ---- forms ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("device, expected", [
    (None, None), ("", None), ("none", None), (0, [0]), ("0", [0]), ("0,1", [0, 1]), ([0, 1], [0, 1]),
    ((1, 0), [1, 0]), ("cuda:0", [0]), ("cuda:0,1", [0, 1]), (" 0, 1 ", [0, 1]), ("[0,1]", [0, 1]),
    (["cuda:1"], [1]), (np.int64(1), [1]), ("cpu", "cpu"), ("CPU", "cpu"), ("mps", "mps"), ("tpu", "tpu"),
    ("all", "all"), ("cuda", "gpu"), ("gpu", "gpu"),
])
def test_parse_device_forms(device, expected):
    assert parse_device_ids(device) == expected


@pytest.mark.parametrize("device", ["gpu0", "cuda:x", "0,,a", "1.5", 1.5, "-1", -1, "0,0", [0, 0], [], "cpu,0",
                                    True, ["a"], "metal0"])
def test_bad_device_strings_raise(device):
    with pytest.raises(DeviceError, match="device="):
        parse_device_ids(device)


def test_unset_device_is_first_gpu_else_cpu(two_gpus, monkeypatch):
    assert select_devices(None) == [two_gpus[0]]
    assert select_devices("") == [two_gpus[0]]
    monkeypatch.setattr(devmod, "_gpus", lambda: [])
    monkeypatch.setattr(devmod, "_platform_devices", lambda p: [])
    assert select_devices(None) == jax.devices("cpu")


def test_gpu_ids_pick_those_gpus(two_gpus):
    assert select_devices(0) == [two_gpus[0]]
    assert select_devices("1") == [two_gpus[1]]
    assert select_devices("0,1") == two_gpus
    assert select_devices([1, 0]) == [two_gpus[1], two_gpus[0]]
    assert select_devices("cuda:0") == [two_gpus[0]]
    assert select_devices("all") == two_gpus
    assert select_devices("cuda") == two_gpus


@pytest.mark.parametrize("device", [2, "2", "0,2", [0, 1, 2], "cuda:3"])
def test_gpu_id_that_does_not_exist(two_gpus, device):
    with pytest.raises(DeviceError, match=r"does not exist; this machine has 2 GPU\(s\) \(valid indices 0..1\)"):
        select_devices(device)


@pytest.mark.parametrize("device", [0, "0", "0,1", [0, 1], "cuda:0", "cuda"])
def test_gpu_request_without_gpu(device):
    assert not devmod._gpus()  # this CPU machine
    with pytest.raises(DeviceError, match="no GPU"):
        select_devices(device)


def test_cpu_all_and_unset_on_this_cpu_machine():
    cpus = jax.devices("cpu")
    assert select_devices("cpu") == cpus
    assert select_devices("all") == cpus  # no accelerator: all = the CPU devices
    assert select_devices(None) == cpus  # no accelerator: every CPU device (N with YOLOJAX_CPU_DEVICES=N)


@pytest.mark.parametrize("batch,n,expected", [(16, 2, 2), (15, 2, 1), (15, 8, 5), (12, 8, 6), (16, 8, 8), (1, 8, 1),
                                              (7, 1, 1), (3, 8, 3)])
def test_largest_divisor_at_most(batch, n, expected):
    from yolojax.engine.devices import largest_divisor_at_most

    k = largest_divisor_at_most(batch, n)
    assert k == expected
    assert batch % k == 0 and k <= n and not any(batch % j == 0 for j in range(k + 1, n + 1))


_CORES_SCRIPT = r"""
import json, os, sys
import jax
from yolojax.engine.devices import DeviceError, select_devices, use_cpu_cores
out = {}
try:
    out["set"] = use_cpu_cores(int(sys.argv[1]) if sys.argv[1] != "auto" else None)
except DeviceError as e:
    out["error"] = str(e)
out["cpus"] = len(jax.devices("cpu"))
out["unset"] = len(select_devices(None))
try:
    out["late"] = use_cpu_cores(3)  # JAX has run: too late, nothing changes
except DeviceError:
    out["late"] = None
out["cpus_after"] = len(jax.devices("cpu"))
print(json.dumps(out))
"""


@pytest.mark.parametrize("arg,env,expected", [
    ("2", {}, {"set": 2, "cpus": 2, "unset": 2}),
    ("auto", {}, {"set": None, "cpus": 1, "unset": 1}),  # the default: JAX's one CPU device
    ("auto", {"YOLOJAX_CPU_DEVICES": "3"}, {"set": 3, "cpus": 3, "unset": 3}),
    ("2", {"YOLOJAX_CPU_DEVICES": "1"}, {"set": None, "cpus": 1, "unset": 1}),
    ("2", {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}, {"set": None, "cpus": 4, "unset": 4}),
    ("2", {"JAX_NUM_CPU_DEVICES": "3"}, {"set": None, "cpus": 3, "unset": 3}),
    ("2", {"YOLOJAX_CPU_DEVICES": "two"}, {"cpus": 1, "unset": 1}),
])
def test_use_cpu_cores_in_a_fresh_process(arg, env, expected):
    """N XLA host devices (argument or YOLOJAX_CPU_DEVICES, none by default), set before JAX's first operation;
    the user's own XLA/JAX choice wins; late calls are no-ops; a malformed YOLOJAX_CPU_DEVICES is a clear error."""
    import json
    import subprocess
    import sys

    full = {k: v for k, v in os.environ.items() if k not in ("YOLOJAX_CPU_DEVICES", "XLA_FLAGS", "JAX_NUM_CPU_DEVICES")}
    full.update(env, JAX_PLATFORMS="cpu")
    r = subprocess.run([sys.executable, "-c", _CORES_SCRIPT, arg], env=full, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    for k, v in expected.items():
        assert out[k] == v, (k, out)
    assert out["late"] is None and out["cpus_after"] == out["cpus"]
    if env.get("YOLOJAX_CPU_DEVICES") == "two":
        assert "YOLOJAX_CPU_DEVICES='two' is not a whole number" in out["error"]


_CACHE_SCRIPT = r"""
import json, os, sys
import jax
from yolojax.engine.devices import enable_compile_cache
d = enable_compile_cache(sys.argv[1])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)  # store even this tiny program
jax.jit(lambda x: x * 2 + 1)(jax.numpy.arange(3.0)).block_until_ready()
print(json.dumps({"dir": d, "files": sorted(os.listdir(d)) if d else []}))
"""


@pytest.mark.parametrize("arg,env,where", [
    ("auto", {}, "home"),  # the default: ~/.cache/yolojax/jax
    ("auto", {"YOLOJAX_COMPILE_CACHE": "{tmp}/from_env"}, "{tmp}/from_env"),
    ("{tmp}/given", {}, "{tmp}/given"),
    ("auto", {"YOLOJAX_COMPILE_CACHE": "off"}, None),
    ("", {}, None),
])
def test_compile_cache_in_a_fresh_process(tmp_path, arg, env, where):
    """The persistent compilation cache is on by default (in the user's cache dir), JAX really writes compiled
    programs there when it is enabled before the first compile, and it can be pointed elsewhere or switched off."""
    import json
    import subprocess
    import sys

    fill = lambda v: v.replace("{tmp}", str(tmp_path))  # noqa: E731
    home = tmp_path / "home"
    full = {k: v for k, v in os.environ.items() if k not in ("YOLOJAX_COMPILE_CACHE", "JAX_COMPILATION_CACHE_DIR")}
    full.update({k: fill(v) for k, v in env.items()}, HOME=str(home), JAX_PLATFORMS="cpu")
    r = subprocess.run([sys.executable, "-c", _CACHE_SCRIPT, fill(arg)], env=full, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    expected = str(home / ".cache" / "yolojax" / "jax") if where == "home" else (fill(where) if where else None)
    assert out["dir"] == expected
    if expected:
        assert out["files"], "JAX wrote nothing to the cache directory"


_THRESHOLD_SCRIPT = r"""
import sys
import jax
from yolojax.engine.devices import enable_compile_cache
enable_compile_cache(sys.argv[1])
print(jax.config.jax_persistent_cache_min_compile_time_secs)
"""


@pytest.mark.parametrize("arg,env,expected", [
    ("{tmp}/c", {}, devmod.MIN_COMPILE_SECONDS),  # yolojax's: a run's small setup programs are stored too
    ("{tmp}/c", {"JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "2.5"}, 2.5),  # the user's choice wins
    ("off", {}, 1.0),  # no cache: JAX's settings as they were
])
def test_compile_cache_stores_programs_over_a_tenth_of_a_second(tmp_path, arg, env, expected):
    import subprocess
    import sys

    full = {k: v for k, v in os.environ.items()
            if k not in ("YOLOJAX_COMPILE_CACHE", "JAX_COMPILATION_CACHE_DIR",
                         "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS")}
    full.update(env, JAX_PLATFORMS="cpu")
    r = subprocess.run([sys.executable, "-c", _THRESHOLD_SCRIPT, arg.replace("{tmp}", str(tmp_path))], env=full,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert float(r.stdout.strip().splitlines()[-1]) == expected
    assert devmod.MIN_COMPILE_SECONDS < 1.0  # below JAX's default, or the setting would change nothing


def test_compile_cache_keeps_a_directory_already_set(tmp_path):
    before = jax.config.jax_compilation_cache_dir  # the test suite's own (conftest)
    assert before and devmod.enable_compile_cache(str(tmp_path / "other")) == before
    assert jax.config.jax_compilation_cache_dir == before and not (tmp_path / "other").exists()


def test_tpu_and_mps_absent_give_install_hints(monkeypatch):
    with pytest.raises(DeviceError, match="no TPU.*jax\\[tpu\\]"):
        select_devices("tpu")
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    with pytest.raises(DeviceError, match="(?s)no Apple Metal backend.*jax-mps.*JAX_PLATFORMS='cpu'.*device=cpu"):
        select_devices("mps")


def test_tpu_and_metal_present(monkeypatch):
    tpus = [types.SimpleNamespace(id=i, platform="tpu", process_index=0) for i in range(4)]
    metal = [types.SimpleNamespace(id=0, platform="METAL", process_index=0)]
    real = jax.devices

    def devices(platform=None):
        table = {"tpu": tpus, "METAL": metal}
        if platform in table:
            return table[platform]
        if platform in ("gpu", "cuda", "rocm", "metal", "mps", "MPS"):
            raise RuntimeError(f"Unknown backend {platform}")
        return real(platform)

    monkeypatch.setattr(jax, "devices", devices)
    assert select_devices("tpu") == tpus
    assert select_devices(None) == tpus[:1]  # no GPU: first TPU core
    assert select_devices("all") == tpus
    assert select_devices("mps") == metal
    from yolojax.engine.metal import is_metal

    assert is_metal(metal[0]) and not is_metal(tpus[0])


def test_multi_process_gpu_ids_are_per_host(monkeypatch):
    gpus = fake_gpus(2, processes=2)  # host 0: ids 0, 1; host 1: ids 100, 101
    monkeypatch.setattr(devmod, "_gpus", lambda: gpus)
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    assert [d.id for d in select_devices("1")] == [1, 101]
    assert [d.id for d in select_devices("0,1")] == [0, 1, 100, 101]
    assert [d.id for d in select_devices(None)] == [0, 1, 100, 101]  # multi-process: every device
    with pytest.raises(DeviceError, match="GPU 2 does not exist on process 0"):
        select_devices("0,2")


# ---- batch split, mesh ----------------------------------------------------------------------------------

@pytest.mark.parametrize("batch, n, hint", [(10, 4, "batch=8 or batch=12"), (3, 2, "batch=2 or batch=4"),
                                            (2, 4, "batch=4"), (7, 8, "batch=8")])
def test_indivisible_batch(batch, n, hint):
    with pytest.raises(DeviceError, match=f"batch={batch} does not divide over {n} devices.*Use {hint}"):
        check_batch_divides(batch, n)


@pytest.mark.parametrize("batch, n", [(8, 1), (8, 2), (8, 4), (16, 8), (3, 1)])
def test_divisible_batch(batch, n):
    check_batch_divides(batch, n)  # no error


def test_mesh_and_shardings_place_batch_rows():
    mesh = make_mesh(jax.devices("cpu"))
    assert mesh.axis_names == ("data",) and mesh.devices.size == len(jax.devices("cpu"))
    x = jax.device_put(np.arange(8.0).reshape(4, 2), data_sharding(mesh))
    assert x.sharding.spec == jax.sharding.PartitionSpec("data")
    assert replicated(mesh).spec == jax.sharding.PartitionSpec()
    np.testing.assert_array_equal(np.asarray(x), np.arange(8.0).reshape(4, 2))


def test_mesh_groups_devices_by_process(monkeypatch):
    devs = [types.SimpleNamespace(id=i, process_index=p) for i, p in [(0, 0), (100, 1), (1, 0), (101, 1)]]
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    monkeypatch.setattr(devmod, "Mesh", lambda arr, axes: (list(arr), axes))
    arr, axes = make_mesh(devs)
    assert [d.id for d in arr] == [0, 1, 100, 101] and axes == ("data",)
    with pytest.raises(DeviceError, match="same number of devices"):
        make_mesh(devs[:3])


# ---- multi-host settings (no process group is started here) ----------------------------------------------

def test_no_distributed_settings_for_a_single_process():
    assert distributed_settings(None, {}) is None
    assert distributed_settings({"coordinator_address": None, "num_processes": None, "process_id": None}, {}) is None
    assert maybe_initialize(None, environ={}) is False
    # a one-task SLURM job is a single process
    assert distributed_settings(None, {"SLURM_JOB_ID": "1", "SLURM_NTASKS": "1"}) is None


def test_distributed_settings_from_config_then_environment():
    cfg = {"coordinator_address": "10.0.0.1:1234", "num_processes": 4, "process_id": 3}
    s = distributed_settings(cfg, {"JAX_COORDINATOR_ADDRESS": "other:1", "JAX_NUM_PROCESSES": "2",
                                   "JAX_PROCESS_ID": "1"})
    assert s == {**cfg, "source": "config"}
    s = distributed_settings(None, {"JAX_COORDINATOR_ADDRESS": "h:9", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "1"})
    assert (s["coordinator_address"], s["num_processes"], s["process_id"]) == ("h:9", 2, 1)
    assert "environment" in s["source"]
    assert distributed_settings({"coordinator_address": "h:1", "num_processes": 1, "process_id": 0}, {}) is None


@pytest.mark.parametrize("env, source", [
    ({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "8"}, "SLURM"), ({"OMPI_COMM_WORLD_SIZE": "2"}, "Open MPI"),
    ({"TPU_WORKER_HOSTNAMES": "a,b"}, "Cloud TPU"), ({"YOLOJAX_DISTRIBUTED": "1"}, "cluster"),
])
def test_cluster_auto_detection_calls_initialize_without_arguments(env, source):
    assert distributed_settings(None, env) == {"source": f"{source} auto-detection"}
    if source != "cluster":  # YOLOJAX_DISTRIBUTED=0 turns the detection off
        assert distributed_settings(None, {**env, "YOLOJAX_DISTRIBUTED": "0"}) is None


@pytest.mark.parametrize("cfg, match", [
    ({"num_processes": 2, "process_id": 0}, "no coordinator address"),
    ({"coordinator_address": "10.0.0.1", "num_processes": 2, "process_id": 0}, "needs a port"),
    ({"coordinator_address": "h:1", "num_processes": 2, "process_id": 2}, r"process_id=2 is not in 0..1"),
    ({"coordinator_address": "h:1", "num_processes": "two", "process_id": 0}, "must be integers"),
    ({"coordinator_address": "h:1"}, "num_processes and process_id are not"),
])
def test_incomplete_distributed_settings(cfg, match):
    with pytest.raises(DistributedError, match=match):
        distributed_settings(cfg, {})


def test_initialize_failure_is_a_clear_error(monkeypatch):
    calls = {}

    def fail(**kw):
        calls.update(kw)
        raise RuntimeError("DEADLINE_EXCEEDED: Barrier timed out")

    monkeypatch.setattr(jax.distributed, "initialize", fail)
    monkeypatch.setattr("yolojax.engine.distributed._is_initialized", lambda: False)
    cfg = {"coordinator_address": "127.0.0.1:1", "num_processes": 2, "process_id": 1}
    with pytest.raises(DistributedError, match=r"(?s)process 1 of 2 via coordinator 127.0.0.1:1.*within 7 s.*"
                                               r"Barrier timed out.*same coordinator address"):
        maybe_initialize(cfg, environ={"YOLOJAX_DIST_INIT_TIMEOUT": "7", "YOLOJAX_DIST_HEARTBEAT_TIMEOUT": "9"})
    assert calls == {**cfg, "initialization_timeout": 7, "heartbeat_timeout_seconds": 9}


def test_collective_failure_guard(monkeypatch):
    with pytest.raises(ValueError, match="gloo"):  # single process: errors pass through unchanged
        with collective_failure_guard():
            raise ValueError("gloo all-reduce failed")
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    with pytest.raises(DistributedError, match="(?s)Another process most likely died.*resume"):
        with collective_failure_guard():
            raise RuntimeError("UNKNOWN: Gloo all-reduce failed: Read error: Connection reset by peer")
    with pytest.raises(KeyError):  # unrelated errors are not rewritten
        with collective_failure_guard():
            raise KeyError("boxes")


def test_trainer_turns_a_dead_peer_into_a_one_line_error(monkeypatch, capsys):
    """``train_and_evaluate`` runs the loop under ``collective_failure_guard``: in a multi-process run a collective
    whose peer died ends the entry point with exit status 2 and one ``ERROR:`` paragraph, not a traceback."""
    from yolojax import config as cfgmod
    from yolojax.engine import loop
    from yolojax.startup import exit_code
    from yolojax.train import train_and_evaluate

    def peer_died(*args, **kwargs):
        raise RuntimeError("UNKNOWN: Gloo all-reduce failed: Read error: Connection reset by peer")

    monkeypatch.setattr(loop, "train", peer_died)
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    assert exit_code(lambda: train_and_evaluate(cfgmod.default_config())) == 2
    err = capsys.readouterr().err
    assert err.startswith("ERROR: Process 0 of 2 stopped training: a collective with the other processes failed")
    assert "Another process most likely died" in err and "Traceback" not in err


def test_compiler_options_keep_cpu_convolutions_off_ynnpack(monkeypatch):
    """devices.compiler_options: accepted by this jaxlib, the conv gradient it compiles runs no convolution through
    a YNNPACK fusion and equals XLA's default one to float rounding; XLA_FLAGS naming the option turns it off,
    and it is CPU only."""
    import re

    import jax
    import jax.numpy as jnp

    from yolojax.engine import devices

    devices.compiler_options.cache_clear()
    opts = devices.compiler_options()
    assert opts == devices.XLA_CPU_OPTIONS == devices.compiler_options("cpu")
    assert devices.compiler_options("gpu") is None  # a CPU compiler option: other platforms keep XLA's defaults

    def grads(x, w):
        conv = lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)),  # noqa: E731
                                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return jax.grad(lambda x, w: jnp.sum(conv(x, w) ** 2), argnums=(0, 1))(x, w)

    def convs_in_ynn_fusions(compiled) -> int:
        text = compiled.as_text()
        bodies = dict(re.findall(r"^(%[\w.\-]+) [^\n]*\{\n(.*?)\n\}", text, re.M | re.S))
        return sum("convolution(" in bodies.get(c, "")
                   for c in re.findall(r"%ynn_fusion\S* = [^\n]*calls=(%[\w.\-]+)", text))

    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(2, 16, 16, 32)).astype(np.float32))  # a size XLA hands to YNNPACK by default
    w = jnp.asarray(rng.normal(size=(3, 3, 32, 32)).astype(np.float32))
    ours = jax.jit(grads, compiler_options=opts).lower(x, w).compile()
    assert "convolution(" in ours.as_text() and convs_in_ynn_fusions(ours) == 0
    for a, b in zip(ours(x, w), jax.jit(grads)(x, w)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-3)
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution")
    devices.compiler_options.cache_clear()
    try:
        assert devices.compiler_options() is None
    finally:
        monkeypatch.delenv("XLA_FLAGS")
        devices.compiler_options.cache_clear()
