"""Optimizer semantics against hand-computed values from the spec (§3.3-3.7)."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from yolojax.engine.optim import (Schedule, accumulate_steps, auto_optimizer, build_optimizer, ema_decay,
                                  param_group_labels, scaled_weight_decay, set_hyperparams, warmup_iterations)


def tiny_params():
    return {"model_0": {"conv": {"kernel": jnp.array([1.0, -2.0])},
                        "bn": {"scale": jnp.array([1.0]), "bias": jnp.array([0.5])}},
            "model_22": {"cv2_0_2": {"kernel": jnp.array([3.0]), "bias": jnp.array([1.0])}}}


def test_parameter_groups_follow_ultralytics():
    labels = param_group_labels(tiny_params())
    assert labels["model_0"]["conv"]["kernel"] == "weight"
    assert labels["model_0"]["bn"]["scale"] == "bn"
    assert labels["model_0"]["bn"]["bias"] == "bias"
    assert labels["model_22"]["cv2_0_2"]["bias"] == "bias"
    frozen = param_group_labels(tiny_params(), frozen_layers=(0,))
    assert frozen["model_0"]["conv"]["kernel"] == "frozen" and frozen["model_22"]["cv2_0_2"]["kernel"] == "weight"


@pytest.mark.parametrize("compat,long_run", [("v8", "SGD"), ("current", "MuSGD")])
def test_auto_optimizer_rule(compat, long_run):
    """More than 10000 iterations: SGD (8.2.103) / MuSGD (8.4), lr 0.01, momentum 0.9; else AdamW(lr_fit, 0.9)."""
    assert auto_optimizer(80, 10001, compat) == (long_run, 0.01, 0.9)
    name, lr, mom = auto_optimizer(80, 10000, compat)
    assert (name, lr, mom) == ("AdamW", 0.000119, 0.9)  # round(0.002 * 5 / 84, 6)
    assert auto_optimizer(2, 500, compat)[1] == 0.001667


@pytest.mark.parametrize("batch,acc,wd", [(16, 4, 5e-4), (8, 8, 5e-4), (24, 3, 5.625e-4), (32, 2, 5e-4),
                                          (40, 2, 6.25e-4), (48, 1, 3.75e-4), (128, 1, 1e-3)])
def test_accumulation_and_weight_decay_scaling(batch, acc, wd):
    assert accumulate_steps(64, batch) == acc  # Python round: round(64/128) = round(0.5) = 0 -> 1
    assert scaled_weight_decay(5e-4, batch, 64) == pytest.approx(wd)


def test_warmup_iterations():
    assert warmup_iterations(3.0, 10, 100) == 100  # v8-era floor of 100 iterations
    assert warmup_iterations(3.0, 50, 100) == 150
    assert warmup_iterations(0.0, 50, 100) == -1
    assert warmup_iterations(3.0, 10, 100, compat="current") == 30
    assert warmup_iterations(3.0, 10, 2, compat="current") == 10  # never covers the last epoch


def schedule(**kw):
    base = dict(lr0=0.01, lrf=0.01, epochs=3, nb=100, nw=100, momentum=0.937, warmup_momentum=0.8,
                warmup_bias_lr=0.1, accumulate=4, nbs_over_batch=4.0)
    base.update(kw)
    return Schedule(**base)


def test_warmup_and_linear_schedule_values():
    s = schedule()
    lf = lambda e: (1 - e / 3) * (1 - 0.01) + 0.01  # noqa: E731
    lrs, mom, acc = s.at(0)
    assert float(lrs["weight"]) == 0.0 and float(lrs["bias"]) == pytest.approx(0.1)
    assert float(mom) == pytest.approx(0.8) and int(acc) == 1
    lrs, mom, acc = s.at(50)  # halfway through warmup, epoch 0
    assert float(lrs["weight"]) == pytest.approx(0.005)
    assert float(lrs["bn"]) == pytest.approx(0.005)
    assert float(lrs["bias"]) == pytest.approx(0.1 + 0.5 * (0.01 - 0.1))
    assert float(mom) == pytest.approx(0.8 + 0.5 * 0.137)
    assert int(acc) == 2  # round(interp(50, [0, 100], [1, 4])) = round(2.5) = 2 (half to even)
    assert int(s.at(75)[2]) == 3  # round(3.25)
    lrs, mom, acc = s.at(100)  # last warmup iteration: epoch 1's scheduled value
    assert float(lrs["bias"]) == pytest.approx(0.01 * lf(1), rel=1e-6)
    lrs, mom, acc = s.at(150)  # after warmup: lr0 * lf(epoch), full accumulation, final momentum
    assert float(lrs["weight"]) == pytest.approx(0.01 * lf(1), rel=1e-6)
    assert float(mom) == pytest.approx(0.937) and int(acc) == 4
    assert float(s.at(250)[0]["bias"]) == pytest.approx(0.01 * lf(2), rel=1e-6)


def test_cosine_schedule_without_warmup():
    s = schedule(cos_lr=True, nw=-1)
    lf = lambda e: ((1 - math.cos(e * math.pi / 3)) / 2) * (0.01 - 1) + 1  # noqa: E731
    for ni, e in ((0, 0), (120, 1), (299, 2)):
        lrs, mom, acc = s.at(ni)
        assert float(lrs["weight"]) == pytest.approx(0.01 * lf(e), rel=1e-6)
        assert float(mom) == pytest.approx(0.937)
        assert int(acc) == 4


def test_ema_decay_ramp():
    for updates in (1, 10, 2000, 100000):
        assert float(ema_decay(updates)) == pytest.approx(0.9999 * (1 - math.exp(-updates / 2000)), rel=1e-6)


def _step(name, params, grads, lr, momentum, wd, n=1):
    tx = build_optimizer(name, lr0=lr, momentum=momentum, weight_decay=wd, labels=param_group_labels(params))
    state = tx.init(params)
    lrs = {"bias": lr, "weight": lr, "bn": lr}
    out = []
    for _ in range(n):
        state = set_hyperparams(state, lrs, momentum)
        updates, state = tx.update(grads, state, params)
        params = jax.tree.map(lambda p, u: p + u, params, updates)
        out.append(params)
    return out


def test_sgd_nesterov_matches_torch_by_hand():
    params = tiny_params()
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.5), params)
    grads["model_0"]["conv"]["kernel"] = jnp.array([0.5, 0.25])
    p1, p2 = _step("SGD", params, grads, lr=0.1, momentum=0.9, wd=0.01, n=2)
    # step 1: g = grad + wd*p = [0.51, 0.23]; buf = g; p -= lr * (g + 0.9 * buf)
    np.testing.assert_allclose(p1["model_0"]["conv"]["kernel"], [0.9031, -2.0437], rtol=1e-6)
    # step 2: g = [0.509031, 0.229563]; buf = 0.9 * [0.51, 0.23] + g; p -= lr * (g + 0.9 * buf)
    np.testing.assert_allclose(p2["model_0"]["conv"]["kernel"], [0.76507411, -2.10594697], rtol=1e-6)
    # no decay on BN weights and biases: p - lr * 1.9 * 0.5
    np.testing.assert_allclose(p1["model_0"]["bn"]["scale"], [1.0 - 0.095], rtol=1e-6)
    np.testing.assert_allclose(p1["model_22"]["cv2_0_2"]["bias"], [1.0 - 0.095], rtol=1e-6)


def test_adamw_matches_torch_by_hand():
    params = {"model_0": {"conv": {"kernel": jnp.array([1.0])}}}
    grads = {"model_0": {"conv": {"kernel": jnp.array([0.5])}}}
    (p1,) = _step("AdamW", params, grads, lr=0.01, momentum=0.9, wd=0.1)
    # torch: p *= 1 - lr*wd -> 0.999; m_hat = 0.5, v_hat = 0.25; p -= lr * m_hat / (sqrt(v_hat) + 1e-8)
    expected = 0.999 - 0.01 * 0.5 / (0.5 + 1e-8)
    np.testing.assert_allclose(p1["model_0"]["conv"]["kernel"], [expected], rtol=1e-7)


def test_frozen_parameters_never_change():
    params = tiny_params()
    grads = jax.tree.map(jnp.ones_like, params)
    tx = build_optimizer("SGD", lr0=0.1, momentum=0.9, weight_decay=0.01,
                         labels=param_group_labels(params, frozen_layers=(0,)))
    updates, _ = tx.update(grads, tx.init(params), params)
    assert all(float(jnp.abs(u).max()) == 0.0 for u in jax.tree.leaves(updates["model_0"]))
    assert float(jnp.abs(updates["model_22"]["cv2_0_2"]["kernel"]).max()) > 0


@pytest.mark.parametrize("array", [np.asarray, jnp.asarray], ids=["numpy", "jax"])
def test_fresh_train_state_holds_distinct_buffers_and_the_optimizer_init(array):
    """create_train_state (one compiled program): EMA = a copy of the weights, zero accumulator, the optimizer's own
    init; every array its own buffer (the train step donates the state, so no two leaves may share one), from host
    (init_variables) or device (loaded) weights."""
    from yolojax.engine.state import TrainHyper, create_train_state

    params = tiny_params()
    variables = jax.tree.map(array, {"params": params, "batch_stats": {"model_0": {"bn": {
        "mean": np.zeros(2, np.float32), "var": np.full(2, 0.9, np.float32)}}}})
    schedule = Schedule(lr0=0.01, lrf=0.01, epochs=1, nb=10, nw=-1, momentum=0.9, warmup_momentum=0.8,
                        warmup_bias_lr=0.1, accumulate=1, nbs_over_batch=1.0)
    state = create_train_state(None, variables, TrainHyper(schedule=schedule, optimizer="SGD"))
    leaves = jax.tree.leaves((state.params, state.batch_stats, state.opt_state, state.grad_accum, state.ema_params,
                              state.ema_batch_stats, state.step, state.last_opt_step, state.ema_updates))
    assert len({x.unsafe_buffer_pointer() for x in leaves}) == len(leaves)
    for a, b, c, z in zip(jax.tree.leaves(params), jax.tree.leaves(state.params), jax.tree.leaves(state.ema_params),
                          jax.tree.leaves(state.grad_accum)):
        np.testing.assert_array_equal(b, a)
        np.testing.assert_array_equal(c, a)
        assert not np.any(np.asarray(z))
    np.testing.assert_array_equal(state.ema_batch_stats["model_0"]["bn"]["var"], np.full(2, 0.9, np.float32))
    expected = state.tx.init(jax.tree.map(jnp.asarray, params))
    assert jax.tree.structure(state.opt_state) == jax.tree.structure(expected)
    for x, y in zip(jax.tree.leaves(state.opt_state), jax.tree.leaves(expected)):
        np.testing.assert_array_equal(x, y)
    assert int(state.step) == 0 and int(state.last_opt_step) == -1


def test_every_step_optimizer_path_equals_the_accumulating_one():
    """With batch >= nbs every iteration is an optimizer step: create_train_state marks it (static), and the step
    then runs the update without the accumulator or a lax.cond. Three iterations of it equal those of the general
    (accumulate + cond) path on the same batches - weights, optimizer state, EMA, counters, metrics - and its
    compiled program holds no conditional while the general one does."""
    import dataclasses

    from yolojax.engine.state import TrainHyper, create_train_state, train_step
    from yolojax.nn import YOLOv8
    from yolojax.nn.yolo import init_variables

    model = YOLOv8(multiples=(0.33, 0.0625, 1024), num_classes=2)
    variables = init_variables(model, seed=0)
    sched = dict(lr0=0.01, lrf=0.01, epochs=1, nb=10, nw=-1, momentum=0.9, warmup_momentum=0.8, warmup_bias_lr=0.1)
    every = create_train_state(model, variables, TrainHyper(schedule=Schedule(**sched, accumulate=1,
                                                                              nbs_over_batch=1.0)))
    assert every.hyper.optimizer_every_step
    for acc, ratio, compat in [(4, 4.0, "v8"), (1, 2.0, "v8")]:  # accumulation, or warming up to it (v8)
        s = Schedule(**sched, accumulate=acc, nbs_over_batch=ratio, compat=compat)
        assert not create_train_state(model, variables, TrainHyper(schedule=s)).hyper.optimizer_every_step
    general = dataclasses.replace(every, hyper=dataclasses.replace(every.hyper, optimizer_every_step=False))
    general = jax.tree.map(jnp.copy, general)  # own buffers (the steps donate their state)

    mask = np.array([[True, True, False], [True, False, False]])

    def batches():
        rng = np.random.default_rng(1)
        for _ in range(3):
            xy = rng.uniform(0, 40, (2, 3, 2))
            boxes = np.concatenate([xy, xy + rng.uniform(8, 24, (2, 3, 2))], -1).astype(np.float32)
            yield {"images": rng.integers(0, 256, (2, 64, 64, 3), dtype=np.uint8), "boxes": boxes * mask[..., None],
                   "classes": rng.integers(0, 2, (2, 3)).astype(np.int32), "mask": mask}

    fns = {name: jax.jit(train_step, donate_argnums=0) for name in ("every", "general")}
    for name, state in (("every", every), ("general", general)):
        hlo = fns[name].lower(state, next(batches())).as_text()
        assert ("stablehlo.case" in hlo or "stablehlo.if" in hlo) is (name == "general")
    # Each iteration starts both paths from the same state: the two programs may round their sums differently
    # (XLA fuses and vectorises each on its own), and over several iterations training amplifies that, while a real
    # difference between the paths (a skipped update, a wrong lr or momentum) shows in the very first step.
    state = general
    for batch in batches():
        a, ma = fns["every"](dataclasses.replace(jax.tree.map(jnp.copy, state), hyper=every.hyper), batch)
        b, mb = fns["general"](jax.tree.map(jnp.copy, state), batch)
        for x, y in zip(jax.tree.leaves((a.params, a.opt_state, a.ema_params, a.ema_batch_stats, a.batch_stats)),
                        jax.tree.leaves((b.params, b.opt_state, b.ema_params, b.ema_batch_stats, b.batch_stats))):
            np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-7)
        for x in jax.tree.leaves(a.grad_accum):
            assert not np.any(np.asarray(x))
        for k in ma:
            np.testing.assert_allclose(np.asarray(ma[k]), np.asarray(mb[k]), rtol=1e-6, err_msg=k)
        state = b
    assert int(a.step) == int(b.step) == 3 and int(a.last_opt_step) == int(b.last_opt_step) == 2
    assert int(a.ema_updates) == int(b.ema_updates) == 3



TORCH_NAMES = {"SGD": "SGD", "Adam": "Adam", "Adamax": "Adamax", "AdamW": "AdamW", "NAdam": "NAdam",
               "RAdam": "RAdam", "RMSProp": "RMSprop", "MuSGD": "MuSGD"}


def _fixture_tree(w, norm, bias):
    """The fixture's three groups as a yolojax parameter tree: torch (cout, cin, kh, kw) -> flax (kh, kw, cin, cout)."""
    return {"model_0": {"conv": {"kernel": jnp.asarray(np.transpose(w, (2, 3, 1, 0)))},
                        "bn": {"scale": jnp.asarray(norm), "bias": jnp.asarray(bias)}}}


def _trajectory_errors(f, tx):
    """Run ``tx`` through the fixture's 8 steps (lr per group and the momentum offered to every group, through
    set_hyperparams as the train step does) and return, per step and tensor, max |got - torch| / max |torch|."""
    params = _fixture_tree(f["p0_init"], f["p1_init"], f["p2_init"])
    state = tx.init(params)
    step = jax.jit(lambda s, g, p, lrs, m: tx.update(g, set_hyperparams(s, lrs, m), p))
    errors = []
    for s in range(8):
        grads = _fixture_tree(*(f[f"grad_s{s}_p{k}"] for k in range(3)))
        lrs = {"weight": f["lr"][s, 0], "bn": f["lr"][s, 1], "bias": f["lr"][s, 2]}
        updates, state = step(state, grads, params, lrs, f["momentum"][s, 0])
        params = optax.apply_updates(params, updates)
        want = _fixture_tree(*(f[f"after_s{s}_p{k}"] for k in range(3)))
        for (path, got), exp in zip(jax.tree_util.tree_leaves_with_path(params), jax.tree.leaves(want)):
            exp = np.asarray(exp, np.float64)
            err = np.abs(np.asarray(got, np.float64) - exp).max() / np.abs(exp).max()
            errors.append((float(err), f"step {s} {jax.tree_util.keystr(path)}"))
    return errors


def _fixture_optimizer(name, f):
    """yolojax's own construction (the trainer's build_optimizer and group split) for the fixture's groups; the
    Adam family is built with the final momentum as beta1 (torch's betas), the others' momentum is set per step."""
    from yolojax.engine.optim import MOMENTUM_OPTIMIZERS

    params = _fixture_tree(f["p0_init"], f["p1_init"], f["p2_init"])
    momentum = 0.5 if name in MOMENTUM_OPTIMIZERS else float(f["momentum"][-1, 0])
    return build_optimizer(name, lr0=1.0, momentum=momentum, weight_decay=float(f["group_weight_decay"][0]),
                           labels=param_group_labels(params))


@pytest.mark.parametrize("name", list(TORCH_NAMES))
def test_optimizer_reproduces_torch_trajectory(name, fixtures_dir):
    """Torch's optimizer as Ultralytics builds it (fixture): a (4,3,3,3) conv weight with decay, a norm weight and a
    bias; 8 steps with changing lr per group and (warming-up) momentum. Every parameter after every step agrees to
    1e-6 of the tensor's largest magnitude (float32 rounding makes elements near zero differ by more, relative to
    themselves, even for SGD). The momentum is offered to every group: the Adam family must keep its beta1."""
    from yolojax.engine.optim import MOMENTUM_OPTIMIZERS

    f = np.load(fixtures_dir / "optim" / f"{TORCH_NAMES[name]}.npz")
    assert bool(f["has_momentum_key"].all()) == (name in MOMENTUM_OPTIMIZERS)
    assert np.all(f["momentum"] == f["momentum"][:, :1]) and f["momentum"][0, 0] < f["momentum"][-1, 0]
    assert list(f["group_weight_decay"][1:]) == [0.0, 0.0]
    errors = _trajectory_errors(f, _fixture_optimizer(name, f))
    worst = max(errors)
    assert worst[0] <= 1e-6, f"{name}: {worst[1]} differs by {worst[0]:.2e} of the tensor's scale"


def _optax_adam(learning_rate, weight_decay, b1, nesterov):
    return optax.chain(optax.add_decayed_weights(weight_decay), optax.scale_by_adam(b1, 0.999, 1e-8, nesterov=nesterov),
                       optax.scale_by_learning_rate(learning_rate))


def _optax_nadam(learning_rate, weight_decay, b1):  # b1: not a ``momentum`` key, set_hyperparams leaves it alone
    return _optax_adam(learning_rate, weight_decay, b1, nesterov=True)


def _adam_with_moving_beta1(learning_rate, weight_decay, momentum):  # a ``momentum`` key: the warmup moves it
    return _optax_adam(learning_rate, weight_decay, momentum, nesterov=False)


@pytest.mark.parametrize("fixture,wrong", [("NAdam", _optax_nadam), ("Adam", _adam_with_moving_beta1)],
                         ids=["optax-nesterov-adam", "warming-beta1"])
def test_trajectory_check_rejects_known_wrong_optimizers(fixture, wrong, fixtures_dir):
    """The fixture check above tells torch's NAdam from optax's Nesterov Adam (no momentum-decay schedule), and Adam
    from Adam whose beta1 follows the warmup's momentum."""
    f = np.load(fixtures_dir / "optim" / f"{fixture}.npz")
    labels = param_group_labels(_fixture_tree(f["p0_init"], f["p1_init"], f["p2_init"]))
    wd, b1 = float(f["group_weight_decay"][0]), float(f["momentum"][-1, 0])
    groups = {g: optax.inject_hyperparams(wrong)(1.0, wd if g == "weight" else 0.0, b1)
              for g in ("bias", "weight", "bn")}
    tx = optax.multi_transform({**groups, "frozen": optax.set_to_zero()}, labels)
    assert max(_trajectory_errors(f, tx))[0] > 1e-4


def test_musgd_boosts_the_class_branch_and_orthogonalises_matrices():
    """MuSGD: the last layer's cv3_* leaves form '<group>_boost' groups at 3x the lr (warmup start unchanged),
    frozen stays frozen; a matrix's Muon direction has (near) unit singular values, torch's orientation and the
    sqrt(max(1, rows/cols)) scale of the torch weight's last two dims."""
    from yolojax.engine.optim import boosted_labels, muon_direction, newton_schulz, torch_matrix

    params = tiny_params()
    params["model_22"]["cv3_0_2"] = {"kernel": jnp.array([[[[2.0]]]]), "bias": jnp.array([0.5])}
    labels = boosted_labels(param_group_labels(params))
    assert labels["model_22"]["cv3_0_2"] == {"kernel": "weight_boost", "bias": "bias_boost"}
    assert labels["model_22"]["cv2_0_2"] == {"kernel": "weight", "bias": "bias"}
    assert labels["model_0"]["bn"] == {"scale": "bn", "bias": "bias"}
    assert boosted_labels(param_group_labels(params, frozen_layers=(22,)))["model_22"]["cv3_0_2"]["kernel"] == "frozen"
    lrs, _, _ = schedule(warmup_bias_lr=0.1).at(50)
    assert float(lrs["weight_boost"]) == pytest.approx(3 * float(lrs["weight"]))
    assert float(lrs["bias_boost"]) == pytest.approx(0.1 + 0.5 * (3 * 0.01 - 0.1))
    # same gradient, same start: the boosted kernel moves 3x as far on its first step (SGD + Muon, both linear in lr)
    params["model_22"]["cv2_0_2"]["kernel"] = jnp.array([[[[2.0]]]])
    grads = jax.tree.map(jnp.ones_like, params)
    tx = build_optimizer("MuSGD", lr0=0.01, momentum=0.9, weight_decay=0.0, labels=param_group_labels(params))
    updates, _ = tx.update(grads, tx.init(params), params)
    np.testing.assert_allclose(updates["model_22"]["cv3_0_2"]["kernel"], 3 * updates["model_22"]["cv2_0_2"]["kernel"],
                               rtol=1e-6)
    g = jax.random.normal(jax.random.key(0), (6, 20))
    for transpose in (False, True):  # the same map up to bfloat16 rounding
        sv = np.linalg.svd(np.asarray(newton_schulz(g, transpose), np.float32), compute_uv=False)
        assert sv.min() > 0.5 and sv.max() < 1.5  # the quintic iteration's band around 1
    np.testing.assert_array_equal(newton_schulz(g.T, True), newton_schulz(g, False).T)
    np.testing.assert_allclose(np.asarray(newton_schulz(g, True), np.float32),
                               np.asarray(newton_schulz(g, False), np.float32), atol=0.05)
    dense = jax.random.normal(jax.random.key(1), (3, 12))  # flax (in, out): torch weight (12, 3) -> scale 2
    assert torch_matrix(dense.shape) == (12, 3, 2.0)
    np.testing.assert_array_equal(muon_direction(dense, True), newton_schulz(dense.T, True).astype(jnp.float32).T * 2)
    conv = jax.random.normal(jax.random.key(2), (3, 3, 2, 5))  # torch (5, 2, 3, 3): rows = cout, scale 1
    assert torch_matrix(conv.shape) == (5, 18, 1.0)
    torch_rows = np.transpose(np.asarray(conv), (3, 2, 0, 1)).reshape(5, 18)
    np.testing.assert_array_equal(np.transpose(np.asarray(muon_direction(conv, False)), (3, 2, 0, 1)).reshape(5, 18),
                                  np.asarray(newton_schulz(jnp.asarray(torch_rows), False), np.float32))


def test_musgd_orients_each_batch_of_matrices_as_torch_does():
    """torch batches a group's matrices by (cols, scale), splits a batch where rows span more than 16x, and runs a
    whole batch transposed when its largest row count exceeds its columns."""
    from yolojax.engine.optim import transposed_batches

    assert transposed_batches([(8, 4, 1.0), (3, 4, 1.0), (2, 4, 1.0), (5, 9, 1.0)]) == [True, True, True, False]
    assert transposed_batches([(4, 8, 1.0), (2, 8, 1.0)]) == [False, False]
    # rows 40 vs 2: more than 16x apart, two batches: (40) transposed, (2) not
    assert transposed_batches([(40, 8, 1.0), (2, 8, 1.0)]) == [True, False]
    assert transposed_batches([(32, 8, 1.0), (2, 8, 1.0)]) == [True, True]  # exactly 16x: one batch
    assert transposed_batches([(12, 6, 1.0), (3, 6, 2.0)]) == [True, False]  # another scale: another batch


@pytest.mark.parametrize("name", list(TORCH_NAMES))
def test_optimizer_state_round_trips_through_a_checkpoint(name, tmp_path):
    """Every optimizer's state (after a step: moments and buffers hold values) saves and restores exactly into a fresh
    train state of the same optimizer, and the restored state takes the same next step."""
    from yolojax.engine.checkpoint import Checkpointer
    from yolojax.engine.state import TrainHyper, create_train_state

    params = tiny_params()
    params["model_22"]["cv3_0_2"] = {"kernel": jnp.ones((1, 1, 2, 2)), "bias": jnp.array([0.5, -0.5])}
    variables = {"params": params, "batch_stats": {}}
    schedule = Schedule(lr0=0.01, lrf=0.01, epochs=1, nb=10, nw=-1, momentum=0.9, warmup_momentum=0.8,
                        warmup_bias_lr=0.1, accumulate=1, nbs_over_batch=1.0)
    hyper = TrainHyper(schedule=schedule, optimizer=name, weight_decay=5e-4)
    state = create_train_state(None, variables, hyper)
    grads = jax.tree.map(lambda p: jnp.linspace(-1.0, 1.0, p.size).reshape(p.shape), params)
    lrs, momentum, _ = state.schedule.at(0)

    def step(s):
        updates, opt_state = s.tx.update(grads, set_hyperparams(s.opt_state, lrs, momentum), s.params)
        return s.replace(params=optax.apply_updates(s.params, updates), opt_state=opt_state)

    state = step(state)
    ck = Checkpointer(tmp_path / "ckpt")
    ck.save(1, state, {})
    restored, _ = ck.restore(create_train_state(None, variables, hyper))
    ck.close()
    for a, b in zip(jax.tree.leaves(state.opt_state), jax.tree.leaves(restored.opt_state), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for a, b in zip(jax.tree.leaves(step(state).params), jax.tree.leaves(step(restored).params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
