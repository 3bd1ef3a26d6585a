"""Tests for the batched Muon (speedrun.optim.muon, speedrun.optim.newton_schulz) against
independent references: a per-matrix numpy Newton–Schulz in the sources' (c_out, K) layout, the
previous per-leaf optax ``scale_by_muon`` chain (a test-local copy), hiverge's renormalisation
steps for T = 243 and 272 as listed in ../shared/sources/frontier_recipes.md, and a numpy
transcription of hiverge's Muon step. Tolerances: float32 (rtol 1e-4 after three NS iterations)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from speedrun import optim
from speedrun.optim import muon, newton_schulz

AIRBENCH_NS = (3.4445, -4.7750, 2.0315)
HIVERGE_NS = (3.4576, -4.7391, 2.0843)
# airbench's six filter banks at width 1 (HWIO), plus a tall one (c_out > K)
SHAPES = [(3, 3, 24, 64), (3, 3, 64, 64), (3, 3, 64, 256), (3, 3, 256, 256), (3, 3, 256, 256), (1, 1, 8, 32)]


def _np_ns(m, coeffs, steps=3, eps=1e-7):
    """The sources' zeropower_via_newtonschulz5 on a (rows, cols) matrix, float64."""
    x = m / (np.linalg.norm(m) + eps)
    flip = x.shape[0] > x.shape[1]
    if flip:
        x = x.T
    a, b, c = coeffs
    for _ in range(steps):
        s = x @ x.T
        x = a * x + (b * s + c * s @ s) @ x
    return x.T if flip else x


def _tree(rng, shapes=SHAPES):
    return {f"k{i}": rng.standard_normal(s).astype(np.float32) for i, s in enumerate(shapes)}


@pytest.mark.usefixtures("float32_matmuls")
@pytest.mark.parametrize("grouping", newton_schulz.GROUPINGS)
def test_batched_newton_schulz_equals_per_matrix_numpy(grouping):
    g = _tree(np.random.default_rng(0))
    out = newton_schulz.orthogonalize(jax.tree.map(jnp.asarray, g), AIRBENCH_NS, 3, 1e-7, jnp.float32, grouping)
    for k, v in g.items():
        m = v.reshape(-1, v.shape[-1]).T.astype(np.float64)  # torch's (c_out, K)
        ref = _np_ns(m, AIRBENCH_NS).T.reshape(v.shape)
        np.testing.assert_allclose(np.asarray(out[k]), ref, rtol=1e-4, atol=1e-5, err_msg=k)


@pytest.mark.usefixtures("float32_matmuls")
def test_zero_padding_changes_no_matrix():
    """Each bank orthogonalised alone equals the same bank inside the padded stack."""
    g = jax.tree.map(jnp.asarray, _tree(np.random.default_rng(1)))
    stacked = newton_schulz.orthogonalize(g, HIVERGE_NS, 3, 1e-5, jnp.float32, "pad")
    for k, v in g.items():
        alone = newton_schulz.orthogonalize({k: v}, HIVERGE_NS, 3, 1e-5, jnp.float32, "pad")[k]
        np.testing.assert_allclose(np.asarray(stacked[k]), np.asarray(alone), rtol=1e-5, atol=1e-6, err_msg=k)


def _count(jaxpr, name):
    n = 0
    for eqn in jaxpr.eqns:
        n += eqn.primitive.name == name
        for sub in jax.core.subjaxprs(eqn) if hasattr(jax.core, "subjaxprs") else ():
            n += _count(sub, name)
    return n


@pytest.mark.parametrize("n_leaves", [1, 3, 6])
def test_one_batched_dot_general_chain_whatever_the_number_of_leaves(n_leaves):
    g = jax.tree.map(jnp.asarray, _tree(np.random.default_rng(2), SHAPES[:n_leaves]))
    jaxpr = jax.make_jaxpr(lambda t: newton_schulz.orthogonalize(t, AIRBENCH_NS, 3))(g).jaxpr
    assert _count(jaxpr, "dot_general") == 3 * 3  # 3 products per iteration, 3 iterations
    # stacked by shape: one chain per distinct shape
    jaxpr = jax.make_jaxpr(lambda t: newton_schulz.orthogonalize(t, AIRBENCH_NS, 3, grouping="shape"))(g).jaxpr
    assert _count(jaxpr, "dot_general") == 9 * len({s for s in SHAPES[:n_leaves]})


def test_ns_dtype_auto_and_per_backend():
    assert newton_schulz.resolve_ns_dtype("auto", "cpu") == jnp.float32
    assert newton_schulz.resolve_ns_dtype("auto", "gpu") == jnp.bfloat16
    assert newton_schulz.resolve_ns_dtype("auto", "tpu") == jnp.bfloat16
    assert newton_schulz.resolve_ns_dtype("gpu=float16,cpu=float32", "gpu") == jnp.float16
    assert newton_schulz.resolve_ns_dtype("float32", "gpu") == jnp.float32
    with pytest.raises(ValueError, match="ns_dtype"):
        newton_schulz.resolve_ns_dtype("int8", "cpu")
    # the iteration runs in the dtype asked for
    g = {"k": jnp.ones((3, 3, 4, 8))}
    jaxpr = jax.make_jaxpr(lambda t: newton_schulz.orthogonalize(t, dtype=jnp.bfloat16))(g).jaxpr
    dots = [e for e in jaxpr.eqns if e.primitive.name == "dot_general"]
    assert dots and all(e.outvars[0].aval.dtype == jnp.bfloat16 for e in dots)


def test_muon_state_has_no_params_sized_buffer_but_the_momentum():
    params = jax.tree.map(jnp.asarray, _tree(np.random.default_rng(3)))
    for tx in (optim.muon_filters(0.1), optim.muon_filters(0.1, horizon=20, target_norm=(0.5, 0.08),
                                                           weight_decay=1e-3, renorm_eps=1e-7)):
        state = tx.init(params)
        n_params = sum(x.size for x in jax.tree.leaves(params))
        n_state = sum(x.size for x in jax.tree.leaves(state))
        assert n_params <= n_state <= n_params + 8  # the momentum, then a few int32 counters


def _old_muon_filters(lr, momentum=0.6, ns_coeffs=AIRBENCH_NS, ns_steps=3, eps=1e-7):
    """The previous implementation (optax scale_by_muon leaf by leaf, beta=0), kept as reference."""
    from optax.contrib import MuonDimensionNumbers, scale_by_muon

    def dims(tree):
        return jax.tree.map(lambda x: MuonDimensionNumbers(tuple(range(x.ndim - 1)), x.ndim - 1), tree)

    return optax.chain(optax.trace(decay=momentum, nesterov=True),
                       scale_by_muon(ns_coeffs=ns_coeffs, ns_steps=ns_steps, beta=0.0, eps=eps, nesterov=False,
                                     weight_dimension_numbers=dims),
                       optax.scale_by_learning_rate(lr), optim.renormalize_filters())


@pytest.mark.usefixtures("float32_matmuls")
def test_airbench_muon_update_equals_the_previous_per_leaf_chain():
    rng = np.random.default_rng(4)
    params = {f"group{i}_conv1": {"kernel": rng.standard_normal(s).astype(np.float32)}
              for i, s in enumerate(SHAPES[:5])}
    params.update({"group0_bn1": {"bias": rng.standard_normal(64).astype(np.float32)},
                   "head": {"kernel": rng.standard_normal((256, 10)).astype(np.float32)},
                   "whiten_bias": rng.standard_normal(24).astype(np.float32)})
    grads = [jax.tree.map(lambda a: rng.standard_normal(a.shape).astype(np.float32) * 0.1, params)
             for _ in range(5)]
    total = 10
    new_tx, _ = optim.airbench_muon(total, 2, 50, ns_dtype="float32")
    lr = lambda c: 0.24 * optim.linear_decay(total)(c)  # noqa: E731
    old_tx = optax.multi_transform({"filter": _old_muon_filters(lr), "head": optax.identity(),
                                    "bn_bias": optax.identity(), "whiten_bias": optax.identity()},
                                   optim.airbench_labels)

    def run(tx):
        p = jax.tree.map(jnp.asarray, params)
        s = tx.init(p)
        for g in grads:
            u, s = tx.update(jax.tree.map(jnp.asarray, g), s, p)
            p = optax.apply_updates(p, u)
        return p

    new, old = run(new_tx), run(old_tx)
    for k in params:
        if k.startswith("group") and "conv" in k:
            np.testing.assert_allclose(np.asarray(new[k]["kernel"]), np.asarray(old[k]["kernel"]),
                                       rtol=1e-4, atol=1e-5, err_msg=k)


HIVERGE_243 = [2, 4, 6, 8, 10, 12, 14, 16, 19, 22, 25, 28, 31, 35, 39, 43, 47, 52, 57, 62, 68, 74, 80, 87, 94,
               102, 110, 119, 128, 138, 149, 160, 172, 185, 199, 214, 230]
E1_272_284 = [2, 4, 6, 8, 10, 12, 14, 16, 18, 21, 24, 27, 30, 33, 36, 40, 44, 48, 52, 57, 62, 67, 72, 78, 84, 90,
              97, 104, 112, 120, 129, 138, 148, 158, 169, 180, 192, 205, 219, 233, 248, 264, 281]


def test_renorm_steps_are_hiverges_for_243_and_e1s_for_272():
    assert muon.renorm_steps(243, 243) == HIVERGE_243 and len(HIVERGE_243) == 37
    assert muon.renorm_steps(272, 284) == E1_272_284


def test_periodic_renormalization_fires_at_the_listed_steps():
    tx = optim.renormalize_filters(1e-7, horizon=243)
    w = {"k": jnp.full((3, 3, 2, 4), 2.0)}  # ‖w‖ = 12, rescaled to 2 on firing steps
    state = tx.init(w)
    step = jax.jit(lambda s: tx.update(jax.tree.map(jnp.zeros_like, w), s, w))
    fired = []
    for t in range(1, 244):
        u, state = step(state)
        if float(jnp.abs(u["k"]).max()) > 0:
            fired.append(t)
            np.testing.assert_allclose(np.linalg.norm(np.asarray(w["k"] + u["k"])), 2.0, rtol=1e-6)
    assert fired == HIVERGE_243


def _np_hiverge_muon(w, grads, lr_at, horizon, wd, momentum=0.655):
    """hiverge's Muon.step in numpy float64, torch layout (c_out, c_in, kh, kw)."""
    buf, last = np.zeros_like(w), 0
    for s, g in enumerate(grads):
        t = s + 1
        buf = momentum * buf + g
        u = g + momentum * buf
        norm_freq = 2 + int(15 * t / horizon)
        do_norm = t - last >= norm_freq
        if do_norm:
            last = t
            w = w * (len(w) ** 0.5 / (np.linalg.norm(w) + 1e-7))
        r = min(t, horizon) / horizon
        tau = 0.5012 * (1 - r) + 0.0786 * r
        x = u.reshape(len(u), -1)
        x = x * tau / (np.linalg.norm(x) + 1e-5)
        x = x / (np.linalg.norm(x) + 1e-5)
        x = _ns_no_prescale(x)
        lr = lr_at(s)
        w = w - lr * x.reshape(w.shape)
        w = w * (1 - lr * wd)
    return w


def _ns_no_prescale(x):
    a, b, c = HIVERGE_NS
    for _ in range(3):
        s = x @ x.T
        x = a * x + (b * s + c * s @ s) @ x
    return x


@pytest.mark.usefixtures("float32_matmuls")
def test_hiverge_muon_steps_equal_numpy_transcription():
    rng = np.random.default_rng(5)
    shape, horizon, n, wd = (3, 3, 8, 16), 12, 12, 0.0016
    w0 = rng.standard_normal(shape).astype(np.float32)
    grads = [rng.standard_normal(shape).astype(np.float32) for _ in range(n)]
    lr_at = lambda s: 0.205 * max(1 - s / horizon, 0.05)  # noqa: E731
    tx = optim.muon_filters(lambda c: 0.205 * jnp.maximum(1 - c / horizon, 0.05), 0.655, True, HIVERGE_NS, 3,
                            eps=1e-5, horizon=horizon, renorm_eps=1e-7, target_norm=(0.5012, 0.0786),
                            weight_decay=wd)
    p = {"k": jnp.asarray(w0)}
    state = tx.init(p)
    for g in grads:
        u, state = tx.update({"k": jnp.asarray(g)}, state, p)
        p = optax.apply_updates(p, u)
    to_t = lambda a: a.transpose(3, 2, 0, 1).astype(np.float64)  # noqa: E731
    ref = _np_hiverge_muon(to_t(w0), [to_t(g) for g in grads], lr_at, horizon, wd)
    np.testing.assert_allclose(np.asarray(p["k"]), ref.transpose(2, 3, 1, 0), rtol=1e-4, atol=1e-5)
    assert math.isfinite(float(jnp.sum(p["k"])))


def test_grouping_auto_is_one_stack_on_gpu_and_per_shape_on_cpu():
    assert newton_schulz.resolve_grouping("auto", "gpu") == "pad"
    assert newton_schulz.resolve_grouping("auto", "cpu") == "shape"
    assert newton_schulz.resolve_grouping("pad", "cpu") == "pad"
    with pytest.raises(ValueError, match="ns_grouping"):
        newton_schulz.resolve_grouping("leaf", "cpu")
    # the padded stack's extra FLOPs at airbench's shapes (hand count: 6·3·(2·2304·256²·2 + 2·256³))
    assert newton_schulz.padded_flops(SHAPES[:5] + [(3, 3, 256, 256)], 3, "pad") == 6 * 3 * (
        4 * 2304 * 256**2 + 2 * 256**3)
