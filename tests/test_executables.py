"""Compiled train steps stored on disk (``engine.executables``) and loaded by the next run through ``StepCompiles``:
the same result, bit for bit; a key that changes with what the program is made from and stays with what is not."""
from __future__ import annotations

import dataclasses
import pathlib
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from conftest import script_env
from multihost_worker import BATCH, synthetic_batch, tiny_setup
from yolojax.engine import executables
from yolojax.engine.devices import data_sharding, make_mesh, replicated
from yolojax.engine.executables import ExecutableStore, executable_key, from_yolojax
from yolojax.engine.loop import StepCompiles, _jitted_train_step
from yolojax.engine.state import create_train_state

TESTS = pathlib.Path(__file__).resolve().parent
MESH = make_mesh(jax.devices()[:1])
SHAPES = {"images": (BATCH, 64, 64, 3)}


def _state():
    return jax.device_put(create_train_state(*tiny_setup()), replicated(MESH))


def _batches(n: int):
    return [jax.device_put(synthetic_batch(i), data_sharding(MESH)) for i in range(n)]


_RUN = r"""
import json, sys
import numpy as np
from absl import flags
flags.FLAGS.mark_as_parsed()
from yolojax.engine.devices import enable_compile_cache
enable_compile_cache(sys.argv[1])  # an empty JAX cache per test: each program is compiled, or loaded from the store
import jax
sys.path.insert(0, sys.argv[3])
from multihost_worker import BATCH, synthetic_batch, tiny_setup
from test_val_compile_ahead import _compiles as count_compiles
from yolojax.data.dataset import DetectionDataset
from yolojax.data.loader import ValLoader
from yolojax.engine.devices import data_sharding, make_mesh, replicated
from yolojax.engine.executables import store_for_run
from yolojax.engine.loop import StepCompiles, _jitted_train_step
from yolojax.engine.state import create_train_state
from yolojax.engine.validate import Validator
mesh = make_mesh(jax.devices()[:1])
state = jax.device_put(create_train_state(*tiny_setup()), replicated(mesh))
compiles = StepCompiles(_jitted_train_step(mesh, True), store_for_run())
for i in range(3):
    state, _, _ = compiles.step(state, jax.device_put(synthetic_batch(i), data_sharding(mesh)),
                                {"images": (BATCH, 64, 64, 3)})
out = {f"state{i}": np.asarray(x) for i, x in enumerate(jax.tree.leaves(state))}
loader = ValLoader(DetectionDataset.from_config(sys.argv[4], "val", imgsz=64, verbose=False), batch_size=4, rect=True)
# conf 1e-9: the young model's scores (~1e-4) pass, so there are boxes to compare
validator = Validator(state.model, loader, dict(enumerate("abc")), conf=1e-9, confusion=False,
                      keep_predictions=True)  # the 6 classes of shapes_small on a 3-class model: no confusion matrix
result = []
val_compiles = count_compiles(lambda: result.append(validator(state.ema_variables)))
for k, (index, boxes, scores, classes) in enumerate(result[0].predictions):
    out[f"pred{k}"] = np.concatenate([[index], boxes.ravel(), scores, classes.astype(np.float64)])
np.savez(sys.argv[2], **out)
print("VAL_COMPILES", val_compiles, len(loader.shapes))
"""


def _run(tmp_path, name: str, shapes_small) -> tuple[str, dict]:
    """One run in its own process with its own empty JAX cache and the store under ``tmp_path``: its output and
    arrays (the final state's leaves, a validation's predictions)."""
    cache = tmp_path / f"jax_{name}"
    store = tmp_path / "store"
    cache.mkdir()
    if store.exists():  # the store is shared between the runs: it lives beside each run's own JAX cache
        (cache / "yolojax-steps").symlink_to(store, target_is_directory=True)
    env = {k: v for k, v in script_env().items() if k not in ("JAX_COMPILATION_CACHE_DIR", "YOLOJAX_COMPILE_CACHE")}
    env["YOLOJAX_STEP_STORE"] = "on"  # the suite turns it off elsewhere (conftest)
    proc = subprocess.run([sys.executable, "-c", _RUN, str(cache), str(tmp_path / f"{name}.npz"), str(TESTS),
                           str(shapes_small)], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    if not store.exists() and (cache / "yolojax-steps").is_dir():
        (cache / "yolojax-steps").rename(store)
    return proc.stdout, dict(np.load(tmp_path / f"{name}.npz"))


@pytest.mark.slow
def test_the_next_run_loads_the_stored_steps_and_trains_and_validates_bit_identically(tmp_path, shapes_small):
    first_out, first = _run(tmp_path, "first", shapes_small)
    assert "compiled train step for images (8, 64, 64, 3)" in first_out
    stored = sorted((tmp_path / "store").glob("*.bin"))
    val_compiles, shapes = map(int, first_out.split("VAL_COMPILES")[1].split())
    assert len(stored) == 1 + shapes and val_compiles >= shapes  # the train step and an eval step per image shape

    second_out, second = _run(tmp_path, "second", shapes_small)
    assert "loaded train step for images (8, 64, 64, 3)" in second_out and "(compiled by an earlier run; 1 shape(s)" \
        in second_out
    assert second_out.split("VAL_COMPILES")[1].split()[0] == "0"  # the eval steps were loaded too
    assert first.keys() == second.keys() and any(k.startswith("pred") for k in first)
    for k in first:
        np.testing.assert_array_equal(first[k], second[k], err_msg=k)


def test_compile_events_tell_a_real_compile_from_jax_s_caches():
    before = jax.config.jax_persistent_cache_min_compile_time_secs
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)  # even this small program is written
    try:
        salt = float(time.time_ns() % 1_000_003)  # a program JAX's persistent cache has never seen

        def f(x):
            return jax.numpy.sin(x * salt) + salt

        x = jax.numpy.arange(4.0)
        with executables._compile_events() as first:
            jax.jit(f).lower(x).compile()
        with executables._compile_events() as again:  # the same program from JAX's in-memory cache
            jax.jit(f).lower(x).compile()
        jax.clear_caches()
        with executables._compile_events() as from_disk:  # and now from its persistent cache
            jax.jit(f).lower(x).compile()
    finally:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", before)
    assert first == ["compiled"] and again == [] and from_disk == ["cache hit"]


def test_a_broken_file_is_removed_and_not_used(tmp_path):
    store = ExecutableStore(tmp_path)
    state = _state()
    args = (jax.tree.leaves(state), _batches(1)[0])
    key = executable_key("test", jax.tree.structure(state), args, compiler_options=None)
    (tmp_path / f"{key}.bin").write_bytes(b"not an executable")
    assert store.load(key, args, MESH.devices.flat) is None
    assert not (tmp_path / f"{key}.bin").exists()


def test_only_what_yolojax_defines_counts_as_covered_by_its_source():
    class MyObjective:  # defined here: the source hash does not cover it
        pass

    assert from_yolojax(None, create_train_state, type(tiny_setup()[0])) and not from_yolojax(MyObjective)


def test_the_store_keeps_its_newest_files(tmp_path, monkeypatch):
    monkeypatch.setattr(executables, "KEEP", 2)
    store = ExecutableStore(tmp_path)
    compiled = _jitted_train_step(MESH, True).jitted.lower(
        jax.tree.structure(_state()), jax.tree.leaves(_state()), _batches(1)[0]).compile()
    for i, key in enumerate("abc"):
        store.save(key, compiled)
        (tmp_path / f"{key}.bin").touch()  # distinct times, in order
    assert sorted(p.stem for p in tmp_path.glob("*.bin")) == ["b", "c"]


def _key(state=None, batch=None):
    state = state if state is not None else _state()
    batch = batch if batch is not None else _batches(1)[0]
    return executable_key("test", jax.tree.structure(state), (jax.tree.leaves(state), batch), compiler_options=None)


def test_the_key_follows_what_the_program_is_made_of(monkeypatch):
    base = _key()
    assert _key() == base  # computed again: the same
    model, variables, hyper = tiny_setup()

    def placed(**changes):
        return jax.device_put(create_train_state(model, variables, dataclasses.replace(hyper, **changes)),
                              replicated(MESH))

    assert _key(state=placed()) == base
    other_gain = placed(box=5.0)  # a static setting
    assert _key(state=other_gain) != base
    adam = placed(optimizer="AdamW")  # another optimizer
    assert _key(state=adam) != base
    # learning rate, momentum, weight decay, the schedule's length: arrays in the state, the same program
    other_lr = dataclasses.replace(hyper.schedule, lr0=0.05, momentum=0.8, epochs=7, nb=3)  # and a longer run
    runtime = placed(schedule=other_lr, weight_decay=1e-3)
    assert _key(state=runtime) == base
    smaller = {k: v[:4] for k, v in synthetic_batch(0).items()}  # another batch shape
    assert _key(batch=smaller) != base
    monkeypatch.setattr(executables, "_source_hash", lambda: "edited")  # yolojax's code changed
    assert _key() != base


def test_a_process_reuses_a_program_it_made(tmp_path):
    from yolojax.engine.executables import Programs

    salt = float(time.time_ns() % 1_000_003)
    programs = Programs(lambda x: x * salt + 1.0, "scaled")
    x = jax.numpy.arange(3.0)
    first, loaded = programs.make((), (x,), ExecutableStore(tmp_path))
    with executables._compile_events() as events:
        again, reloaded = programs.make((), (x,), ExecutableStore(tmp_path))
    assert not loaded and reloaded and again is first and events == []
    np.testing.assert_array_equal(again(x), np.arange(3.0) * salt + 1.0)


@pytest.mark.parametrize("value,on", [(None, True), ("on", True), ("1", True), ("True", True), ("off", False),
                                      (" 0 ", False), ("false", False)])
def test_the_store_switch(tmp_path, monkeypatch, value, on):
    environ = {} if value is None else {executables.STORE_ENV: value}
    assert executables.store_enabled(environ) is on
    monkeypatch.setattr(executables, "store_enabled", lambda: on)
    store = executables.store_for_run()  # the suite's JAX cache is on (conftest)
    assert (store is not None) is on
    if on:
        assert store.directory == pathlib.Path(jax.config.jax_compilation_cache_dir) / "yolojax-steps"


@pytest.mark.parametrize("name,value,message", [
    ("YOLOJAX_STEP_STORE", "maybe", "YOLOJAX_STEP_STORE='maybe' is not a switch: give on or off (1/0 and true/false "
                                    "work too)."),
    ("YOLOJAX_CPU_DEVICES", "two", "YOLOJAX_CPU_DEVICES='two' is not a whole number (the CPU devices to split the "
                                   "cores into; 1 turns the split off)."),
])
def test_a_bad_environment_switch_is_one_line_before_anything_is_built(tmp_path, name, value, message):
    """``python -m yolojax.train`` checks the environment's switches first, as the ``yolojax`` command does."""
    env = {**script_env(), name: value}
    proc = subprocess.run([sys.executable, "-m", "yolojax.train", "--config=configs/shapes.py",
                           f"--config.project={tmp_path}"], env=env, capture_output=True, text=True, timeout=300,
                          cwd=TESTS.parent)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == [f"ERROR: {message}"]
    assert not any(tmp_path.iterdir())  # no run directory was made
