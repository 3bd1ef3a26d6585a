"""Muon for conv filters (batched Newton–Schulz, :mod:`speedrun.optim.newton_schulz`) and
airbench94_muon's optimizers: Muon for the conv filters, PyTorch-style SGD for the rest.

Source: KellerJordan/cifar10-airbench ``airbench94_muon.py`` (``Muon``,
``zeropower_via_newtonschulz5``); Jordan et al., "Muon: An optimizer for hidden layers" (2024).
The SGD groups use the mean-loss form of :mod:`speedrun.optim.airbench`.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import optax

from speedrun.config import Derived
from speedrun.optim.airbench import airbench_labels
from speedrun.optim.newton_schulz import orthogonalize, resolve_grouping, resolve_ns_dtype
from speedrun.optim.schedules import linear_decay
from speedrun.optim.sgd import decay_after_step, freeze_after, torch_sgd


def renorm_steps(horizon: int, steps: int) -> list[int]:
    """The 1-based steps ``t <= steps`` at which hiverge's Muon rescales the filters: with
    ``norm_freq = 2 + floor(15·t/horizon)``, whenever ``t - t_last >= norm_freq`` (``t_last`` starts
    at 0 and becomes ``t``). Host-side mirror of :func:`renormalize_filters` with ``horizon``.

    Raises:
      ValueError: ``horizon`` not positive.
    """
    if horizon <= 0:
        raise ValueError(f"the renormalisation horizon must be positive; got {horizon}")
    out, last = [], 0
    for t in range(1, steps + 1):
        if t - last >= 2 + (15 * t) // horizon:
            out.append(t)
            last = t
    return out


class RenormState(NamedTuple):
    """:func:`renormalize_filters`' state with a horizon: updates done and the last 1-based step
    that rescaled (int32 scalars)."""

    count: jax.Array
    last: jax.Array


def renormalize_filters(eps: float = 0.0, horizon: int | None = None) -> optax.GradientTransformation:
    """Adds ``w·(s − 1)``, ``s = sqrt(c_out)/(‖w‖_F + eps)``, to each leaf's update (needs
    ``params``), so that ``w + update = w·s + (the incoming update)``: the filter bank is rescaled to
    Frobenius norm ``sqrt(c_out)`` (``c_out`` = last axis, the HWIO output channels) *before* the
    step is added.

    - ``horizon=None``: every step (airbench94_muon's ``p.data.mul_(len(p.data)**0.5 /
      p.data.norm())``, eps 0); stateless.
    - ``horizon=T``: hiverge's periodic schedule (:func:`renorm_steps`, eps 1e-7): ``s`` is applied
      on those steps only, 1 elsewhere (a select, no conditional); state :class:`RenormState`.

    Raises:
      ValueError: called without ``params``.
    """

    def scale(p, fire):
        s = jnp.sqrt(jnp.float32(p.shape[-1])) / (jnp.linalg.norm(p.ravel()) + eps)
        return jnp.where(fire, s, 1.0).astype(p.dtype) - 1

    def init_fn(params):
        del params
        return RenormState(jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32)) if horizon else optax.EmptyState()

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError("renormalize_filters needs params: call tx.update(grads, state, params)")
        if horizon is None:
            fire = True
        else:
            t = state.count + 1
            fire = t - state.last >= 2 + (15 * t) // horizon
            state = RenormState(t, jnp.where(fire, t, state.last))
        return jax.tree.map(lambda u, p: u + p * scale(p, fire), updates, params), state

    return optax.GradientTransformation(init_fn, update_fn)


class MuonState(NamedTuple):
    """:func:`scale_by_batched_muon`'s state: updates done (int32 scalar)."""

    count: jax.Array


def scale_by_batched_muon(lr: optax.ScalarOrSchedule, ns_coeffs: Sequence[float] = (3.4445, -4.7750, 2.0315),
                          ns_steps: int = 3, eps: float = 1e-7, ns_dtype: Any = jnp.float32,
                          grouping: str = "pad", target_norm: tuple[float, float] | None = None,
                          horizon: int | None = None) -> optax.GradientTransformation:
    """``u → −lr(c)·NS(u)``, all leaves in one batched Newton–Schulz
    (:func:`speedrun.optim.newton_schulz.orthogonalize`); state: the count only.

    ``target_norm=(τ0, τ1)`` with ``horizon=T``: hiverge's pre-scaling target
    ``τ = τ0·(1 − r) + τ1·r``, ``r = min(t, T)/T``, ``t`` the 1-based step (E1 clamps ``r``).
    """
    if target_norm is not None and not horizon:
        raise ValueError("Muon's target_norm needs a horizon (the schedule's steps)")

    def update_fn(updates, state, params=None):
        del params
        lr_t = lr(state.count) if callable(lr) else lr
        tau = None
        if target_norm is not None:
            r = jnp.minimum(state.count + 1, horizon).astype(jnp.float32) / horizon
            tau = target_norm[0] * (1 - r) + target_norm[1] * r
        out = orthogonalize(updates, ns_coeffs, ns_steps, eps, ns_dtype, grouping, tau)
        return jax.tree.map(lambda x: -lr_t * x, out), MuonState(state.count + 1)

    return optax.GradientTransformation(lambda _: MuonState(jnp.zeros((), jnp.int32)), update_fn)


def muon_filters(lr: optax.ScalarOrSchedule, momentum: float = 0.6, nesterov: bool = True,
                 ns_coeffs: Sequence[float] = (3.4445, -4.7750, 2.0315), ns_steps: int = 3,
                 eps: float = 1e-7, renormalize: bool = True, ns_dtype: Any = jnp.float32,
                 grouping: str = "pad", horizon: int | None = None, renorm_eps: float = 0.0,
                 target_norm: tuple[float, float] | None = None, weight_decay: float = 0.0
                 ) -> optax.GradientTransformation:
    """Muon for conv filters: PyTorch-style momentum, one batched Newton–Schulz, optional
    renormalisation and decoupled decay.

    Per filter bank ``w`` (HWIO ``(kh, kw, c_in, c_out)`` or any ``(..., c_out)``) and gradient ``g``:
    ``v ← μv + g``, Nesterov ``u = g + μv`` (``optax.trace``: the only params-sized state);
    ``X = NS(u)`` over the ``(c_out, kh·kw·c_in)`` matrices of all banks in one stack
    (:func:`scale_by_batched_muon`); then ``w ← w·s − lr·X`` with ``s`` the rescaling to
    ``‖w‖_F = sqrt(c_out)`` (:func:`renormalize_filters`; every step without ``horizon``), and with
    ``weight_decay`` ``w ← w·(1 − lr·wd)`` after the step (:func:`decay_after_step`).

    airbench94_muon (defaults): lr 0.24·(1 − c/T), μ 0.6, coefficients (3.4445, −4.7750, 2.0315),
    3 steps, eps 1e-7, renormalised every step, no decay, bfloat16 NS. hiverge
    (:mod:`speedrun.optim.hiverge`): μ 0.655, coefficients (3.4576, −4.7391, 2.0843), eps 1e-5 with
    ``target_norm`` (0.5012, 0.0786), periodic renormalisation (``horizon`` T, ``renorm_eps`` 1e-7),
    decoupled decay, float16 NS.

    Sources: KellerJordan/cifar10-airbench ``airbench94_muon.py`` (``Muon``); hiverge/cifar10-speedrun
    ``cifar10_speedrun.py`` (``Muon``); Jordan et al., "Muon: An optimizer for hidden layers" (2024).

    Args:
      lr: learning rate or schedule (optax count → lr).
      momentum, nesterov: μ and Nesterov.
      ns_coeffs, ns_steps, eps: the iteration (:func:`speedrun.optim.newton_schulz.orthogonalize`).
      renormalize: rescale the filters (False: never).
      ns_dtype: the iteration's dtype (:func:`speedrun.optim.newton_schulz.resolve_ns_dtype`).
      grouping: ``"pad"`` (one stack), ``"shape"`` or ``"auto"``
        (:func:`speedrun.optim.newton_schulz.resolve_grouping`).
      horizon: T of hiverge's periodic renormalisation and of ``target_norm`` (None: every step).
      renorm_eps: added to ‖w‖_F in the rescaling.
      target_norm: (τ0, τ1) or None.
      weight_decay: decoupled decay after the step (0: none).

    Raises:
      ValueError: unknown grouping, ``target_norm`` without ``horizon``.
    """
    parts = [optax.trace(decay=momentum, nesterov=nesterov),
             scale_by_batched_muon(lr, ns_coeffs, ns_steps, eps, ns_dtype, resolve_grouping(grouping),
                                   target_norm, horizon)]
    if renormalize:
        parts.append(renormalize_filters(renorm_eps, horizon))
    if weight_decay:
        parts.append(decay_after_step(lr, weight_decay))
    return optax.chain(*parts)


def airbench_muon(total_steps: int, steps_per_epoch: int, batch_size: int, muon_lr: float = 0.24,
                  muon_momentum: float = 0.6, ns_coeffs: Sequence[float] = (3.4445, -4.7750, 2.0315),
                  ns_steps: int = 3, momentum: float = 0.85, nesterov: bool = True, bias_lr: float = 0.053,
                  head_lr: float = 0.67, weight_decay: float = 2e-6, whiten_bias_epochs: float = 3,
                  ns_dtype: str = "float32", grouping: str = "pad") -> tuple[optax.GradientTransformation, optax.Schedule]:
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
      ns_dtype: the Newton–Schulz dtype spec (:func:`speedrun.optim.newton_schulz.resolve_ns_dtype`;
        the source: bfloat16, ``"auto"``); grouping: ``"pad"`` (one stack), ``"shape"`` or ``"auto"``
        (:func:`speedrun.optim.newton_schulz.resolve_grouping`).

    Returns:
      ``(tx, lr_schedule)``; the schedule is the filters' Muon lr per optax count.

    Raises:
      ValueError: non-positive batch size or steps, a bad ``ns_dtype`` or ``grouping``.
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
        "filter": muon_filters(muon_lr_fn, muon_momentum, nesterov, ns_coeffs, ns_steps,
                               ns_dtype=resolve_ns_dtype(ns_dtype), grouping=resolve_grouping(grouping)),
        "head": sgd(head_lr, decay),
        "bn_bias": sgd(bias_lr, decay),
        "whiten_bias": freeze_after(sgd(bias_lr, whiten_decay), whiten_steps),
    }, airbench_labels)
    return tx, muon_lr_fn


def airbench_muon_from_config(opt_config: Any, derived: Derived
                              ) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """:func:`airbench_muon` from a config with fields ``muon_lr``, ``muon_momentum``,
    ``ns_coeffs``, ``ns_steps``, ``momentum``, ``nesterov``, ``bias_lr``, ``head_lr``,
    ``weight_decay``, ``whiten_bias_epochs`` and, optional, ``ns_dtype`` (default ``"auto"``: the
    source's bfloat16 on GPUs, float32 on CPUs) and ``ns_grouping`` (default ``"auto"``: one padded stack on GPUs, per shape on CPUs). The source's
    batch-size rule and the schedules' length come from ``derived`` (``batch_size``,
    ``total_steps``, ``steps_per_epoch``).

    Raises:
      ValueError: see :func:`airbench_muon`.
    """
    c = opt_config
    return airbench_muon(derived.total_steps, derived.steps_per_epoch, derived.batch_size, c.muon_lr,
                         c.muon_momentum, tuple(c.ns_coeffs), c.ns_steps, c.momentum, c.nesterov,
                         c.bias_lr, c.head_lr, c.weight_decay, c.whiten_bias_epochs,
                         c.get("ns_dtype", "auto"), c.get("ns_grouping", "auto"))
