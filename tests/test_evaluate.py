"""Tests for speedrun.evaluate against numpy: padding to whole batches with a mask, and accuracy,
TTA accuracy (mean logits of the image and its mirror, Page's ``forward_tta([identity, flip_lr])``)
and cross-entropy of a tiny fake model whose logits depend on the image's column profile (so
mirroring changes them).

Views of a batch run in one forward (checked in the jaxpr) and equal the sequential views; hiverge's
selective TTA is checked on hand-built logits.

Comparisons of JAX matmuls and convolutions with float64 numpy references run under the
``float32_matmuls`` fixture (tests/conftest.py): HIGHEST precision, i.e. float32 on every backend,
not the TF32 that JAX uses by default on NVIDIA GPUs.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from speedrun.evaluate import batch_test_set, make_evaluate


def test_batch_test_set_pads_and_masks():
    rng = np.random.default_rng(0)
    x = rng.integers(1, 256, (7, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 10, 7).astype(np.int32)
    bx, by, mask = batch_test_set(x, y, 3)
    assert bx.shape == (3, 3, 32, 32, 3) and bx.dtype == np.uint8
    assert by.shape == (3, 3) and by.dtype == np.int32
    assert mask.shape == (3, 3) and mask.dtype == bool
    assert mask.ravel().tolist() == [True] * 7 + [False] * 2
    np.testing.assert_array_equal(bx.reshape(-1, 32, 32, 3)[:7], x)
    np.testing.assert_array_equal(by.ravel()[:7], y)
    assert (bx.reshape(-1, 32, 32, 3)[7:] == 0).all() and (by.ravel()[7:] == 0).all()


def test_batch_test_set_exact_multiple_has_no_padding():
    x = np.ones((6, 32, 32, 3), np.uint8)
    bx, by, mask = batch_test_set(x, np.arange(6, dtype=np.int32), 3)
    assert bx.shape == (2, 3, 32, 32, 3) and mask.all()


W = np.random.default_rng(1).standard_normal((32, 10)).astype(np.float32)


def _fake_apply(variables, x, train):
    """Logits = (column profile: mean over rows and channels) @ W · scale."""
    assert train is False
    return x.mean(axis=(1, 3)) @ variables["w"] * variables["scale"]


def _normalize(x):
    return x.astype(jnp.float32) / 255.0 - 0.5


def _np_reference(x, y, w, scale):
    xf = x.astype(np.float64) / 255.0 - 0.5
    logits = xf.mean(axis=(1, 3)) @ w * scale
    logits_flip = xf[:, :, ::-1].mean(axis=(1, 3)) @ w * scale
    tta = (logits + logits_flip) / 2
    logp = logits - logits.max(1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(1, keepdims=True))
    return {"acc": np.mean(logits.argmax(1) == y), "tta_acc": np.mean(tta.argmax(1) == y),
            "loss": -np.mean(logp[np.arange(len(y)), y])}, logits, tta


@pytest.mark.usefixtures("float32_matmuls")
def test_make_evaluate_matches_numpy_accuracy_tta_and_loss():
    rng = np.random.default_rng(2)
    n = 37
    x = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    variables = {"w": jnp.asarray(W), "scale": jnp.asarray(40.0, jnp.float32)}
    _, logits, tta = _np_reference(x, np.zeros(n, int), W, 40.0)
    # labels: the plain argmax, and 5 random; TTA changes the argmax of some images
    assert (logits.argmax(1) != tta.argmax(1)).sum() >= 3
    y = logits.argmax(1)
    y[:5] = rng.integers(0, 10, 5)
    y = y.astype(np.int32)
    expected, _, _ = _np_reference(x, y, W, 40.0)
    assert expected["acc"] != expected["tta_acc"]  # the test distinguishes TTA from no TTA

    evaluate = jax.jit(make_evaluate(_fake_apply, _normalize))
    got = evaluate(variables, *map(jnp.asarray, batch_test_set(x, y, 16)))  # 3 batches, 11 padded
    for k in ("acc", "tta_acc", "loss"):
        assert float(got[k]) == pytest.approx(expected[k], rel=1e-5, abs=1e-6), k
    # padding is ignored: one big batch gives the same figures
    got_one = evaluate(variables, *map(jnp.asarray, batch_test_set(x, y, n)))
    for k in ("acc", "tta_acc", "loss"):
        assert float(got_one[k]) == pytest.approx(float(got[k]), rel=1e-6), k


# ------------------------------------------------------------------ views in one forward, selective TTA

from speedrun import evaluate as eval_lib  # noqa: E402


def _conv_apply(variables, x, train):
    """A nonlinear stand-in net with one dot_general: (B, 8, 8, 3) -> (B, 4)."""
    assert train is False
    return jnp.tanh(jnp.einsum("bhwc,hwck->bk", x, variables))


def _sequential_tta(apply_fn, v, x, level):
    """The previous implementation: one forward per view, weighted sum."""
    return sum(w * apply_fn(v, view, train=False) for w, view in eval_lib.tta_views(x, level))


def _count_forwards(jaxpr):
    """tanh equations: one per forward of _conv_apply (the view mixing adds dot_generals)."""
    n = 0
    for eqn in jaxpr.eqns:
        n += eqn.primitive.name == "tanh"
        for p in eqn.params.values():
            if hasattr(p, "jaxpr"):
                n += _count_forwards(p.jaxpr)
    return n


@pytest.mark.usefixtures("float32_matmuls")
@pytest.mark.parametrize("level", eval_lib.TTA_LEVELS)
def test_views_in_one_forward_equal_the_sequential_views(level):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 8, 8, 3)).astype(np.float32)
    w = rng.standard_normal((8, 8, 3, 4)).astype(np.float32)
    got = eval_lib.tta_logits(_conv_apply, jnp.asarray(w), jnp.asarray(x), level)
    np.testing.assert_allclose(np.asarray(got), np.asarray(_sequential_tta(_conv_apply, w, jnp.asarray(x), level)),
                               rtol=1e-5, atol=1e-6)
    # the evaluation runs exactly one forward per batch (inside lax.map's body), at every level
    ev = eval_lib.make_evaluate(_conv_apply, lambda z: z.astype(jnp.float32), level)
    args = (jnp.asarray(w), jnp.asarray(x)[None].repeat(3, 0), jnp.zeros((3, 5), jnp.int32), jnp.ones((3, 5), bool))
    assert _count_forwards(jax.make_jaxpr(ev)(*args).jaxpr) == 1


def test_selective_tta_on_hand_built_logits():
    """hiverge's rule: the k = floor(0.25·n) least confident (max softmax of the plain logits) take
    the unweighted 6-view mean, the rest keep their plain logits; padding is never chosen."""
    n, classes = 8, 3
    table = np.array([[5, 0, 0], [0.1, 0, 0], [0, 4, 0], [0, 0.2, 0], [0, 0, 6], [0.3, 0.2, 0], [3, 0, 0],
                      [0, 0, 0.05]], np.float32)  # least confident: images 7, 1 (conf order)
    # image i: channel 0 constant i (unchanged by flips and reflect shifts), channel 1 a ramp whose
    # mirror/shift changes the second term
    x = np.zeros((n, 8, 8, 2), np.float32)
    x[..., 0] = np.arange(n)[:, None, None]
    x[..., 1] = np.arange(8)[None, None, :] / 8.0
    bump = np.array([0.0, 0.0, 3.0], np.float32)

    def apply_fn(v, z, train):
        idx = jnp.round(z[:, 0, 0, 0]).astype(jnp.int32)
        return jnp.asarray(table)[idx] + (z[:, 0, 0, 1] * 8.0)[:, None] * jnp.asarray(bump)

    # numpy reference
    xs = x
    pad = np.pad(xs, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
    views = [xs, pad[:, 0:8, 0:8], pad[:, 2:10, 2:10]]
    views += [v[:, :, ::-1] for v in views]
    f = lambda z: table[np.round(z[:, 0, 0, 0]).astype(int)] + (z[:, 0, 0, 1] * 8)[:, None] * bump  # noqa: E731
    plain = f(xs)
    mean6 = np.mean([f(v) for v in views], axis=0)
    p = np.exp(plain - plain.max(1, keepdims=True))
    conf = (p / p.sum(1, keepdims=True)).max(1)
    chosen = np.argsort(conf)[:2]
    assert set(chosen) == {1, 7}
    final = plain.copy()
    final[chosen] = mean6[chosen]
    assert (final.argmax(1) != plain.argmax(1)).any()  # the test tells selective TTA from none
    y = final.argmax(1).astype(np.int32)
    y[0] = 1  # one miss
    ev = jax.jit(eval_lib.make_evaluate(apply_fn, lambda z: z.astype(jnp.float32), 2, tta_selective=0.25))
    got = ev(None, *map(jnp.asarray, batch_test_set(x.astype(np.float32), y, 3)))  # 3 batches, 1 padded
    assert float(got["tta_acc"]) == pytest.approx(np.mean(final.argmax(1) == y))
    assert float(got["acc"]) == pytest.approx(np.mean(plain.argmax(1) == y))
    np.testing.assert_array_equal(
        np.asarray(eval_lib.selective_logits(jnp.asarray(plain), jnp.asarray(mean6), jnp.ones(n, bool), 0.25)), final)
    with pytest.raises(ValueError, match="tta_selective"):
        eval_lib.make_evaluate(apply_fn, lambda z: z, 0, tta_selective=0.25)
