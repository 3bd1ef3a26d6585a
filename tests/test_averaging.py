"""Model averaging placed statically in the epoch (speedrun.train.step.Averaging, the averaged
scan of speedrun.train.epoch.EpochParts.run, the chunk cuts of speedrun.train.chunked) against
numpy loops of the sources' updates on their steps: airbench's lookahead (legacy/airbench94.py at
f1c599c: ``current_steps % 5 == 0`` → ``lerp_(net, 1 − α[c])``, net ← average) and Page's EMA
(``update_ema(0.99, update_freq=5)``: after steps 0, 5, 10, …; debiased as optax.ema).

The net's "optimizer" here is a known stand-in (each step adds the batch's row of ``DELTAS``), so
the reference is exact arithmetic on known values; the real step is the same code path."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from speedrun.train import chunked, plan as plan_lib, step as step_lib
from speedrun.train.epoch import EpochParts
from speedrun.train.state import TrainState

T = 23  # steps of the run: epochs of 9, 9 and 5; the second cut at step 12 (a freeze)
DELTAS = np.random.default_rng(3).standard_normal((T, 4)).astype(np.float32)


class Draws(NamedTuple):
    key: jax.Array


class _Augment:
    """Stand-in augmentation: the batch is the rows of ``x_train`` at its indices."""

    def local(self, draws, batch_idx, axis):
        return batch_idx, draws

    def apply(self, x_train, i, d, epoch, size=None):
        return x_train[i]


def _step(state, constants, x, y, key):
    new = state.replace(step=state.step + 1, params={"w": state.params["w"] + x[0]},
                        batch_stats={"m": state.batch_stats["m"] - 0.5 * x[0]})
    return new, {"loss": jnp.float32(0.0)}


def _parts(config) -> EpochParts:
    parts = object.__new__(EpochParts)  # only what run() reads: the step, the augmentation, the average
    parts.step = lambda segment, hp=None: _step
    parts.augment, parts.averaging, parts.retrace, parts.selection = _Augment(), step_lib.averaging(config, T), None, None
    return parts


def _config(kind, **kw):
    c = ml_collections.ConfigDict()
    if kind == "lookahead":
        c.lookahead = {"enabled": True, "every": 5, "decay_base": 0.95, "decay_pow": 3.0}
    else:
        c.ema = {"enabled": True, "every": 5, "momentum": 0.99, "debias": kw.get("debias", True)}
    return c


def _reference(kind, debias=True):
    """numpy float64 of the source's loop: (net params, net batch stats, average params)."""
    w, m = np.zeros(4), np.zeros(4)
    aw, am = w.copy(), m.copy()
    rho_e = 0.99**5
    for s in range(T):  # s: the 0-based step; c = s + 1 steps taken after it
        w, m, c = w + DELTAS[s], m - 0.5 * DELTAS[s], s + 1
        if kind == "lookahead" and c % 5 == 0:
            rho = 0.95**5 * (c / T) ** 3
            aw, am = aw + (1 - rho) * (w - aw), am + (1 - rho) * (m - am)  # lerp_(net, 1 - rho)
            w, m = aw.copy(), am.copy()  # net_param.copy_(ema_param)
        if kind == "ema" and s % 5 == 0:
            n = s // 5 + 1
            wt = (1 - rho_e) / (1 - rho_e**n) if debias else 1 - rho_e
            aw, am = (1 - wt) * aw + wt * w, (1 - wt) * am + wt * m
    return w, m, aw


def _segments(config):
    """The run as epochs of 9 | 3 + 6 | 5 steps (plan_lib.place_averages)."""
    S = plan_lib.Segment
    plan = [plan_lib.EpochSpec((S(9),)), plan_lib.EpochSpec((S(3), S(6, whiten_bias=False))),
            plan_lib.EpochSpec((S(5, whiten_bias=False),))]
    return [seg for spec in plan_lib.place_averages(plan, step_lib.averaging(config, T)) for seg in spec.segments]


def _run(config, segments, unroll):
    parts = _parts(config)
    zeros = lambda: {"w": jnp.zeros(4), "m": jnp.zeros(4)}  # noqa: E731
    z = zeros()
    state = TrainState(step=jnp.int32(0), params={"w": z["w"]}, batch_stats={"m": z["m"]}, opt_state=None,
                       ema={"params": {"w": jnp.zeros(4)}, "batch_stats": {"m": jnp.zeros(4)}})
    x_train, keys, a = jnp.asarray(DELTAS), jax.random.split(jax.random.key(0), T), 0
    for seg in segments:
        idx = jnp.arange(a, a + seg.steps, dtype=jnp.int32)[:, None]

        def run(state, idx, k, seg=seg):
            return parts.run(state, {}, x_train, jnp.zeros(T, jnp.int32), idx, Draws(k), None, 0, seg, unroll=unroll)

        state, metrics = (run if unroll is True else jax.jit(run))(state, idx, keys[a:a + seg.steps])
        assert metrics["loss"].shape == (seg.steps,)
        a += seg.steps
    return state


def test_lookahead_positions_are_the_sources_steps():
    segs = _segments(_config("lookahead"))
    assert [s.steps for s in segs] == [9, 3, 6, 5]
    assert [s.averages for s in segs] == [(5,), (1,), (3,), (2,)]  # counts 5, 10, 15, 20
    assert [s.averages for s in _segments(_config("ema"))] == [(1, 6), (2,), (4,), (3,)]  # steps 0, 5, 10, 15, 20


@pytest.mark.parametrize("unroll", [1, True], ids=["scan", "python"])
@pytest.mark.parametrize("kind,debias", [("lookahead", True), ("ema", True), ("ema", False)])
def test_the_averaged_epoch_matches_the_source(kind, debias, unroll):
    config = _config(kind, debias=debias)
    state = _run(config, _segments(config), unroll)
    w, m, aw = _reference(kind, debias)
    assert int(state.step) == T
    np.testing.assert_allclose(state.params["w"], w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(state.batch_stats["m"], m, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(state.ema["params"]["w"], aw, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["lookahead", "ema"])
def test_chunk_cuts_give_the_same_run(kind):
    """The CPU chunks (speedrun.train.chunked.chunk_starts, Segment.part) run the same steps and
    updates as whole segments, bit for bit."""
    config = _config(kind)
    segs = _segments(config)
    parts = [seg.part(c, d - c) for seg in segs
             for c, d in zip(chunked.chunk_starts(seg, 3, 5), chunked.chunk_starts(seg, 3, 5)[1:] + [seg.steps])]
    assert sum(p.steps for p in parts) == T
    assert sum(len(p.averages) for p in parts) == sum(len(s.averages) for s in segs)
    a, b = _run(config, segs, True), _run(config, parts, True)
    jax.tree.map(np.testing.assert_array_equal, (a.params, a.batch_stats, a.ema), (b.params, b.batch_stats, b.ema))


def test_chunk_starts():
    S = plan_lib.Segment
    assert chunked.chunk_starts(S(20), 8) == [0, 8, 16]  # no average: chunks of 8
    # updates after positions 7, 12, 17: chunks up to the first (of at most 8), then of 5 (the period)
    assert chunked.chunk_starts(S(20, averages=(7, 12, 17)), 8, 5) == [0, 7, 12, 17]
    assert chunked.chunk_starts(S(20, averages=(12, 17)), 8, 5) == [0, 8, 12, 17]
    assert chunked.chunk_starts(S(40, averages=(2, 7, 12, 17, 22, 27, 32, 37)), 10, 5) == [0, 2, 12, 22, 32]
    assert S(20, averages=(7, 12, 17)).part(7, 5) == S(5, averages=(5,))


def test_averaging_config_errors():
    both = _config("lookahead")
    both.ema = {"enabled": True, "every": 5, "momentum": 0.99}
    with pytest.raises(ValueError, match="exclusive"):
        step_lib.averaging(both, T)
    with pytest.raises(ValueError, match="total_steps"):
        step_lib.averaging(_config("lookahead"))
    assert step_lib.averaging(ml_collections.ConfigDict(), T) is None
