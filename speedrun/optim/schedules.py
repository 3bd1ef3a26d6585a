"""Learning-rate schedules of the records: optax schedules, optax count (0 at the first update) → lr.

Page's piecewise-linear schedule over epochs (:func:`epoch_schedule`), He et al.'s step schedule
with Goyal et al.'s scaling and warmup (:func:`he_lr_schedule`), airbench94's triangle
(:func:`airbench_triangle`) and airbench94_muon's linear decay (:func:`linear_decay`).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import optax


def piecewise_linear(knots: Sequence[float], values: Sequence[float]) -> Callable[[Any], jax.Array]:
    """``t -> np.interp(t, knots, values)`` in jnp (flat outside the knots); Page's
    ``PiecewiseLinear``. ``values`` may hold traced scalars (:mod:`speedrun.sweep.hparams`); the
    knots are Python numbers. Raises ValueError unless knots increase and match values in length."""
    knots = list(map(float, knots))
    values = [v if isinstance(v, jax.Array) else float(v) for v in values]
    if len(knots) != len(values) or len(knots) < 2 or any(b <= a for a, b in zip(knots, knots[1:])):
        raise ValueError(
            f"lr schedule needs >=2 strictly increasing knots with one value each; got knots={knots}, "
            f"values={values}"
        )
    k = jnp.asarray(knots)
    v = jnp.stack([jnp.asarray(x, jnp.float32) for x in values]) if any(isinstance(x, jax.Array) for x in values) \
        else jnp.asarray(values)
    return lambda t: jnp.interp(t, k, v)


def page_lr_knots(epochs: float, peak_fraction: float = 0.2, ema_epochs: float = 2.0) -> list[float]:
    """Page's lr knots in epochs, written from the run's length: ``[0, peak_fraction·epochs,
    epochs − ema_epochs]`` (``bag_of_tricks.ipynb``: ``[0, epochs/5, epochs - ema_epochs]``, with
    ``ema_epochs = 2``; at 10 epochs ``[0, 2, 8]``). The lr is flat after the last knot.

    Raises:
      ValueError: the knots do not increase (``epochs − ema_epochs <= peak_fraction·epochs``: a run
        too short for ``ema_epochs`` flat epochs), or ``peak_fraction`` outside (0, 1).
    """
    if not 0.0 < peak_fraction < 1.0:
        raise ValueError(f"peak_fraction must be in (0, 1); got {peak_fraction}")
    knots = [0.0, peak_fraction * epochs, epochs - ema_epochs]
    if not knots[0] < knots[1] < knots[2]:
        raise ValueError(f"Page's lr knots [0, {peak_fraction}·epochs, epochs − ema_epochs] = {knots} do not "
                         f"increase at epochs={epochs}, ema_epochs={ema_epochs} — pass a smaller "
                         f"--config.optimizer.ema_epochs (at most {epochs * (1 - peak_fraction):g}, e.g. 0) "
                         "or more --config.epochs")
    return knots


def epoch_schedule(knots: Sequence[float], values: Sequence[float], steps_per_epoch: int) -> optax.Schedule:
    """An optax schedule (step count → lr) from a piecewise-linear schedule over *epochs*.

    Page's optimiser increments its step counter before reading the lr, so optax's count ``c``
    (0 at the first update) maps to epoch ``(c + 1) / steps_per_epoch``.
    """
    f = piecewise_linear(knots, values)
    return lambda count: f((count + 1) / steps_per_epoch)


def _he_milestones(base_lr: float, base_batch_size: int, batch_size: int, boundaries: Sequence[int],
                   decay_factor: float, warmup_steps: int) -> list[int]:
    """:func:`he_lr_schedule`'s argument checks; the milestones scaled to ``batch_size``."""
    # a traced base_lr (speedrun.sweep.hparams) is not checked here
    if base_batch_size <= 0 or batch_size <= 0 or (isinstance(base_lr, (int, float)) and base_lr <= 0):
        raise ValueError(f"he_lr_schedule needs positive base_lr, base_batch_size, batch_size; got "
                         f"{base_lr}, {base_batch_size}, {batch_size}")
    if not 0 < decay_factor <= 1 or warmup_steps < 0:
        raise ValueError(f"decay_factor must be in (0, 1] and warmup_steps >= 0; got {decay_factor}, "
                         f"{warmup_steps}")
    scale = batch_size / base_batch_size
    steps = [int(round(b / scale)) for b in boundaries]
    if any(b <= a for a, b in zip([0] + steps, steps)):
        raise ValueError(f"lr milestones must be positive and increasing after scaling to batch "
                         f"{batch_size}; got {list(boundaries)} at batch {base_batch_size} -> {steps}")
    if steps and warmup_steps >= steps[0]:
        raise ValueError(f"warmup of {warmup_steps} iterations reaches the first lr milestone at "
                         f"{steps[0]}; shorten optimizer.warmup_epochs or move optimizer.boundaries")
    return steps


def he_lr_schedule(base_lr: float = 0.1, base_batch_size: int = 128, batch_size: int = 128,
                   boundaries: Sequence[int] = (32000, 48000), decay_factor: float = 0.1,
                   warmup_steps: int = 0) -> optax.Schedule:
    """He et al. 2015's step schedule in iterations, scaled to ``batch_size`` by Goyal et al.'s
    linear scaling rule, with their gradual warmup.

    He et al. 2015 (§4.2, CIFAR-10): lr 0.1 at batch 128, divided by 10 at 32k and 48k iterations,
    training stops at 64k. Goyal et al. 2017 ("Accurate, Large Minibatch SGD", §2.1–2.2): at batch
    ``k·128`` use lr ``k·0.1`` and the same number of epochs, so an iteration milestone ``m`` at
    batch 128 falls at ``round(m · 128 / batch_size)``; gradual warmup starts at the small-batch lr
    ``base_lr`` and adds a constant amount every iteration to reach ``k·base_lr`` after
    ``warmup_steps`` iterations (they use 5 epochs).

    Iteration ``i`` (1-based) is optax count ``c = i - 1``; a milestone ``m`` means iterations
    ``1..m`` use the higher rate and ``m + 1`` on the lower one (``c >= m``, as Caffe's
    ``multistep`` policy counts).

    Args:
      base_lr: lr at ``base_batch_size`` (0.1).
      base_batch_size: batch the milestones and ``base_lr`` refer to (128).
      batch_size: the run's batch; peak lr ``base_lr · batch_size / base_batch_size``.
      boundaries: milestones in iterations at ``base_batch_size``, increasing (32000, 48000).
      decay_factor: factor applied at each milestone (0.1).
      warmup_steps: iterations of linear warmup from ``base_lr`` to the peak lr (0: none).

    Returns:
      An optax schedule: count (int) → lr (float32).

    Raises:
      ValueError: non-positive batch sizes or lr, non-increasing milestones, a factor outside
        (0, 1], negative warmup, or warmup reaching past the first scaled milestone.
    """
    steps = _he_milestones(base_lr, base_batch_size, batch_size, boundaries, decay_factor, warmup_steps)
    peak = base_lr * (batch_size / base_batch_size)  # as scaled in _he_milestones
    decayed = optax.piecewise_constant_schedule(
        peak, {b - warmup_steps: decay_factor for b in steps})
    if warmup_steps == 0:
        return decayed
    return optax.join_schedules([optax.linear_schedule(base_lr, peak, warmup_steps), decayed],
                                [warmup_steps])


def airbench_triangle(total_steps: int, start: float = 0.2, peak_fraction: float = 0.23,
                      end: float = 0.07) -> optax.Schedule:
    """airbench94's lr multiplier: optax count ``c`` (0 at the first update) → linear from
    ``start`` at ``c=0`` to 1 at ``c=int(peak_fraction·total_steps)``, then linear to ``end`` at
    ``c=total_steps`` (flat after). Source: ``triangle(total_train_steps, start=0.2, end=0.07,
    peak=0.23)`` read by ``LambdaLR`` at the step index (the first step uses index 0).

    Raises:
      ValueError: ``total_steps`` too small for a warmup of at least one step.
    """
    peak = int(peak_fraction * total_steps)
    if peak < 1 or peak >= total_steps:
        raise ValueError(f"airbench's lr warmup needs 1 <= int({peak_fraction}·total_steps) < total_steps; "
                         f"got total_steps={total_steps} — train for more steps: more epochs or a smaller batch "
                         f"(--config.epochs, --config.batch_size)")
    f = piecewise_linear([0, peak, total_steps], [start, 1.0, end])
    return lambda count: f(count)


def linear_decay(total_steps: int, value: float = 1.0) -> optax.Schedule:
    """``c -> value · max(0, 1 - c/total_steps)`` (float32): airbench94_muon's
    ``initial_lr · (1 - step/total_train_steps)``, 0 from ``total_steps`` on.

    Raises:
      ValueError: ``total_steps`` not positive.
    """
    if total_steps <= 0:
        raise ValueError(f"linear_decay needs total_steps > 0; got {total_steps}")
    return lambda count: value * jnp.maximum(0.0, 1.0 - jnp.asarray(count, jnp.float32) / total_steps)
