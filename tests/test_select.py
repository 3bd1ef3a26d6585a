"""Data selection by a proxy network (speedrun.train.select), against independent references:

- the kept rows of hand-built batches are the numpy top-k of hand-computed label-smoothed losses;
- the proxy trains on the steps that are multiples of the period (``ceil(steps / period)`` times,
  across epochs that start at any step), its schedule read at the run's step, as
  airbench96_faster.py's ``scheduler.step()`` every step;
- the proxy's update is the gradient of the mean loss over the numpy-chosen rows of a forward pass
  over the whole batch (batch statistics of all rows, as the source's masked summed loss);
- with every row kept the main net's steps equal the plain steps bit for bit (CPU);
- the optimizer for kept rows equals PyTorch SGD on the loss summed over them with the source's
  batch-1024 formulas (numpy);
- no conditional in the selecting program's jaxpr; it runs inside the data-parallel shard_map.
"""

import functools
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from conftest import jaxpr_eqns

from speedrun import config as config_lib
from speedrun.models.airbench import AirbenchNet
from speedrun.system import parallel
from speedrun.train import select, state as state_lib, step as step_lib

K = 10


def np_losses(logits, labels, eps):
    """Label-smoothed cross-entropy per row, float64: −(1−ε)·log p_y − ε/K·Σ_k log p_k."""
    z = logits - logits.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    return -(1 - eps) * logp[np.arange(len(labels)), labels] - eps / K * logp.sum(-1)


class PixelLogits(nn.Module):
    """A stand-in proxy: the logits are the first pixel's 10 channels times a scalar param (1)."""

    @nn.compact
    def __call__(self, x, train):
        return x[:, 0, 0, :] * self.param("w", nn.initializers.ones, ())


def _batches(n, b, seed):
    rng = np.random.default_rng(seed)
    xs = rng.standard_normal((n, b, 1, 1, K)).astype(np.float32) * 3
    ys = rng.integers(0, K, (n, b)).astype(np.int32)
    return xs, ys


def test_kept_rows_are_the_top_k_of_known_losses():
    eps, b, k = 0.2, 8, 3
    xs, ys = _batches(1, b, 0)
    losses = np.asarray(select.per_example_loss(jnp.asarray(xs[0, :, 0, 0]), jnp.asarray(ys[0]), eps))
    ref = np_losses(xs[0, :, 0, 0].astype(np.float64), ys[0], eps)
    np.testing.assert_allclose(losses, ref, rtol=1e-5)
    np.testing.assert_array_equal(select.kept_rows(jnp.asarray(ref), k), np.sort(np.argsort(ref)[-k:]))

    # through the macro step: each batch's main step gets its top-k rows, in batch order
    proxy_model, tx = PixelLogits(), optax.set_to_zero()  # the proxy stays put: its losses stay known
    proxy = select.init_proxy(proxy_model, tx, jax.random.key(0))
    main = lambda s, c, x, y, key: (s + 1, {"rows": x[:, 0, 0, :], "y": y})  # noqa: E731
    macro = select.selecting_step(main, proxy_model, tx, k, 4, label_smoothing=eps)
    xs, ys = _batches(4, b, 1)
    state, proxy, m = jax.jit(macro)(jnp.int32(0), proxy, {}, xs, ys, None)
    assert int(state) == 4 and int(proxy.step) == 1
    for j in range(4):
        keep = np.sort(np.argsort(np_losses(xs[j, :, 0, 0].astype(np.float64), ys[j], eps))[-k:])
        np.testing.assert_array_equal(m["rows"][j], xs[j, keep, 0, 0])
        np.testing.assert_array_equal(m["y"][j], ys[j, keep])


class RecState(NamedTuple):
    count: jax.Array  # optax's schedule counter: advanced by the period per update
    updates: jax.Array  # updates taken (not advanced)
    seen: jax.Array  # the count each update read


def recording_tx(size=16):
    """A GradientTransformation that changes nothing and records the count each update reads."""
    def init(params):
        return RecState(jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32), jnp.full((size,), -1, jnp.int32))

    def update(grads, s, params=None):
        return (jax.tree.map(jnp.zeros_like, grads),
                RecState(s.count + 1, s.updates + 1, s.seen.at[s.updates].set(s.count)))
    return optax.GradientTransformation(init, update)


@pytest.mark.parametrize("epochs", [(7,), (5, 5, 3), (4, 4, 4, 1)])
def test_proxy_trains_ceil_steps_over_period_times_at_the_multiples_of_the_period(epochs):
    period, b, k = 4, 6, 3
    proxy_model, tx = PixelLogits(), recording_tx()
    proxy = select.init_proxy(proxy_model, tx, jax.random.key(0))
    main = lambda s, c, x, y, key: (s + 1, {"loss": jnp.float32(0)})  # noqa: E731
    macro = select.selecting_step(main, proxy_model, tx, k, period, label_smoothing=0.0)
    state, start = jnp.int32(0), 0
    for e, steps in enumerate(epochs):  # each epoch its own program, starting at its run step
        xs, ys = _batches(steps, b, e)
        run = jax.jit(lambda s, p, xs, ys: select.selecting_scan(
            macro, period, s, p, {}, (xs, ys), lambda r: (r[0], r[1], None), start=start))
        state, proxy, m = run(state, proxy, xs, ys)
        assert m["loss"].shape == (steps,)
        start += steps
    total = sum(epochs)
    updates = -(-total // period)  # ceil
    assert int(state) == total and int(proxy.step) == updates
    seen = np.asarray(proxy.opt_state.seen)
    np.testing.assert_array_equal(seen[:updates], period * np.arange(updates))  # the schedule at the run's step
    assert (seen[updates:] == -1).all()


def _airbench_state(model, tx, b, seed):
    """A TrainState of ``model`` with random params (filled from numpy: no compiled init)."""
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False))
    rng = np.random.default_rng(seed)
    v = jax.tree.map(lambda a: jnp.asarray(rng.uniform(-0.3, 0.3, a.shape), jnp.float32), shapes)
    v["batch_stats"] = jax.tree.map(lambda a: jnp.ones(a.shape, jnp.float32), shapes["batch_stats"])
    return v, state_lib.TrainState(step=jnp.zeros((), jnp.int32), params=v["params"], batch_stats=v["batch_stats"],
                                   opt_state=tx.init(v["params"]), ema=None)


def _proxy_state(v, tx):
    return select.ProxyState(step=jnp.zeros((), jnp.int32), params=v["params"], batch_stats=v["batch_stats"],
                             opt_state=tx.init(v["params"]))


@pytest.mark.usefixtures("float32_matmuls")
def test_proxy_update_is_the_gradient_of_the_mean_loss_over_its_kept_rows():
    eps, b, k, lr = 0.2, 16, 8, 0.5
    model = AirbenchNet(widths=(8, 8, 8))
    tx = optax.sgd(lr)
    v, _ = _airbench_state(model, tx, b, 0)
    proxy = _proxy_state(v, tx)
    rng = np.random.default_rng(1)
    xs = rng.standard_normal((1, b, 32, 32, 3)).astype(np.float32)
    ys = rng.integers(0, K, (1, b)).astype(np.int32)
    main = lambda s, c, x, y, key: (s, {})  # noqa: E731
    macro = select.selecting_step(main, model, tx, k, 4, label_smoothing=eps)
    _, new, _ = jax.jit(macro)(jnp.int32(0), proxy, v["constants"], xs, ys, None)

    apply = lambda p, x: model.apply({**v, "params": p}, x, train=True, mutable=["batch_stats"])[0]  # noqa: E731
    losses = np_losses(np.asarray(jax.jit(apply)(v["params"], xs[0]), np.float64), ys[0], eps)
    keep = np.argsort(losses)[-k:]  # numpy's choice; the forward pass takes the whole batch (BN over 16)

    def ref_loss(p):
        return jnp.mean(select.per_example_loss(apply(p, xs[0]), ys[0], eps)[keep])

    grads = jax.jit(jax.grad(ref_loss))(v["params"])
    grads["whiten_bias"] = jnp.zeros_like(grads["whiten_bias"])  # the proxy's whitening bias never trains
    expected = jax.tree.map(lambda p, g: p - lr * g, v["params"], grads)
    jax.tree.map(lambda a, e: np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-6), new.params, expected)
    np.testing.assert_array_equal(new.params["whiten_bias"], v["params"]["whiten_bias"])
    assert int(new.step) == 1


@pytest.mark.slow  # a real training run: CI's slow pass
def test_keeping_every_row_equals_the_steps_without_selection_bit_for_bit():
    b, n, total = 16, 4, 8
    c = ml_collections.ConfigDict({"label_smoothing": 0.2})
    model, proxy_model = AirbenchNet(widths=(8, 16, 16)), AirbenchNet(widths=(4, 8, 8))
    tx = optax.sgd(0.05, momentum=0.9, nesterov=True)
    main = step_lib.step_fn(model, tx, c, total)
    v, state = _airbench_state(model, tx, b, 0)
    pv, _ = _airbench_state(proxy_model, tx, b, 1)
    proxy = _proxy_state(pv, tx)
    rng = np.random.default_rng(2)
    xs = jnp.asarray(rng.standard_normal((n, b, 32, 32, 3)), jnp.float32)
    ys = jnp.asarray(rng.integers(0, K, (n, b)), jnp.int32)
    constants = v["constants"]

    plain = jax.jit(lambda s: jax.lax.scan(lambda s, xy: main(s, constants, *xy), s, (xs, ys)))
    macro = select.selecting_step(main, proxy_model, tx, select.kept_count(b, 1.0), n, label_smoothing=0.2)
    selecting = jax.jit(lambda s, p: macro(s, p, constants, xs, ys, None))
    want, m_want = plain(state)
    got, _, m_got = selecting(state, proxy)
    jax.tree.map(np.testing.assert_array_equal, (got.params, got.batch_stats, got.opt_state),
                 (want.params, want.batch_stats, want.opt_state))
    jax.tree.map(np.testing.assert_array_equal, m_got, m_want)
    # the same with the CPU chunk programs' Python loops (unroll=True) against straight-line steps
    def straight(s):
        for j in range(n):
            s, _ = main(s, constants, xs[j], ys[j])
        return s

    macro = select.selecting_step(main, proxy_model, tx, b, n, label_smoothing=0.2, unroll=True)
    got, _, _ = jax.jit(lambda s, p: macro(s, p, constants, xs, ys, None))(state, proxy)
    want = jax.jit(straight)(state)
    # Unrolled, the selection's gathers sit between the steps of one straight-line program, which XLA
    # may fuse differently from the plain one: bit-for-bit on jax 0.10, within one float32 ulp on
    # jax 0.11 (measured: 3 of 8 leaves differ by at most 7.5e-9, 1.8e-7 relative). The scan above,
    # the GPU's and the sweep's form, stays bit for bit.
    close = functools.partial(np.testing.assert_allclose, rtol=1e-6, atol=1e-8)
    jax.tree.map(close, (got.params, got.batch_stats), (want.params, want.batch_stats))


def _torch_sgd_np(p, grads_sum, lr_at, wd, momentum=0.85):
    """PyTorch SGD(nesterov, weight_decay=wd, dampening 0) on summed-loss gradients, float64."""
    buf = None
    for c, g in enumerate(grads_sum):
        g = g + wd * p
        buf = g if buf is None else momentum * buf + g
        p = p - lr_at(c) * (g + momentum * buf)
    return p


def test_selected_optimizer_is_torch_sgd_on_the_loss_summed_over_the_kept_rows():
    c = config_lib.load_record("airbench94")
    c.optimizer.lr, c.optimizer.weight_decay = 9.0, 0.012  # airbench96_faster's
    batch, kept, spe, total = 1024, 512, 48, 20
    derived = config_lib.Derived(n_train=batch * spe, batch_size=batch, num_devices=1, batch_per_device=batch,
                                 steps_per_epoch=spe, total_steps=total)
    tx, _ = select.selected_optimizer(c.optimizer, derived, kept)
    rng = np.random.default_rng(0)
    p0 = {"group1_conv1": {"kernel": rng.standard_normal((3, 3, 2, 4))}, "group1_bn1": {"bias": rng.standard_normal(4)},
          "head": {"kernel": rng.standard_normal((4, 10))}, "whiten_bias": rng.standard_normal(24)}
    grads = [jax.tree.map(lambda a: rng.standard_normal(a.shape) * 0.1, p0) for _ in range(6)]  # of the mean over 512
    p = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), p0)
    s = tx.init(p)
    for g in grads:
        u, s = tx.update(jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), g), s, p)
        p = optax.apply_updates(p, u)

    # airbench96_faster: lr = 9.0 / kilostep, wd = 0.012 · 1024 / kilostep, weight_decay = wd / lr per group
    kilostep = 1024 * (1 + 1 / (1 - 0.85))
    lr, wd = 9.0 / kilostep, 0.012 * batch / kilostep
    warm = int(0.23 * total)  # airbench94's triangle (this record's schedule fields)
    sched = np.interp(np.arange(total + 1), [0, warm, total], [0.2, 1.0, 0.07])
    for name, lr_g in (("group1_conv1", lr), ("group1_bn1", 64 * lr), ("head", lr)):
        leaf = "bias" if name.endswith("bn1") else "kernel"
        ref = _torch_sgd_np(p0[name][leaf], [kept * g[name][leaf] for g in grads], lambda i: lr_g * sched[i], wd / lr_g)
        np.testing.assert_allclose(p[name][leaf], ref, rtol=2e-5, atol=2e-6, err_msg=name)


def test_the_selecting_program_has_no_conditional():
    proxy_model, tx = PixelLogits(), optax.sgd(0.1)
    proxy = select.init_proxy(proxy_model, tx, jax.random.key(0))
    main = lambda s, c, x, y, key: (s + x.sum(), {"loss": x.sum()})  # noqa: E731
    macro = select.selecting_step(main, proxy_model, tx, 3, 4, label_smoothing=0.1)
    xs, ys = _batches(11, 6, 0)
    jaxpr = jax.make_jaxpr(lambda s, p: select.selecting_scan(macro, 4, s, p, {}, (xs, ys),
                                                              lambda r: (r[0], r[1], None), start=2))(0.0, proxy)
    prims = {e.primitive.name for e in jaxpr_eqns(jaxpr.jaxpr)}
    assert "cond" not in prims and "top_k" in prims


def test_proxy_model_config_replaces_the_main_nets_fields():
    c = config_lib.load_record("airbench94")
    c.model.convs_per_group, c.model.bn_momentum, c.model.width_mult = 3, 0.9, 0.25  # an airbench96-like net
    c.select = ml_collections.ConfigDict({"keep": 0.5, "period": 4, "model": {
        "widths": (32, 64, 64), "convs_per_group": 2, "whiten_bias_init": "zeros"}})  # airbench96_faster's proxy
    p = select.proxy_model_config(c)
    assert (p.widths, p.convs_per_group, p.whiten_bias_init) == ((32, 64, 64), 2, "zeros")
    assert (p.bn_momentum, p.width_mult, p.logit_scale, p.name) == (0.9, 0.25, 1 / 9, "airbench")
    assert c.model.convs_per_group == 3  # the main net's config is untouched


def test_kept_count_and_bad_fractions():
    assert select.kept_count(1024, 0.5) == 512 and select.kept_count(256, 1.0) == 256
    for bad in (0.0, 1.5, 1e-4):
        with pytest.raises(ValueError, match="config.select.keep"):
            select.kept_count(1024, bad)


def test_the_macro_step_runs_inside_the_data_parallel_shard_map():
    """With ``axis_name`` the macro step traces and runs inside ``jax.shard_map`` on each device's
    share of the batches (one CPU device here), the proxy's state coming out replicated."""
    P = jax.sharding.PartitionSpec
    mesh = jax.make_mesh((1,), ("data",))
    model = AirbenchNet(widths=(4, 8, 8))
    tx = optax.sgd(0.1, momentum=0.9)
    v, _ = _airbench_state(model, tx, 8, 0)
    proxy = _proxy_state(v, tx)
    main = lambda s, c, x, y, key: (s + jax.lax.pmean(x.mean(), "data"), {"loss": jnp.float32(0)})  # noqa: E731
    macro = select.selecting_step(main, model, tx, 4, 2, label_smoothing=0.2, axis_name="data")
    rng = np.random.default_rng(0)
    xs = jnp.asarray(rng.standard_normal((2, 8, 32, 32, 3)), jnp.float32)
    ys = jnp.asarray(rng.integers(0, K, (2, 8)), jnp.int32)
    def per_device(s, p, c, x, y):  # each device's share of every batch (varying over the axis)
        x, y = parallel.local_share((x.swapaxes(0, 1), y.swapaxes(0, 1)), "data")
        return macro(s, p, c, x.swapaxes(0, 1), y.swapaxes(0, 1), None)

    f = jax.shard_map(per_device, mesh=mesh, in_specs=(P(),) * 5, out_specs=P())
    s, p, _ = jax.jit(f)(jnp.float32(0), proxy, v["constants"], xs, ys)
    assert int(p.step) == 1 and np.isfinite(float(s))
    assert not np.array_equal(p.params["head"]["kernel"], proxy.params["head"]["kernel"])
