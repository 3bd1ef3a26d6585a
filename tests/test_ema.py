"""Tests for speedrun.optim.ema against a numpy loop of Page's ``update_ema(momentum, update_freq)``:
every ``every`` steps (steps 0, every, 2·every, …) ema ← ρ·ema + (1−ρ)·value with ρ = momentum**every."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from speedrun.optim.ema import ema_update


@pytest.mark.parametrize("momentum,every", [(0.99, 5), (0.9, 1), (0.5, 3)])
def test_ema_matches_numpy_loop(momentum, every):
    rng = np.random.default_rng(0)
    init = {"params": {"w": rng.standard_normal((3, 4)), "b": rng.standard_normal(4)},
            "batch_stats": {"mean": rng.standard_normal(4)}}
    ema = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), init)
    ref = jax.tree.map(np.array, init)
    rho = momentum**every
    update = jax.jit(ema_update, static_argnums=(3, 4))  # step is traced, as in the train step
    for step in range(12):
        value = jax.tree.map(lambda a: rng.standard_normal(a.shape), init)
        ema = update(ema, jax.tree.map(jnp.asarray, value), jnp.asarray(step, jnp.int32), momentum, every)
        if step % every == 0:
            ref = jax.tree.map(lambda e, v: rho * e + (1 - rho) * v, ref, value)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), ema, ref)
        jax.tree.map(lambda a: a.dtype == jnp.float32 or pytest.fail("dtype changed"), ema)


def test_ema_unchanged_between_updates_and_decay_value():
    ema = {"w": jnp.zeros(2)}
    value = {"w": jnp.ones(2)}
    for step in (1, 2, 3, 4, 6, 9):  # not multiples of 5: no change
        np.testing.assert_array_equal(ema_update(ema, value, jnp.asarray(step), 0.99, 5)["w"], 0.0)
    # at a multiple of 5 the new value gets weight 1 - 0.99**5 = 0.04900995
    np.testing.assert_allclose(ema_update(ema, value, jnp.asarray(10), 0.99, 5)["w"], 0.04900995, rtol=1e-6)


def test_ema_keeps_its_dtype():
    ema = {"w": jnp.zeros(2, jnp.float32)}
    out = ema_update(ema, {"w": jnp.ones(2, jnp.bfloat16)}, jnp.asarray(0), 0.9, 1)
    assert out["w"].dtype == jnp.float32
