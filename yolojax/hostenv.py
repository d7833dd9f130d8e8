"""The training entry points' host-allocator setting: glibc malloc with transparent huge pages.

On the CPU, XLA allocates its temporary buffer (hundreds of MB) for every execution of the train step and frees it
afterwards; glibc maps such a block fresh each time, so every step pays a page fault per 4 KiB page. With glibc's
``glibc.malloc.hugetlb=1`` tunable the block is mapped with transparent huge pages instead (the gain is recorded in
benchmarks/RESULTS.md).

glibc reads tunables only when a process starts, so the entry points (the ``yolojax`` command and
``python -m yolojax.train``) restart themselves once with the tunable added, before JAX loads. Nothing
happens when ``GLIBC_TUNABLES`` already sets ``glibc.malloc.hugetlb``, off Linux, or with ``YOLOJAX_HUGEPAGES=0``.
In your own process (``YOLO(...).train()``, ``train_and_evaluate``) set ``GLIBC_TUNABLES=glibc.malloc.hugetlb=1``
yourself before starting Python. This module imports nothing heavy.
"""
from __future__ import annotations

import os
import sys
from typing import Mapping

TUNABLE = "glibc.malloc.hugetlb=1"
SWITCH = "YOLOJAX_HUGEPAGES"  # 0 / off / false / no: leave the allocator alone
ORIGINAL = "YOLOJAX_ORIGINAL_GLIBC_TUNABLES"  # what GLIBC_TUNABLES was before the restart (for child processes)


def tuned_env(environ: Mapping[str, str] | None = None, platform: str | None = None) -> dict[str, str] | None:
    """``environ`` with the tunable added, or None when there is nothing to change (see the module docstring)."""
    environ = os.environ if environ is None else environ
    platform = sys.platform if platform is None else platform
    if not platform.startswith("linux") or environ.get(SWITCH, "1").strip().lower() in ("0", "off", "false", "no"):
        return None
    current = environ.get("GLIBC_TUNABLES", "")
    if "glibc.malloc.hugetlb" in current:
        return None
    env = dict(environ)
    env["GLIBC_TUNABLES"] = f"{current}:{TUNABLE}" if current else TUNABLE
    env[ORIGINAL] = current
    return env


def restart_with_hugepages() -> None:
    """Replace this process by the same command with the tunable set (same PID, stdio and arguments); returns only
    when nothing needs changing or the restart is impossible. Call it first thing in a ``__main__``."""
    env = tuned_env()
    argv = getattr(sys, "orig_argv", None)
    if env is None or not argv or not sys.executable:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, [sys.executable, *argv[1:]], env)
    except OSError:  # e.g. a frozen or unusual interpreter: run on without the tunable
        return


def active() -> bool:
    """Whether this process runs with glibc's huge-page malloc tunable."""
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    return sys.platform.startswith("linux") and any(f"glibc.malloc.hugetlb={v}" in tunables for v in "12")


def original_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """``environ`` as it was before ``restart_with_hugepages`` added the tunable (for a comparison's other side)."""
    env = dict(os.environ if environ is None else environ)
    if ORIGINAL in env:
        original = env.pop(ORIGINAL)
        if original:
            env["GLIBC_TUNABLES"] = original
        else:
            env.pop("GLIBC_TUNABLES", None)
    return env
