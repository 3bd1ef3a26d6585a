"""The airbench net's variants (speedrun.models.airbench) against a float64 numpy forward of the
same weights, written from the sources' layer order:

- airbench96's three-convolution group (KellerJordan/cifar10-airbench ``legacy/airbench96.py`` at
  f1c599c: conv1, pool, BN, GELU → x0; conv2, BN, GELU; conv3, BN; + x0; GELU);
- hiverge's activations (hiverge/cifar10-speedrun 5cd49b1: exact GELU after the whitening, SiLU in
  the groups), logits ÷ the head's input width (``head(x) / x.size(-1)``);
- Fable-5 E1's global max pool (fulcrumresearch/cifar-10-speedrun ddec65f ``GlobalAmaxPool``) at
  the curriculum's 24, 28 and 32 px;
- the frozen BN scale (PyTorch's weight 1 with ``requires_grad=False``) and hand-counted
  parameters of airbench95/96 and airbench96_faster's proxy.

Float32 JAX against float64 numpy runs under ``float32_matmuls`` (tests/conftest.py); the
tolerance 2e-4 covers float32 rounding through ten layers of batch norm over a 4-image batch.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import erf

from speedrun.models.airbench import AirbenchNet
from speedrun.models.layers import GhostBatchNorm

EPS = 1e-12


# ------------------------------------------------------------------ the numpy reference

def _gelu(x):
    return 0.5 * x * (1 + erf(x / math.sqrt(2)))


def _silu(x):
    return x / (1 + np.exp(-x))


ACT = {"gelu": _gelu, "silu": _silu}


def _conv_same(x, k):  # 3x3 'same' conv with zero padding, HWIO kernel
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (3, 3), axis=(1, 2))  # (B, H, W, C, 3, 3)
    return np.einsum("bhwcij,ijco->bhwo", win, k)


def _pool2(x):  # MaxPool2d(2): non-overlapping 2x2 windows, the odd row/column dropped
    b, h, w, c = x.shape
    return x[:, :h // 2 * 2, :w // 2 * 2].reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def _bn(x, bias):  # training-mode BatchNorm2d: batch mean, biased variance, weight 1, eps 1e-12
    m = x.mean(axis=(0, 1, 2))
    v = x.var(axis=(0, 1, 2))
    return (x - m) / np.sqrt(v + EPS) + bias


def np_forward(x, v, *, convs, act="gelu", whiten_act="gelu", scale=1 / 9):
    """The net of the sources in numpy float64, in training mode (batch statistics)."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), v["params"])
    k = np.asarray(v["constants"]["whiten_kernel"], np.float64)
    k = np.concatenate([k, -k], -1)
    patches = np.lib.stride_tricks.sliding_window_view(x, (2, 2), axis=(1, 2)).transpose(0, 1, 2, 4, 5, 3)
    h = patches.shape[1]
    y = ACT[whiten_act](patches.reshape(len(x), h, h, 12) @ k.reshape(12, -1) + p["whiten_bias"])
    f = ACT[act]
    for g in (1, 2, 3):
        q = lambda n: p[f"group{g}_{n}"]  # noqa: E731
        y = f(_bn(_pool2(_conv_same(y, q("conv1")["kernel"])), q("bn1")["bias"]))
        x0 = y
        y = f(_bn(_conv_same(y, q("conv2")["kernel"]), q("bn2")["bias"]))
        if convs == 3:
            y = f(_bn(_conv_same(y, q("conv3")["kernel"]), q("bn3")["bias"]) + x0)
    y = y.max(axis=(1, 2))  # MaxPool2d(3) on the 3x3 map, or the global max
    return y @ p["head"]["kernel"] * scale


def _variables(model, size=32, seed=0):
    """Random variables of ``model`` (filled from numpy: no compiled init)."""
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, size, size, 3)), train=False))
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda a: jnp.asarray(rng.uniform(-0.4, 0.4, a.shape), jnp.float32), shapes)


def _train_logits(model, v, x):
    return np.asarray(jax.jit(lambda v, z: model.apply(v, z, train=True, mutable=["batch_stats"])[0])(v, x))


WIDTHS = (8, 16, 16)


@pytest.mark.usefixtures("float32_matmuls")
@pytest.mark.parametrize("convs,act,pool,inverse", [
    (3, "gelu", "max3", False),       # airbench96's group
    (2, "silu", "global_max", True),  # hiverge's activations, E1's pool, logits / width
])
def test_net_equals_numpy_forward(convs, act, pool, inverse):
    model = AirbenchNet(widths=WIDTHS, convs_per_group=convs, activation=act, final_pool=pool,
                        logit_scale=1.0 if inverse else 1 / 9, logit_scale_inverse_width=inverse)
    v = _variables(model)
    x = np.random.default_rng(1).standard_normal((4, 32, 32, 3))
    ref = np_forward(x, v, convs=convs, act=act, scale=1 / WIDTHS[-1] if inverse else 1 / 9)
    got = _train_logits(model, v, jnp.asarray(x, jnp.float32))
    assert np.abs(ref).max() > 0.1
    np.testing.assert_allclose(got, ref, rtol=2e-4, atol=2e-4)


@pytest.mark.usefixtures("float32_matmuls")
def test_three_conv_group_with_its_residual_convs_zeroed_is_its_skip_path():
    """With conv2 and conv3 zeroed, BN of a zero map is its bias (0), act(0) = 0, so the residual
    branch adds nothing and each group outputs act(x0), x0 its first stage (conv1, pool, BN, act) —
    the stage the two-convolution group begins with. (The skip joins before the last activation,
    so no zeroing turns it into the two-convolution group's output act(BN(conv2(x0))).)"""
    three = AirbenchNet(widths=WIDTHS, convs_per_group=3)
    v = _variables(three)
    params = dict(v["params"])
    for g in (1, 2, 3):
        for n in ("conv2", "conv3"):
            params[f"group{g}_{n}"] = {"kernel": jnp.zeros_like(params[f"group{g}_{n}"]["kernel"])}
        for n in ("bn2", "bn3"):
            params[f"group{g}_{n}"] = {"bias": jnp.zeros_like(params[f"group{g}_{n}"]["bias"])}
    v = {**v, "params": params}
    x = np.random.default_rng(2).standard_normal((4, 32, 32, 3))

    # numpy: each group is act(x0), x0 = act(BN1(pool(conv1(y)))); the zeroed branch is left out
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), v["params"])
    k = np.asarray(v["constants"]["whiten_kernel"], np.float64)
    k = np.concatenate([k, -k], -1)
    patches = np.lib.stride_tricks.sliding_window_view(x, (2, 2), axis=(1, 2)).transpose(0, 1, 2, 4, 5, 3)
    y = _gelu(patches.reshape(4, 31, 31, 12) @ k.reshape(12, -1) + p["whiten_bias"])
    for g in (1, 2, 3):
        x0 = _gelu(_bn(_pool2(_conv_same(y, p[f"group{g}_conv1"]["kernel"])), p[f"group{g}_bn1"]["bias"]))
        y = _gelu(x0)
    ref = y.max(axis=(1, 2)) @ p["head"]["kernel"] / 9
    np.testing.assert_allclose(_train_logits(three, v, jnp.asarray(x, jnp.float32)), ref, rtol=2e-4, atol=2e-4)

    # the two-convolution net's parameters are the three-convolution net's without conv3/bn3
    two = jax.eval_shape(lambda: AirbenchNet(widths=WIDTHS).init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)),
                                                                  train=False))["params"]
    extra = {f"group{g}_{n}" for g in (1, 2, 3) for n in ("conv3", "bn3")}
    assert set(v["params"]) == set(two) | extra
    for name in two:
        assert jax.tree.map(jnp.shape, two[name]) == jax.tree.map(jnp.shape, v["params"][name])


@pytest.mark.usefixtures("float32_matmuls")
def test_global_max_pool_keeps_the_head_shape_at_the_curriculum_sizes():
    model = AirbenchNet(widths=WIDTHS, final_pool="global_max", activation="silu")
    v = _variables(model, size=32)  # the same variables at every size
    rng = np.random.default_rng(3)
    for size in (24, 28, 32):
        x = rng.standard_normal((4, size, size, 3))
        got = _train_logits(model, v, jnp.asarray(x, jnp.float32))
        assert got.shape == (4, 10)
        np.testing.assert_allclose(got, np_forward(x, v, convs=2, act="silu"), rtol=2e-4, atol=2e-4)
    assert v["params"]["head"]["kernel"].shape == (WIDTHS[-1], 10)
    # at 32 px the final map is 3x3: the global max is maxpool3, bit for bit
    x = jnp.asarray(rng.standard_normal((4, 32, 32, 3)), jnp.float32)
    np.testing.assert_array_equal(_train_logits(model, v, x),
                                  _train_logits(model.clone(final_pool="max3"), v, x))
    with pytest.raises(ValueError, match="global_max"):  # maxpool3 of a 2x2 map (24 px)
        jax.eval_shape(lambda: model.clone(final_pool="max3").apply(v, jnp.zeros((2, 24, 24, 3)), train=False))


def test_logit_scale_inverse_width_is_one_over_the_head_input_width():
    x = jnp.asarray(np.random.default_rng(4).standard_normal((2, 32, 32, 3)), jnp.float32)
    for width_mult, width in ((0.125, 32), (0.25, 64)):  # airbench94_muon's 256 scaled
        model = AirbenchNet(width_mult=width_mult, logit_scale=1.0, logit_scale_inverse_width=True)
        v = _variables(model)
        ev = lambda m: np.asarray(jax.jit(lambda v, z: m.apply(v, z, train=False))(v, x))  # noqa: E731
        unscaled = ev(model.clone(logit_scale_inverse_width=False))
        np.testing.assert_allclose(ev(model), unscaled / width, rtol=1e-6, atol=1e-8)
        assert not np.allclose(ev(model), unscaled / 256)  # the former pinned 1/256


def test_frozen_bn_scale_is_the_trained_scale_at_its_init_of_one():
    x = jnp.asarray(np.random.default_rng(5).standard_normal((6, 3, 3, 4)), jnp.float32)
    frozen, free = GhostBatchNorm(ghost_batch_size=None, use_scale=False), GhostBatchNorm(ghost_batch_size=None,
                                                                                           use_scale=True)
    vf = free.init(jax.random.key(0), x, use_running_average=False)
    np.testing.assert_array_equal(vf["params"]["scale"], np.ones(4))  # PyTorch's BN weight init
    out_free, _ = free.apply(vf, x, use_running_average=False, mutable=["batch_stats"])
    out_frozen, _ = frozen.apply({k: vf[k] for k in vf if k != "params"} | {"params": {"bias": vf["params"]["bias"]}},
                                 x, use_running_average=False, mutable=["batch_stats"])
    np.testing.assert_array_equal(out_frozen, out_free)
    hiverge = AirbenchNet(activation="silu", bn_momentum=0.5566, width_mult=0.125)
    shapes = jax.eval_shape(lambda: hiverge.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False))
    assert not any("scale" in p for p in shapes["params"].values() if isinstance(p, dict))


def _hand_count(widths, convs):
    """Trainable parameters: bias-free 3x3 convs, one BN bias per BN channel, the whitening bias
    (24) and the bias-free head; the whitening filters are constants."""
    w = (24,) + tuple(widths)
    conv = sum(9 * (w[i] * w[i + 1] + (convs - 1) * w[i + 1] ** 2) for i in range(3))
    return conv + convs * sum(widths) + 24 + 10 * widths[-1]


@pytest.mark.parametrize("widths,convs,expected", [
    ((128, 384, 384), 2, 4_604_440),   # airbench95
    ((128, 384, 512), 3, 9_915_416),   # airbench96
    ((32, 64, 64), 2, 146_136),        # airbench96_faster's proxy
    ((64, 256, 256), 2, 1_971_352),    # airbench94 (the figure of the module docstring)
])
def test_parameter_counts(widths, convs, expected):
    model = AirbenchNet(widths=widths, convs_per_group=convs)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False))
    assert sum(a.size for a in jax.tree.leaves(shapes["params"])) == _hand_count(widths, convs) == expected


@pytest.mark.parametrize("field,value", [("activation", "relu"), ("whiten_activation", "tanh"),
                                         ("final_pool", "avg"), ("convs_per_group", 4)])
def test_bad_variant_names_are_rejected(field, value):
    model = AirbenchNet(widths=WIDTHS, **{field: value})
    with pytest.raises(ValueError, match=field):
        jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False))
