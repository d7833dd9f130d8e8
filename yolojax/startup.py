"""The entry points' shared start-up (``yolojax`` command, ``python -m yolojax.val``; ``python -m yolojax.train``):

    begin(restart=argv is None)          # first thing: huge-page malloc restart (see yolojax.hostenv), absl flags
    prepare_jax(deterministic=...)       # before JAX's first operation: CPU split, compile cache, XLA determinism
    return exit_code(run, extra_user_errors=(...))   # user errors -> "ERROR: ..." on stderr and exit status 2

Nothing here imports JAX at module level; ``prepare_jax`` imports it when called.
"""
from __future__ import annotations

import sys
from typing import Callable

from yolojax.errors import user_error_types
from yolojax.hostenv import restart_with_hugepages


def begin(*, restart: bool) -> None:
    """With ``restart``, replace the process once by itself with glibc's huge-page malloc tunable (a no-op when it
    is set, off Linux or with ``YOLOJAX_HUGEPAGES=0``); then mark absl's flags parsed, since Grain worker
    processes read them and the entry points parse their own arguments."""
    if restart:
        restart_with_hugepages()
    try:
        from absl import flags

        flags.FLAGS.mark_as_parsed()
    except Exception:  # pragma: no cover - absl missing or already parsed: nothing to mark
        pass


def prepare_jax(*, deterministic: bool | None = None) -> None:
    """Before JAX's first operation: ``YOLOJAX_CPU_DEVICES=N`` splits the CPU (default: no split), the compile cache
    (``~/.cache/yolojax/jax`` unless ``YOLOJAX_COMPILE_CACHE`` says otherwise), the check of
    ``YOLOJAX_STEP_STORE`` and, unless ``deterministic`` is None, XLA's deterministic GPU ops flag."""
    from yolojax.engine.devices import enable_compile_cache, use_cpu_cores, use_deterministic_ops
    from yolojax.engine.executables import store_enabled

    use_cpu_cores()
    enable_compile_cache()
    store_enabled()  # a bad YOLOJAX_STEP_STORE fails here, before any data or model is built
    if deterministic is not None:
        use_deterministic_ops(deterministic)


def exit_code(run: Callable[[], object], *, extra_user_errors: tuple[type, ...] = ()) -> int:
    """Call ``run``; 0 when it returns, 2 after printing ``ERROR: <message>`` to stderr when it raises a user error
    (``yolojax.errors.user_error_types`` or ``extra_user_errors``, checked first: they need no heavy imports).
    Any other exception propagates with its traceback."""
    try:
        run()
    except Exception as e:  # noqa: BLE001 - user errors become one paragraph, the rest propagate
        if not isinstance(e, extra_user_errors):
            if not isinstance(e, user_error_types()):
                raise
        print(f"ERROR: {e}", file=sys.stderr)
        return 2
    return 0
