"""Tests for speedrun.layers.GhostBatchNorm against a numpy per-group normalisation and
PyTorch-style running statistics, and for speedrun.models.resnet9.ResNet9: output shapes, the
parameter count against a hand count of Page's layer widths, the frozen whitening constants and
the 1/16 logit scale."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from speedrun.models.layers import GhostBatchNorm
from speedrun.models.resnet9 import ResNet9

# ---------------------------------------------------------------- GhostBatchNorm

EPS = 1e-5


def _np_ghost_bn(x, g, bias, eps=EPS):
    """Numpy reference: each group of g consecutive examples normalised by its own mean and
    biased variance over (examples, spatial); returns output, group means, group unbiased vars."""
    x = x.astype(np.float64)
    out = np.empty_like(x)
    means, uvars = [], []
    axes = tuple(range(x.ndim - 1))
    for s in range(0, len(x), g):
        grp = x[s:s + g]
        m = grp.mean(axis=axes)
        v = grp.var(axis=axes)  # biased
        n = grp.size // grp.shape[-1]
        out[s:s + g] = (grp - m) / np.sqrt(v + eps) + bias
        means.append(m)
        uvars.append(v * n / (n - 1))
    return out, np.mean(means, 0), np.mean(uvars, 0)


@pytest.mark.parametrize("shape,g", [((8, 4, 4, 3), 2), ((12, 5), 4), ((6, 3, 3, 2), None)])
def test_ghost_bn_training_and_running_stats_match_numpy(shape, g):
    rng = np.random.default_rng(0)
    bn = GhostBatchNorm(ghost_batch_size=g, momentum=0.9, epsilon=EPS)
    c = shape[-1]
    variables = bn.init(jax.random.key(0), jnp.zeros(shape), use_running_average=False)
    assert set(variables["params"]) == {"bias"}  # scale frozen at 1: no scale parameter
    np.testing.assert_array_equal(variables["batch_stats"]["mean"], np.zeros(c))
    np.testing.assert_array_equal(variables["batch_stats"]["var"], np.ones(c))
    bias = rng.standard_normal(c).astype(np.float32)
    params = {"bias": jnp.asarray(bias)}
    stats = variables["batch_stats"]
    ref_mean, ref_var = np.zeros(c), np.ones(c)
    for _ in range(2):  # second call checks the momentum on non-trivial running values
        x = (rng.standard_normal(shape) * 3 + 2).astype(np.float32)
        out, upd = bn.apply({"params": params, "batch_stats": stats}, jnp.asarray(x),
                            use_running_average=False, mutable=["batch_stats"])
        expected, gm, gv = _np_ghost_bn(x, g or shape[0], bias)
        assert out.shape == shape and out.dtype == jnp.float32
        np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)
        # PyTorch momentum 0.1 == Flax 0.9: running = 0.9 running + 0.1 batch value
        ref_mean = 0.9 * ref_mean + 0.1 * gm
        ref_var = 0.9 * ref_var + 0.1 * gv
        stats = upd["batch_stats"]
        np.testing.assert_allclose(stats["mean"], ref_mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(stats["var"], ref_var, rtol=1e-5, atol=1e-6)

    # evaluation uses the running statistics, for any batch size
    x = rng.standard_normal((5,) + shape[1:]).astype(np.float32)
    out = bn.apply({"params": params, "batch_stats": stats}, jnp.asarray(x), use_running_average=True)
    np.testing.assert_allclose(out, (x - ref_mean) / np.sqrt(ref_var + EPS) + bias, rtol=1e-4, atol=1e-4)


def test_ghost_bn_groups_are_independent():
    # groups with very different scales: per-group statistics normalise each to unit variance
    x = np.concatenate([np.random.default_rng(1).standard_normal((4, 6, 6, 2)) * s for s in (0.1, 10.0)])
    out = np.asarray(GhostBatchNorm(ghost_batch_size=4).init_with_output(
        jax.random.key(0), jnp.asarray(x, jnp.float32), use_running_average=False)[0])
    for grp in (out[:4], out[4:]):
        np.testing.assert_allclose(grp.reshape(-1, 2).std(0), 1.0, rtol=1e-3)


def test_ghost_bn_scale_when_enabled():
    bn = GhostBatchNorm(ghost_batch_size=2, use_scale=True)
    v = bn.init(jax.random.key(0), jnp.zeros((4, 3)), use_running_average=False)
    assert set(v["params"]) == {"scale", "bias"}


def test_ghost_bn_rejects_indivisible_batch():
    bn = GhostBatchNorm(ghost_batch_size=4)
    with pytest.raises(ValueError, match="not divisible by ghost_batch_size=4"):
        bn.init(jax.random.key(0), jnp.zeros((6, 2, 2, 3)), use_running_average=False)


# ---------------------------------------------------------------- ResNet-9


def _hand_count(c0, c1, c2, c3, classes=10):
    """Trainable parameters of Page's ResNet-9 with widths prep c0, layer1 c1, layer2 c2,
    layer3 c3: bias-free convs (k·k·cin·cout), one BN bias per channel of each BN, linear without
    bias."""
    convs = (1 * 1 * 27 * c0            # prep 1x1 after the 27 whitening channels
             + 9 * c0 * c1 + 2 * 9 * c1 * c1  # layer1 + its residual pair
             + 9 * c1 * c2                    # layer2
             + 9 * c2 * c3 + 2 * 9 * c3 * c3)  # layer3 + its residual pair
    bn_biases = c0 + 3 * c1 + c2 + 3 * c3
    return convs + bn_biases + c3 * classes, bn_biases


def _count(tree):
    return sum(int(np.prod(a.shape)) for a in jax.tree.leaves(tree))


@pytest.mark.parametrize("width,widths", [(1.0, (64, 128, 256, 512)), (0.25, (16, 32, 64, 128))])
def test_parameter_count_matches_hand_count(width, widths):
    total, bn_channels = _hand_count(*widths)
    if width == 1.0:
        assert total == 6_570_880  # the figure in the model docstring
    variables = jax.eval_shape(lambda: ResNet9(width_mult=width).init(
        jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False))
    assert _count(variables["params"]) == total
    assert _count(variables["batch_stats"]) == 2 * bn_channels  # running mean and var
    assert variables["constants"]["whiten_kernel"].shape == (3, 3, 3, 27)
    assert variables["params"]["linear"]["kernel"].shape == (widths[3], 10)


def _eval(model, variables, x):
    return np.asarray(jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x))


@pytest.fixture(scope="module")
def small_model():
    model = ResNet9(width_mult=0.125)
    # Variables filled from numpy rather than by model.init: compiling the init's threefry draws
    # alone takes 10-30 s on this 2-core CPU, the forward pass about 1 s.
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False))
    rng = np.random.default_rng(0)
    variables = jax.tree.map(lambda a: jnp.asarray(rng.uniform(-0.3, 0.3, a.shape), jnp.float32), shapes)
    variables["batch_stats"] = jax.tree.map(lambda a: jnp.ones(a.shape, jnp.float32), shapes["batch_stats"])
    x = jnp.asarray(rng.standard_normal((32, 32, 32, 3)), jnp.float32)
    return model, variables, x


def test_output_shapes_and_dtype(small_model):
    model, variables, x = small_model
    logits = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x[:3])
    assert logits.shape == (3, 10) and logits.dtype == jnp.float32
    logits, upd = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))(variables, x)
    assert logits.shape == (32, 10) and logits.dtype == jnp.float32
    assert jax.tree.structure(upd["batch_stats"]) == jax.tree.structure(variables["batch_stats"])
    with pytest.raises(ValueError, match="not divisible"):
        jax.eval_shape(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]), variables, x[:20])


def test_logits_are_scaled_by_one_sixteenth(small_model):
    model, variables, x = small_model
    a = _eval(model, variables, x[:4])
    b = _eval(ResNet9(width_mult=0.125, logit_scale=1.0), variables, x[:4])
    assert float(jnp.abs(b).max()) > 0
    np.testing.assert_allclose(a, np.asarray(b) / 16, rtol=1e-6, atol=1e-7)


def test_whitening_constant_is_used(small_model):
    model, variables, x = small_model
    a = _eval(model, variables, x[:4])
    other = {**variables, "constants": {"whiten_kernel": variables["constants"]["whiten_kernel"] * 2}}
    assert not np.allclose(a, _eval(model, other, x[:4]))
