"""airbench94_muon's optimizers: Muon for the conv filters, PyTorch-style SGD for the rest.

Source: KellerJordan/cifar10-airbench ``airbench94_muon.py`` (``Muon``,
``zeropower_via_newtonschulz5``); Jordan et al., "Muon: An optimizer for hidden layers" (2024).
The SGD groups use the mean-loss form of :mod:`speedrun.optim.airbench`.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import optax

from speedrun.config import Derived
from speedrun.optim.airbench import airbench_labels
from speedrun.optim.schedules import linear_decay
from speedrun.optim.sgd import freeze_after, torch_sgd


def renormalize_filters() -> optax.GradientTransformation:
    """Adds ``w·(sqrt(c_out)/‖w‖_F − 1)`` to each leaf's update (needs ``params``), so that
    ``w + update = w·sqrt(c_out)/‖w‖_F + (the incoming update)``: the filter bank is rescaled to
    Frobenius norm ``sqrt(c_out)`` (``c_out`` = last axis, the HWIO output channels) *before* the
    step is added. airbench94_muon's ``p.data.mul_(len(p.data)**0.5 / p.data.norm())`` ahead of
    each Muon step.

    Why a transform and not a post-processing of the params: the rescaling then lives in the
    optimizer, the train step stays generic, and ``params + updates`` is exactly the reference's
    rescale-then-step (a post-processing step would rescale *after* the step instead).

    Raises:
      ValueError: called without ``params``.
    """

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError("renormalize_filters needs params: call tx.update(grads, state, params)")
        out = jax.tree.map(
            lambda u, p: u + p * (jnp.sqrt(jnp.float32(p.shape[-1])) / jnp.linalg.norm(p.ravel()) - 1).astype(p.dtype),
            updates, params)
        return out, state

    return optax.GradientTransformation(optax.init_empty_state, update_fn)


def muon_filters(lr: optax.ScalarOrSchedule, momentum: float = 0.6, nesterov: bool = True,
                 ns_coeffs: Sequence[float] = (3.4445, -4.7750, 2.0315), ns_steps: int = 3,
                 eps: float = 1e-7, renormalize: bool = True) -> optax.GradientTransformation:
    """airbench94_muon's Muon for conv filters, composed from optax transforms.

    Per filter bank ``w`` (HWIO ``(kh, kw, c_in, c_out)`` or any ``(..., c_out)``) and gradient ``g``:
    PyTorch-style momentum ``v ← μv + g``, Nesterov ``u = g + μv`` (``optax.trace``); ``u`` seen as
    the ``(c_out, kh·kw·c_in)`` matrix is divided by its Frobenius norm (+``eps``) and put through
    ``ns_steps`` Newton–Schulz iterations ``X ← aX + (bA + cA²)X``, ``A = XXᵀ`` (optax's
    ``scale_by_muon`` with ``beta=0``, i.e. with its own momentum switched off); then
    ``w ← w·sqrt(c_out)/‖w‖_F − lr·NS(u)`` (:func:`renormalize_filters`). No weight decay.

    Why not ``optax.contrib.muon`` / ``scale_by_muon``'s momentum (optax 0.2.8): its momentum is a
    bias-corrected EMA, ``m ← βm + (1-β)g`` with Nesterov ``β·m̂ + (1-β)·ĝ``, whose direction differs
    from PyTorch's ``g + μv`` in the first steps (NS removes only the scale), and ``muon`` also adds
    an AdamW branch for non-matrix leaves and a shape scaling; the Newton–Schulz part
    (coefficients, steps, Frobenius preconditioning, reshaping by ``MuonDimensionNumbers``) is
    exactly the reference's and is used as is. The reference runs NS in bfloat16; here it runs
    in the params' dtype (float32).

    Source: see the module docstring.

    Args:
      lr: learning rate or schedule (airbench94_muon: 0.24, linearly decayed to 0).
      momentum, nesterov: 0.6, True.
      ns_coeffs: (a, b, c) = (3.4445, −4.7750, 2.0315); ns_steps: 3; eps: 1e-7.
      renormalize: rescale the filters to ``sqrt(c_out)`` before each step.
    """
    from optax.contrib import MuonDimensionNumbers, scale_by_muon  # noqa: PLC0415

    def dims(tree):  # reduce over every axis but the last (output channels)
        return jax.tree.map(lambda x: MuonDimensionNumbers(tuple(range(x.ndim - 1)), x.ndim - 1), tree)

    parts = [
        optax.trace(decay=momentum, nesterov=nesterov),
        scale_by_muon(ns_coeffs=tuple(ns_coeffs), ns_steps=ns_steps, beta=0.0, eps=eps, nesterov=False,
                      weight_dimension_numbers=dims),
        optax.scale_by_learning_rate(lr),
    ]
    if renormalize:
        parts.append(renormalize_filters())
    return optax.chain(*parts)


def airbench_muon(total_steps: int, steps_per_epoch: int, batch_size: int, muon_lr: float = 0.24,
                  muon_momentum: float = 0.6, ns_coeffs: Sequence[float] = (3.4445, -4.7750, 2.0315),
                  ns_steps: int = 3, momentum: float = 0.85, nesterov: bool = True, bias_lr: float = 0.053,
                  head_lr: float = 0.67, weight_decay: float = 2e-6, whiten_bias_epochs: float = 3
                  ) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """airbench94_muon's optimizers, in mean-loss form.

    - conv filters: :func:`muon_filters` with lr ``muon_lr · (1 - c/T)``, no weight decay;
    - BN biases and the head: PyTorch Nesterov SGD (``momentum``) with summed-loss lr ``bias_lr``
      resp. ``head_lr`` times ``(1 - c/T)`` and decay ``weight_decay·B`` given as ``wd/lr`` — in
      mean-loss form lr ``η·B·(1 - c/T)`` and coupled decay ``weight_decay/η``;
    - whitening bias: as the BN biases but decaying to 0 over its
      ``ceil(whiten_bias_epochs·steps_per_epoch)`` training steps (75 at batch 2000 on the full set),
      then frozen.

    Batch-size rule of the source: the SGD learning rates are per example on the summed loss and
    ``wd = 2e-6·B``, so with the mean loss both grow linearly with B; Muon's step is scale-free and
    its lr does not change.

    Args:
      total_steps: T (:func:`speedrun.config.total_train_steps`; airbench94_muon: 8 whole epochs).
      steps_per_epoch, batch_size: as in :func:`speedrun.optim.airbench.airbench_sgd`.
      muon_lr, muon_momentum, ns_coeffs, ns_steps: 0.24, 0.6, (3.4445, −4.7750, 2.0315), 3.
      momentum, nesterov, bias_lr, head_lr, weight_decay: 0.85, True, 0.053, 0.67, 2e-6 (per
        example: 0.004 at B=2000).
      whiten_bias_epochs: 3.

    Returns:
      ``(tx, lr_schedule)``; the schedule is the filters' Muon lr per optax count.

    Raises:
      ValueError: non-positive batch size or steps.
    """
    if batch_size <= 0:
        raise ValueError(f"airbench_muon needs batch_size > 0; got {batch_size}")
    decay = linear_decay(total_steps)
    whiten_steps = math.ceil(whiten_bias_epochs * steps_per_epoch)
    whiten_decay = linear_decay(whiten_steps)

    def sgd(lr_value, sched):
        return torch_sgd(lambda c: lr_value * batch_size * sched(c), momentum, weight_decay / lr_value, nesterov)

    muon_lr_fn = lambda c: muon_lr * decay(c)  # noqa: E731
    tx = optax.multi_transform({
        "filter": muon_filters(muon_lr_fn, muon_momentum, nesterov, ns_coeffs, ns_steps),
        "head": sgd(head_lr, decay),
        "bn_bias": sgd(bias_lr, decay),
        "whiten_bias": freeze_after(sgd(bias_lr, whiten_decay), whiten_steps),
    }, airbench_labels)
    return tx, muon_lr_fn


def airbench_muon_from_config(opt_config: Any, derived: Derived
                              ) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """:func:`airbench_muon` from a config with fields ``muon_lr``, ``muon_momentum``,
    ``ns_coeffs``, ``ns_steps``, ``momentum``, ``nesterov``, ``bias_lr``, ``head_lr``,
    ``weight_decay``, ``whiten_bias_epochs``. The source's batch-size rule and the schedules'
    length come from ``derived`` (``batch_size``, ``total_steps``, ``steps_per_epoch``).

    Raises:
      ValueError: see :func:`airbench_muon`.
    """
    c = opt_config
    return airbench_muon(derived.total_steps, derived.steps_per_epoch, derived.batch_size, c.muon_lr,
                         c.muon_momentum, tuple(c.ns_coeffs), c.ns_steps, c.momentum, c.nesterov,
                         c.bias_lr, c.head_lr, c.weight_decay, c.whiten_bias_epochs)
