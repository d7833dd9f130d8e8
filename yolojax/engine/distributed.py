"""Multi-process (multi-host) runs on JAX's own runtime: ``jax.distributed``, no home-made launcher.

    from yolojax.engine.distributed import maybe_initialize
    maybe_initialize(config)      # first thing, before any JAX computation; a no-op for single-process runs

Where the process group comes from, first match wins:

1. config keys ``coordinator_address`` ("host:port" of process 0), ``num_processes``, ``process_id``;
2. environment ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``;
3. a cluster JAX detects by itself: SLURM (``srun`` with more than one task), Open MPI (``mpirun -n N``),
   a multi-host Cloud TPU slice: ``jax.distributed.initialize()`` with no arguments.
   ``YOLOJAX_DISTRIBUTED=0`` turns this detection off, ``=1`` forces it.

Timeouts (bounded, so nothing waits forever): joining the group ``YOLOJAX_DIST_INIT_TIMEOUT`` seconds (default
300, or config ``dist_init_timeout``); a process that stops sending heartbeats for
``YOLOJAX_DIST_HEARTBEAT_TIMEOUT`` seconds (default 100, or config ``dist_heartbeat_timeout``) is declared dead
and JAX's coordination service terminates every other process with "Terminating process because the JAX
distributed service detected fatal errors. This most likely indicates that another task died". A collective
whose peer vanished fails at once on CPU (gloo "Connection reset by peer"); ``collective_failure_guard``
(around the whole run in ``yolojax.train.train_and_evaluate``) turns that into a ``DistributedError`` naming what
happened, which the entry points print as one ``ERROR:`` paragraph.

A program's first collective also waits for its peers, but gloo (CPU) gives up after a fixed 30 s, and compile
times of the same program differ between processes (load, a warm or cold compile cache) by more than that.
So the trainer compiles a program ahead of time and calls ``wait_for_peers``, which returns when every process
has got there (a barrier of the coordination service, not a device collective, bounded by
``YOLOJAX_DIST_COMPILE_TIMEOUT`` seconds, default 3600).

CPU collectives across processes use gloo (``jax_cpu_collectives_implementation``, set here when unset).
"""
from __future__ import annotations

import contextlib
import itertools
import os

import jax
import numpy as np
from jax._src import distributed as _d  # its client: barriers, and whether this process joined on older jax

DEFAULT_INIT_TIMEOUT = 300
DEFAULT_HEARTBEAT_TIMEOUT = 100
DEFAULT_COMPILE_TIMEOUT = 3600


class DistributedError(RuntimeError):
    """The multi-process group could not be formed, or a peer process failed."""


def _cfg(config, key):
    if config is None:
        return None
    try:
        value = config.get(key) if hasattr(config, "get") else getattr(config, key, None)
    except (AttributeError, KeyError):
        return None
    return None if value in ("", None) else value


def _auto_cluster(environ) -> str | None:
    """The cluster JAX can auto-detect here with more than one process, else None."""
    if int(environ.get("SLURM_NTASKS", environ.get("SLURM_NPROCS", "1")) or 1) > 1 and "SLURM_JOB_ID" in environ:
        return "SLURM"
    if int(environ.get("OMPI_COMM_WORLD_SIZE", "1") or 1) > 1:
        return "Open MPI"
    if "," in environ.get("TPU_WORKER_HOSTNAMES", ""):
        return "Cloud TPU"
    return None


def distributed_settings(config=None, environ=None) -> dict | None:
    """The ``jax.distributed.initialize`` keyword arguments for this process, or None for a single process.

    Returns {"coordinator_address", "num_processes", "process_id"} (explicit settings), or {} (let JAX detect
    the cluster), plus "source": where they came from; raises ``DistributedError`` on an incomplete setting."""
    env = os.environ if environ is None else environ
    explicit = {
        "coordinator_address": (_cfg(config, "coordinator_address"), "JAX_COORDINATOR_ADDRESS"),
        "num_processes": (_cfg(config, "num_processes"), "JAX_NUM_PROCESSES"),
        "process_id": (_cfg(config, "process_id"), "JAX_PROCESS_ID"),
    }
    from_config = any(v is not None for v, _ in explicit.values())
    values = {k: (v if from_config else env.get(name) or None) for k, (v, name) in explicit.items()}
    source = "config" if from_config else "environment (JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID)"
    if any(v is not None for v in values.values()):
        if values["coordinator_address"] is None:
            raise DistributedError(
                f"Multi-process settings from the {source} give num_processes/process_id but no coordinator "
                f"address. Set coordinator_address (or JAX_COORDINATOR_ADDRESS) to 'host:port' of process 0, the "
                f"same on every process.")
        try:
            n = int(values["num_processes"]) if values["num_processes"] is not None else None
            pid = int(values["process_id"]) if values["process_id"] is not None else None
        except ValueError:
            raise DistributedError(f"num_processes and process_id must be integers; got {values['num_processes']!r} "
                                   f"and {values['process_id']!r} (from the {source}).") from None
        addr = str(values["coordinator_address"])
        if ":" not in addr:
            raise DistributedError(f"coordinator_address={addr!r} (from the {source}) needs a port: 'host:port', e.g. "
                                   f"'10.0.0.1:1234', the same on every process.")
        if n is None or pid is None:
            if _auto_cluster(env) is None:
                raise DistributedError(
                    f"coordinator_address={addr!r} is set (from the {source}) but num_processes and process_id are "
                    f"not, and no cluster (SLURM, Open MPI) is detected to supply them. Set both on every process: "
                    f"num_processes=N and process_id=0..N-1.")
        elif n < 1 or not 0 <= pid < n:
            raise DistributedError(f"process_id={pid} is not in 0..{n - 1} for num_processes={n} (from the "
                                   f"{source}). Give every process a distinct id below num_processes.")
        if n == 1:
            return None
        return {"coordinator_address": addr, "num_processes": n, "process_id": pid, "source": source}
    force = env.get("YOLOJAX_DISTRIBUTED", "").strip().lower()
    if force in ("0", "false", "no", "off"):
        return None
    cluster = _auto_cluster(env)
    if cluster or force in ("1", "true", "yes", "on"):
        return {"source": f"{cluster or 'cluster'} auto-detection"}
    return None


def _timeout(config, key: str, env_name: str, default: int, environ) -> int:
    value = _cfg(config, key) or environ.get(env_name) or default
    try:
        return max(int(float(value)), 1)
    except ValueError:
        raise DistributedError(f"{key} / {env_name} must be a number of seconds; got {value!r}.") from None


def maybe_initialize(config=None, *, environ=None) -> bool:
    """Join the multi-process group when the config/environment/cluster asks for one; True if joined.

    Call before any other JAX use. Idempotent: returns True if ``jax.distributed`` is already initialised."""
    env = os.environ if environ is None else environ
    if _is_initialized():
        return True
    settings = distributed_settings(config, env)
    if settings is None:
        return False
    source = settings.pop("source")
    init_timeout = _timeout(config, "dist_init_timeout", "YOLOJAX_DIST_INIT_TIMEOUT", DEFAULT_INIT_TIMEOUT, env)
    heartbeat = _timeout(config, "dist_heartbeat_timeout", "YOLOJAX_DIST_HEARTBEAT_TIMEOUT",
                         DEFAULT_HEARTBEAT_TIMEOUT, env)
    if jax.config.jax_cpu_collectives_implementation is None:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    who = (f"process {settings['process_id']} of {settings['num_processes']} via coordinator "
           f"{settings['coordinator_address']}" if settings else "the cluster's process group")
    try:
        jax.distributed.initialize(**settings, initialization_timeout=init_timeout,
                                   heartbeat_timeout_seconds=heartbeat)
    except Exception as e:  # noqa: BLE001 - every failure here is the same user-facing problem
        raise DistributedError(
            f"Could not join the multi-process run as {who} (settings from the {source}) within {init_timeout} s: "
            f"{type(e).__name__}: {e}. Check that every process is started with the same coordinator address and "
            f"num_processes and a distinct process_id, that process 0 runs on the coordinator host and its port "
            f"is free there and reachable from the others, and that maybe_initialize runs before any other JAX "
            f"call.") from e
    return True


def _is_initialized() -> bool:
    fn = getattr(jax.distributed, "is_initialized", None)
    if fn is not None:
        return bool(fn())

    return getattr(_d.global_state, "client", None) is not None


def local_value(tree):
    """Host copy (numpy) of replicated global arrays, also when they span several processes."""
    def one(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return np.asarray(x.addressable_data(0))
        return np.asarray(x)

    return jax.tree.map(one, tree)


_BARRIER_IDS = itertools.count()


def wait_for_peers(what: str, timeout_s: float | None = None) -> None:
    """Return when every process of the run has called ``wait_for_peers`` as often as this one (a no-op in a
    single-process run). A barrier of JAX's coordination service: no device collective, so no 30 s gloo limit.
    Raises ``DistributedError`` after ``timeout_s`` seconds (default ``YOLOJAX_DIST_COMPILE_TIMEOUT`` or 3600)
    or when a peer died meanwhile."""
    if jax.process_count() == 1:
        return

    if timeout_s is None:
        timeout_s = float(os.environ.get("YOLOJAX_DIST_COMPILE_TIMEOUT", DEFAULT_COMPILE_TIMEOUT))
    barrier = f"yolojax_barrier_{next(_BARRIER_IDS)}"  # every process calls in the same order: same ids
    try:
        _d.global_state.client.wait_at_barrier(barrier, int(timeout_s * 1000))
    except Exception as e:  # noqa: BLE001 - a timeout and a dead peer are the same user-facing problem
        raise DistributedError(
            f"Process {jax.process_index()} of {jax.process_count()} waited for the others to finish {what}, "
            f"in vain ({type(e).__name__}: {str(e).splitlines()[0][:300]}; limit {timeout_s:.0f} s). Another process "
            f"most likely died or is stuck; see its log. Restart all processes with --config.resume=<run dir> to "
            f"continue from the last checkpoint.") from e


_COLLECTIVE_FAILURE_MARKERS = ("gloo", "connection reset", "coordination service", "heartbeat", "task died",
                               "unavailable", "socket closed", "nccl", "barrier")


@contextlib.contextmanager
def collective_failure_guard(what: str = "training"):
    """Turn the runtime error of a collective whose peer process died into a ``DistributedError``."""
    try:
        yield
    except DistributedError:
        raise
    except Exception as e:  # noqa: BLE001 - re-raised unless it is a peer failure
        text = str(e).lower()
        if jax.process_count() > 1 and any(m in text for m in _COLLECTIVE_FAILURE_MARKERS):
            raise DistributedError(
                f"Process {jax.process_index()} of {jax.process_count()} stopped {what}: a collective with the other "
                f"processes failed ({type(e).__name__}: {str(e).splitlines()[0][:300]}). Another process most "
                f"likely died or lost its network; see its log. Restart all processes with "
                f"--config.resume=<run dir> to continue from the last checkpoint.") from e
        raise
