"""Tests for speedrun.evaluate against numpy: padding to whole batches with a mask, and accuracy,
TTA accuracy (mean logits of the image and its mirror, Page's ``forward_tta([identity, flip_lr])``)
and cross-entropy of a tiny fake model whose logits depend on the image's column profile (so
mirroring changes them).

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
