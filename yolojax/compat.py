"""The one switch between the two Ultralytics behaviours yolojax reproduces: ``compat="v8"`` (Ultralytics 8.2.103,
the default: the code that produced the published YOLOv8 weights) and ``compat="current"`` (Ultralytics 8.4)."""
from __future__ import annotations

COMPAT_MODES = ("v8", "current")


def check_compat(compat) -> str:
    """``compat`` when it is one of ``COMPAT_MODES``; otherwise a ValueError naming the value and both modes."""
    if compat not in COMPAT_MODES:
        raise ValueError(f"compat={compat!r} is not a known behaviour; use one of {', '.join(COMPAT_MODES)} "
                         "('v8' = Ultralytics 8.2.103, the default; 'current' = Ultralytics 8.4).")
    return compat
