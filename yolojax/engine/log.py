"""The run's console output: one process (the first) prints, so a multi-host run prints each line once."""
from __future__ import annotations

import jax


def log(*args) -> None:
    """``print`` on process 0 only, flushed (lines interleave correctly with the progress line and subprocesses)."""
    if jax.process_index() == 0:
        print(*args, flush=True)
