"""Data selection wired into a run (speedrun.train.selection, ``config.select``), against
independent references:

- the epoch plan's phases are the hand-computed first run steps of each segment modulo the period;
- a run that keeps every row equals the run without selection bit for bit (CPU, the one-program
  epoch's ``lax.scan``; the main net's init, draws and steps are those of the plain run);
- over a whole run of chunked CPU epochs whose lengths the period does not divide, the proxy takes
  ``ceil(steps / period)`` updates (airbench96_faster.py's ``step % 4 == 0``: 540 of 2160);
- the three records of KellerJordan/cifar10-airbench's 95% and 96% table pin the source's values
  (legacy/airbench95.py, legacy/airbench96.py, airbench96_faster.py at f1c599c);
- bad ``config.select`` values fail with one line naming the key.
"""

import math

import jax
import ml_collections
import numpy as np
import pytest

from speedrun import config as config_lib
from speedrun.train import plan as plan_lib
from speedrun.train.plan import EpochSpec, Segment


def _select(period, keep=0.5):
    return ml_collections.ConfigDict({"enabled": True, "keep": keep, "period": period,
                                      "model": {"widths": (32, 64, 64), "convs_per_group": 2},
                                      "optimizer": {}})


def test_plan_segments_carry_their_first_steps_phase():
    cfg = ml_collections.ConfigDict({"epochs": 3, "optimizer": {"whiten_bias_steps": 7}, "select": _select(3)})
    d = config_lib.Derived(n_train=1000, batch_size=100, num_devices=1, batch_per_device=100,
                           steps_per_epoch=10, total_steps=30)
    # epoch 0: steps 0-6 (phase 0), 7-9 detached (7 % 3 = 1); epoch 1 from step 10 (1); epoch 2 from 20 (2)
    assert plan_lib.epoch_plan(cfg, d) == [
        EpochSpec((Segment(7, phase=0), Segment(3, whiten_bias=False, phase=1))),
        EpochSpec((Segment(10, whiten_bias=False, phase=1),)),
        EpochSpec((Segment(10, whiten_bias=False, phase=2),))]
    cfg.select.enabled = False
    assert all(s.phase == 0 for e in plan_lib.epoch_plan(cfg, d) for s in e.segments)


def _tiny(record, **changes):
    c = record("airbench96_faster", **{"epochs": 2, "batch_size": 64, "eval_batch_size": 128, "tta_level": 0,
                                       "model__width_mult": 0.0625, "whitening_images": 256, **changes})
    c.optimizer.warmup_fraction = 0.25
    return c


def _run(cfg, sample, n=256):
    from speedrun.train.experiment import Experiment

    x, y, xt, yt = sample
    exp = Experiment(cfg, arrays=(x[:n], y[:n], xt[:128], yt[:128]))
    r = exp.run(1, per_epoch_eval=False)
    return exp, r


@pytest.mark.slow  # a real training run: CI's slow pass
def test_keeping_every_row_is_the_run_without_selection_bit_for_bit(record, sample):
    plain = _tiny(record, scan_unroll=1)  # the one-program epoch's lax.scan, as on a GPU
    plain.select.enabled = False
    every = _tiny(record, scan_unroll=1)
    every.select.keep = 1.0
    e_plain, r_plain = _run(plain, sample)
    e_every, r_every = _run(every, sample)
    assert e_plain.last_state.proxy is None and int(e_every.last_state.proxy.step) == 2  # 8 steps, period 4
    want, got = e_plain.last_state, e_every.last_state
    jax.tree.map(np.testing.assert_array_equal, (got.params, got.batch_stats, got.opt_state, got.ema),
                 (want.params, want.batch_stats, want.opt_state, want.ema))
    assert (r_every["acc"], r_every["final_train_loss"]) == (r_plain["acc"], r_plain["final_train_loss"])


@pytest.mark.slow  # a real training run: CI's slow pass
@pytest.mark.parametrize("period,epochs,batch_size", [
    (5, 2, 32),  # 8 steps an epoch, 16 in all: updates after 5, 10, 15; the proxy's phase fixed per group
    (4, 1, 8),  # 32 steps in one epoch, updates after 5, ..., 30; the phase moves from group to group:
                # one scanned unit of 4 groups (lcm(5, 4) = 20 steps), the fifth group, the tail
])
def test_keeping_every_row_with_lookahead_groups_is_the_run_without_selection(period, epochs, batch_size, record,
                                                                             sample):
    plain = _tiny(record, scan_unroll=1, batch_size=batch_size, epochs=epochs)
    plain.select.enabled = False
    every = _tiny(record, scan_unroll=1, batch_size=batch_size, epochs=epochs)
    every.select.keep, every.select.period = 1.0, period
    assert every.lookahead.enabled and every.lookahead.every == 5
    e_plain, r_plain = _run(plain, sample)
    e_every, r_every = _run(every, sample)
    steps = epochs * 256 // batch_size
    assert int(e_every.last_state.step) == steps
    assert int(e_every.last_state.proxy.step) == math.ceil(steps / period)
    want, got = e_plain.last_state, e_every.last_state  # one float32 rounding apart at most (programs fuse apart)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                 (got.params, got.batch_stats, got.opt_state, got.ema),
                 (want.params, want.batch_stats, want.opt_state, want.ema))

@pytest.mark.slow  # a real training run: CI's slow pass
def test_proxy_updates_are_ceil_steps_over_period_across_chunked_epochs(record, sample):
    cfg = _tiny(record, epochs=3)  # 256 / 64 = 4 steps an epoch, 12 in all
    cfg.select.period = 5  # epochs start at steps 0, 4, 8: phases 0, 4, 3
    with cfg.unlocked():
        cfg.scan_chunk = 3  # CPU chunks of 3 and 1 steps: phases inside the epochs too
    exp, r = _run(cfg, sample)
    assert [s.segments[0].phase for s in exp.plan] == [0, 4, 3]
    assert r["steps"] == 12 and int(exp.last_state.step) == 12
    assert int(exp.last_state.proxy.step) == math.ceil(12 / 5) == 3
    assert np.isfinite(r["final_train_loss"])


def test_records_pin_the_sources_values():
    r95, r96, fast = (config_lib.load_record(n) for n in ("airbench95", "airbench96", "airbench96_faster"))
    # legacy/airbench95.py: widths 128/384/384, 15 epochs, lr 10.0; the rest airbench94's
    assert (r95.model.widths, r95.epochs, r95.last_epoch_fraction, r95.optimizer.lr) == ((128, 384, 384), 15, 1.0, 10.0)
    assert (r95.optimizer.weight_decay, r95.optimizer.warmup_fraction, r95.optimizer.lr_end) == (0.0153, 0.23, 0.07)
    # legacy/airbench96.py
    assert (r96.model.widths, r96.model.convs_per_group, r96.epochs) == ((128, 384, 512), 3, 37)
    o = r96.optimizer
    assert (o.lr, o.weight_decay, o.lr_start, o.warmup_fraction, o.lr_end) == (9.0, 0.012, 0.2, 0.1, 0.0)
    assert (r96.augment.crop_padding, r96.augment.cutout_size, r96.augment.alternating_flip) == (4, 12, True)
    assert r96.model.bn_momentum == pytest.approx(1 - 0.1)  # PyTorch's default momentum 0.1
    # airbench96_faster.py: 45 epochs of 48 batches, 512 of 1024 kept, proxy 32/64/64 two convs, 1 step in 4
    d = config_lib.derived(fast, 50000)
    assert (d.steps_per_epoch, d.total_steps) == (48, 2160)
    assert round(fast.select.keep * fast.batch_size) == 512 and fast.select.period == 4
    assert math.ceil(d.total_steps / fast.select.period) == 540
    assert (tuple(fast.select.model.widths), fast.select.model.convs_per_group) == ((32, 64, 64), 2)
    assert plan_lib.whiten_bias_steps(fast, d) >= d.total_steps  # the source's freeze never fires


@pytest.mark.parametrize("key,value,match", [("select.keep", 0.0, "select.keep"), ("select.keep", 1.5, "select.keep"),
                                             ("select.period", 0, "select.period")])
def test_bad_select_values_name_the_key(key, value, match):
    c = config_lib.load_record("airbench96_faster", {key: value})
    with pytest.raises(config_lib.ConfigError, match=match):
        config_lib.validate(c)


def test_select_needs_an_optimizer_it_can_rescale_and_whole_rows_per_device():
    c = config_lib.load_record("airbench96_faster", {"select.keep": 0.5})
    c.optimizer.name = "page_sgd"
    with pytest.raises(config_lib.ConfigError, match="optimizer.name"):
        config_lib.validate(c)
    c = config_lib.load_record("airbench96_faster", {"select.keep": 511 / 1024})  # 511 rows over 2 devices
    with pytest.raises(config_lib.ConfigError, match="not divisible by the 2 devices"):
        config_lib.validate(c, num_devices=2)


@pytest.mark.slow  # a real training run: CI's slow pass
def test_fit_trains_the_96_records_from_the_library_api(record, sample):
    import speedrun

    x, y, xt, yt = sample
    for name in ("airbench96", "airbench96_faster"):
        c = record(name, epochs=1, batch_size=64, eval_batch_size=128, tta_level=0, model__width_mult=0.0625,
                   whitening_images=256)
        c.optimizer.warmup_fraction = 0.25
        r = speedrun.fit(c, data=(x[:256], y[:256], xt[:128], yt[:128]), seed=0)
        assert r.metrics["record"] == name and r.metrics["steps"] == 4 and 0.0 <= r.metrics["tta_acc"] <= 1.0
        assert "group3_conv3" in r.variables["params"]  # the three-convolution groups
