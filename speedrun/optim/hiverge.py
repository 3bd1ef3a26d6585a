"""hiverge's optimizer groups (``hiverge_muon``) and fulcrum E1's variant of them, in mean-loss form.

Sources: hiverge/cifar10-speedrun @ 5cd49b1 ``cifar10_speedrun.py`` (``main``, ``Muon``);
fulcrumresearch/cifar-10-speedrun @ ddec65f ``fable-100m/recipes/e1_1.74s_single-gpu_CHAMPION.py``
(``decay_epochs``, ``lr_floor``). Summed-loss SGD lr ``η`` and coupled decay ``λ = wd/η`` become
``η·B`` and ``λ/B`` with the mean loss (:mod:`speedrun.optim.airbench`); Muon is scale-free.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import jax.numpy as jnp
import optax

from speedrun.config import Derived
from speedrun.optim.airbench import airbench_labels
from speedrun.optim.muon import muon_filters
from speedrun.optim.newton_schulz import resolve_grouping, resolve_ns_dtype
from speedrun.optim.sgd import freeze_after, torch_sgd


def floored_decay(horizon: int, floor: float = 0.0) -> optax.Schedule:
    """``c -> max(1 − c/horizon, floor)`` (float32): hiverge's ``1 − step/T`` (floor 0, ``c < T``)
    and E1's ``max(1 − step/272, 0.05)``.

    Raises:
      ValueError: ``horizon`` not positive or ``floor`` outside [0, 1).
    """
    if horizon <= 0 or not 0.0 <= floor < 1.0:
        raise ValueError(f"the lr decay needs horizon > 0 and 0 <= floor < 1; got {horizon}, {floor}")
    return lambda count: jnp.maximum(1.0 - jnp.asarray(count, jnp.float32) / horizon, floor)


def hiverge_muon(total_steps: int, steps_per_epoch: int, batch_size: int, muon_lr: float = 0.205,
                 muon_momentum: float = 0.655, ns_coeffs: Sequence[float] = (3.4576, -4.7391, 2.0843),
                 ns_steps: int = 3, ns_eps: float = 1e-5, target_norm: Sequence[float] = (0.5012, 0.0786),
                 momentum: float = 0.825, nesterov: bool = True, bias_lr: float = 0.0573, head_lr: float = 0.5415,
                 weight_decay: float = 1.0418e-6, whiten_bias_epochs: float = 0.19, decay_steps: int | None = None,
                 lr_floor: float = 0.0, ns_dtype: str = "float32", grouping: str = "pad"
                 ) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """hiverge's optimizers. With ``d(c) = max(1 − c/D, lr_floor)``, ``D = decay_steps`` (default
    the run's ``total_steps``; E1: 272 of 284 steps, floor 0.05), no warm-up:

    - conv filters: :func:`speedrun.optim.muon.muon_filters` with lr ``muon_lr·d(c)``, momentum
      0.655 (Nesterov), the coefficients, eps 1e-5 with the target-norm pre-scaling, the periodic
      renormalisation (eps 1e-7) and the target both over horizon ``D`` (E1 gives Muon its
      ``decay_steps``), decoupled decay ``weight_decay·B`` after the step;
    - BN biases, head: PyTorch Nesterov SGD (momentum 0.825) with coupled decay, summed-loss lr
      ``bias_lr``/``head_lr`` times ``d(c)``, ``λ = weight_decay·B/lr``;
    - whitening bias: as the BN biases with lr ``bias_lr·(1 − c/S)``,
      ``S = ceil(whiten_bias_epochs·steps_per_epoch)`` (7 at 32 steps an epoch), then frozen.

    Returns:
      ``(tx, lr_schedule)``: the optax transformation over an airbench-style param tree
      (:func:`speedrun.optim.airbench.airbench_labels`) and the filters' Muon lr per optax count.

    Raises:
      ValueError: non-positive batch size or steps, a bad decay horizon, floor, ``ns_dtype`` or
        ``grouping``.
    """
    if batch_size <= 0 or total_steps <= 0:
        raise ValueError(f"hiverge_muon needs batch_size > 0 and total_steps > 0; got {batch_size}, {total_steps}")
    horizon = int(decay_steps or total_steps)
    decay = floored_decay(horizon, lr_floor)
    whiten_steps = max(1, math.ceil(whiten_bias_epochs * steps_per_epoch))
    whiten_decay = floored_decay(whiten_steps)
    wd = weight_decay * batch_size

    def sgd(lr_value, sched):
        return torch_sgd(lambda c: lr_value * batch_size * sched(c), momentum, weight_decay / lr_value, nesterov)

    muon_lr_fn = lambda c: muon_lr * decay(c)  # noqa: E731
    tx = optax.multi_transform({
        "filter": muon_filters(muon_lr_fn, muon_momentum, nesterov, tuple(ns_coeffs), ns_steps, eps=ns_eps,
                               ns_dtype=resolve_ns_dtype(ns_dtype), grouping=resolve_grouping(grouping), horizon=horizon,
                               renorm_eps=1e-7, target_norm=tuple(target_norm), weight_decay=wd),
        "head": sgd(head_lr, decay),
        "bn_bias": sgd(bias_lr, decay),
        "whiten_bias": freeze_after(sgd(bias_lr, whiten_decay), whiten_steps),
    }, airbench_labels)
    return tx, muon_lr_fn


def hiverge_muon_from_config(opt_config: Any, derived: Derived
                             ) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """:func:`hiverge_muon` from a config with fields ``muon_lr``, ``muon_momentum``, ``ns_coeffs``,
    ``ns_steps``, ``ns_eps``, ``target_norm``, ``momentum``, ``nesterov``, ``bias_lr``, ``head_lr``,
    ``weight_decay`` (per example), ``whiten_bias_epochs``, ``decay_epochs`` (None: the run's length;
    E1: 8.5, i.e. ``ceil(8.5·steps_per_epoch)`` steps), ``lr_floor``, ``ns_dtype`` and
    ``ns_grouping``; batch size and step counts from ``derived``.

    Raises:
      ValueError: see :func:`hiverge_muon`.
    """
    c = opt_config
    decay_steps = None if c.decay_epochs is None else math.ceil(round(c.decay_epochs * derived.steps_per_epoch, 9))
    return hiverge_muon(derived.total_steps, derived.steps_per_epoch, derived.batch_size, c.muon_lr,
                        c.muon_momentum, tuple(c.ns_coeffs), c.ns_steps, c.ns_eps, tuple(c.target_norm),
                        c.momentum, c.nesterov, c.bias_lr, c.head_lr, c.weight_decay, c.whiten_bias_epochs,
                        decay_steps, c.lr_floor, c.ns_dtype, c.ns_grouping)
