"""Optimizers and learning-rate schedules of the records, built from optax.

Page's parametrisation (cifar10-fast ``bag_of_tricks.ipynb``, final setup): PyTorch SGD with
Nesterov momentum 0.9 on a loss *summed* over the batch of B=512, learning rate
``lr(epoch) / B`` and weight decay ``5e-4 * B`` (added to the gradient, PyTorch style); batch-norm
biases get ``64 ×`` the learning rate and ``1/64`` the weight decay. Because

    (lr / B) · (B · ∇mean_loss + 5e-4·B · w)  =  lr · (∇mean_loss + 5e-4 · w),

the same trajectory is obtained here with the *mean* loss, learning rate ``lr(epoch)`` and weight
decay ``5e-4`` (and ``64·lr``, ``5e-4/64`` for the biases) — ``optax.add_decayed_weights`` then
``optax.sgd(nesterov=True)``, whose momentum buffer ``v ← μv + g``, step ``g + μv`` is PyTorch's
(dampening 0). tests/test_optim.py checks one step against a hand-computed PyTorch-style update.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import optax


def piecewise_linear(knots: Sequence[float], values: Sequence[float]) -> Callable[[Any], jax.Array]:
    """``t -> np.interp(t, knots, values)`` in jnp (flat outside the knots); Page's
    ``PiecewiseLinear``. Raises ValueError unless knots increase and match values in length."""
    knots, values = list(map(float, knots)), list(map(float, values))
    if len(knots) != len(values) or len(knots) < 2 or any(b <= a for a, b in zip(knots, knots[1:])):
        raise ValueError(
            f"lr schedule needs >=2 strictly increasing knots with one value each; got knots={knots}, "
            f"values={values}"
        )
    k, v = jnp.asarray(knots), jnp.asarray(values)
    return lambda t: jnp.interp(t, k, v)


def epoch_schedule(knots: Sequence[float], values: Sequence[float], steps_per_epoch: int) -> optax.Schedule:
    """An optax schedule (step count → lr) from a piecewise-linear schedule over *epochs*.

    Page's optimiser increments its step counter before reading the lr, so optax's count ``c``
    (0 at the first update) maps to epoch ``(c + 1) / steps_per_epoch``.
    """
    f = piecewise_linear(knots, values)
    return lambda count: f((count + 1) / steps_per_epoch)


def bias_labels(params: Any) -> Any:
    """Label every leaf named ``bias`` as ``"bias"`` and all others ``"default"`` (Page's
    ``is_bias = 'bias' in name``; in the record nets only batch-norm layers have biases)."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: "bias" if getattr(path[-1], "key", None) == "bias" else "default", params
    )


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

    def sgd(lr_mult: float, wd: float) -> optax.GradientTransformation:
        return optax.chain(
            optax.add_decayed_weights(wd),
            optax.sgd(lambda c: lr_mult * lr(c), momentum=momentum, nesterov=nesterov),
        )

    return optax.multi_transform(
        {"default": sgd(1.0, weight_decay), "bias": sgd(bias_lr_mult, weight_decay * bias_wd_mult)},
        bias_labels,
    )


def make_optimizer(opt_config: Any, steps_per_epoch: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """The optimizer named by ``opt_config.name`` and its weight learning-rate schedule.

    Known: ``page_sgd`` (fields ``lr_knots``, ``lr_values`` in epochs, ``momentum``, ``nesterov``,
    ``weight_decay``, ``bias_lr_mult``, ``bias_wd_mult``).

    Raises:
      ValueError: unknown optimizer name.
    """
    if opt_config.name == "page_sgd":
        lr = epoch_schedule(opt_config.lr_knots, opt_config.lr_values, steps_per_epoch)
        tx = page_sgd(lr, opt_config.momentum, opt_config.weight_decay, opt_config.bias_lr_mult,
                      opt_config.bias_wd_mult, opt_config.nesterov)
        return tx, lr
    raise ValueError(f"unknown optimizer {opt_config.name!r}; known: ['page_sgd']")
