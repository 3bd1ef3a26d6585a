"""airbench94's SGD (Keller Jordan) and the param labels shared with airbench94_muon.

Source: KellerJordan/cifar10-airbench, ``airbench94.py`` and ``airbench94_muon.py``. Both train
with PyTorch SGD (Nesterov, dampening 0) on a loss *summed* over the batch of B images, weight
decay given per parameter group as ``wd / lr`` (so the absolute decay per step is
``schedule · wd``). As for Page's SGD (:mod:`speedrun.optim.sgd`), the same trajectory is obtained
here with the *mean* loss: a summed-loss learning rate ``η`` becomes ``η·B``, and a summed-loss
coupled decay ``λ`` becomes ``λ/B`` — ``η·(B·∇mean + λ·w) = η·B·(∇mean + (λ/B)·w)``.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import optax

from speedrun.config import Derived
from speedrun.optim.schedules import airbench_triangle
from speedrun.optim.sgd import freeze_after, torch_sgd


def airbench_labels(params: Any) -> Any:
    """Label the leaves of :class:`speedrun.models.airbench.AirbenchNet`'s params: ``whiten_bias``
    (the whitening conv's bias), ``bn_bias`` (leaves named ``bias``: the BN biases), ``head`` (under
    a module named ``head``) and ``filter`` (the 4-D conv kernels).

    Raises:
      ValueError: a leaf that fits none of these (not an airbench param tree).
    """

    def label(path, leaf):
        keys = [getattr(p, "key", None) for p in path]
        if keys[-1] == "whiten_bias":
            return "whiten_bias"
        if keys[-1] == "bias":
            return "bn_bias"
        if "head" in keys:
            return "head"
        if jnp.ndim(leaf) == 4:
            return "filter"
        raise ValueError(f"airbench optimizers cannot place param {'/'.join(map(str, keys))} of shape "
                         f"{jnp.shape(leaf)}; use them with model.name='airbench'")

    return jax.tree_util.tree_map_with_path(label, params)


def airbench_sgd(total_steps: int, steps_per_epoch: int, batch_size: int, lr: float = 11.5,
                 weight_decay: float = 0.0153, momentum: float = 0.85, nesterov: bool = True,
                 bias_lr_mult: float = 64.0, whiten_bias_epochs: float = 3,
                 lr_start: float = 0.2, warmup_fraction: float = 0.23, lr_end: float = 0.07
                 ) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """airbench94's SGD in its decoupled parametrisation, in mean-loss form.

    airbench94 sets the PyTorch (summed-loss) learning rate to ``lr / (1024·(1 + 1/(1-μ)))`` and
    the decay to ``weight_decay · B / (1024·(1 + 1/(1-μ)))`` (``lr``, ``weight_decay`` "per 1024
    examples"), with per-group ``weight_decay = decay / lr``. In mean-loss form (module docstring)
    that is a learning rate ``lr·B / (1024·(1 + 1/(1-μ)))`` times the schedule and a coupled
    decay ``weight_decay / lr``: both the step and the decay per step grow linearly with ``B``,
    the source's batch-size rule. BN biases get ``bias_lr_mult ×`` the lr and ``1/bias_lr_mult`` the
    coupled decay (the same absolute decay); the whitening bias is trained like the weights for the
    first ``ceil(whiten_bias_epochs · steps_per_epoch)`` steps, then frozen.

    Args:
      total_steps: the run's optimizer steps (:func:`speedrun.config.total_train_steps`).
      steps_per_epoch: for the whitening-bias freeze.
      batch_size: B, examples per step.
      lr, weight_decay, momentum, nesterov, bias_lr_mult, whiten_bias_epochs: airbench94's 11.5,
        0.0153, 0.85, True, 64, 3.
      lr_start, warmup_fraction, lr_end: the schedule
        (:func:`speedrun.optim.schedules.airbench_triangle`): 0.2, 0.23, 0.07.

    Returns:
      ``(tx, lr_schedule)``: the optax transformation over an airbench param tree
      (:func:`airbench_labels`) and the weights' mean-loss learning rate per optax count.

    Raises:
      ValueError: momentum not in [0, 1), non-positive batch size, too few steps for the warmup.
    """
    # a traced momentum (speedrun.sweep.hparams) is checked on the host, by speedrun.validation
    if (isinstance(momentum, (int, float)) and not 0.0 <= momentum < 1.0) or batch_size <= 0:
        raise ValueError(f"airbench_sgd needs 0 <= momentum < 1 and batch_size > 0; got {momentum}, {batch_size}")
    kilostep_scale = 1024 * (1 + 1 / (1 - momentum))
    base = lr * batch_size / kilostep_scale
    sched = airbench_triangle(total_steps, lr_start, warmup_fraction, lr_end)
    lr_fn = lambda count: base * sched(count)  # noqa: E731
    wd = weight_decay / lr
    weights = torch_sgd(lr_fn, momentum, wd, nesterov)
    tx = optax.multi_transform({
        "filter": weights,
        "head": weights,
        "bn_bias": torch_sgd(lambda c: bias_lr_mult * lr_fn(c), momentum, wd / bias_lr_mult, nesterov),
        "whiten_bias": freeze_after(torch_sgd(lr_fn, momentum, wd, nesterov),
                                    math.ceil(whiten_bias_epochs * steps_per_epoch)),
    }, airbench_labels)
    return tx, lr_fn


def airbench_sgd_from_config(opt_config: Any, derived: Derived
                             ) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """:func:`airbench_sgd` from a config with fields ``lr``, ``weight_decay``, ``momentum``,
    ``nesterov``, ``bias_lr_mult``, ``whiten_bias_epochs``, ``lr_start``, ``warmup_fraction``,
    ``lr_end``. The source's batch-size rule and the schedule length come from ``derived``
    (``batch_size``, ``total_steps`` — airbench94's 9.9 epochs included — and ``steps_per_epoch``).

    Raises:
      ValueError: see :func:`airbench_sgd`.
    """
    c = opt_config
    return airbench_sgd(derived.total_steps, derived.steps_per_epoch, derived.batch_size, c.lr,
                        c.weight_decay, c.momentum, c.nesterov, c.bias_lr_mult, c.whiten_bias_epochs,
                        c.lr_start, c.warmup_fraction, c.lr_end)
