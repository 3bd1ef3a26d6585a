"""Tests for PyTorch-style SGD with coupled and decoupled weight decay against numpy transcriptions
of the formulas (PyTorch's SGD with nesterov; hiverge's decay after the step), and for the
``hiverge_muon`` builder against hiverge's and fulcrum E1's schedules and group settings
(../shared/sources/frontier_recipes.md §1.6, §2.1)."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from speedrun import config, optim


def _np_sgd(p, grads, lr_at, wd, momentum, decoupled):
    buf = None
    for s, g in enumerate(grads):
        lr = lr_at(s)
        if not decoupled:
            g = g + wd * p  # PyTorch: d_p = d_p.add(p, alpha=weight_decay)
        buf = g.copy() if buf is None else momentum * buf + g
        p = p - lr * (g + momentum * buf)  # nesterov
        if decoupled:
            p = p * (1 - lr * wd)
    return p


def _run(tx, p0, grads):
    p = jnp.asarray(p0)
    s = tx.init(p)
    for g in grads:
        u, s = tx.update(jnp.asarray(g), s, p)
        p = optax.apply_updates(p, u)
    return np.asarray(p)


@pytest.mark.parametrize("decoupled", [False, True])
def test_torch_sgd_coupled_and_decoupled_equal_numpy(decoupled):
    rng = np.random.default_rng(0)
    p0 = rng.standard_normal(7).astype(np.float32)
    grads = [rng.standard_normal(7).astype(np.float32) for _ in range(6)]
    lr_at = lambda s: 0.3 * (1 - s / 10)  # noqa: E731
    tx = optim.torch_sgd(lambda c: 0.3 * (1 - c / 10), 0.825, 0.2, True, decoupled=decoupled)
    got = _run(tx, p0, grads)
    np.testing.assert_allclose(got, _np_sgd(p0.astype(np.float64), grads, lr_at, 0.2, 0.825, decoupled),
                               rtol=1e-5, atol=1e-6)
    other = _np_sgd(p0.astype(np.float64), grads, lr_at, 0.2, 0.825, not decoupled)
    assert np.abs(got - other).max() > 1e-3  # the two forms differ


def _cfg(**changes):
    c = ml_collections.ConfigDict(dict(
        name="hiverge_muon", muon_lr=0.205, muon_momentum=0.655, ns_coeffs=(3.4576, -4.7391, 2.0843),
        ns_steps=3, ns_eps=1e-5, target_norm=(0.5012, 0.0786), momentum=0.825, nesterov=True,
        bias_lr=0.0573, head_lr=0.5415, weight_decay=1.0418e-6, whiten_bias_epochs=0.19,
        decay_epochs=None, lr_floor=0.0, ns_dtype="auto", ns_grouping="auto"))
    c.update(changes)
    return c


def test_hiverge_schedule_linear_decay_no_warmup_and_e1_horizon_floor():
    d = config.Derived(n_train=50000, batch_size=1536, num_devices=1, batch_per_device=1536,
                       steps_per_epoch=32, total_steps=243)
    _, lr = optim.make_optimizer(_cfg(), d)
    s = np.array([0, 1, 100, 242])
    np.testing.assert_allclose([float(lr(c)) for c in s], 0.205 * (1 - s / 243), rtol=1e-6)
    e1 = config.Derived(n_train=50000, batch_size=1536, num_devices=1, batch_per_device=1536,
                        steps_per_epoch=32, total_steps=284)
    _, lr = optim.make_optimizer(_cfg(muon_lr=0.2255, decay_epochs=8.5, lr_floor=0.05), e1)
    s = np.array([0, 100, 258, 259, 270, 283])
    np.testing.assert_allclose([float(lr(c)) for c in s], 0.2255 * np.maximum(1 - s / 272, 0.05), rtol=1e-6)
    assert float(lr(258)) > 0.2255 * 0.05 and float(lr(259)) == pytest.approx(0.2255 * 0.05)


def test_hiverge_sgd_groups_equal_torch_sgd_on_summed_loss():
    """BN bias and head: PyTorch SGD (nesterov, coupled λ = wd·B/lr) on summed-loss gradients;
    the whitening bias trains ceil(0.19·spe) steps with lr·(1 − s/S), then stays put."""
    rng = np.random.default_rng(1)
    b, spe, total, n = 48, 16, 12, 6  # whitening bias: ceil(0.19·16) = 4 steps
    params = {"group1_conv1": {"kernel": rng.standard_normal((3, 3, 4, 8)).astype(np.float32)},
              "group1_bn1": {"bias": rng.standard_normal(8).astype(np.float32)},
              "head": {"kernel": rng.standard_normal((8, 10)).astype(np.float32)},
              "whiten_bias": rng.standard_normal(24).astype(np.float32)}
    grads = [jax.tree.map(lambda a: rng.standard_normal(a.shape).astype(np.float32) * 0.1, params)
             for _ in range(n)]
    d = config.Derived(n_train=b * spe, batch_size=b, num_devices=1, batch_per_device=b, steps_per_epoch=spe,
                       total_steps=total)
    tx, _ = optim.make_optimizer(_cfg(ns_dtype="float32"), d)
    p = jax.tree.map(jnp.asarray, params)
    s = tx.init(p)
    for g in grads:
        u, s = tx.update(jax.tree.map(jnp.asarray, g), s, p)
        p = optax.apply_updates(p, u)
    wd = 1.0418e-6 * b
    for key, lr0, horizon, steps in [("group1_bn1", 0.0573, total, n), ("head", 0.5415, total, n),
                                     ("whiten_bias", 0.0573, 4, 4)]:
        get = lambda t: t[key] if key == "whiten_bias" else t[key][next(iter(t[key]))]  # noqa: E731
        ref = _np_sgd(get(params).astype(np.float64), [b * get(g) for g in grads[:steps]],
                      lambda c: lr0 * (1 - c / horizon), wd / lr0, 0.825, False)
        np.testing.assert_allclose(np.asarray(get(p)), ref, rtol=2e-5, atol=2e-6, err_msg=key)
