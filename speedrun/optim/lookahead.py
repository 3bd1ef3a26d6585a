"""airbench94's lookahead: a slow average of params *and* batch stats that the net is set to.

Source: KellerJordan/cifar10-airbench ``legacy/airbench94.py`` at f1c599c (``LookaheadState`` and
its use in the training loop); the idea is Zhang et al., "Lookahead Optimizer: k steps forward, 1
step back" (NeurIPS 2019), with an averaging weight that grows over training. With ``c`` the
optimizer steps taken so far (1 after the first step) and ``T`` the run's total steps:

- The average starts as a copy of the initial net (``LookaheadState(model)`` before training).
- After every step with ``c % every == 0``: ``avg ← ρ·avg + (1−ρ)·net`` with
  ``ρ = decay_base**every · (c/T)**decay_pow`` (``alpha_schedule[c]``), and the net is set to
  ``avg``. Every float entry of the model state takes part: params and BN running statistics.
- After the last step the net is set to ``avg`` (``update(net, decay=1.0)``): the steps since the
  last update are discarded and the trained model is the average — in
  :class:`speedrun.train.TrainState` the ``ema`` field, which is what is evaluated.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


def decay(count: jax.Array, total_steps: int, every: int, decay_base: float, decay_pow: float) -> jax.Array:
    """``ρ = decay_base**every · (count/total_steps)**decay_pow`` (float32), airbench94's lookahead
    decay after ``count`` steps (1-based)."""
    frac = jnp.asarray(count, jnp.float32) / total_steps
    return jnp.float32(decay_base**every) * frac**decay_pow


def update(avg: Any, net: Any, count: jax.Array, total_steps: int, every: int = 5,
           decay_base: float = 0.95, decay_pow: float = 3.0) -> tuple[Any, Any]:
    """One lookahead step, after optimizer step number ``count`` (1-based); see the module docstring.

    Args:
      avg: pytree of float arrays, the average (``{"params", "batch_stats"}``).
      net: pytree of the same structure, the net just updated by the optimizer.
      count: int32 scalar, steps taken including this one (``TrainState.step + 1``).
      total_steps: T (Python int).
      every, decay_base, decay_pow: airbench94's 5, 0.95, 3.

    Returns:
      ``(new_avg, new_net)``: on update steps (``count % every == 0``) both are the new average;
      otherwise ``(avg, net)``.

    Raises:
      ValueError: ``total_steps`` or ``every`` not positive.
    """
    if total_steps <= 0 or every <= 0:
        raise ValueError(f"lookahead needs positive total_steps ({total_steps}) and every ({every})")
    rho = decay(count, total_steps, every, decay_base, decay_pow)
    on = count % every == 0
    new_avg = jax.tree.map(
        lambda a, v: jnp.where(on, rho.astype(a.dtype) * a + (1 - rho).astype(a.dtype) * v.astype(a.dtype), a),
        avg, net)
    new_net = jax.tree.map(lambda a, v: jnp.where(on, a.astype(v.dtype), v), new_avg, net)
    return new_avg, new_net
