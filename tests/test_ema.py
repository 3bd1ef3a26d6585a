"""Tests for speedrun.optim.ema against numpy loops: Page's ``update_ema(momentum, update_freq)``
(every ``every`` steps — steps 0, every, 2·every, … — ema ← ρ·ema + (1−ρ)·value, ρ = momentum**every)
and its debiased form as optax's ``ema(debias=True)`` defines it (the same recursion from zero,
divided by 1 − ρ^n after n updates); and the full-length record's EMA (970 steps, 194 updates),
whose change by debiasing is bounded by the hand-computed weight of the initial model, ρ^194."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from speedrun.optim.ema import ema_update, update_weight


def _tree(rng):
    return {"params": {"w": rng.standard_normal((3, 4)), "b": rng.standard_normal(4)},
            "batch_stats": {"mean": rng.standard_normal(4)}}


def _run(init, values, momentum, every, debias):
    """ema_update (jitted, step traced) run after the update steps (``step % every == 0``, as the
    epoch places it) over ``values`` from ``init``; float32 numpy trees."""
    update = jax.jit(ema_update, static_argnums=(3, 4, 5))
    ema = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), init)
    for step, value in list(enumerate(values))[::every]:
        ema = update(ema, jax.tree.map(jnp.asarray, value), jnp.asarray(step, jnp.int32), momentum, every, debias)
        jax.tree.map(lambda a: a.dtype == jnp.float32 or pytest.fail("dtype changed"), ema)
    return jax.tree.map(np.asarray, ema)


def _page_numpy(init, values, rho, every):
    ref = jax.tree.map(np.array, init)
    for step, value in enumerate(values):
        if step % every == 0:
            ref = jax.tree.map(lambda e, v: rho * e + (1 - rho) * v, ref, value)
    return ref


def _debiased_numpy(values, rho, every):
    """optax's definition: m ← ρ·m + (1−ρ)·value from m = 0, returned as m / (1 − ρ^n)."""
    m, n = jax.tree.map(np.zeros_like, values[0]), 0
    for step, value in enumerate(values):
        if step % every == 0:
            m, n = jax.tree.map(lambda e, v: rho * e + (1 - rho) * v, m, value), n + 1
    return jax.tree.map(lambda a: a / (1 - rho**n), m)


@pytest.mark.parametrize("momentum,every", [(0.99, 5), (0.9, 1), (0.5, 3)])
def test_page_ema_matches_numpy_loop(momentum, every):
    rng = np.random.default_rng(0)
    init = _tree(rng)
    values = [_tree(rng) for _ in range(12)]
    out = _run(init, values, momentum, every, debias=False)
    ref = _page_numpy(init, values, momentum**every, every)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), out, ref)


@pytest.mark.parametrize("momentum,every,steps", [(0.99, 5, 60), (0.9, 1, 12), (0.5, 3, 12)])
def test_debiased_ema_matches_numpy_and_optax_and_ignores_the_init(momentum, every, steps):
    rng = np.random.default_rng(1)
    init = _tree(rng)
    values = [_tree(rng) for _ in range(steps)]
    out = _run(init, values, momentum, every, debias=True)
    ref = _debiased_numpy(values, momentum**every, every)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), out, ref)
    # optax.ema(debias=True) fed the update steps' values
    tx = optax.ema(momentum**every, debias=True)
    opt_state = tx.init(values[0])
    for step in range(0, steps, every):
        avg, opt_state = tx.update(values[step], opt_state)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), out, avg)
    # a different init gives the same debiased EMA
    other = _run(jax.tree.map(lambda a: a + 100.0, init), values, momentum, every, debias=True)
    jax.tree.map(np.testing.assert_array_equal, out, other)


def test_update_weight_hand_values():
    rho = 0.99**5  # 0.95099005
    assert float(update_weight(jnp.int32(0), 0.99, 5)) == 1.0  # the first update replaces the init copy
    assert float(update_weight(jnp.int32(5), 0.99, 5)) == pytest.approx(1 / (1 + rho), rel=1e-6)  # 0.5125603
    assert float(update_weight(jnp.int32(10), 0.99, 5)) == pytest.approx(0.3502170, rel=1e-6)  # 0.049/(1-ρ³)
    assert float(update_weight(jnp.int32(969), 0.99, 5)) == pytest.approx((1 - rho) * (1 + 5.8367e-5), rel=1e-6)
    assert float(update_weight(jnp.int32(10**6), 0.99, 5)) == pytest.approx(1 - rho, rel=1e-6)
    assert float(update_weight(jnp.int32(3), 0.99, 5, debias=False)) == pytest.approx(0.04900995, rel=1e-6)


def test_full_length_record_ema_changes_only_by_the_initial_models_weight():
    """Page's record on CIFAR-10: 97 steps × 10 epochs = 970 steps, 194 updates of ρ = 0.99^5. In
    exact arithmetic debiased − Page = ρ^194 / (1 − ρ^194) · (Page − init), ρ^194 = 0.99^970 =
    5.836e-5 (e^(970·ln 0.99) = e^-9.7488): the debiased EMA of the full record differs from Page's
    by 5.8e-5 of its distance from the initial model, not by float32 rounding alone."""
    rho, every, steps = 0.99**5, 5, 970
    share = 5.836e-5  # hand: 0.99^970
    assert rho**194 == pytest.approx(share, rel=1e-3)
    rng = np.random.default_rng(2)
    init = _tree(rng)
    trained = jax.tree.map(lambda a: a + 3 * rng.standard_normal(a.shape), init)  # far from the init
    values = [jax.tree.map(lambda a: a + 0.1 * rng.standard_normal(a.shape), trained) for _ in range(steps)]
    page = _page_numpy(init, values, rho, every)
    debiased = _run(init, values, 0.99, every, debias=True)  # float32 on the device
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), debiased,
                 _debiased_numpy(values, rho, every))
    expected = jax.tree.map(lambda p, i: p + share / (1 - share) * (p - i), page, init)
    for d, e, p, i in zip(*(jax.tree.leaves(t) for t in (debiased, expected, page, init)), strict=True):
        np.testing.assert_allclose(d, e, rtol=0, atol=2e-6)  # float32 rounding of 194 updates
        gap = np.abs(d - p)
        assert np.all(gap <= 1.01 * share * np.abs(p - i) + 2e-6)
        assert gap.max() > 10 * 2e-6  # a real, if small, change (|p − init| ≈ 3 here)


def test_ema_decay_value():
    ema = {"w": jnp.zeros(2)}
    value = {"w": jnp.ones(2)}
    # Page: at a multiple of 5 the new value gets weight 1 - 0.99**5 = 0.04900995
    np.testing.assert_allclose(ema_update(ema, value, jnp.asarray(10), 0.99, 5, False)["w"], 0.04900995, rtol=1e-6)
    # debiased, third update (step 10): 0.04900995 / (1 - 0.95099005**3) = 0.3502170
    np.testing.assert_allclose(ema_update(ema, value, jnp.asarray(10), 0.99, 5)["w"], 0.3502170, rtol=1e-6)


@pytest.mark.parametrize("debias", [False, True])
def test_ema_keeps_its_dtype(debias):
    ema = {"w": jnp.zeros(2, jnp.float32)}
    out = ema_update(ema, {"w": jnp.ones(2, jnp.bfloat16)}, jnp.asarray(0), 0.9, 1, debias)
    assert out["w"].dtype == jnp.float32
