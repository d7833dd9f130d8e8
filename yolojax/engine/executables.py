"""Compiled train and validation steps kept on disk, found without tracing: a run loads what an earlier run compiled.

JAX's persistent compilation cache (``engine.devices.enable_compile_cache``) skips XLA's compile, but it finds its
entry by the lowered program, so every run first traces and lowers the step: for a YOLOv8 train step that is
seconds of Python (Flax's module calls under ``value_and_grad``, then MLIR), paid again by every run. This store
keys a serialized executable on everything the program is made from instead:

* yolojax's own source (every ``.py`` file of the package) and the versions of jax, jaxlib, flax and optax;
* the machine: backend, platform version, device kinds and ids (and those the program runs on), the CPU model and
  its instruction-set flags;
* ``XLA_FLAGS``, the jit's compiler options and JAX's configuration values;
* the arguments: their tree, static fields included, and each leaf's shape, dtype and sharding; with the jit's
  static arguments (the eval step's model and settings).

No run setting needs to be in the key: the train step is a pure function of (state, batch), and everything about a
run that shapes it is in the state's static fields (the model, the optimizer - built from its name and the
parameter groups -, ``TrainHyper``) or in the arguments' shapes; learning rates, momentum and weight decay are
arrays in the state. So a run that changes only the data, the schedule or the epochs loads the earlier program.

A program whose static parts come from outside yolojax (a model class or objective of your own) is never stored:
their source is not part of the key. Nothing here changes a result: a loaded executable is the one that was
compiled, byte for byte. Only a program XLA compiled in the request that made it is stored: one that JAX's
persistent cache supplied does not serialize whole (a copy loaded later lacks some of its kernels). So a program
whose key is not stored yet is compiled under a name made of its key, which JAX's cache keys on too: it holds that
program only if this key was compiled before and its file has gone since (it then serves it, unstored, as before).
A file that fails to load is removed and the step is compiled as usual. The store lives beside the compilation
cache (``<cache dir>/yolojax-steps``; off with it, or alone with ``YOLOJAX_STEP_STORE=off``) and keeps its ``KEEP``
newest files; a process also keeps what it made or loaded (``Programs.made``), for its next run.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.metadata
import os
import pathlib
import pickle
import re
import threading
from typing import Any

import jax
from jax.experimental import serialize_executable

from yolojax.config.errors import ConfigError

KEEP = 16
STORE_ENV = "YOLOJAX_STEP_STORE"
_SWITCH = {"on": True, "1": True, "true": True, "": True, "off": False, "0": False, "false": False}
_CACHE_HIT = "/jax/compilation_cache/cache_hits"
_BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"  # around each request to XLA, cache hits included
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
_PACKAGE = pathlib.Path(__file__).resolve().parents[1]


class ExecutableStore:
    """Serialized executables in ``directory``, one file per key (``<key>.bin``)."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = pathlib.Path(directory)

    def load(self, key: str, args: tuple, devices) -> jax.stages.Compiled | None:
        """The executable stored under ``key`` for a call with ``args`` on ``devices``, or None."""
        path = self.directory / f"{key}.bin"
        try:
            blob, out_tree = pickle.loads(path.read_bytes())
            in_tree = jax.tree.structure((args, {}))
            compiled = serialize_executable.deserialize_and_load(blob, in_tree, out_tree,
                                                                 execution_devices=list(devices))
        except FileNotFoundError:
            return None
        except Exception:  # noqa: BLE001 - a torn or foreign file: compile instead, and let the next run store it
            path.unlink(missing_ok=True)
            return None
        os.utime(path)  # the newest files are the ones kept
        return compiled

    def save(self, key: str, compiled: jax.stages.Compiled) -> None:
        """Store ``compiled`` under ``key`` (written whole, then renamed: readers never see part of a file)."""
        try:
            blob, _, out_tree = serialize_executable.serialize(compiled)
            self.directory.mkdir(parents=True, exist_ok=True)
            tmp = self.directory / f".{key}.{os.getpid()}.tmp"
            tmp.write_bytes(pickle.dumps((blob, out_tree)))
            os.replace(tmp, self.directory / f"{key}.bin")
        except Exception:  # noqa: BLE001 - not serializable here (e.g. constants in the program), or no room
            return
        self._trim()

    def _trim(self) -> None:
        files = sorted(self.directory.glob("*.bin"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in files[KEEP:]:
            old.unlink(missing_ok=True)


class Programs:
    """The compiled programs of ``jax.jit(fun, **jit_kwargs)``, one per request. Without a store, JAX's own caches
    serve (one jitted function, shared by every request). With one, a program is loaded when an earlier run stored
    it, else compiled under a function named after its key and stored. ``name`` (a Python identifier) and
    ``static`` (what ``fun`` closes over, as text) go into the key beside what ``executable_key`` reads from the
    arguments."""

    def __init__(self, fun, name: str, *, static: str = "", **jit_kwargs):
        self.fun, self.name, self.static, self.jit_kwargs = fun, name, static, jit_kwargs
        self.jitted = jax.jit(fun, **jit_kwargs)
        self.made: dict[str, jax.stages.Compiled] = {}  # by key: a later request in this process reuses it

    def make(self, static_args: tuple, args: tuple, store: ExecutableStore | None = None
             ) -> tuple[jax.stages.Compiled, bool]:
        """(the program for ``jitted(*static_args, *args)``, whether it was loaded); it is called with ``args``."""
        if store is None:
            return self.jitted.lower(*static_args, *args).compile(), False
        key = executable_key(f"{self.name} {self.static}", static_args, args,
                             compiler_options=self.jit_kwargs.get("compiler_options"))
        program = self.made.get(key) or store.load(key, args, _devices(args))
        if program is not None:
            self.made[key] = program
            return program, True
        # JAX's persistent cache keys on the program's name too: named after the key, the program is compiled here,
        # never taken from that cache (which may hold it from an earlier version of this code), so it can be stored
        jitted = jax.jit(_named(self.fun, f"{self.name}_{key[:16]}"), **self.jit_kwargs)
        with _compile_events() as events:
            program = jitted.lower(*static_args, *args).compile()
        if events == ["compiled"]:
            store.save(key, program)
        self.made[key] = program
        return program, False


def _named(fun, name: str):
    def program(*args, **kwargs):
        return fun(*args, **kwargs)

    program.__name__ = program.__qualname__ = name
    return program


@contextlib.contextmanager
def _compile_events():
    """A list that collects, on this thread while the block runs, "compiled" for each program handed to XLA and
    "cache hit" for each that JAX's persistent cache supplied. A program JAX found in its in-memory cache adds
    neither."""
    events, thread = [], threading.get_ident()

    def on_event(event: str, **_):
        if event == _CACHE_HIT and threading.get_ident() == thread:
            events.append("cache hit")

    def on_duration(event: str, seconds: float, **_):
        if event == _BACKEND_COMPILE and threading.get_ident() == thread:
            events.append("compiled")

    jax.monitoring.register_event_listener(on_event)
    jax.monitoring.register_event_duration_secs_listener(on_duration)
    try:
        yield events
    finally:
        jax.monitoring.unregister_event_listener(on_event)
        jax.monitoring.unregister_event_duration_listener(on_duration)
        if "cache hit" in events and "compiled" in events:
            events.remove("compiled")  # the hit is inside that request


def signature(args) -> tuple:
    """What a program is compiled for: the arguments' tree and each leaf's shape and dtype (sharding aside)."""
    leaves, tree = jax.tree.flatten(args)
    return tree, tuple((getattr(x, "shape", ()), getattr(x, "dtype", type(x))) for x in leaves)


def _devices(args) -> list:
    """The devices the arguments live on, in their mesh's order."""
    for x in jax.tree.leaves(args):
        sharding = getattr(x, "sharding", None)
        if sharding is not None:
            mesh = getattr(sharding, "mesh", None)
            return list(mesh.devices.flat) if mesh is not None else sorted(sharding.device_set, key=lambda d: d.id)
    return jax.devices()[:1]


def store_enabled(environ=os.environ) -> bool:
    """``$YOLOJAX_STEP_STORE``: on (the default) or off; anything else is a ``ConfigError``."""
    setting = environ.get(STORE_ENV, "on").strip().lower()
    if setting not in _SWITCH:
        raise ConfigError(f"{STORE_ENV}={environ[STORE_ENV]!r} is not a switch: give on or off (1/0 and true/false "
                          f"work too).")
    return _SWITCH[setting]


def store_for_run() -> ExecutableStore | None:
    """The store beside JAX's compilation cache, or None: the cache is off, ``$YOLOJAX_STEP_STORE`` is off, or the
    run spans several processes (each would need the others' executables at the same moment; they compile together
    as before)."""
    cache_dir = jax.config.jax_compilation_cache_dir
    if not store_enabled() or not cache_dir or jax.process_count() > 1:
        return None
    return ExecutableStore(pathlib.Path(cache_dir) / "yolojax-steps")


def from_yolojax(*objects: Any) -> bool:
    """Whether every object (a class, function or None) is defined in yolojax: only then does the source hash
    cover it."""
    return all(o is None or getattr(o, "__module__", "").split(".")[0] == "yolojax" for o in objects)


def executable_key(name: str, static: Any, args: tuple, *, compiler_options: dict | None) -> str:
    """The key of the program ``name`` compiled for ``static`` (the jit's static arguments) and ``args``."""
    leaves, tree = jax.tree.flatten(args)
    parts = (
        "yolojax-step-v1", name, _source_hash(), _versions(), _machine(),
        tuple(sorted((d.platform, d.device_kind, d.id) for d in jax.devices())), tuple(d.id for d in _devices(args)),
        os.environ.get("XLA_FLAGS", ""), repr(sorted((compiler_options or {}).items())),
        repr(sorted((k, repr(v)) for k, v in jax.config.values.items() if "_cache" not in k)),  # not where caches are
        _ADDRESS.sub("", str(static)), _ADDRESS.sub("", str(tree)),
        tuple((str(getattr(x, "shape", ())), str(getattr(x, "dtype", type(x))),
               _ADDRESS.sub("", str(getattr(x, "sharding", "")))) for x in leaves),
    )
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:40]


@functools.lru_cache(maxsize=1)
def _source_hash() -> str:
    h = hashlib.sha256()
    for path in sorted(_PACKAGE.rglob("*.py")):
        h.update(str(path.relative_to(_PACKAGE)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


@functools.lru_cache(maxsize=1)
def _versions() -> tuple:
    out = []
    for dist in ("jax", "jaxlib", "flax", "optax"):
        try:
            out.append((dist, importlib.metadata.version(dist)))
        except importlib.metadata.PackageNotFoundError:
            out.append((dist, None))
    return tuple(out)


@functools.lru_cache(maxsize=1)
def _machine() -> tuple:
    """Backend and host CPU: an XLA:CPU executable is code for the CPU it was compiled on."""
    backend = jax.devices()[0].client
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = "".join(sorted({line for line in f if line.startswith(("model name", "flags"))}))
    except OSError:
        import platform

        cpu = platform.processor() or platform.machine()
    return backend.platform, backend.platform_version, cpu
