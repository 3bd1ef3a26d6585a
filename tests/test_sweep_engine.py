"""The sweep engine (speedrun.sweep.runner, issue 12): traced hyperparameters compile once, static
keys recompile once per distinct value, a traced value trains exactly as the same value set in the
config, and ``vmap=K`` trains K runs in one program with the results of the K sequential runs.

Scale: airbench94 at width 1/16 on 128 bundled sample images, batch 32 (4 steps per epoch), 2 epochs,
64 test images without TTA, float32 on the CPU, the scan not unrolled (compiles fastest). The compile counts
are checked twice: by the runner's own counter and, independently, by JAX's compile events
(``jax.monitoring``: one ``backend_compile`` event per XLA executable, named by its function)."""

import contextlib
import copy

import jax
import numpy as np
import pytest

from speedrun import config as config_lib
from speedrun.errors import ConfigError
from speedrun.sweep.runner import SHAPE_KEYS, TrialRunner, traced_keys
from speedrun.train.experiment import Experiment

LRS = [6.0, 8.0, 10.0, 12.0]  # airbench94's optimizer.lr (11.5 in the record)
WIDTH = 0.0625
#: epoch programs of one compiled trial: the base's 2-epoch plan has two distinct epochs (the last
#: sets the net to the lookahead average: speedrun.train.plan.EpochSpec.final_average)
PROGRAMS = 2
DIVERGING_LR = 1e6  # a learning rate 10^5 x the record's: the loss leaves every bound (checked below)


@pytest.fixture(scope="module")
def arrays(sample):
    x, y, xt, yt = sample
    return x[:128], y[:128], xt[:64], yt[:64]


@pytest.fixture(scope="module")
def base(record):
    return record("airbench94", n_train=128, whitening_images=128, batch_size=32, eval_batch_size=64,
                  model__width_mult=WIDTH, scan_unroll=1, tta_level=0)


@pytest.fixture(scope="module")
def runner(base, arrays):
    return TrialRunner(base, arrays)


@contextlib.contextmanager
def epoch_compiles():
    """Counts XLA compilations of programs whose function is named like the epoch (``epoch``), via
    jax.monitoring's backend-compile events — independent of the runner's counter."""
    names = []

    def listen(event, duration, **kw):
        if event == "/jax/core/compile/backend_compile_duration":
            names.append(str(kw.get("fun_name", "")))

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        yield names
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)


def n_epoch(names):
    return sum("epoch" in n for n in names)


def test_traced_and_shape_keys(record):
    """The hand-written lists: the record's float hyperparameters are traced, its shapes and step
    counts are not."""
    keys = traced_keys(record("airbench94"))
    assert {"optimizer.lr", "optimizer.momentum", "optimizer.weight_decay", "label_smoothing",
            "optimizer.lr_start", "optimizer.lr_end", "lookahead.decay_base"} <= set(keys)
    for static in ("epochs", "batch_size", "model.width_mult", "optimizer.warmup_fraction", "tta_level",
                   "optimizer.whiten_bias_epochs", "lookahead.every", "ema.enabled"):
        assert static not in keys and static in SHAPE_KEYS
    assert "optimizer.muon_lr" in traced_keys(record("airbench94_muon"))
    assert "ema.momentum" in traced_keys(record("94pct_26s"))


@pytest.mark.slow  # a real training run: CI's slow pass
def test_unknown_key_and_invalid_values(runner):
    with pytest.raises(ConfigError, match=r"'optimizer\.lrr'.*--list_keys"):
        runner.validate_keys(["optimizer.lr", "optimizer.lrr"])
    before = runner.compile_count
    (bad,), (bad2,) = runner.run_many([{"label_smoothing": 1.5}, {"optimizer.momentum": 1.0}], [0])
    assert bad["error"].startswith("ConfigError") and "label_smoothing" in bad["error"]
    assert bad2["error"].startswith("ConfigError") and "momentum" in bad2["error"]
    assert runner.compile_count == before  # an invalid trial compiles nothing


@pytest.fixture(scope="module")
def sequential(runner):
    """The 4-point lr grid trained sequentially (seed 0), plus a diverging lr: the results, each run's
    final params, and the epoch compilations counted by JAX."""
    out = []
    with epoch_compiles() as names:
        for lr in LRS + [DIVERGING_LR]:
            (res,) = runner.run({"optimizer.lr": lr}, [0])
            params = jax.device_get(runner.experiment({"optimizer.lr": lr}).last_state.params)
            out.append((res, params))
    return out, runner.compile_count, n_epoch(names)


@pytest.mark.slow  # a real training run: CI's slow pass
def test_traced_grid_compiles_once(sequential):
    (results, count, jax_count) = sequential
    assert count == 1 and jax_count == PROGRAMS
    assert all("error" not in r for r, _ in results[:4])
    assert len({r["final_train_loss"] for r, _ in results[:4]}) == 4  # the values did reach the program


@pytest.mark.slow  # a real training run: CI's slow pass
def test_traced_value_equals_config_value(sequential, base, arrays):
    """The independent reference: the same lr set in the config, compiled in as a constant. Float32
    on the CPU; the traced program computes the lr, its scaling and the decay from float32 inputs,
    the reference folds them from Python floats (float64), which differ by one float32 rounding,
    so results agree to a few float32 ulps after 8 steps (measured: params 4e-7), not bit for bit."""
    (results, _, _) = sequential
    c = _with(base, "optimizer.lr", LRS[2])
    exp = Experiment(c, arrays)
    ref = exp.run(0, per_epoch_eval=False)
    res, params = results[2]
    assert res["acc"] == ref["acc"] and res["tta_acc"] == ref["tta_acc"]
    np.testing.assert_allclose(res["final_train_loss"], ref["final_train_loss"], rtol=1e-5)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(jax.device_get(exp.last_state.params))):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def _with(config, key, value):
    c = copy.deepcopy(config)
    config_lib.override(c, key, value)
    return c


@pytest.mark.slow  # a real training run: CI's slow pass
def test_diverged_trial_is_an_error(sequential):
    res, _ = sequential[0][4]
    assert res["error"].startswith("DivergenceError") and res["values"] == {"optimizer.lr": DIVERGING_LR}


@pytest.mark.slow  # a real training run: CI's slow pass
def test_static_key_recompiles(runner, sequential):
    """2 widths x 2 lrs: one more executable (the new width); the base width's is reused."""
    trials = [{"model.width_mult": w, "optimizer.lr": lr} for w in (WIDTH, 2 * WIDTH) for lr in LRS[:2]]
    before = runner.compile_count
    with epoch_compiles() as names:
        results = runner.run_many(trials, [0])
    assert runner.compile_count - before == 1 and n_epoch(names) == PROGRAMS
    assert runner.signature(trials[0]) == runner.signature({"optimizer.lr": 1.0})  # WIDTH: the base's
    assert all("error" not in r for (r,) in results)
    assert results[0][0]["final_train_loss"] == sequential[0][0][0]["final_train_loss"]


@pytest.mark.slow  # a real training run: CI's slow pass
def test_vmap_equals_sequential(runner, sequential):
    """vmap=4 over 3 grid points and the diverging lr gives the sequential runs' results, and the
    diverged member fails alone. Tolerance: the vmapped program batches each convolution over the 4
    runs (a grouped convolution; its weight gradient a batch-grouped one) and may sum in another
    order; measured here (jax 0.10.2, CPU): final losses equal to the printed 5 digits, params within
    4e-7 — the bounds below are float32 reordering over 8 steps, 25x above that."""
    (seq, _, _) = sequential
    trials = [{"optimizer.lr": lr} for lr in LRS[:3] + [DIVERGING_LR]]
    with epoch_compiles() as names:
        vm = runner.run_many(trials, [0], vmap=4)
    assert n_epoch(names) == PROGRAMS
    params = jax.device_get(runner.experiment(trials[0], vmap=4).last_state.params)
    for i, ((s, p), (v,)) in enumerate(zip(seq[:3], vm)):
        assert v["vmap"] == 4 and v["seed"] == 0 and v["values"] == trials[i]
        assert v["acc"] == s["acc"]
        np.testing.assert_allclose(v["final_train_loss"], s["final_train_loss"], rtol=1e-5)
        for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(params)):
            np.testing.assert_allclose(b[i], a, rtol=1e-4, atol=1e-5)
    assert vm[3][0]["error"].startswith("DivergenceError") and vm[3][0]["values"] == trials[3]
