"""Exponential moving average (EMA) of params and batch stats.

Source: Page, "How to train your ResNet 8" (cifar10-fast ``bag_of_tricks.ipynb``,
``update_ema(momentum=0.99, update_freq=5)``): every ``every`` steps (at steps 0, 5, 10, … counted
from the first optimizer step, after the step is applied) every floating entry of the model state,
weights and batch-norm running statistics alike, is updated ``ema ← ρ·ema + (1-ρ)·value`` with
``ρ = momentum ** every``; the EMA starts as a copy of the initial model and is the model that is
evaluated.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


def ema_update(ema: Any, value: Any, step: jax.Array, momentum: float, every: int) -> Any:
    """One EMA step, applied only when ``step % every == 0``.

    Args:
      ema: pytree of float arrays (the running average).
      value: pytree of the same structure (current params and batch stats).
      step: int32 scalar, the index of the optimizer step just taken (0 for the first).
      momentum: per-step decay; the applied decay is ``momentum ** every``.
      every: update period in steps.

    Returns:
      The new EMA pytree (same dtypes as ``ema``).
    """
    rho = momentum**every
    do = (step % every) == 0
    return jax.tree.map(
        lambda e, v: jnp.where(do, rho * e + (1 - rho) * v.astype(e.dtype), e), ema, value
    )
