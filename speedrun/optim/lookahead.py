"""airbench94's lookahead: a slow average of params *and* batch stats that the net is set to.

Source: KellerJordan/cifar10-airbench ``legacy/airbench94.py`` at f1c599c (``LookaheadState`` and
its use in the training loop); the idea is Zhang et al., "Lookahead Optimizer: k steps forward, 1
step back" (NeurIPS 2019), with an averaging weight that grows over training. With ``c`` the
optimizer steps taken so far (1 after the first step) and ``T`` the run's total steps:

- The average starts as a copy of the initial net (``LookaheadState(model)`` before training).
- After every step with ``c % every == 0`` (and only there: no other step computes or selects
  anything of the average): ``avg ← ρ·avg + (1−ρ)·net`` with
  ``ρ = decay_base**every · (c/T)**decay_pow`` (``alpha_schedule[c]``), and the net is set to
  ``avg``. Every float entry of the model state takes part: params and BN running statistics.
- After the last step the net is set to ``avg`` (``update(net, decay=1.0)``): the steps since the
  last update are discarded and the trained model is the average — in
  :class:`speedrun.train.TrainState` the ``ema`` field, which is what is evaluated.

Fable-5 E1's tail (fulcrumresearch/cifar-10-speedrun ddec65f, ``e1_1.74s_single-gpu_CHAMPION.py``:
``LookaheadState`` from ``step == ema_start``, ``ema_start = decay_steps − ema_start_before``): the
same update from ``start`` on (``start > 0``): after step ``start`` the average is a snapshot of the
net, then after every step with ``(c − start) % every == 0`` the update above with the constant
``ρ = decay_base**every`` (``decay_pow = 0``; E1: ``every = 4``, ρ 0.7); no final copy.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp


def decay(count: jax.Array, total_steps: int, every: int, decay_base: float, decay_pow: float) -> jax.Array:
    """``ρ = decay_base**every · (count/total_steps)**decay_pow`` (float32), airbench94's lookahead
    decay after ``count`` steps (1-based)."""
    frac = jnp.asarray(count, jnp.float32) / total_steps
    return jnp.float32(decay_base**every) * frac**decay_pow


def update(avg: Any, net: Any, count: jax.Array, total_steps: int, every: int = 5,
           decay_base: float = 0.95, decay_pow: float = 3.0, start: int = 0) -> tuple[Any, Any]:
    """The lookahead update after optimizer step number ``count`` (1-based), an update step
    (``count >= start`` and ``(count − start) % every == 0``): the caller runs it only there
    (:class:`speedrun.train.step.Averaging` places it statically), so nothing here selects.

    Args:
      avg: pytree of float arrays, the average (``{"params", "batch_stats"}``).
      net: pytree of the same structure, the net just updated by the optimizer.
      count: int32 scalar, steps taken including this one (``TrainState.step`` after it).
      total_steps: T (Python int).
      every, decay_base, decay_pow: airbench94's 5, 0.95, 3 (may be traced floats, sweeps).
      start: steps before the average starts (E1's tail: 264); at ``count == start`` it becomes
        the net (ρ = 0). 0: airbench's average from the initial net.

    Returns:
      ``(new_avg, new_net)``: ``new_avg = ρ·avg + (1−ρ)·net`` (the source's
      ``lerp_(net, 1−ρ)``, dtypes of ``avg``) and the net set to it (dtypes of ``net``).

    Raises:
      ValueError: ``total_steps`` or ``every`` not positive.
    """
    if total_steps <= 0 or every <= 0:
        raise ValueError(f"lookahead needs positive total_steps ({total_steps}) and every ({every})")
    rho = decay(count, total_steps, every, decay_base, decay_pow)
    if start:  # E1's tail: the first update copies the net (a scalar where, not a select of the state)
        rho = jnp.where(count > start, rho, 0.0)
    new_avg = jax.tree.map(lambda a, v: rho.astype(a.dtype) * a + (1 - rho).astype(a.dtype) * v.astype(a.dtype),
                           avg, net)
    return new_avg, jax.tree.map(lambda a, v: a.astype(v.dtype), new_avg, net)


def tail_start(config: Any, total_steps: int) -> int:
    """The step after which the average starts: ``config.lookahead.start_before`` steps before the
    end of the lr decay (E1: 272 − 8 = 264), the decay's end ``ceil(T·decay_epochs/E)`` with ``E``
    the run's epochs (``epochs − 1 + last_epoch_fraction``) — E1's ``ceil(decay_epochs·S)`` when
    ``T = E·S`` (284 = 8.875·32); 0 without ``start_before`` (airbench: from the start).

    Raises:
      ValueError: ``start_before`` set without ``optimizer.decay_epochs``.
    """
    before = config.lookahead.get("start_before")
    if before is None:
        return 0
    decay_epochs = config.optimizer.get("decay_epochs")
    if decay_epochs is None:
        raise ValueError("config.lookahead.start_before counts back from the end of the lr decay: set "
                         "config.optimizer.decay_epochs (E1: 8.5)")
    run_epochs = config.epochs - 1 + config.get("last_epoch_fraction", 1.0)
    return max(0, math.ceil(round(total_steps * decay_epochs / run_epochs, 6)) - int(before))
