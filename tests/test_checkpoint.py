"""Checkpointer: the packed layout round-trips every leaf exactly, reads back without a template, refuses a
state of another shape with the path that differs, and still restores the one-array-per-leaf layout."""
from __future__ import annotations

import flax
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from yolojax.engine.checkpoint import CheckpointMismatchError, Checkpointer, pack


@flax.struct.dataclass
class FakeState:
    """The fields a Checkpointer saves (engine.state.TrainState's dynamic part), with mixed dtypes and shapes."""
    step: jax.Array
    params: dict
    batch_stats: dict
    opt_state: tuple
    grad_accum: dict
    last_opt_step: jax.Array
    ema_params: dict
    ema_batch_stats: dict
    ema_updates: jax.Array
    note: str = flax.struct.field(pytree_node=False, default="static")


def make_state(seed: int, conv_out: int = 4) -> FakeState:
    rng = np.random.default_rng(seed)
    f = lambda *s: jnp.asarray(rng.normal(size=s), jnp.float32)  # noqa: E731
    params = {"conv": {"kernel": f(3, 3, 2, conv_out), "bias": f(conv_out)}, "head": {"w": f(5)}}
    return FakeState(
        step=jnp.asarray(rng.integers(0, 1000), jnp.int32), params=params,
        batch_stats={"bn": {"mean": f(conv_out), "var": jnp.abs(f(conv_out))}},
        opt_state=(jnp.asarray(7, jnp.int32), jax.tree.map(lambda x: x * 0.5, params),
                   jnp.asarray(rng.normal(size=3), jnp.bfloat16)),
        grad_accum=jax.tree.map(jnp.zeros_like, params), last_opt_step=jnp.asarray(-3, jnp.int32),
        ema_params=jax.tree.map(lambda x: x + 1, params), ema_batch_stats={"bn": {"mean": f(conv_out),
                                                                                  "var": f(conv_out)}},
        ema_updates=jnp.asarray(rng.normal(), jnp.float32))


def _dynamic(state):
    return {k: getattr(state, k) for k in ("step", "params", "batch_stats", "opt_state", "grad_accum",
                                           "last_opt_step", "ema_params", "ema_batch_stats", "ema_updates")}


def test_round_trip_is_exact_and_packed(tmp_path):
    saved, template = make_state(0), make_state(1)
    ck = Checkpointer(tmp_path / "ckpt")
    ck.save(5, saved, {"epoch": 2, "loss": np.float32(1.5)})
    # one array per dtype in the state item (what makes a save fast), whatever the number of leaves
    meta = ocp.StandardCheckpointer().metadata(tmp_path / "ckpt" / "5" / "state")
    stored = getattr(meta, "item_metadata", meta)
    assert sorted(stored) == ["bfloat16", "float32", "int32"]
    n_f32 = sum(x.size for x in jax.tree.leaves(_dynamic(saved)) if x.dtype == jnp.float32)
    assert tuple(stored["float32"].shape) == (n_f32,)

    restored, meta = ck.restore(template)
    assert meta == {"epoch": 2, "loss": 1.5} and restored.note == "static"
    flat_a = jax.tree_util.tree_flatten_with_path(_dynamic(saved))[0]
    flat_b = jax.tree_util.tree_flatten_with_path(_dynamic(restored))[0]
    assert [p for p, _ in flat_a] == [p for p, _ in flat_b]
    for (path, a), (_, b) in zip(flat_a, flat_b):
        assert a.dtype == b.dtype and a.shape == b.shape, path
        np.testing.assert_array_equal(np.asarray(a, np.float64), np.asarray(b, np.float64),
                                      err_msg=jax.tree_util.keystr(path))
        assert b.sharding == jax.tree.leaves(_dynamic(template))[0].sharding

    arrays = ck.read_arrays()  # no template
    assert set(arrays) == {jax.tree_util.keystr(p) for p, _ in flat_a}
    np.testing.assert_array_equal(arrays["['params']['conv']['kernel']"], np.asarray(saved.params["conv"]["kernel"]))
    assert arrays["['opt_state'][2]"].dtype == jnp.bfloat16 and arrays["['step']"].shape == ()
    ck.close()


def test_pack_layout_offsets_hand_computed():
    vectors, layout = pack({"a": jnp.ones((2, 3)), "b": jnp.arange(4, dtype=jnp.int32), "c": jnp.zeros(5)})
    assert [(e["path"], e["dtype"], e["shape"], e["offset"]) for e in layout] == [
        ("['a']", "float32", [2, 3], 0), ("['b']", "int32", [4], 0), ("['c']", "float32", [5], 6)]
    np.testing.assert_array_equal(vectors["float32"], [1] * 6 + [0] * 5)
    np.testing.assert_array_equal(vectors["int32"], [0, 1, 2, 3])


def test_another_state_is_refused_with_the_differing_path(tmp_path):
    ck = Checkpointer(tmp_path / "ckpt")
    ck.save(1, make_state(0, conv_out=4), {})
    with pytest.raises(CheckpointMismatchError, match=r"\['batch_stats'\]\['bn'\]\['mean'\].*float32\(4,\).*float32\(8,\)"):
        ck.restore(make_state(0, conv_out=8))
    ck.close()


def test_unpacked_checkpoints_still_restore(tmp_path):
    """The layout written before the packing: one Orbax array per leaf under ``state``."""
    saved = make_state(3)
    mgr = ocp.CheckpointManager(tmp_path / "ckpt", options=ocp.CheckpointManagerOptions(create=True))
    mgr.save(4, args=ocp.args.Composite(state=ocp.args.StandardSave(_dynamic(saved)),
                                        meta=ocp.args.JsonSave({"epoch": 1})))
    mgr.wait_until_finished()
    mgr.close()
    ck = Checkpointer(tmp_path / "ckpt")
    restored, meta = ck.restore(make_state(4))
    assert meta == {"epoch": 1}
    for a, b in zip(jax.tree.leaves(_dynamic(saved)), jax.tree.leaves(_dynamic(restored))):
        np.testing.assert_array_equal(np.asarray(a, np.float64), np.asarray(b, np.float64))
    with pytest.raises(CheckpointMismatchError, match="predates packed checkpoints"):
        ck.read_arrays()
    ck.close()
