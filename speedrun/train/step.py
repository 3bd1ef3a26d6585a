"""One training step: loss, gradient and optimizer update of one batch; and the record's model
averaging (:class:`Averaging`), which the epoch runs only after the steps that average.

Read :func:`train_step` first: it is the whole algorithm of every record, top to bottom, as in
airbench's loop body or flax/examples/imagenet's ``train_step``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax

from speedrun.optim import ema as ema_lib, lookahead as lookahead_lib
from speedrun.system import parallel, precision
from speedrun.train import state as state_lib
from speedrun.train.state import TrainState


def cross_entropy(logits: jax.Array, labels: jax.Array, label_smoothing: float) -> jax.Array:
    """Mean cross-entropy with label smoothing, float32 scalar, of ``logits (B, K)`` float and
    ``labels (B,)`` int. Targets are ``(1 - ε)·onehot + ε/K`` (``optax.smooth_labels``), Page's
    ``label_smoothing_loss(ε)``: ``(1 - ε)·NLL + ε·mean_k(-log p_k)``."""
    targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing)
    return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets).mean()


def train_step(state: TrainState, constants: dict, x: jax.Array, y: jax.Array, key: jax.Array | None, *,
               model, tx: optax.GradientTransformation, label_smoothing: float,
               axis_name: str | None = None, detach: tuple[str, ...] = (),
               static_scale: float | None = None) -> tuple[TrainState, dict[str, jax.Array]]:
    """One step on a normalised, augmented batch ``x (B, H, W, 3)`` (compute dtype), ``y (B,) int32``.

    ``key``: the ``"dropout"`` PRNG stream (stochastic depth; other nets ignore it); the model
    average (``state.ema``) is not touched here (:class:`Averaging`). ``axis_name``: one replica
    of a data-parallel step inside ``jax.shard_map`` (:mod:`speedrun.system.parallel`): the loss, batch-norm statistics and metrics are
    ``pmean``-ed, so the gradient is that of the global-batch mean loss and every replica applies
    the same update; ``None``: one device. The loss is the batch mean: recipes defined on a summed
    loss use a ``B`` times larger learning rate (:mod:`speedrun.optim`), the same update.
    ``detach``: names of param leaves taken as constants (``stop_gradient``: no gradient is
    computed for them nor through them — the whitening bias after its freeze, the sources'
    ``requires_grad = False``); their optimizer sees zero gradients.

    Float16 (``state.loss_scale`` a ``DynamicScale``): a step with non-finite gradients leaves
    params, batch stats and the optimizer's float state as they were and halves the scale; it still
    counts (step counters advance, as PyTorch's scheduler past a ``GradScaler`` skip); the metrics
    then also hold ``finite`` (bool) and ``loss_scale`` (float32). ``static_scale``: the loss is
    scaled by this fixed factor, nothing is checked (:func:`speedrun.system.precision.value_and_grad`).
    The state's health record (divergence check) is updated on the device (:func:`with_health`); a
    skipped step is not checked.

    Returns ``(state, {"loss", "acc"})``, float32 scalars of this batch before the update.
    """
    rngs = {} if key is None else {"dropout": key}

    def loss_fn(params):
        if detach:
            params = jax.tree_util.tree_map_with_path(
                lambda path, p: jax.lax.stop_gradient(p) if getattr(path[-1], "key", None) in detach else p, params)
        variables = {"params": params, "batch_stats": state.batch_stats, "constants": constants}
        logits, updates = model.apply(variables, x, train=True, mutable=["batch_stats"], rngs=rngs)
        loss = parallel.pmean(cross_entropy(logits, y, label_smoothing), axis_name)  # global-batch mean
        return loss, (logits, updates["batch_stats"])

    loss_scale, finite, (loss, (logits, batch_stats)), grads = precision.value_and_grad(
        loss_fn, state.params, state.loss_scale, static_scale)
    batch_stats = parallel.pmean(batch_stats, axis_name)  # identical running stats on every replica
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    if loss_scale is not None:  # a skipped step: the float state the update wrote stays as it was
        params, batch_stats, opt_state = precision.keep_if_finite(
            finite, (params, batch_stats, opt_state), (state.params, state.batch_stats, state.opt_state))
    new = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state,
                        loss_scale=loss_scale)
    metrics = {"loss": loss, "acc": parallel.pmean(jnp.mean(logits.argmax(-1) == y), axis_name)}
    if loss_scale is not None:
        metrics.update(finite=finite, loss_scale=loss_scale.scale)
    return with_health(new, loss, state.step, finite), metrics


def with_health(state: TrainState, loss: jax.Array, step: jax.Array, applied: jax.Array) -> TrainState:
    """``state`` with its health record updated by this step (:func:`speedrun.train.state.update_health`:
    float32 ``loss``, int32 ``step`` before it, bool ``applied``); unchanged when it tracks none."""
    if state.health is None:
        return state
    return state.replace(health=state_lib.update_health(state.health, loss, step, applied))


@dataclasses.dataclass(frozen=True)
class Averaging:
    """A record's model average, updated after the steps ``c = first, first + every, ...``
    (``c`` counts the steps taken, 1 after the first) and after no other: the epoch places each
    update statically (:meth:`positions`, :meth:`speedrun.train.epoch.EpochParts.run`), so no
    step computes, blends or selects anything of the average.

    ``mix(avg, net, count) -> (avg, net)``: the update, with ``avg`` the average carried in
    ``TrainState.ema``, ``net`` the ``{"params", "batch_stats"}`` just updated by the optimizer and
    ``count`` the int32 ``TrainState.step`` after the step.
    """

    every: int
    first: int
    mix: Callable = dataclasses.field(compare=False, repr=False)

    def positions(self, start: int, steps: int) -> tuple[int, ...]:
        """The 1-based positions within the ``steps`` steps after run step ``start`` (0-based, the
        steps taken before them) after which the average updates."""
        c = self.first if start < self.first else start + 1 + (self.first - start - 1) % self.every
        return tuple(range(c - start, steps + 1, self.every))

    def apply(self, state: TrainState) -> TrainState:
        """``state`` after the update (its ``step`` the count of steps taken)."""
        ema, net = self.mix(state.ema, {"params": state.params, "batch_stats": state.batch_stats}, state.step)
        return state.replace(params=net["params"], batch_stats=net["batch_stats"], ema=ema)


def averaging(config: ml_collections.ConfigDict, total_steps: int | None = None) -> Averaging | None:
    """The record's model averaging (:class:`Averaging`), or ``None`` without one:

    - ``config.ema.enabled``: Page's EMA (:func:`speedrun.optim.ema.ema_update` after the steps of
      index ``0, every, 2·every, ...``: ``first = 1``), debiased unless ``config.ema.debias`` is
      False, the net unchanged;
    - ``config.lookahead.enabled``: airbench's lookahead (:func:`speedrun.optim.lookahead.update`
      after the counts ``every, 2·every, ...``), which writes the average into the net;
    - neither (or no such config block): ``None``; nothing is carried (``TrainState.ema`` is
      ``None``, :func:`averages`).

    The rates (``ema.momentum``, ``lookahead.decay_*``) may be traced floats (sweeps); ``every`` is
    static.

    Raises:
      ValueError: both enabled (both write the evaluated model), or lookahead without ``total_steps``.
    """
    ema, la = config.get("ema"), config.get("lookahead")
    use_ema, use_la = ema is not None and ema.enabled, la is not None and la.enabled
    if use_ema and use_la:
        raise ValueError("config.ema.enabled and config.lookahead.enabled are exclusive (both write the "
                         "evaluated model) — disable one, e.g. --config.ema.enabled=False")
    if use_ema:
        debias, every = ema.get("debias", True), int(ema.every)
        return Averaging(every, 1, lambda avg, net, count: (
            ema_lib.ema_update(avg, net, count - 1, ema.momentum, every, debias), net))
    if use_la:
        if total_steps is None:
            raise ValueError("lookahead needs total_steps (speedrun.config.derived)")
        every = int(la.every)
        start = lookahead_lib.tail_start(config, total_steps)  # E1's tail; 0: airbench's from the start
        return Averaging(every, start or every, lambda avg, net, count: lookahead_lib.update(
            avg, net, count, total_steps, every, la.decay_base, la.decay_pow, start))
    return None


def averages(config: ml_collections.ConfigDict) -> bool:
    """Whether the record carries a model average (Page's EMA or airbench's lookahead)."""
    return any(config.get(k) is not None and config.get(k).enabled for k in ("ema", "lookahead"))


def step_fn(model, tx, config: ml_collections.ConfigDict, total_steps: int | None = None,
            axis_name: str | None = None, detach: tuple[str, ...] = (),
            static_scale: float | None = None) -> Callable[..., Any]:
    """:func:`train_step` with the record's model, optimizer and label smoothing bound:
    ``step(state, constants, x, y, key=None) -> (state, metrics)``; checks the record's averaging
    (:func:`averaging`; ``total_steps`` is for it), which the epoch applies."""
    averaging(config, total_steps)  # raises on a bad averaging config

    def step(state, constants, x, y, key=None):
        return train_step(state, constants, x, y, key, model=model, tx=tx,
                          label_smoothing=config.label_smoothing, axis_name=axis_name, detach=detach,
                          static_scale=static_scale)

    return step
