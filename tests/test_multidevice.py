"""Data parallelism over several devices of one process (acceptance of issue 8), and per-device BN.

JAX fixes its CPU device count when it starts, so the 4-device runs happen in one subprocess
(``tests/multihost_worker.py equivalence`` with ``XLA_FLAGS=--xla_force_host_platform_device_count=4``) that
reports max-abs differences as JSON; the tests assert on those numbers.
"""
from __future__ import annotations

import pathlib
import sys

import jax
import numpy as np
import pytest

TESTS = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))

import multihost_worker as W  # noqa: E402


@pytest.fixture(scope="module")
def four_devices():
    return W.equivalence_results()[0]


@pytest.mark.slow
def test_cpu_device_forms_with_four_devices(four_devices):
    r = four_devices
    assert r["n_devices"] == 4
    assert r["select"]["'cpu'"] == [0, 1, 2, 3] and r["select"]["'CPU'"] == [0, 1, 2, 3]
    assert r["select"]["'all'"] == [0, 1, 2, 3]  # no accelerator here
    assert r["select"]["None"] == [0, 1, 2, 3] and r["select"]["''"] == [0, 1, 2, 3]  # no accelerator: CPUs


@pytest.mark.slow
def test_one_step_same_params_on_1_2_4_devices(four_devices):
    r = four_devices
    assert r["update_size"] > 1e-3  # the step really moved the weights (so 1e-5 is a real bound)
    assert r["global_params_2_vs_1"] < 1e-5
    assert r["global_params_4_vs_1"] < 1e-5
    assert r["global_ema_4_vs_1"] < 1e-5
    assert r["global_stats_4_vs_1"] < 1e-5  # BN statistics are global-batch statistics


@pytest.mark.slow
def test_per_device_bn_one_device_is_train_step(four_devices):
    # Bit-identical with jax 0.10.2; jax 0.11.2's XLA orders one gradient sum differently (6e-8 after a step that
    # moves the weights by ~1e-2), so the bound is float rounding, far below any real difference between the paths.
    assert four_devices["update_size"] > 1e-3
    assert four_devices["per_device_1_vs_global_1"] < 1e-6
    assert four_devices["per_device_1_vs_global_1_stats"] < 1e-6


@pytest.mark.slow
def test_per_device_bn_two_devices_sums_per_rank_gradients(four_devices):
    r = four_devices
    assert not r["per_device_2_optimizer_step"]  # accumulate=4: grad_accum holds the gradient
    # Ultralytics DDP: sum over ranks of the gradient of each rank's loss (local BN statistics)
    assert r["per_device_2_grad_vs_manual"] < 1e-4 * max(r["grad_scale"], 1.0)
    assert r["per_device_2_stats_vs_mean_of_halves"] < 1e-6
    # ... and the statistics are not the global-batch ones (the option changes something)
    assert r["per_device_2_stats_vs_global"] > 1e-4
    np.testing.assert_allclose(r["per_device_2_loss"], r["halves_loss_sum"], rtol=1e-5)
    assert r["per_device_2_instances"] == r["instances_total"]


def test_per_device_bn_rejects_unknown_running_stats():
    from yolojax.engine.devices import make_mesh
    from yolojax.engine.per_device_bn import make_train_step_per_device_bn

    with pytest.raises(ValueError, match="running_stats='median'"):
        make_train_step_per_device_bn(make_mesh(jax.devices()[:1]), running_stats="median")
