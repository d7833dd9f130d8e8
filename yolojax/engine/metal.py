"""Apple silicon: ``device="mps"`` uses an installed Metal PJRT plugin (jax-metal's METAL platform or jax-mps).

Limits (both community plugins): float32 only (train with ``dtype=float32``; bfloat16/AMP is not used on
Metal), one device (no data parallelism), and some XLA ops fall back or are missing, so a step may fail
to compile on one plugin version and work on another. The CPU backend always works (``device=cpu``).
"""
from __future__ import annotations

import os

import jax

PLATFORMS = ("METAL", "metal", "mps", "MPS")


def is_metal(device) -> bool:
    """Whether ``device`` (a jax Device) belongs to a Metal plugin (then: float32 only)."""
    return str(getattr(device, "platform", "")).lower() in ("metal", "mps")


def metal_devices() -> list:
    """The Metal device (one), or [] when no Metal plugin is installed (see :func:`missing_plugin_message`)."""
    for name in PLATFORMS:
        try:
            devs = jax.devices(name)
        except RuntimeError:
            continue
        if devs:
            return devs[:1]
    return []


def missing_plugin_message() -> str:
    """What to install (and which ``JAX_PLATFORMS`` setting hides a plugin) when :func:`metal_devices` is empty."""
    forced = os.environ.get("JAX_PLATFORMS", "")
    hint = (f" JAX_PLATFORMS={forced!r} is set in the environment and hides other backends: unset it or add the "
            f"plugin's platform." if forced and not any(p.lower() in forced.lower() for p in PLATFORMS) else "")
    return (
        "device='mps' but no Apple Metal backend is installed for JAX. On Apple silicon install a Metal PJRT plugin "
        "that matches your jax version (jax-mps 0.10.x for jax 0.10 on Python 3.11, 0.11.x for jax 0.11; jax-metal "
        "targets much older jax releases), then check that jax.devices() lists it." + hint + " Training on the CPU "
        "works everywhere: device=cpu.")
