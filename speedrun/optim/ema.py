"""Exponential moving average (EMA) of params and batch stats, debiased.

Source: Page, "How to train your ResNet 8" (cifar10-fast ``bag_of_tricks.ipynb``,
``update_ema(momentum=0.99, update_freq=5)``): every ``every`` steps (at steps 0, 5, 10, … counted
from the first optimizer step, after the step is applied) every floating entry of the model state,
weights and batch-norm running statistics alike, is updated ``ema ← ρ·ema + (1-ρ)·value`` with
``ρ = momentum ** every``; the EMA is the model that is evaluated.

Warm-up (debiasing), as optax's ``optax.ema(decay, debias=True)`` (Adam's bias correction, Kingma &
Ba 2015, §3): Page's EMA starts as a copy of the initial model, which keeps the weight ``ρ^n``
after ``n`` updates — about half of the evaluated model after the dozen updates of a short run.
The debiased EMA is ``m_n / (1 - ρ^n)`` with ``m_n`` the same recursion started from zero, i.e.
the weighted mean ``Σ_k (1-ρ) ρ^(n-k) value_k / (1 - ρ^n)`` of the updates alone. It is computed in
place, without ``m_n``: update ``n`` (1-based) gives the new value the weight
``w_n = (1-ρ) / (1-ρ^n)`` (``w_1 = 1``: the first update replaces the initial copy). It differs from
Page's EMA by ``ρ^n / (1 - ρ^n) · (ema_Page - init)``, which vanishes with ``n``: Page's full-length
record (970 steps, 194 updates of ``ρ = 0.99^5``) has ``ρ^194 = 0.99^970 ≈ 5.8e-5`` left.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


def update_weight(step: jax.Array, momentum: float, every: int, debias: bool = True) -> jax.Array:
    """The weight of the new value in the EMA update after optimizer step ``step`` (int32, 0-based;
    an update step when ``step % every == 0``), float32 scalar: ``(1-ρ) / (1-ρ^n)`` with
    ``n = step // every + 1`` the update's 1-based number when ``debias``, else ``1-ρ``
    (``ρ = momentum**every``)."""
    rho = jnp.float32(momentum**every)
    if not debias:
        return 1 - rho
    n = (jnp.asarray(step) // every + 1).astype(jnp.float32)
    return (1 - rho) / (1 - rho**n)


def ema_update(ema: Any, value: Any, step: jax.Array, momentum: float, every: int, debias: bool = True) -> Any:
    """The EMA update after optimizer step ``step``, an update step (``step % every == 0``): the
    caller runs it only there (:class:`speedrun.train.step.Averaging` places it statically), so
    nothing here selects.

    Args:
      ema: pytree of float arrays (the running average).
      value: pytree of the same structure (current params and batch stats).
      step: int32 scalar, the index of the optimizer step just taken (0 for the first).
      momentum: per-step decay (a float, or a traced float32 in sweeps); the applied decay is
        ``ρ = momentum ** every``.
      every: update period in steps.
      debias: the warm-up of the module docstring (the new value's weight :func:`update_weight`);
        False: Page's ``ρ·ema + (1-ρ)·value``.

    Returns:
      The new EMA pytree (same dtypes as ``ema``).
    """
    if not debias:
        rho = momentum**every
        return jax.tree.map(lambda e, v: rho * e + (1 - rho) * v.astype(e.dtype), ema, value)
    w = update_weight(step, momentum, every)
    return jax.tree.map(lambda e, v: (1 - w).astype(e.dtype) * e + w.astype(e.dtype) * v.astype(e.dtype), ema, value)
