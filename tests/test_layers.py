"""Tests for speedrun.models.layers' max pooling and one-pass batch-norm statistics.

max_pool: values equal to ``flax.linen.max_pool`` (odd sizes too: 31->15, 3->1) in float32,
bfloat16 and float16; gradients equal to flax's (unique maxima and ties: the first maximum of a
window takes the whole cotangent), so each window's gradient sums to its cotangent; and no record's
train step contains ``select_and_scatter_add``.

group_moments / GhostBatchNorm: mean and variance against a two-pass numpy float64 reference,
large-mean inputs included (mean 1e3, std 1, where the unshifted E[x²] − E[x]² in float32 is off
by more than 1%); outputs, running statistics and gradients against a float64 reference; one
reduction pass forward and one backward (no full-size reduction waits on another of its pass).
"""

from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.extend.core import Literal

from speedrun import config, optim, train
from speedrun.models import get_model
from speedrun.models.layers import GhostBatchNorm, group_moments
from speedrun.models.pooling import max_pool
from speedrun.system import precision
from speedrun.train import step as step_lib

from conftest import jaxpr_eqns as _eqns  # noqa: E402

DTYPES = [jnp.float32, jnp.bfloat16, jnp.float16]
RECORDS = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "records").glob("*.py"))




def _primitives(fn, *args):
    return {e.primitive.name for e in _eqns(jax.make_jaxpr(fn)(*args).jaxpr)}


# ---------------------------------------------------------------- max_pool

POOL_CASES = [((2, 31, 31, 3), 2), ((2, 15, 15, 2), 2), ((2, 7, 7, 2), 2), ((2, 3, 3, 4), 3),
              ((2, 8, 8, 2), 4), ((3, 7, 5, 2), (2, 3))]


def _flax_pool(x, window):
    kh, kw = (window, window) if isinstance(window, int) else window
    return nn.max_pool(x, (kh, kw), strides=(kh, kw))


def _pool_vjp(pool, x, window, ct):
    y, vjp = jax.vjp(lambda a: pool(a, window), x)
    return y, vjp(ct)[0]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,window", POOL_CASES)
def test_max_pool_values_and_unique_max_gradients_match_flax(shape, window, dtype):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal(shape), dtype)
    ref = _flax_pool(x, window)
    ct = jnp.asarray(rng.standard_normal(ref.shape), dtype)
    y, dx = _pool_vjp(max_pool, x, window, ct)
    ref_y, ref_dx = _pool_vjp(_flax_pool, x, window, ct)
    assert y.shape == ref_y.shape and y.dtype == dtype and dx.dtype == dtype and dx.shape == shape
    np.testing.assert_array_equal(np.asarray(y, np.float32), np.asarray(ref_y, np.float32))
    # standard-normal draws in these dtypes can still tie; compare where a window's max is unique
    kh, kw = (window, window) if isinstance(window, int) else window
    ho, wo = ref_y.shape[1:3]
    xw = np.asarray(x, np.float32)[:, :ho * kh, :wo * kw].reshape(shape[0], ho, kh, wo, kw, shape[3])
    unique = ((xw == np.asarray(ref_y, np.float32)[:, :, None, :, None]).sum(axis=(2, 4)) == 1)
    assert unique.mean() > 0.9
    mask = np.zeros(shape, bool)
    mask[:, :ho * kh, :wo * kw] = np.repeat(np.repeat(unique, kh, axis=1), kw, axis=2)
    np.testing.assert_array_equal(np.asarray(dx, np.float32)[mask], np.asarray(ref_dx, np.float32)[mask])
    # the dropped remainder rows and columns get no gradient
    assert not np.asarray(dx, np.float32)[:, ho * kh:].any() and not np.asarray(dx, np.float32)[:, :, wo * kw:].any()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,window", POOL_CASES)
def test_max_pool_ties_go_to_the_first_maximum_as_in_flax(shape, window, dtype):
    """Values in {0, 1, 2}: most windows have tied maxima. The whole cotangent goes to the first
    maximal element in row-major window order — flax's gradient exactly — so each window's
    gradient sum is its cotangent."""
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.integers(0, 3, shape), dtype)
    ct = jnp.asarray(rng.integers(1, 5, _flax_pool(x, window).shape), dtype)
    y, dx = _pool_vjp(max_pool, x, window, ct)
    ref_y, ref_dx = _pool_vjp(_flax_pool, x, window, ct)
    np.testing.assert_array_equal(np.asarray(y, np.float32), np.asarray(ref_y, np.float32))
    np.testing.assert_array_equal(np.asarray(dx, np.float32), np.asarray(ref_dx, np.float32))
    kh, kw = (window, window) if isinstance(window, int) else window
    ho, wo = y.shape[1:3]
    dxw = np.asarray(dx, np.float32)[:, :ho * kh, :wo * kw].reshape(shape[0], ho, kh, wo, kw, shape[3])
    np.testing.assert_array_equal(dxw.sum(axis=(2, 4)), np.asarray(ct, np.float32))
    assert ((dxw != 0).sum(axis=(2, 4)) == 1).all()  # one element per window


def test_max_pool_tie_order_and_jnp_max_difference():
    """One 2x2 window [[1, 3], [3, 3]]: the gradient goes to (0, 1), the first 3 in row-major
    order; ``jnp.max``'s own gradient would split it in thirds."""
    x = jnp.asarray([[1.0, 3.0], [3.0, 3.0]]).reshape(1, 2, 2, 1)
    dx = jax.grad(lambda a: max_pool(a, 2).sum())(x)
    np.testing.assert_array_equal(dx.reshape(2, 2), [[0, 1], [0, 0]])
    split = jax.grad(lambda a: a.reshape(1, 1, 2, 1, 2, 1).max(axis=(2, 4)).sum())(x)
    np.testing.assert_allclose(split.reshape(2, 2), [[0, 1 / 3], [1 / 3, 1 / 3]], rtol=1e-6)


def test_max_pool_nan_window_and_bad_shapes():
    x = jnp.asarray([[np.nan, 1.0], [2.0, 0.0]]).reshape(1, 2, 2, 1)
    assert np.isnan(max_pool(x, 2)).all()
    assert not jax.grad(lambda a: max_pool(a, 2).sum())(x).any()
    with pytest.raises(ValueError, match="max_pool needs"):
        max_pool(jnp.zeros((2, 3, 3)), 2)
    with pytest.raises(ValueError, match="max_pool needs"):
        max_pool(jnp.zeros((1, 2, 2, 1)), 3)


def test_flax_pool_gradient_is_a_scatter():
    """The positive control of the jaxpr check below: flax's pool differentiates to
    ``select_and_scatter_add``, ours to none."""
    x = jnp.zeros((2, 8, 8, 3))
    assert "select_and_scatter_add" in _primitives(jax.grad(lambda a: _flax_pool(a, 2).sum()), x)
    ours = _primitives(jax.grad(lambda a: max_pool(a, 2).sum()), x)
    assert not {"select_and_scatter_add", "reduce_window_max"} & ours


@pytest.mark.parametrize("name", RECORDS)
def test_no_record_train_step_scatters(name):
    """Each record's model (width 1/16) in its train step: no ``select_and_scatter_add`` (nor a
    ``reduce_window`` max pool) anywhere in the jaxpr, sub-jaxprs included."""
    cfg = config.smoke(config.load_record(name), model__width_mult=0.0625, batch_size=32)
    policy = precision.resolve(cfg.precision)
    model = get_model(cfg.model, policy.compute_dtype)
    d = config.derived(cfg, 10 * cfg.batch_size)
    tx, _ = optim.make_optimizer(cfg.optimizer, d)
    state = jax.eval_shape(lambda k: train.init_state(model, tx, k, policy), jax.random.key(0))
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False))
    constants = variables.get("constants", {})
    x = jax.ShapeDtypeStruct((cfg.batch_size, 32, 32, 3), jnp.float32)
    y = jax.ShapeDtypeStruct((cfg.batch_size,), jnp.int32)
    step = step_lib.step_fn(model, tx, cfg, d.total_steps)
    prims = _primitives(step, state, constants, x, y, jax.random.key(1))
    assert "conv_general_dilated" in prims  # the model is in there
    assert not {"select_and_scatter_add", "select_and_gather_add", "reduce_window_max"} & prims


# ---------------------------------------------------------------- one-pass batch-norm statistics

def _np_two_pass(groups):
    g = np.asarray(groups, np.float64)
    axes = tuple(range(1, g.ndim - 1))
    mean = g.mean(axis=axes, keepdims=True)
    return mean, np.square(g - mean).mean(axis=axes, keepdims=True)


@pytest.mark.parametrize("loc,scale", [(0.0, 1.0), (2.0, 3.0), (1e3, 1.0), (-1e3, 1.0), (1e3, 0.1)])
@pytest.mark.parametrize("shape", [(4, 8, 6, 6, 5), (1, 64, 15, 15, 3), (3, 16, 7)])
def test_group_moments_match_two_pass_float64(shape, loc, scale):
    """Mean and biased variance of float32 data within float32 tolerance of numpy's two-pass
    float64 values, for means up to 1e4 standard deviations. The unshifted one-pass
    E[x²] − E[x]² in float32 is shown failing on the same data where the mean is large."""
    rng = np.random.default_rng(2)
    x = (rng.standard_normal(shape) * scale + loc).astype(np.float32)
    mean, var = group_moments(jnp.asarray(x))
    ref_mean, ref_var = _np_two_pass(x)
    assert mean.shape == var.shape == ref_mean.shape and mean.dtype == var.dtype == jnp.float32
    np.testing.assert_allclose(mean, ref_mean, rtol=2e-7, atol=1e-6 * scale)
    np.testing.assert_allclose(var, ref_var, rtol=1e-5)
    if abs(loc) / scale >= 1e3:
        axes = tuple(range(1, x.ndim - 1))
        naive = np.square(x).mean(axis=axes, keepdims=True, dtype=np.float32) - \
            np.square(x.mean(axis=axes, keepdims=True, dtype=np.float32))
        assert np.abs(naive / ref_var - 1).max() > 1e-2


def test_group_moments_constant_channel_and_bad_shape():
    mean, var = group_moments(jnp.full((2, 4, 3), 7.5, jnp.float32))
    np.testing.assert_array_equal(mean, np.full((2, 1, 3), 7.5))
    np.testing.assert_array_equal(var, np.zeros((2, 1, 3)))
    with pytest.raises(ValueError, match="at least one statistics axis"):
        group_moments(jnp.zeros((2, 3)))


def _np_bn_and_grads(x, g, bias, ct, eps):
    """Float64 ghost batch norm (scale 1) and its gradients for the cotangent ``ct``: ``dx`` per
    group ``r·(ct − mean(ct) − x̂·mean(ct·x̂))``, ``dbias = Σ ct``."""
    x = x.astype(np.float64)
    ct = ct.astype(np.float64)
    b = x.shape[0]
    grp = x.reshape((b // g, g) + x.shape[1:])
    cg = ct.reshape(grp.shape)
    axes = tuple(range(1, grp.ndim - 1))
    mean, var = _np_two_pass(grp)
    r = 1 / np.sqrt(var + eps)
    xhat = (grp - mean) * r
    dx = r * (cg - cg.mean(axis=axes, keepdims=True) - xhat * (cg * xhat).mean(axis=axes, keepdims=True))
    return (xhat.reshape(x.shape) + bias, dx.reshape(x.shape), ct.reshape(-1, x.shape[-1]).sum(0),
            mean.reshape(-1, x.shape[-1]), var.reshape(-1, x.shape[-1]))


@pytest.mark.parametrize("loc,scale", [(0.0, 3.0), (1e3, 1.0)])
@pytest.mark.parametrize("shape,g", [((8, 4, 4, 3), 2), ((12, 5), 4), ((6, 3, 3, 2), None)])
def test_ghost_bn_outputs_stats_and_gradients_match_float64(shape, g, loc, scale):
    eps = 1e-5
    rng = np.random.default_rng(3)
    c = shape[-1]
    x = (rng.standard_normal(shape) * scale + loc).astype(np.float32)
    ct = rng.standard_normal(shape).astype(np.float32)
    bias = rng.standard_normal(c).astype(np.float32)
    bn = GhostBatchNorm(ghost_batch_size=g, momentum=0.9, epsilon=eps)
    stats = {"mean": jnp.full((c,), 0.5), "var": jnp.full((c,), 2.0)}

    def f(x, bias):
        return bn.apply({"params": {"bias": bias}, "batch_stats": stats}, x,
                        use_running_average=False, mutable=["batch_stats"])

    (out, upd), vjp = jax.vjp(f, jnp.asarray(x), jnp.asarray(bias))
    dx, dbias = vjp((jnp.asarray(ct), jax.tree.map(jnp.zeros_like, upd)))
    ref_out, ref_dx, ref_dbias, gm, gv = _np_bn_and_grads(x, g or shape[0], bias, ct, eps)
    # float32 holds x = 1e3 + N(0, 1) to about 6e-5: the normalised values are no better than that
    tol = 1e-4 if loc else 2e-5
    np.testing.assert_allclose(out, ref_out, rtol=0, atol=tol)
    np.testing.assert_allclose(dx, ref_dx, rtol=0, atol=tol * np.abs(ref_dx).max())
    np.testing.assert_allclose(dbias, ref_dbias, rtol=1e-5, atol=1e-5)
    n = x.size // c // (shape[0] // (g or shape[0]))
    np.testing.assert_allclose(upd["batch_stats"]["mean"], 0.9 * 0.5 + 0.1 * gm.mean(0), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(upd["batch_stats"]["var"], 0.9 * 2.0 + 0.1 * (gv * n / (n - 1)).mean(0), rtol=1e-5)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_ghost_bn_half_precision_inputs_take_float32_statistics(dtype):
    """Output and input gradient in the input's dtype; every sum, forward and backward, in float32."""
    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.standard_normal((8, 4, 4, 3)) * 3 + 2, dtype)
    ct = jnp.asarray(rng.standard_normal(x.shape), dtype)
    bn = GhostBatchNorm(ghost_batch_size=4)
    variables = bn.init(jax.random.key(0), x, use_running_average=False)

    def f(a):
        return bn.apply(variables, a, use_running_average=False, mutable=["batch_stats"])[0]

    def grad(a, c):
        return jax.vjp(f, a)[1](c)[0]

    out, dx = f(x), grad(x, ct)
    assert out.dtype == dx.dtype == dtype
    ref_out, ref_dx, _, _, _ = _np_bn_and_grads(np.asarray(x, np.float32), 4, np.zeros(3), np.asarray(ct, np.float32), 1e-5)
    np.testing.assert_allclose(np.asarray(out, np.float32), ref_out, rtol=1e-2, atol=1e-2)
    np.testing.assert_allclose(np.asarray(dx, np.float32), ref_dx, rtol=1e-2, atol=1e-2 * np.abs(ref_dx).max())
    sums = [e for e in _eqns(jax.make_jaxpr(grad)(x, ct).jaxpr) if e.primitive.name == "reduce_sum"]
    assert len(sums) >= 4 and all(e.invars[0].aval.dtype == jnp.float32 for e in sums)


def _reduction_depths(jaxpr, size, depth_in=None):
    """For each ``reduce_sum`` over ``size`` elements, 1 + the most such reductions on one path
    from the inputs to it (1: it reads only inputs and elementwise results of them); a call's
    sub-jaxpr (``custom_vjp_call``, ``pjit``) is followed through. Returns ``(depths, the
    depth of each output)``."""
    depth_of_var, depths = dict(zip(jaxpr.invars, depth_in or [0] * len(jaxpr.invars))), []

    def depth(v):
        return 0 if isinstance(v, Literal) else depth_of_var.get(v, 0)

    for e in jaxpr.eqns:
        subs = [getattr(p, "jaxpr", p) for p in e.params.values() if hasattr(getattr(p, "jaxpr", p), "eqns")]
        if subs:
            assert len(subs) == 1 and len(subs[0].invars) == len(e.invars), e
            inner, out_depths = _reduction_depths(subs[0], size, [depth(v) for v in e.invars])
            depths += inner
            depth_of_var.update(zip(e.outvars, out_depths))
            continue
        d = max((depth(v) for v in e.invars), default=0)
        if e.primitive.name == "reduce_sum" and e.invars[0].aval.size == size:
            d += 1
            depths.append(d)
        for v in e.outvars:
            depth_of_var[v] = d
    return depths, [depth(v) for v in jaxpr.outvars]


@pytest.mark.parametrize("g", [2, None])
def test_ghost_bn_statistics_take_one_pass_forward_and_one_backward(g):
    """Forward: the sum and the sum of squares both read the data only (depth 1). With the
    backward: its two per-channel sums, Σg (of the cotangent only: depth 1) and Σg·(x − mean)
    (after the forward's: depth 2), wait on no other backward reduction. (The two-pass form's
    variance waits on its mean, depth 2 forward; its backward takes a third sum, depth 3.)"""
    x = jnp.ones((4, 3, 3, 2))
    bn = GhostBatchNorm(ghost_batch_size=g)
    variables = {"params": {"bias": jnp.zeros(2)}, "batch_stats": {"mean": jnp.zeros(2), "var": jnp.ones(2)}}

    def fwd(a):
        return bn.apply(variables, a, use_running_average=False, mutable=["batch_stats"])

    def bwd(a, ct):
        out, vjp = jax.vjp(lambda b: fwd(b)[0], a)
        return vjp(ct)[0]

    assert _reduction_depths(jax.make_jaxpr(fwd)(x).jaxpr, x.size)[0] == [1, 1]
    assert sorted(_reduction_depths(jax.make_jaxpr(bwd)(x, x).jaxpr, x.size)[0]) == [1, 1, 1, 2]
