"""Overriding ``epochs`` gives each record's schedule as its source writes it for that length.

References are hand-computed from the sources: Page's ``bag_of_tricks.ipynb`` (``PiecewiseLinear(
[0, epochs/5, epochs - ema_epochs], [0, 1, 0.1])``, ``ema_epochs = 2``), He et al. 2015's iteration
milestones (fixed in iterations, not scaled with ``epochs``), airbench's fractions of the total steps.
"""

import numpy as np
import pytest

from speedrun import config
from speedrun.config import ConfigError
from speedrun.optim import schedules
from speedrun.optim.sgd import lr_knots_of, page_sgd_from_config


@pytest.mark.parametrize("epochs, knots", [(10, [0.0, 2.0, 8.0]), (3, [0.0, 0.6, 1.0]),
                                           (20, [0.0, 4.0, 18.0]), (5, [0.0, 1.0, 3.0])])
def test_94pct_26s_knots_follow_epochs(epochs, knots):
    c = config.load_record("94pct_26s", [f"epochs={epochs}"])
    assert lr_knots_of(c.optimizer, c.epochs) == pytest.approx(knots)


def test_94pct_26s_schedule_values_at_3_epochs():
    # 3 epochs of 10 steps: Page's lr at epoch t is interp(t, [0, 0.6, 1.0], [0, 1, 0.1]); the
    # optax count c reads epoch (c + 1) / 10
    c = config.load_record("94pct_26s", ["epochs=3"])
    d = config.Derived(n_train=5120, batch_size=512, num_devices=1, batch_per_device=512,
                       steps_per_epoch=10, total_steps=30)
    _, lr = page_sgd_from_config(c.optimizer, d)
    hand = {0: 1 / 6, 5: 1.0, 7: 1.0 - 0.9 * 0.2 / 0.4, 9: 0.1, 29: 0.1}  # epochs 0.1, 0.6, 0.8, 1.0, 3.0
    for count, want in hand.items():
        assert float(lr(count)) == pytest.approx(want, abs=1e-6)


def test_explicit_knots_stay_absolute():
    c = config.load_record("94pct_26s", ["epochs=3", "optimizer.lr_knots=0,2,8"])
    assert lr_knots_of(c.optimizer, 3) == [0.0, 2.0, 8.0]


def test_too_short_for_page_ema_epochs_names_the_fix():
    with pytest.raises(ConfigError, match="optimizer.ema_epochs"):
        config.validate(config.load_record("94pct_26s", ["epochs=2"]))
    c = config.load_record("94pct_26s", ["epochs=2", "optimizer.ema_epochs=0"])
    assert lr_knots_of(c.optimizer, 2) == pytest.approx([0.0, 0.4, 2.0])


def test_smoke_of_94pct_26s_has_no_flat_epochs():
    c = config.smoke(config.load_record("94pct_26s"))  # 2 epochs: too short for 2 flat epochs
    assert lr_knots_of(c.optimizer, c.epochs) == pytest.approx([0.0, 0.4, 2.0])


def test_page_lr_knots_rejects_bad_fraction():
    with pytest.raises(ValueError, match="peak_fraction"):
        schedules.page_lr_knots(10, 1.5, 2)


@pytest.mark.parametrize("record", ["resnet20_he2015", "resnet20_stacked"])
def test_resnet20_milestones_are_iterations(record):
    # He et al. fix the lr milestones in iterations (32k, 48k at batch 128), so epochs does not move
    # them; the record's docstring shows the 60-epoch run passing its own boundaries
    a = config.load_record(record)
    b = config.load_record(record, ["epochs=60"])
    assert list(a.optimizer.boundaries) == list(b.optimizer.boundaries)


def test_airbench_triangle_is_fractions_of_total_steps():
    # airbench: triangle(total, start=0.2, peak=0.23, end=0.07): at 100 steps peak at 23, at 200 at 46
    for total in (100, 200):
        f = schedules.airbench_triangle(total)
        peak = int(0.23 * total)
        assert float(f(peak)) == pytest.approx(1.0)
        assert float(f(0)) == pytest.approx(0.2)
        assert float(f(total)) == pytest.approx(0.07)
        assert float(f(peak // 2)) == pytest.approx(np.interp(peak // 2, [0, peak, total], [0.2, 1, 0.07]))
