"""Apple silicon: ``device="mps"`` uses an installed Metal PJRT plugin (jax-metal's METAL platform or jax-mps).

Limits (both community plugins): float32 only (``dtype`` is forced to float32), one device, and some XLA ops
fall back or are missing; the CPU backend always works (``device=cpu``).
"""
from __future__ import annotations

import jax

from yolojax.engine.devices import DeviceError

PLATFORMS = ("METAL", "metal", "mps", "MPS")


def metal_devices() -> list:
    for name in PLATFORMS:
        try:
            devs = jax.devices(name)
        except RuntimeError:
            continue
        if devs:
            return devs[:1]
    raise DeviceError(
        "device='mps' but no Apple Metal backend is installed for JAX. On Apple silicon install a Metal PJRT plugin "
        "that matches your jax version (jax-mps 0.10.x for jax 0.10 on Python 3.11, 0.11.x for jax 0.11; jax-metal "
        "targets much older jax releases), then check that jax.devices() lists it. Training on the CPU works "
        "everywhere: device=cpu.")
