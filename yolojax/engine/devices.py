"""Device selection (Ultralytics' ``device`` argument) and the data-parallel mesh.

    device=None / ""      first GPU if any (else TPU, else every CPU device), like Ultralytics; in a multi-process
                          run (jax.distributed) every device of every process
    device=0, "0"         GPU 0;   "0,1" / [0, 1] / "cuda:0,1": GPUs 0 and 1 (data parallel)
    device="cpu"          CPU (all CPU devices: with XLA_FLAGS=--xla_force_host_platform_device_count=N, N of them)
    device="mps"          Apple Metal PJRT plugin (see ``metal.py``);   "tpu": every TPU core
    device="all"          every accelerator (GPUs, else TPU cores, else the CPU devices);   "cuda"/"gpu": every GPU

GPU indices are *per process* (per host), as ``CUDA_VISIBLE_DEVICES`` indices are for each Ultralytics DDP
node: with 2 hosts and ``device="0,1"`` the mesh holds GPUs 0 and 1 of both hosts. The mesh lists devices
process by process, so the rows a process feeds (``TrainLoader(process_index=...)``, rows
``[p * B / P, (p + 1) * B / P)`` of every global batch) are the rows its own devices hold.

Data parallelism: one mesh axis ``data``; the global batch is split evenly over it (``data_sharding``),
parameters and optimizer state are replicated (``replicated``). BatchNorm statistics are then global-batch
statistics (synchronised BN) because ``BatchNorm`` takes plain means over the sharded batch axis; per-device
statistics, as Ultralytics DDP has, come from ``per_device_bn.make_train_step_per_device_bn``.

CPU: every yolojax ``jax.jit`` passes :func:`compiler_options`, which keeps XLA:CPU's convolutions on its own
(Eigen) kernels instead of YNNPACK; with them one XLA CPU device on all cores is the default (faster than splitting
the CPU into host devices, see benchmarks/RESULTS.md). ``use_cpu_cores(n)`` / ``YOLOJAX_CPU_DEVICES=N`` still split the CPU into N XLA host devices, data parallel (it
must run before JAX's first operation; the entry points and the ``YOLO`` facade call it, a no-op by default).
BatchNorm statistics stay global-batch statistics (``bn_sync``), so a split run equals one device to float rounding.
"""
from __future__ import annotations

import functools
import os
import platform
import re

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

import yolojax
from yolojax.engine.metal import metal_devices, missing_plugin_message

DATA_AXIS = "data"
WORDS = ("cpu", "mps", "tpu", "all", "gpu")
CPU_DEVICES_ENV = "YOLOJAX_CPU_DEVICES"


# XLA:CPU hands convolutions to YNNPACK by default; on x86 its kernels run YOLOv8's 3x3 convolutions (forward and
# both gradients) slower than XLA's own (Eigen) ones. Keep YNNPACK for dots and reductions, where it helps.
_YNN_OPTION = "xla_cpu_experimental_ynn_fusion_type"
XLA_CPU_OPTIONS = {_YNN_OPTION: "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"}


@functools.lru_cache(maxsize=4)
def compiler_options(platform: str | None = None) -> dict | None:
    """``compiler_options`` for yolojax's ``jax.jit`` calls that compile for ``platform`` (default: JAX's default
    backend): :data:`XLA_CPU_OPTIONS` on CPU; None on other platforms, where this jaxlib does not accept them, or
    where ``XLA_FLAGS`` already sets the option (yours wins)."""
    if (platform or jax.default_backend()) != "cpu" or _YNN_OPTION in os.environ.get("XLA_FLAGS", ""):
        return None
    try:
        cpu = jax.devices("cpu")[0]
        probe = jax.jit(lambda x: x + 1, compiler_options=XLA_CPU_OPTIONS)
        probe.lower(jax.device_put(np.zeros(1, np.float32), cpu)).compile()
    except Exception:  # an older/newer jaxlib without the option or its values: XLA's defaults
        return None
    return dict(XLA_CPU_OPTIONS)


def host_cores() -> int:
    """CPU cores this process may run on (its affinity mask, else ``os.cpu_count()``)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS / Windows
        return os.cpu_count() or 1


COMPILE_CACHE_ENV = "YOLOJAX_COMPILE_CACHE"
MIN_COMPILE_SECONDS = 0.1  # what the persistent cache stores: programs that took longer than this to compile
_MIN_COMPILE_ENV = "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"
_JAX_MIN_COMPILE_DEFAULT = 1.0


def enable_compile_cache(setting: str | None = "auto") -> str | None:
    """Turn on JAX's persistent compilation cache, so a run that compiles what an earlier run compiled (same model,
    shapes, devices, versions) loads it from disk instead of compiling it again.

    ``setting``: "auto" (``$YOLOJAX_COMPILE_CACHE`` if set, else ``~/.cache/yolojax/jax``), a directory, or "" /
    "off" / None for no cache (``YOLOJAX_COMPILE_CACHE=off`` too). A ``jax_compilation_cache_dir`` the user set
    already wins. JAX decides whether to use the cache at a process's first compile, so this acts only when called
    before it (the entry points call it first). Programs that took over ``MIN_COMPILE_SECONDS`` to compile are stored
    (JAX's own default, a second, would leave out a run's setup programs, which a warm run then compiles again);
    ``JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS`` or a value set in ``jax.config`` other than JAX's default wins.
    Returns the directory in use, or None."""
    current = jax.config.jax_compilation_cache_dir
    if current:
        return current
    if setting == "auto":
        setting = os.environ.get(COMPILE_CACHE_ENV, "~/.cache/yolojax/jax")
    if not setting or str(setting).lower() in ("off", "none", "false", "0"):
        return None
    path = os.path.abspath(os.path.expanduser(str(setting)))
    try:
        os.makedirs(path, exist_ok=True)
    except OSError:  # e.g. a read-only home: run without the cache rather than fail
        return None
    jax.config.update("jax_compilation_cache_dir", path)
    if (_MIN_COMPILE_ENV not in os.environ
            and jax.config.jax_persistent_cache_min_compile_time_secs == _JAX_MIN_COMPILE_DEFAULT):
        jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
    return path


def use_cpu_cores(n: int | None = None) -> int | None:
    """Make JAX's CPU backend ``n`` XLA host devices (``YOLOJAX_CPU_DEVICES`` overrides ``n``; default 1, JAX's
    own single CPU device). Returns the count set, or None when JAX was left as it was: ``n`` is 1 or unset, the
    user already chose (``--xla_force_host_platform_device_count`` in ``XLA_FLAGS``, or ``jax_num_cpu_devices``),
    or JAX has already run something (the device count is fixed from then on)."""
    env = os.environ.get(CPU_DEVICES_ENV, "").strip()
    if env:
        try:
            n = int(env)
        except ValueError:
            raise DeviceError(f"{CPU_DEVICES_ENV}={env!r} is not a whole number (the CPU devices to split the "
                              f"cores into; 1 turns the split off).") from None
        if n < 1:
            raise DeviceError(f"{CPU_DEVICES_ENV}={env!r}: give at least 1.")
    if n is None or n <= 1 or "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
        return None
    if getattr(jax.config, "jax_num_cpu_devices", -1) not in (-1, None):
        return None
    try:
        jax.config.update("jax_num_cpu_devices", int(n))
    except (RuntimeError, AttributeError, KeyError):  # too late (backends exist), or a JAX without the option
        return None
    return int(n)


DETERMINISTIC_FLAG = "--xla_gpu_deterministic_ops=true"
_DETERMINISM = {"decided": False}  # whether this process has chosen (see use_deterministic_ops)


def _backends_started() -> bool:
    try:
        from jax._src import xla_bridge

        return bool(xla_bridge.backends_are_initialized())
    except (ImportError, AttributeError):  # a JAX without the query: assume started, so nothing is changed late
        return True


def use_deterministic_ops(enabled: bool) -> bool:
    """Ultralytics' ``deterministic``: with True, XLA's deterministic GPU ops flag (``XLA_FLAGS`` gets
    ``--xla_gpu_deterministic_ops=true``: reductions and scatters in a fixed order, autotuning without
    nondeterministic kernels), so two GPU runs of one config give the same numbers. XLA reads its flags when JAX
    starts its backends, so this acts only before JAX's first operation (the entry points call it first; the
    ``YOLO`` facade when it is built). XLA:CPU is deterministic already: with JAX limited to the CPU
    (``JAX_PLATFORMS=cpu``) the flag is left out, so compiled programs keep their cache keys.
    The first call of a process decides; later calls report that decision. Returns whether the flag is in
    ``XLA_FLAGS`` now (set here or by the user, whose own setting wins)."""
    flags = os.environ.get("XLA_FLAGS", "")
    given = re.search(r"--xla_gpu_deterministic_ops(?:=(\w+))?", flags)
    if given:  # absl's spellings: a bare flag, =true/false, =1/0
        return (given.group(1) or "true").lower() in ("true", "1")
    platforms = [p.strip() for p in (jax.config.jax_platforms or "").split(",") if p.strip()]
    if (not enabled or _DETERMINISM["decided"] or (platforms and all(p == "cpu" for p in platforms))
            or _backends_started()):
        _DETERMINISM["decided"] = True
        return False
    os.environ["XLA_FLAGS"] = f"{flags} {DETERMINISTIC_FLAG}".strip()
    _DETERMINISM["decided"] = True
    return True


def environment_line(devices) -> str:
    """Ultralytics' first line, for yolojax: ``yolojax 0.1.0 🚀 Python-3.11.7 jax-0.10.2 CPU x2`` /
    ``... GPU:0,1 (NVIDIA H100 80GB HBM3)``."""
    d0 = devices[0]
    if d0.platform == "cpu":
        where = "CPU" + (f" x{len(devices)}" if len(devices) > 1 else "")
    else:
        ids = ",".join(str(getattr(d, "id", i)) for i, d in enumerate(devices))
        where = f"{d0.platform.upper()}:{ids} ({d0.device_kind})"
    return f"yolojax {yolojax.__version__} 🚀 Python-{platform.python_version()} jax-{jax.__version__} {where}"


def largest_divisor_at_most(batch: int, n: int) -> int:
    """The largest ``k <= n`` that divides ``batch`` (how many CPU devices a batch can use evenly)."""
    return max(k for k in range(1, max(1, min(n, batch)) + 1) if batch % k == 0)


class DeviceError(ValueError):
    """A device string that does not name devices present here, or a batch they cannot share evenly."""


def _platform_devices(platform: str) -> list:
    try:
        return list(jax.devices(platform))
    except RuntimeError:
        return []


def _gpus() -> list:
    return _platform_devices("gpu") or _platform_devices("cuda") or _platform_devices("rocm")


def _platforms() -> list[str]:
    return sorted({d.platform for d in jax.devices()})


def parse_device_ids(device) -> list[int] | str | None:
    """Normalise Ultralytics' forms: None/'' -> None; 'cpu'/'mps'/'tpu'/'all'/'gpu' -> that word; ids -> [ints]."""
    if device is None:
        return None
    if isinstance(device, bool):
        raise DeviceError(f"device={device!r} is not understood. Use None (auto), 'cpu', a GPU index such as 0, a "
                          f"list such as '0,1' or [0, 1], 'mps', 'tpu' or 'all'.")
    if isinstance(device, (list, tuple)):
        items = list(device)
    elif isinstance(device, (int, np.integer)):
        items = [int(device)]
    else:
        text = str(device).strip().lower().replace("cuda:", "").strip("[]() ")
        if text in ("", "none"):
            return None
        if text in WORDS or text == "cuda":
            return "gpu" if text == "cuda" else text
        items = [t for t in text.replace(" ", "").split(",") if t != ""]
    try:
        ids = [_as_index(t) for t in items]
    except (TypeError, ValueError):
        raise DeviceError(f"device={device!r} is not understood. Use None (auto), 'cpu', a GPU index such as 0, a "
                          f"list such as '0,1' or [0, 1], 'mps', 'tpu' or 'all'.") from None
    if not ids:
        raise DeviceError(f"device={device!r} names no device. Use None (auto), 'cpu', 0, '0,1', 'mps', 'tpu' "
                          f"or 'all'.")
    if any(i < 0 for i in ids) or len(set(ids)) != len(ids):
        raise DeviceError(f"device={device!r}: GPU indices must be distinct and non-negative (e.g. '0,1').")
    return ids


def _as_index(item) -> int:
    if isinstance(item, bool) or isinstance(item, float):
        raise TypeError(item)
    if isinstance(item, str):
        item = item.strip().lower().replace("cuda:", "")
        if not item.lstrip("-").isdigit():
            raise ValueError(item)
    return int(item)


def _per_process(devices: list) -> list[list]:
    """``devices`` grouped by process, each group in the order JAX lists them."""
    n = jax.process_count()
    groups = [[d for d in devices if getattr(d, "process_index", 0) == p] for p in range(n)]
    return groups


def select_devices(device=None) -> list:
    """The (global) devices a run uses, process by process; a ``DeviceError`` when they are not here.

    Single process: the listed local devices. Several processes: the same selection on every process, so
    ``device="0,1"`` on two hosts gives four devices."""
    spec = parse_device_ids(device)
    multi = jax.process_count() > 1
    if spec is None:
        accel = _gpus() or _platform_devices("tpu")
        if multi:
            return _by_process(accel or jax.devices("cpu"))
        return [accel[0]] if accel else list(jax.devices("cpu"))
    if spec == "cpu":
        return _by_process(jax.devices("cpu"))
    if spec == "mps":
        found = metal_devices()
        if not found:
            raise DeviceError(missing_plugin_message())
        return found
    if spec == "tpu":
        tpus = _platform_devices("tpu")
        if not tpus:
            raise DeviceError(f"device='tpu' but JAX sees no TPU here (jax.devices() lists platforms "
                              f"{_platforms()}). Install jax[tpu] on a TPU VM, or use device=cpu.")
        return _by_process(tpus)
    if spec in ("all", "gpu"):
        accel = _gpus() if spec == "gpu" else (_gpus() or _platform_devices("tpu"))
        if spec == "gpu" and not accel:
            raise DeviceError(f"device='cuda' but JAX sees no GPU here (platforms {_platforms()}). Install a CUDA "
                              f"build of JAX (pip install -U 'jax[cuda12]'), or use device=cpu.")
        return _by_process(accel or jax.devices("cpu"))
    gpus = _gpus()
    if not gpus:
        raise DeviceError(
            f"device={device!r} asks for GPU {spec if len(spec) > 1 else spec[0]}, but JAX sees no GPU on this machine "
            f"(platforms: {_platforms()}). Install a CUDA build of JAX (pip install -U 'jax[cuda12]') on a machine "
            f"with an NVIDIA GPU, or train on the CPU with device=cpu.")
    chosen = []
    for p, local in enumerate(_per_process(gpus)):
        missing = [i for i in spec if i >= len(local)]
        if missing:
            where = f" on process {p}" if multi else ""
            raise DeviceError(f"device={device!r}: GPU {missing[0] if len(missing) == 1 else missing} does not "
                              f"exist{where}; this machine has {len(local)} GPU(s) (valid indices 0.."
                              f"{len(local) - 1}). Use fewer indices or device=None for the first GPU.")
        chosen += [local[i] for i in spec]
    return chosen


def _by_process(devices: list) -> list:
    return [d for group in _per_process(devices) for d in group]


def local_devices(devices) -> list:
    """The subset of ``devices`` this process drives (feeds with data)."""
    me = jax.process_index()
    return [d for d in devices if getattr(d, "process_index", 0) == me]


def make_mesh(devices) -> Mesh:
    """A 1-D mesh (axis ``data``) over ``devices``, grouped by process (see the module docstring)."""
    devices = list(devices)
    if not devices:
        raise DeviceError("make_mesh: no devices given.")
    counts = {len(g) for g in _per_process(devices) if g}
    if len(counts) > 1:
        raise DeviceError(f"Every process must drive the same number of devices; got {sorted(counts)} per process. "
                          f"Give every host the same device setting.")
    return Mesh(np.asarray(_by_process(devices), dtype=object).reshape(-1), (DATA_AXIS,))


def check_batch_divides(batch: int, n_devices: int) -> None:
    """``DeviceError`` unless ``batch`` images split evenly over ``n_devices`` (Ultralytics: batch // world)."""
    if n_devices < 1:
        raise DeviceError(f"check_batch_divides: {n_devices} devices.")
    if batch < n_devices or batch % n_devices:
        lo, hi = batch - batch % n_devices, batch + n_devices - batch % n_devices
        hint = f"batch={lo} or batch={hi}" if lo else f"batch={hi}"
        raise DeviceError(f"batch={batch} does not divide over {n_devices} devices: each device must get the same "
                          f"number of images (batch is the total over all devices). Use {hint}, or fewer devices.")


def data_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over the data axis, everything else replicated."""
    return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())
