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

import math
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


def he_lr_schedule(base_lr: float = 0.1, base_batch_size: int = 128, batch_size: int = 128,
                   boundaries: Sequence[int] = (32000, 48000), decay_factor: float = 0.1,
                   warmup_steps: int = 0) -> optax.Schedule:
    """He et al. 2015's step schedule in iterations, scaled to ``batch_size`` by Goyal et al.'s
    linear scaling rule, with their gradual warmup.

    He et al. 2015 (§4.2, CIFAR-10): lr 0.1 at batch 128, divided by 10 at 32k and 48k iterations,
    training stops at 64k. Goyal et al. 2017 ("Accurate, Large Minibatch SGD", §2.1–2.2): at batch
    ``k·128`` use lr ``k·0.1`` and the same number of epochs, so an iteration milestone ``m`` at
    batch 128 falls at ``round(m · 128 / batch_size)``; gradual warmup starts at the small-batch lr
    ``base_lr`` and adds a constant amount every iteration to reach ``k·base_lr`` after
    ``warmup_steps`` iterations (they use 5 epochs).

    Iteration ``i`` (1-based) is optax count ``c = i - 1``; a milestone ``m`` means iterations
    ``1..m`` use the higher rate and ``m + 1`` on the lower one (``c >= m``, as Caffe's
    ``multistep`` policy counts).

    Args:
      base_lr: lr at ``base_batch_size`` (0.1).
      base_batch_size: batch the milestones and ``base_lr`` refer to (128).
      batch_size: the run's batch; peak lr ``base_lr · batch_size / base_batch_size``.
      boundaries: milestones in iterations at ``base_batch_size``, increasing (32000, 48000).
      decay_factor: factor applied at each milestone (0.1).
      warmup_steps: iterations of linear warmup from ``base_lr`` to the peak lr (0: none).

    Returns:
      An optax schedule: count (int) → lr (float32).

    Raises:
      ValueError: non-positive batch sizes or lr, non-increasing milestones, a factor outside
        (0, 1], negative warmup, or warmup reaching past the first scaled milestone.
    """
    if base_batch_size <= 0 or batch_size <= 0 or base_lr <= 0:
        raise ValueError(f"he_lr_schedule needs positive base_lr, base_batch_size, batch_size; got "
                         f"{base_lr}, {base_batch_size}, {batch_size}")
    if not 0 < decay_factor <= 1 or warmup_steps < 0:
        raise ValueError(f"decay_factor must be in (0, 1] and warmup_steps >= 0; got {decay_factor}, "
                         f"{warmup_steps}")
    scale = batch_size / base_batch_size
    steps = [int(round(b / scale)) for b in boundaries]
    if any(b <= a for a, b in zip([0] + steps, steps)):
        raise ValueError(f"lr milestones must be positive and increasing after scaling to batch "
                         f"{batch_size}; got {list(boundaries)} at batch {base_batch_size} -> {steps}")
    if steps and warmup_steps >= steps[0]:
        raise ValueError(f"warmup of {warmup_steps} iterations reaches the first lr milestone at "
                         f"{steps[0]}; shorten optimizer.warmup_epochs or move optimizer.boundaries")
    peak = base_lr * scale
    decayed = optax.piecewise_constant_schedule(
        peak, {b - warmup_steps: decay_factor for b in steps})
    if warmup_steps == 0:
        return decayed
    return optax.join_schedules([optax.linear_schedule(base_lr, peak, warmup_steps), decayed],
                                [warmup_steps])


def kernel_labels(params: Any) -> Any:
    """``True`` for every leaf named ``kernel`` (conv and dense weights), ``False`` for batch-norm
    scales/biases and dense biases: a weight-decay mask."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: getattr(path[-1], "key", None) == "kernel", params)


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
      lr: schedule, count → lr (e.g. :func:`he_lr_schedule`).
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


def make_he_sgd(opt_config: Any, steps_per_epoch: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """:func:`he_sgd` with :func:`he_lr_schedule` from a config with fields ``lr``,
    ``base_batch_size``, ``batch_size`` (the run's; records link it to ``config.batch_size``),
    ``boundaries`` (iterations at ``base_batch_size``), ``decay_factor``, ``warmup_epochs``
    (× ``steps_per_epoch`` iterations), ``momentum``, ``nesterov``, ``weight_decay``,
    ``weight_decay_on``.

    Raises:
      ValueError: see :func:`he_lr_schedule` and :func:`he_sgd`.
    """
    c = opt_config
    lr = he_lr_schedule(c.lr, c.base_batch_size, c.batch_size, tuple(c.boundaries), c.decay_factor,
                        int(round(c.warmup_epochs * steps_per_epoch)))
    return he_sgd(lr, c.momentum, c.weight_decay, c.nesterov, c.weight_decay_on), lr


def make_optimizer(opt_config: Any, steps_per_epoch: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """The optimizer named by ``opt_config.name`` and its weight learning-rate schedule.

    Known: ``page_sgd`` (fields ``lr_knots``, ``lr_values`` in epochs, ``momentum``, ``nesterov``,
    ``weight_decay``, ``bias_lr_mult``, ``bias_wd_mult``); ``he_sgd`` (see :func:`make_he_sgd`);
    ``airbench_sgd``, ``airbench_muon`` (see :func:`make_airbench_optimizer`).

    Raises:
      ValueError: unknown optimizer name.
    """
    if opt_config.name == "page_sgd":
        lr = epoch_schedule(opt_config.lr_knots, opt_config.lr_values, steps_per_epoch)
        tx = page_sgd(lr, opt_config.momentum, opt_config.weight_decay, opt_config.bias_lr_mult,
                      opt_config.bias_wd_mult, opt_config.nesterov)
        return tx, lr
    if opt_config.name == "he_sgd":
        return make_he_sgd(opt_config, steps_per_epoch)
    if opt_config.name in ("airbench_sgd", "airbench_muon"):
        return make_airbench_optimizer(opt_config, steps_per_epoch)
    raise ValueError(f"unknown optimizer {opt_config.name!r}; known: "
                     "['airbench_muon', 'airbench_sgd', 'he_sgd', 'page_sgd']")


# ------------------------------------------------------------------ airbench (Keller Jordan)
#
# Source: KellerJordan/cifar10-airbench, ``airbench94.py`` and ``airbench94_muon.py``. Both train
# with PyTorch SGD (Nesterov, dampening 0) on a loss *summed* over the batch of B images, weight
# decay given per parameter group as ``wd / lr`` (so the absolute decay per step is
# ``schedule · wd``). As for Page's SGD above, the same trajectory is obtained here with the *mean*
# loss: a summed-loss learning rate ``η`` becomes ``η·B``, and a summed-loss coupled decay ``λ``
# becomes ``λ/B`` — ``η·(B·∇mean + λ·w) = η·B·(∇mean + (λ/B)·w)``.


def total_train_steps(epochs: int, steps_per_epoch: int, last_epoch_fraction: float = 1.0) -> int:
    """Optimizer steps of a run of ``epochs`` epochs whose last one is cut to a fraction.

    ``(epochs - 1) · steps_per_epoch + ceil(last_epoch_fraction · steps_per_epoch)``: airbench94's
    ``ceil(9.9 · 48) = 476`` steps are ``epochs=10, last_epoch_fraction=0.9`` (432 + 44).

    Raises:
      ValueError: ``epochs`` or ``steps_per_epoch`` not positive, or the fraction outside (0, 1].
    """
    if epochs <= 0 or steps_per_epoch <= 0:
        raise ValueError(f"epochs ({epochs}) and steps_per_epoch ({steps_per_epoch}) must be positive")
    if not 0.0 < last_epoch_fraction <= 1.0:
        raise ValueError(f"last_epoch_fraction must be in (0, 1]; got {last_epoch_fraction} "
                         "(use config.epochs for whole epochs)")
    # round first: 0.7·10 is 7.000000000000001 in floating point, which must not become 8 steps
    return (epochs - 1) * steps_per_epoch + math.ceil(round(last_epoch_fraction * steps_per_epoch, 9))


def airbench_triangle(total_steps: int, start: float = 0.2, peak_fraction: float = 0.23,
                      end: float = 0.07) -> optax.Schedule:
    """airbench94's lr multiplier: optax count ``c`` (0 at the first update) → linear from
    ``start`` at ``c=0`` to 1 at ``c=int(peak_fraction·total_steps)``, then linear to ``end`` at
    ``c=total_steps`` (flat after). Source: ``triangle(total_train_steps, start=0.2, end=0.07,
    peak=0.23)`` read by ``LambdaLR`` at the step index (the first step uses index 0).

    Raises:
      ValueError: ``total_steps`` too small for a warmup of at least one step.
    """
    peak = int(peak_fraction * total_steps)
    if peak < 1 or peak >= total_steps:
        raise ValueError(f"airbench's lr warmup needs 1 <= int({peak_fraction}·total_steps) < total_steps; "
                         f"got total_steps={total_steps}: train for more steps (epochs or a smaller batch)")
    f = piecewise_linear([0, peak, total_steps], [start, 1.0, end])
    return lambda count: f(count)


def linear_decay(total_steps: int, value: float = 1.0) -> optax.Schedule:
    """``c -> value · max(0, 1 - c/total_steps)`` (float32): airbench94_muon's
    ``initial_lr · (1 - step/total_train_steps)``, 0 from ``total_steps`` on.

    Raises:
      ValueError: ``total_steps`` not positive.
    """
    if total_steps <= 0:
        raise ValueError(f"linear_decay needs total_steps > 0; got {total_steps}")
    return lambda count: value * jnp.maximum(0.0, 1.0 - jnp.asarray(count, jnp.float32) / total_steps)


def torch_sgd(lr: optax.ScalarOrSchedule, momentum: float, weight_decay: float, nesterov: bool = True
              ) -> optax.GradientTransformation:
    """PyTorch ``SGD(lr, momentum, nesterov, weight_decay)`` (dampening 0): the coupled decay
    ``weight_decay·w`` is added to the gradient, then ``optax.sgd`` (``v ← μv + g``, Nesterov step
    ``g + μv``, times ``-lr``)."""
    return optax.chain(optax.add_decayed_weights(weight_decay),
                       optax.sgd(lr, momentum=momentum, nesterov=nesterov))


def freeze_after(tx: optax.GradientTransformation, steps: int) -> optax.GradientTransformation:
    """``tx`` whose updates are multiplied by 0 from update number ``steps`` on (counting from 0):
    the leaves train for exactly ``steps`` updates, then stay fixed (decay included). airbench's
    whitening bias (``requires_grad = epoch < 3`` in airbench94, ``whiten_bias_grad=(step < 75)``
    in airbench94_muon)."""
    return optax.chain(tx, optax.scale_by_schedule(lambda count: (count < steps).astype(jnp.float32)))


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
    examples"), with per-group ``weight_decay = decay / lr``. In mean-loss form (module comment
    above) that is a learning rate ``lr·B / (1024·(1 + 1/(1-μ)))`` times the schedule and a coupled
    decay ``weight_decay / lr``: both the step and the decay per step grow linearly with ``B``,
    the source's batch-size rule. BN biases get ``bias_lr_mult ×`` the lr and ``1/bias_lr_mult`` the
    coupled decay (the same absolute decay); the whitening bias is trained like the weights for the
    first ``ceil(whiten_bias_epochs · steps_per_epoch)`` steps, then frozen.

    Args:
      total_steps: the run's optimizer steps (:func:`total_train_steps`).
      steps_per_epoch: for the whitening-bias freeze.
      batch_size: B, examples per step.
      lr, weight_decay, momentum, nesterov, bias_lr_mult, whiten_bias_epochs: airbench94's 11.5,
        0.0153, 0.85, True, 64, 3.
      lr_start, warmup_fraction, lr_end: the schedule (:func:`airbench_triangle`): 0.2, 0.23, 0.07.

    Returns:
      ``(tx, lr_schedule)``: the optax transformation over an airbench param tree
      (:func:`airbench_labels`) and the weights' mean-loss learning rate per optax count.

    Raises:
      ValueError: momentum not in [0, 1), non-positive batch size, too few steps for the warmup.
    """
    if not 0.0 <= momentum < 1.0 or batch_size <= 0:
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

    Source: KellerJordan/cifar10-airbench ``airbench94_muon.py`` (``Muon``,
    ``zeropower_via_newtonschulz5``); Jordan et al., "Muon: An optimizer for hidden layers" (2024).

    Args:
      lr: learning rate or schedule (airbench94_muon: 0.24, linearly decayed to 0).
      momentum, nesterov: 0.6, True.
      ns_coeffs: (a, b, c) = (3.4445, −4.7750, 2.0315); ns_steps: 3; eps: 1e-7.
      renormalize: rescale the filters to ``sqrt(c_out)`` before each step.
    """
    from optax.contrib import MuonDimensionNumbers, scale_by_muon

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
      total_steps: T (:func:`total_train_steps`; airbench94_muon: 8 whole epochs).
      steps_per_epoch, batch_size: as in :func:`airbench_sgd`.
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


def make_airbench_optimizer(opt_config: Any, steps_per_epoch: int
                            ) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """``make_optimizer`` for ``airbench_sgd`` (:func:`airbench_sgd`; fields ``lr``,
    ``weight_decay``, ``momentum``, ``nesterov``, ``bias_lr_mult``, ``whiten_bias_epochs``,
    ``lr_start``, ``warmup_fraction``, ``lr_end``) and ``airbench_muon`` (:func:`airbench_muon`;
    fields ``muon_lr``, ``muon_momentum``, ``ns_coeffs``, ``ns_steps``, ``momentum``, ``nesterov``,
    ``bias_lr``, ``head_lr``, ``weight_decay``, ``whiten_bias_epochs``). Both also read
    ``batch_size``, ``epochs`` and ``last_epoch_fraction``, which the records link to the top-level
    fields with ``config.get_ref``: the source's batch-size rule and the schedule length
    (:func:`total_train_steps`).

    Raises:
      ValueError: see :func:`total_train_steps`, :func:`airbench_sgd`, :func:`airbench_muon`.
    """
    c = opt_config
    total = total_train_steps(c.epochs, steps_per_epoch, c.get("last_epoch_fraction", 1.0))
    if c.name == "airbench_sgd":
        return airbench_sgd(total, steps_per_epoch, c.batch_size, c.lr, c.weight_decay, c.momentum,
                            c.nesterov, c.bias_lr_mult, c.whiten_bias_epochs, c.lr_start,
                            c.warmup_fraction, c.lr_end)
    return airbench_muon(total, steps_per_epoch, c.batch_size, c.muon_lr, c.muon_momentum,
                         tuple(c.ns_coeffs), c.ns_steps, c.momentum, c.nesterov, c.bias_lr, c.head_lr,
                         c.weight_decay, c.whiten_bias_epochs)
