"""Device selection (Ultralytics' ``device`` argument) and the data-parallel mesh.

    device=None / ""      first GPU if any (else TPU, else CPU), like Ultralytics
    device=0, "0"         GPU 0;   "0,1" / [0, 1]: GPUs 0 and 1 (data parallel)
    device="cpu"          CPU (all CPU devices: with XLA_FLAGS=--xla_force_host_platform_device_count=N, N of them)
    device="mps"          Apple Metal PJRT plugin;   "tpu": every TPU core;   "all": every accelerator
"""
from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


class DeviceError(ValueError):
    """A device string that does not name devices present here."""


def _platform_devices(platform: str) -> list:
    try:
        return list(jax.devices(platform))
    except RuntimeError:
        return []


def _gpus() -> list:
    return _platform_devices("gpu") or _platform_devices("cuda") or _platform_devices("rocm")


def parse_device_ids(device) -> list[int] | str | None:
    """Normalise Ultralytics' forms: None/'' -> None; 'cpu'/'mps'/'tpu'/'all' -> that word; ids -> [ints]."""
    if device is None:
        return None
    if isinstance(device, (list, tuple)):
        items = list(device)
    elif isinstance(device, int):
        items = [device]
    else:
        text = str(device).strip().lower().replace("cuda:", "").strip("[]() ")
        if text in ("", "none"):
            return None
        if text in ("cpu", "mps", "tpu", "all", "gpu", "cuda"):
            return "gpu" if text == "cuda" else text
        items = [t for t in text.replace(" ", "").split(",") if t != ""]
    try:
        ids = [int(t) for t in items]
    except (TypeError, ValueError):
        raise DeviceError(f"device={device!r} is not understood. Use None (auto), 'cpu', a GPU index such as 0, a "
                          f"list such as '0,1' or [0, 1], 'mps', 'tpu' or 'all'.") from None
    if any(i < 0 for i in ids) or len(set(ids)) != len(ids):
        raise DeviceError(f"device={device!r}: GPU indices must be distinct and non-negative.")
    return ids


def select_devices(device=None) -> list:
    """The devices a run uses, in order (process-local devices for multi-host: see ``global_devices``)."""
    spec = parse_device_ids(device)
    if spec is None:
        return [(_gpus() or _platform_devices("tpu") or jax.devices("cpu"))[0]]
    if spec == "cpu":
        return jax.devices("cpu")
    if spec == "mps":
        from yolojax.engine.metal import metal_devices

        return metal_devices()
    if spec == "tpu":
        tpus = _platform_devices("tpu")
        if not tpus:
            raise DeviceError("device='tpu' but JAX sees no TPU here (jax.devices() lists "
                              f"{sorted({d.platform for d in jax.devices()})}). Install jax[tpu] on a TPU VM, or use "
                              "device=cpu.")
        return tpus
    if spec in ("all", "gpu"):
        accel = _gpus() or _platform_devices("tpu")
        if spec == "gpu" and not accel:
            raise DeviceError("device='cuda' but JAX sees no GPU here.")
        return accel or jax.devices("cpu")
    gpus = _gpus()
    if not gpus:
        raise DeviceError(
            f"device={device!r} asks for GPU {spec if len(spec) > 1 else spec[0]}, but JAX sees no GPU on this machine "
            f"(platforms: {sorted({d.platform for d in jax.devices()})}). Install a CUDA build of JAX "
            f"(pip install -U 'jax[cuda12]') on a machine with an NVIDIA GPU, or train on the CPU with device=cpu.")
    missing = [i for i in spec if i >= len(gpus)]
    if missing:
        raise DeviceError(f"device={device!r}: GPU {missing} does not exist; this machine has {len(gpus)} GPU(s) "
                          f"(valid indices 0..{len(gpus) - 1}).")
    return [gpus[i] for i in spec]


def make_mesh(devices) -> Mesh:
    return Mesh(np.asarray(devices).reshape(-1), (DATA_AXIS,))


def check_batch_divides(batch: int, n_devices: int) -> None:
    if batch % n_devices:
        lo, hi = batch - batch % n_devices, batch + n_devices - batch % n_devices
        raise DeviceError(f"batch={batch} does not divide over {n_devices} devices: each device must get the same "
                          f"number of images. Use batch={lo or hi} or batch={hi}.")


def data_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over the data axis, everything else replicated."""
    return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())
