"""airbench94's lookahead: a slow average of params *and* batch stats that the net is reset to.

Source: KellerJordan/cifar10-airbench ``airbench94.py`` (``LookaheadState`` and the ``ema`` entry
of its hyperparameters: ``start_epochs=3, decay_base=0.95, decay_pow=3, every_n_steps=5``); the
idea is Zhang et al., "Lookahead Optimizer: k steps forward, 1 step back" (NeurIPS 2019), with an
averaging weight that grows over training. Semantics, with ``c`` the number of optimizer steps
taken so far (1 after the first step), ``T`` the run's total steps and ``S`` the steps per epoch:

- Every float entry of the model state takes part: params and BN running statistics.
- Until the first *update step* ``c₀`` (the first multiple of ``every`` in epoch ``start_epoch``
  or later, i.e. with ``(c-1)//S ≥ start_epoch``) the average simply tracks the net; at ``c₀`` it
  is (re)started from the net (airbench creates its ``LookaheadState`` there).
- At every later step with ``c % every == 0``: ``avg ← ρ·avg + (1−ρ)·net`` with
  ``ρ = decay_base**every · (c/T)**decay_pow``, and the net is set to ``avg``.
- At the end of every epoch the net is set to ``avg`` (airbench's ``update(net, decay=1.0)``);
  steps taken since the last update are discarded. The net at the end of training is the average.

In :class:`speedrun.train.TrainState` the average lives in the ``ema`` field (the evaluated model),
as an alternative to Page's EMA (:mod:`speedrun.optim.ema`), which never writes back into the net.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp


def first_update_step(steps_per_epoch: int, start_epoch: int, every: int) -> int:
    """``c₀``: the smallest multiple of ``every`` that is ≥ ``start_epoch·steps_per_epoch + 1``
    (the first step of epoch ``start_epoch``, counting steps from 1). Python int."""
    first = start_epoch * steps_per_epoch + 1
    return math.ceil(first / every) * every


def decay(count: jax.Array, total_steps: int, every: int, decay_base: float, decay_pow: float) -> jax.Array:
    """``ρ = decay_base**every · (count/total_steps)**decay_pow`` (float32), airbench94's lookahead
    decay after ``count`` steps (1-based)."""
    frac = jnp.asarray(count, jnp.float32) / total_steps
    return jnp.float32(decay_base**every) * frac**decay_pow


def update(avg: Any, net: Any, count: jax.Array, steps_per_epoch: int, total_steps: int,
           every: int = 5, decay_base: float = 0.95, decay_pow: float = 3.0, start_epoch: int = 3
           ) -> tuple[Any, Any]:
    """One lookahead step, after optimizer step number ``count`` (1-based); see the module docstring.

    Args:
      avg: pytree of float arrays, the average (``{"params", "batch_stats"}``).
      net: pytree of the same structure, the net just updated by the optimizer.
      count: int32 scalar, steps taken including this one (``TrainState.step + 1``).
      steps_per_epoch, total_steps: S and T (Python ints).
      every, decay_base, decay_pow, start_epoch: airbench94's 5, 0.95, 3, 3.

    Returns:
      ``(new_avg, new_net)``: before and at ``c₀`` both are ``net``; after ``c₀`` on update steps
      both are the new average; otherwise ``(avg, net)``.

    Raises:
      ValueError: ``total_steps`` or ``steps_per_epoch`` or ``every`` not positive.
    """
    if total_steps <= 0 or steps_per_epoch <= 0 or every <= 0:
        raise ValueError(f"lookahead needs positive total_steps ({total_steps}), steps_per_epoch "
                         f"({steps_per_epoch}) and every ({every})")
    c0 = first_update_step(steps_per_epoch, start_epoch, every)
    rho = decay(count, total_steps, every, decay_base, decay_pow)
    tracking = count <= c0
    averaging = (count > c0) & (count % every == 0)

    def one(a, v):
        v = v.astype(a.dtype)
        mixed = rho.astype(a.dtype) * a + (1 - rho).astype(a.dtype) * v
        return jnp.where(tracking, v, jnp.where(averaging, mixed, a))

    new_avg = jax.tree.map(one, avg, net)
    new_net = jax.tree.map(lambda a, v: jnp.where(averaging, a.astype(v.dtype), v), new_avg, net)
    return new_avg, new_net
