"""AutoBatch (``batch=-1``: 60 % of the accelerator's memory; ``0 < batch < 1``: that fraction of it).

As Ultralytics 8.2.103's ``autobatch``: the memory of one training step is measured at batch 1, 2, 4, 8 and 16, a
line is fitted through it, and the batch whose predicted memory is the fraction of the memory available is taken
(a size that could not be measured caps it at the size before; an implausible fit, < 1 or > 1024, gives the default
16 with a warning). On a CPU (or Apple Metal) there is nothing to measure: the default 16, with a warning.

Here the measure is the compiled train step's own memory analysis (arguments + outputs − donated + temporaries) on
one device, the sizes compiled side by side in threads (one per two CPU cores); "available" is the device
allocator's limit less what is in use. The batch found is per device: the global batch is that times the number of
devices (data parallel).
"""
from __future__ import annotations

import concurrent.futures
import os
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

DEFAULT_FRACTION = 0.6
DEFAULT_BATCH = 16
PROBE_SIZES = (1, 2, 4, 8, 16)
PREFIX = "AutoBatch: "


def wants_autobatch(batch) -> bool:
    """``batch=-1`` or a fraction in (0, 1)."""
    b = float(batch)
    return b == -1 or 0.0 < b < 1.0


def memory_fraction(batch) -> float:
    b = float(batch)
    return b if 0.0 < b < 1.0 else DEFAULT_FRACTION


def fit_batch(sizes: Sequence[int], used: Sequence[float | None], available: float, fraction: float,
              default: int = DEFAULT_BATCH) -> tuple[int, str]:
    """The batch whose step uses ``fraction`` of ``available`` bytes, from ``used[i]`` bytes measured at ``sizes[i]``
    (None: that size failed). Returns (batch, "" or why the default was taken).

    A line through the measured points (in order, up to the first failure or size over ``available``) gives
    ``b = (available * fraction - intercept) / slope``; a failed size caps b at the size before it; b < 1 or > 1024
    (a flat or falling line) gives ``default``."""
    points = []
    for size, mem in zip(sizes, used):
        if mem is None or not 0 < mem < available:
            break
        points.append((size, mem))
    if len(points) < 2:
        return default, f"{len(points)} batch size(s) measured, a line needs 2"
    slope, intercept = np.polyfit(*zip(*points), deg=1)
    if slope <= 0:
        return default, "the measured memory does not grow with the batch"
    b = int((available * fraction - intercept) / slope)
    failed = next((i for i, mem in enumerate(used) if mem is None), None)
    if failed is not None and b >= sizes[failed]:
        b = sizes[max(failed - 1, 0)]
    if b < 1 or b > 1024:
        return default, f"the fit gives batch {b}, outside 1..1024"
    return b, ""


def available_bytes(device) -> float | None:
    """The device allocator's limit less its bytes in use (None: a CPU, or a device that does not report them)."""
    if device.platform == "cpu":
        return None
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if not stats or "bytes_limit" not in stats:
        return None
    return float(stats["bytes_limit"] - stats.get("bytes_in_use", 0))


def step_bytes(compiled) -> int:
    """Device memory of one call of a compiled function: arguments + outputs − donated (aliased) + temporaries."""
    m = compiled.memory_analysis()
    return int(m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes + m.temp_size_in_bytes)


def train_batch_spec(batch: int, imgsz: int, max_boxes: int) -> dict:
    """Abstract training batch (square uint8 images, padded boxes) for compiling the step."""
    S = jax.ShapeDtypeStruct
    return {"images": S((batch, imgsz, imgsz, 3), jnp.uint8), "boxes": S((batch, max_boxes, 4), jnp.float32),
            "classes": S((batch, max_boxes), jnp.int32), "mask": S((batch, max_boxes), bool)}


def measure(step: Callable, state, sizes: Sequence[int], imgsz: int, max_boxes: Callable[[int], int] | None,
            device, *, batch_spec: Callable[[int], dict] | None = None) -> list[float | None]:
    """Bytes of ``step(state, batch)`` compiled for ``device`` at each batch size (None where compiling failed).
    ``state``: the train state (arrays or ShapeDtypeStructs); ``batch_spec(b)``: the abstract batch of size b
    (default: a detection batch of ``imgsz`` images with ``max_boxes(b)`` padded boxes)."""
    spec = batch_spec or (lambda b: train_batch_spec(b, imgsz, max_boxes(b)))
    sharding = jax.sharding.SingleDeviceSharding(device)
    state = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), state)
    fn = jax.jit(step, donate_argnums=0)

    def one(b):
        batch = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
                             spec(b))
        try:
            return float(step_bytes(fn.lower(state, batch).compile()))
        except Exception:  # noqa: BLE001 - a size that cannot be compiled caps the batch (fit_batch)
            return None

    threads = min(len(sizes), max(1, (os.cpu_count() or 1) // 2))  # XLA compiles outside the GIL
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        return list(pool.map(one, sizes))


def auto_batch(batch, devices, *, imgsz: int, make_state: Callable, step: Callable,
               max_boxes: Callable[[int], int] | None = None, log: Callable[[str], None] = print,
               batch_spec: Callable[[int], dict] | None = None) -> int:
    """The global batch for ``batch`` (-1 or a fraction) on ``devices``: per-device batch × device count.
    ``make_state()``: a train state for the measurement (built only on an accelerator); the probe batches are
    ``batch_spec(b)`` (default: detection batches with ``max_boxes(b)`` boxes)."""
    fraction = memory_fraction(batch)
    device = devices[0]
    log(f"{PREFIX}Computing optimal batch size for imgsz={imgsz} at {fraction * 100:.1f}% of the accelerator memory.")
    available = available_bytes(device)
    if available is None:
        log(f"{PREFIX}WARNING measuring needs a GPU or TPU that reports its memory ({device.platform} does not); "
            f"using the default batch size {DEFAULT_BATCH}.")
        return DEFAULT_BATCH
    gib = 1 << 30
    log(f"{PREFIX}{device} {available / gib:.2f}G available")
    used = measure(step, make_state(), PROBE_SIZES, imgsz, max_boxes, device, batch_spec=batch_spec)
    b, why = fit_batch(PROBE_SIZES, used, available, fraction)
    if why:
        log(f"{PREFIX}WARNING {why}; using the default batch size {DEFAULT_BATCH}.")
        return DEFAULT_BATCH
    total = b * len(devices)
    log(f"{PREFIX}Using batch-size {total} ({b} per device on {len(devices)} device(s)), "
        f"{fraction * 100:.0f}% of {available / gib:.2f}G per device")
    return total
