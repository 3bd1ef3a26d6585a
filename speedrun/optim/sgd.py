"""PyTorch-style SGD from optax: Page's (``page_sgd``), He et al.'s (``he_sgd``) and the pieces the
airbench optimizers share (``torch_sgd``, ``freeze_after``, the label functions).

Page's parametrisation (cifar10-fast ``bag_of_tricks.ipynb``, final setup): PyTorch SGD with
Nesterov momentum 0.9 on a loss *summed* over the batch of B=512, learning rate
``lr(epoch) / B`` and weight decay ``5e-4 * B`` (added to the gradient, PyTorch style); batch-norm
biases get ``64 ×`` the learning rate and ``1/64`` the weight decay. Because

    (lr / B) · (B · ∇mean_loss + 5e-4·B · w)  =  lr · (∇mean_loss + 5e-4 · w),

the same trajectory is obtained here with the *mean* loss, learning rate ``lr(epoch)`` and weight
decay ``5e-4`` (and ``64·lr``, ``5e-4/64`` for the biases) — ``optax.add_decayed_weights`` then
``optax.sgd(nesterov=True)``, whose momentum buffer ``v ← μv + g``, step ``g + μv`` is PyTorch's
(dampening 0). tests/test_optim.py checks one step against a hand-computed PyTorch-style update.

The ``*_from_config`` builders take ``(opt_config, derived)``, ``derived`` a
:class:`speedrun.config.Derived`: the run's batch size and step counts come from it, never from
``opt_config``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from speedrun.config import Derived
from speedrun.optim.schedules import epoch_schedule, he_lr_schedule, page_lr_knots


def bias_labels(params: Any) -> Any:
    """Label every leaf named ``bias`` as ``"bias"`` and all others ``"default"`` (Page's
    ``is_bias = 'bias' in name``; in the record nets only batch-norm layers have biases)."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: "bias" if getattr(path[-1], "key", None) == "bias" else "default", params
    )


def kernel_labels(params: Any) -> Any:
    """``True`` for every leaf named ``kernel`` (conv and dense weights), ``False`` for batch-norm
    scales/biases and dense biases: a weight-decay mask."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: getattr(path[-1], "key", None) == "kernel", params)


def decay_after_step(lr: optax.ScalarOrSchedule, weight_decay: float) -> optax.GradientTransformation:
    """Decoupled, multiplicative weight decay after the step: ``w + u → (w + u)·(1 − lr(c)·wd)``
    (hiverge's Muon: ``p.add_(update, alpha=-lr)`` then ``p.mul_(1 - lr·weight_decay)``); needs
    ``params``; state: the count."""

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError("decay_after_step needs params: call tx.update(grads, state, params)")
        lr_t = lr(state.count) if callable(lr) else lr
        out = jax.tree.map(lambda u, p: u - (lr_t * weight_decay) * (p + u), updates, params)
        return out, optax.ScaleByScheduleState(count=state.count + 1)

    return optax.GradientTransformation(lambda _: optax.ScaleByScheduleState(jnp.zeros((), jnp.int32)),
                                        update_fn)


def torch_sgd(lr: optax.ScalarOrSchedule, momentum: float, weight_decay: float, nesterov: bool = True,
              decoupled: bool = False) -> optax.GradientTransformation:
    """PyTorch ``SGD(lr, momentum, nesterov, weight_decay)`` (dampening 0).

    Coupled (default, PyTorch's): ``g' = g + λw``, ``v ← μv + g'``, ``w ← w − lr·(g' + μv)``
    (Nesterov; ``w − lr·v`` without) — ``optax.add_decayed_weights`` then ``optax.sgd``.
    ``decoupled=True``: the decay leaves the gradient and momentum alone and shrinks the weights
    after the step, ``w ← (w − lr·(g + μv))·(1 − lr·λ)`` (hiverge's Muon order,
    :func:`decay_after_step`). ``lr`` may be a schedule (optax count → lr)."""
    if decoupled:
        return optax.chain(optax.sgd(lr, momentum=momentum, nesterov=nesterov), decay_after_step(lr, weight_decay))
    return optax.chain(optax.add_decayed_weights(weight_decay),
                       optax.sgd(lr, momentum=momentum, nesterov=nesterov))


def freeze_after(tx: optax.GradientTransformation, steps: int) -> optax.GradientTransformation:
    """``tx`` whose updates are multiplied by 0 from update number ``steps`` on (counting from 0):
    the leaves train for exactly ``steps`` updates, then stay fixed (decay included). airbench's
    whitening bias (``requires_grad = epoch < 3`` in airbench94, ``whiten_bias_grad=(step < 75)``
    in airbench94_muon)."""
    return optax.chain(tx, optax.scale_by_schedule(lambda count: (count < steps).astype(jnp.float32)))


def page_sgd(lr: optax.Schedule, momentum: float = 0.9, weight_decay: float = 5e-4,
             bias_lr_mult: float = 64.0, bias_wd_mult: float = 1 / 64, nesterov: bool = True
             ) -> optax.GradientTransformation:
    """Page's SGD in the mean-loss form (see the module docstring for the equivalence).

    Args:
      lr: schedule, step count → learning rate for the weights.
      momentum: Nesterov/heavy-ball momentum.
      weight_decay: L2 coefficient added to the gradient (coupled, PyTorch style).
      bias_lr_mult, bias_wd_mult: multipliers of lr and weight decay for ``bias`` leaves.
      nesterov: Nesterov momentum.

    Returns:
      An ``optax.GradientTransformation`` over a params pytree (labels by :func:`bias_labels`).
    """
    return optax.multi_transform({
        "default": torch_sgd(lr, momentum, weight_decay, nesterov),
        "bias": torch_sgd(lambda c: bias_lr_mult * lr(c), momentum, weight_decay * bias_wd_mult, nesterov),
    }, bias_labels)


WEIGHT_DECAY_ON = ("all", "kernels")


def he_sgd(lr: optax.Schedule, momentum: float = 0.9, weight_decay: float = 1e-4,
           nesterov: bool = False, weight_decay_on: str = "all") -> optax.GradientTransformation:
    """SGD with heavy-ball momentum and coupled L2 weight decay, as in He et al. 2015 (§4.2:
    momentum 0.9, weight decay 1e-4).

    ``optax.add_decayed_weights`` then ``optax.sgd``: ``g ← ∇L + λw``, ``v ← μv + g``,
    ``w ← w − lr·v`` — PyTorch's and Torch's ``optim.sgd`` form (dampening 0), in which a change of
    lr needs no momentum correction (Goyal et al. 2017, §2.3); Caffe's ``v ← μv + lr·g`` differs
    only in the iteration after each lr change.

    Args:
      lr: schedule, count → lr (e.g. :func:`speedrun.optim.schedules.he_lr_schedule`).
      momentum: μ (0.9).
      weight_decay: λ (1e-4), added to the gradient.
      nesterov: Nesterov momentum (He et al.: plain momentum).
      weight_decay_on: ``"all"`` decays every parameter, batch-norm scales and biases and the dense
        bias included — the paper does not say, and the public Torch reproduction
        (fb.resnet.torch, whose ``optim.sgd`` decays its flat parameter vector) and PyTorch's
        ``SGD(model.parameters(), weight_decay=...)`` decay all; ``"kernels"`` only conv/dense
        weights (:func:`kernel_labels`).

    Raises:
      ValueError: unknown ``weight_decay_on``.
    """
    if weight_decay_on not in WEIGHT_DECAY_ON:
        raise ValueError(f"weight_decay_on must be one of {WEIGHT_DECAY_ON}, got {weight_decay_on!r}")
    mask = None if weight_decay_on == "all" else kernel_labels
    return optax.chain(optax.add_decayed_weights(weight_decay, mask),
                       optax.sgd(lr, momentum=momentum, nesterov=nesterov))


def lr_knots_of(opt_config: Any, epochs: float) -> list[float]:
    """The lr knots (epochs) of a ``page_sgd`` config: ``lr_knots`` when given, else
    :func:`speedrun.optim.schedules.page_lr_knots` of ``epochs`` with the config's
    ``lr_peak_fraction`` and ``ema_epochs``.

    Raises:
      ValueError: see :func:`speedrun.optim.schedules.page_lr_knots`.
    """
    if len(opt_config.lr_knots):
        return [float(k) for k in opt_config.lr_knots]
    return page_lr_knots(epochs, opt_config.lr_peak_fraction, opt_config.ema_epochs)


def page_sgd_from_config(opt_config: Any, derived: Derived
                         ) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """:func:`page_sgd` with :func:`speedrun.optim.schedules.epoch_schedule` over
    ``derived.steps_per_epoch``, from a config with fields ``lr_knots``, ``lr_values`` (in epochs),
    ``momentum``, ``nesterov``, ``weight_decay``, ``bias_lr_mult``, ``bias_wd_mult``. Empty
    ``lr_knots``: Page's knots from the run's length (:func:`lr_knots_of`).

    Raises:
      ValueError: bad knots (:func:`speedrun.optim.schedules.piecewise_linear`).
    """
    c = opt_config
    lr = epoch_schedule(lr_knots_of(c, derived.total_steps / derived.steps_per_epoch), c.lr_values,
                        derived.steps_per_epoch)
    return page_sgd(lr, c.momentum, c.weight_decay, c.bias_lr_mult, c.bias_wd_mult, c.nesterov), lr


def he_sgd_from_config(opt_config: Any, derived: Derived
                       ) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """:func:`he_sgd` with :func:`speedrun.optim.schedules.he_lr_schedule` from a config with
    fields ``lr``, ``base_batch_size``, ``boundaries`` (iterations at ``base_batch_size``),
    ``decay_factor``, ``warmup_epochs`` (× ``derived.steps_per_epoch`` iterations), ``momentum``,
    ``nesterov``, ``weight_decay``, ``weight_decay_on``; the run's batch (the linear scaling rule)
    is ``derived.batch_size``.

    Raises:
      ValueError: see :func:`speedrun.optim.schedules.he_lr_schedule` and :func:`he_sgd`.
    """
    c = opt_config
    lr = he_lr_schedule(c.lr, c.base_batch_size, derived.batch_size, tuple(c.boundaries), c.decay_factor,
                        int(round(c.warmup_epochs * derived.steps_per_epoch)))
    return he_sgd(lr, c.momentum, c.weight_decay, c.nesterov, c.weight_decay_on), lr
