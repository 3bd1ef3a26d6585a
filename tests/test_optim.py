"""Tests for speedrun.optim against a hand-written PyTorch-style Nesterov SGD in numpy with Page's
parametrisation (summed loss, lr/B, weight decay·B, biases at 64× lr and 1/64 weight decay;
cifar10-fast ``bag_of_tricks.ipynb``), for the lr schedule against ``np.interp``, and for the
label-smoothed cross-entropy against Page's formula."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from speedrun import config, optim
from speedrun.train.step import cross_entropy

KNOTS, VALUES = [0.0, 2.0, 8.0], [0.0, 1.0, 0.1]


def test_epoch_schedule_equals_np_interp():
    spe = 10
    sched = optim.epoch_schedule(KNOTS, VALUES, spe)
    counts = np.array([0, 1, 5, 9, 10, 19, 20, 33, 50, 78, 79, 80, 95, 99, 120, 1000])
    got = np.array([float(sched(jnp.asarray(c))) for c in counts])
    expected = np.interp((counts + 1) / spe, KNOTS, VALUES)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
    # flat at 0.1 after epoch 8 (Page's schedule runs to epoch 10)
    np.testing.assert_allclose(got[counts >= 79], 0.1, rtol=1e-6)
    assert float(sched(19)) == pytest.approx(1.0)  # peak at the end of epoch 2


@pytest.mark.parametrize("knots,values", [([0, 2, 2], [0, 1, 0]), ([0, 2], [0, 1, 0]), ([0], [0])])
def test_piecewise_linear_rejects_bad_knots(knots, values):
    with pytest.raises(ValueError, match="strictly increasing knots"):
        optim.piecewise_linear(knots, values)


def test_bias_labels():
    params = {"conv": {"kernel": 0}, "bn": {"bias": 0}, "nested": {"bn2": {"bias": 0}, "linear": {"kernel": 0}}}
    assert optim.bias_labels(params) == {
        "conv": {"kernel": "default"}, "bn": {"bias": "bias"},
        "nested": {"bn2": {"bias": "bias"}, "linear": {"kernel": "default"}}}


# A tiny model with a weight and a bias leaf: pred_i = x_i @ kernel + bias, per-example loss
# l_i = ½‖pred_i − t_i‖². Gradients of the *summed* loss by hand: Σ_i x_iᵀ r_i and Σ_i r_i.
B = 8


def _data(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, 5))
    t = rng.standard_normal((B, 3))
    params = {"dense": {"kernel": rng.standard_normal((5, 3))}, "bn": {"bias": rng.standard_normal(3)}}
    return x, t, params


def _summed_grads(params, x, t):
    r = x @ params["dense"]["kernel"] + params["bn"]["bias"] - t
    return {"dense": {"kernel": x.T @ r}, "bn": {"bias": r.sum(0)}}


def _page_torch_sgd(params, x, t, steps, spe, momentum=0.9, wd=5e-4):
    """PyTorch ``SGD(nesterov=True, dampening=0)`` on the summed loss, as Page sets it up:
    weights lr(epoch)/B and weight decay wd·B; biases lr·64/B and wd·B/64; the schedule is read at
    epoch (step+1)/steps_per_epoch (Page's optimiser counts the step before reading the lr)."""
    params = {k: {n: np.array(v, np.float64) for n, v in d.items()} for k, d in params.items()}
    bufs = {}
    for step in range(steps):
        lr = np.interp((step + 1) / spe, KNOTS, VALUES)
        grads = _summed_grads(params, x, t)
        for layer, d in params.items():
            for name, p in d.items():
                is_bias = name == "bias"
                lr_p = lr * (64 if is_bias else 1) / B
                wd_p = wd * B / (64 if is_bias else 1)
                g = grads[layer][name] + wd_p * p
                buf = g.copy() if step == 0 else momentum * bufs[layer, name] + g
                bufs[layer, name] = buf
                d[name] = p - lr_p * (g + momentum * buf)
    return params


@pytest.mark.parametrize("steps", [1, 2, 3])
def test_page_sgd_matches_torch_style_sgd_on_summed_loss(steps):
    x, t, p0 = _data()
    spe = 2  # lr at counts 0, 1, 2: interp(0.5), interp(1.0), interp(1.5) = 0.25, 0.5, 0.75
    tx = optim.page_sgd(optim.epoch_schedule(KNOTS, VALUES, spe))
    params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), p0)
    state = tx.init(params)

    def mean_loss(p):
        r = jnp.asarray(x, jnp.float32) @ p["dense"]["kernel"] + p["bn"]["bias"] - jnp.asarray(t, jnp.float32)
        return 0.5 * jnp.sum(r**2) / B

    for _ in range(steps):
        grads = jax.grad(mean_loss)(params)
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)

    expected = _page_torch_sgd(p0, x, t, steps, spe)
    for layer in ("dense", "bn"):
        for name in expected[layer]:
            np.testing.assert_allclose(params[layer][name], expected[layer][name], rtol=2e-5, atol=2e-6)
    # the update is not trivial: the bias moved much more than with the weights' lr
    assert np.abs(np.asarray(params["bn"]["bias"]) - p0["bn"]["bias"]).max() > 1e-2


def test_make_optimizer_from_record_config_and_unknown_name():
    cfg = ml_collections.ConfigDict(dict(
        name="page_sgd", lr_knots=KNOTS, lr_values=VALUES, momentum=0.9, nesterov=True,
        weight_decay=5e-4, bias_lr_mult=64.0, bias_wd_mult=1 / 64))
    derived = config.Derived(n_train=1000, batch_size=100, num_devices=1, batch_per_device=100,
                             steps_per_epoch=10, total_steps=100)
    tx, lr = optim.make_optimizer(cfg, derived)
    assert isinstance(tx, optax.GradientTransformation)
    assert float(lr(19)) == pytest.approx(1.0)
    assert sorted(optim.OPTIMIZERS) == ["airbench_muon", "airbench_sgd", "he_sgd", "hiverge_muon", "page_sgd"]
    cfg.name = "adamw"
    with pytest.raises(ValueError, match=r"unknown optimizer 'adamw'; known: \['airbench_muon', "
                                         r"'airbench_sgd', 'he_sgd', 'hiverge_muon', 'page_sgd'\]"):
        optim.make_optimizer(cfg, derived)


# ---------------------------------------------------------------- loss


def _np_label_smoothing_loss(logits, labels, eps):
    """Page's ``label_smoothing_loss``: (1-ε)·NLL + ε·mean_k(−log p_k), averaged over the batch."""
    logits = logits.astype(np.float64)
    logp = logits - logits.max(1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(1, keepdims=True))
    nll = -logp[np.arange(len(labels)), labels]
    return np.mean((1 - eps) * nll + eps * (-logp).mean(1))


@pytest.mark.parametrize("eps", [0.0, 0.2])
def test_cross_entropy_with_label_smoothing_matches_page_formula(eps):
    rng = np.random.default_rng(0)
    logits = (rng.standard_normal((16, 10)) * 3).astype(np.float32)
    labels = rng.integers(0, 10, 16).astype(np.int32)
    got = float(cross_entropy(jnp.asarray(logits), jnp.asarray(labels), eps))
    assert got == pytest.approx(_np_label_smoothing_loss(logits, labels, eps), rel=1e-5)


@pytest.mark.parametrize("name", sorted(p.stem for p in config.RECORDS_DIR.glob("*.py")))
def test_every_record_optimizer_builds_from_the_derived_step_counts(name):
    c = config.load_record(name)
    # the run's batch and length reach the optimizer only through config.derived, not as copies
    assert not {"batch_size", "epochs", "last_epoch_fraction"} & set(c.optimizer.keys())
    tx, lr = optim.make_optimizer(c.optimizer, config.derived(c, 50_000))
    assert isinstance(tx, optax.GradientTransformation)
    assert np.isfinite(float(lr(0))) and float(lr(0)) > 0
