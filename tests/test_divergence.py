"""Divergence is caught on the device and raised on the host once per epoch (speedrun.train.state:
the health record, check_health): hand-made loss sequences for the rules, a float16 step skipped by
the loss scale (not divergence), and a forced divergence (learning rate ×1e4) through
speedrun.train.train_and_evaluate, whose log must end with the error."""

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from speedrun import config, optim, train
from speedrun.models import get_model
from speedrun.system import precision
from speedrun.train import state as state_lib, step as step_lib
from speedrun.train.state import DivergenceError, check_health, init_health, update_health

INF, NAN = float("inf"), float("nan")


def run_health(losses, applied=None):
    """The health record after the steps with these losses (``applied`` default all True), on the
    host: ``TrainState.step`` advances only on applied steps, as in the train step."""
    h, step = init_health(), 0
    update = jax.jit(update_health)
    for i, loss in enumerate(losses):
        a = True if applied is None else applied[i]
        h = update(h, jnp.float32(loss), jnp.int32(step), jnp.asarray(a))
        step += int(a)
    return {k: v.item() for k, v in jax.device_get(h).items()}


def test_a_healthy_run_records_its_first_and_last_loss():
    h = run_health([2.30, 2.5, 1.9, 1.2])
    assert h["bad_step"] == -1 and math.isnan(h["bad_loss"])
    assert h["first_loss"] == pytest.approx(2.30) and h["last_loss"] == pytest.approx(1.2)


def test_the_first_non_finite_step_is_kept_and_the_last_finite_loss_stops_before_it():
    h = run_health([2.30, 2.0, INF, 1.0, NAN])
    assert h["bad_step"] == 2 and h["bad_loss"] == INF
    assert h["last_loss"] == pytest.approx(2.0)  # not the later 1.0: the run had already diverged
    assert run_health([NAN])["bad_step"] == 0  # the first step itself


def test_growth_bound_is_100_times_the_first_loss():
    assert state_lib.LOSS_GROWTH_BOUND == 100.0
    # 2.3 × 100 = 230: 229.9 is still a (terrible) loss, 230.1 is divergence
    assert run_health([2.3, 229.9])["bad_step"] == -1
    h = run_health([2.3, 1.0, 230.1, 6.7e11])
    assert (h["bad_step"], h["bad_loss"], h["last_loss"]) == (2, pytest.approx(230.1), pytest.approx(1.0))


def test_float16_skipped_steps_are_not_checked_and_do_not_set_the_first_loss():
    # step 0 and 2 skipped by the loss scale with non-finite losses: no divergence
    h = run_health([INF, 2.2, NAN, 2.0], applied=[False, True, False, True])
    assert h["bad_step"] == -1
    assert h["first_loss"] == pytest.approx(2.2) and h["last_loss"] == pytest.approx(2.0)


def health(bad_step=-1, bad_loss=NAN, first=2.3, last=1.9, step=40):
    return {"first_loss": first, "last_loss": last, "bad_step": bad_step, "bad_loss": bad_loss, "step": step}


def test_message_names_epoch_step_loss_last_finite_loss_and_the_fix_of_the_policy():
    with pytest.raises(DivergenceError) as err:
        check_health(2, health(bad_step=36, bad_loss=6.7e11), 1e10, None, 20, "float32")
    msg = str(err.value)
    assert msg.startswith("training diverged at epoch 2, step 37: loss 6.7e+11 (> 100 × the first step's 2.3; "
                          "last finite loss 1.9) — lower the learning rate (config.optimizer)"), msg
    assert "float32" not in msg and "\n" not in msg
    assert isinstance(err.value, FloatingPointError)  # the CLI's exit 1
    with pytest.raises(DivergenceError, match=r"step 1: loss inf \(not finite; no finite loss before it\) — use "
                                              r"--config.precision=bfloat16 \(or float32\), or lower the learning"):
        check_health(1, health(bad_step=0, bad_loss=INF, last=NAN), INF, 0.0, 20, "float16")
    with pytest.raises(DivergenceError, match="lower the learning rate .*, or use --config.precision=float32"):
        check_health(1, health(bad_step=3, bad_loss=NAN), NAN, None, 20, "bfloat16")
    check_health(3, health(), 1.9, None, 20, "float32")  # healthy: no error


@pytest.mark.parametrize("skipped,steps,diverged", [
    (10, 20, False),  # half of a short epoch: within the loss scale's 16 halvings from 2^16
    (16, 20, False),
    (17, 20, True),
    (48, 97, False),  # under half of Page's 97 steps
    (49, 97, True),  # 49 > 48.5
])
def test_float16_skipped_share_rule(skipped, steps, diverged):
    assert (state_lib.MAX_SKIPPED_SHARE, state_lib.MIN_SKIPPED) == (0.5, 16) == (0.5, math.log2(2.0**16))
    if not diverged:
        check_health(1, health(), 2.0, float(skipped), steps, "float16")
        return
    with pytest.raises(DivergenceError, match=rf"epoch 1, step 40: the float16 loss scale skipped {skipped} of "
                                              rf"its {steps} steps \(> 50%; last finite loss 1.9\) — use --config"):
        check_health(1, health(), 2.0, float(skipped), steps, "float16")


def test_untracked_state_still_fails_on_a_non_finite_mean_loss():
    with pytest.raises(DivergenceError, match="epoch 4: mean training loss nan"):
        check_health(4, None, NAN, None, 20, "float32")


@pytest.mark.slow  # a real training run: CI's slow pass
def test_float16_step_skipped_by_the_loss_scale_leaves_the_health_record():
    policy = precision.resolve("float16")
    cfg = config.smoke(config.load_record("94pct_26s"), model__width_mult=0.0625, model__ghost_batch_size=8,
                       batch_size=16, precision="float16")
    model = get_model(cfg.model, policy.compute_dtype)
    tx, _ = optim.make_optimizer(cfg.optimizer, config.derived(cfg, 10 * cfg.batch_size))
    state = state_lib.init_state(model, tx, jax.random.key(0), policy)
    rng = np.random.RandomState(1)
    x, y = jnp.asarray(rng.normal(size=(16, 32, 32, 3)), jnp.float32), jnp.asarray(rng.randint(0, 10, 16), jnp.int32)
    consts = {"whiten_kernel": jnp.asarray(rng.normal(0, 0.3, (3, 3, 3, 27)), jnp.float32)}
    step = jax.jit(step_lib.step_fn(model, tx, cfg))
    huge = state.replace(loss_scale=state.loss_scale.replace(scale=jnp.float32(3e38)))  # gradients overflow
    skipped, m = step(huge, consts, x, y)
    assert not bool(m["finite"])
    jax.tree.map(np.testing.assert_array_equal, skipped.health, init_health())  # untouched
    applied, m = step(state, consts, x, y)
    assert bool(m["finite"]) and int(applied.health["bad_step"]) == -1
    assert float(applied.health["first_loss"]) == float(applied.health["last_loss"]) == float(m["loss"])


@pytest.mark.slow  # a real training run: CI's slow pass
def test_forced_divergence_stops_the_run_and_ends_its_log(sample, tmp_path, capsys):
    # 512 real training images: 2 steps of 256 per epoch (a small unrolled epoch); lr ×1e4
    x, y, xt, yt = sample
    data = tmp_path / "subset.npz"
    np.savez(data, x_train=x[:512], y_train=y[:512], x_test=xt[:256], y_test=yt[:256])
    c = config.smoke(config.load_record("94pct_26s"), data__path=str(data), model__width_mult=0.0625, epochs=4)
    c.optimizer.lr_values = [v * 1e4 for v in c.optimizer.lr_values]
    with pytest.raises(DivergenceError) as err:
        train.train_and_evaluate(c, workdir=str(tmp_path))
    msg = str(err.value)
    m = re.match(r"training diverged at epoch (\d), step (\d+): loss \S+ \((not finite|> 100 × the first step's "
                 r"2\.\d+); (last finite loss [0-9.e+]+|no finite loss before it)\) — lower the learning rate "
                 r"\(config\.optimizer\)$", msg)
    assert m, msg
    assert int(m[1]) == math.ceil(int(m[2]) / 2)  # the step (1-based, 2 per epoch) lies in the epoch named
    (log,) = tmp_path.glob("94pct_26s_*.log")
    lines = log.read_text().strip().splitlines()
    assert lines[-1] == f"# error: DivergenceError: {msg}"
    assert not any(line.startswith("{") for line in lines)  # no result line, no accuracy
    assert '"acc"' not in capsys.readouterr().out
