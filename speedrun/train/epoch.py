"""One epoch as one compiled program: shuffle, gather, augment and ``lax.scan`` the step over the
batches, data-parallel over the mesh (Page's and airbench's single-graph epoch; the host only loops
over epochs). On the CPU backend :class:`speedrun.train.experiment.Experiment` runs the same pieces
(:class:`EpochParts`) as host-called chunks of unrolled steps instead (:mod:`speedrun.train.chunked`,
jax-ml/jax#12868)."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections

from speedrun.config import Derived
from speedrun.data import pipeline
from speedrun.data.cifar10 import CIFAR10_MEAN, CIFAR10_STD
from speedrun.system import parallel, precision
from speedrun.train.step import step_fn

#: fold_in constant deriving a step's ``"dropout"`` key from its batch key (never an example position)
DROPOUT_FOLD = 2**31 - 1


def scan_unroll(setting: int, steps_per_epoch: int, backend: str | None = None) -> int:
    """How many steps of the epoch's ``lax.scan`` to unroll: ``setting`` when positive; ``0`` means
    automatic: 1 (a real loop) on GPU/TPU, the whole epoch on the CPU backend, where XLA runs the
    convolutions of a while-loop body far slower than the same ops outside one (jax-ml/jax#12868;
    README, CPU notes). There :class:`speedrun.train.experiment.Experiment` compiles the epoch as
    host-called chunks of unrolled steps instead (:func:`speedrun.train.chunked.chunk_size`), so
    its compile time does not grow with the steps per epoch."""
    if setting > 0:
        return setting
    backend = backend or jax.default_backend()
    return steps_per_epoch if backend == "cpu" else 1


def make_train_epoch(model, tx, config: ml_collections.ConfigDict, derived: Derived, normalize,
                     mesh: jax.sharding.Mesh | None = None, hparams: Sequence[str] = ()) -> Callable[..., Any]:
    """``epoch(state, constants, x_train, y_train, key, epoch) -> (state, metrics)``: a
    ``jax.shard_map`` over ``mesh`` (default: every device; jit it) whose replicas each run
    :func:`speedrun.train.step.train_step` on their share of every global batch.

    Args of the returned function (shardings on ``mesh``): ``state`` (:class:`TrainState`) and
    ``constants`` (the model's whitening filters), replicated; ``x_train (N, 32, 32, 3) uint8`` and
    ``y_train (N,) int32``, rows sharded along ``data`` (``N`` padded to a multiple of the device
    count, :func:`speedrun.system.parallel.pad_rows`; rows past ``derived.n_train`` are never
    drawn); ``key``, this epoch's PRNG key, and ``epoch``, the int32 0-based epoch index (traced, so
    alternating flips never recompile), replicated.

    Shuffles ``range(n_train)`` with ``key`` (the same permutation on every device), keeps the first
    ``steps_per_epoch * batch_size`` indices (the last partial batch is dropped) and scans the step
    over the batches; each device gathers its share of the global batch, normalises it and augments
    each example with its own key (its position in the global batch folded in, so neither replicas
    nor device counts share or change draws). Past ``derived.total_steps`` (airbench94's 9.9 epochs)
    a step is skipped (``lax.cond``: state unchanged) and left out of the metrics. With lookahead the
    net is set to the average at the end of every epoch (airbench's ``update(net, decay=1.0)``).

    Returns the replicated state and the epoch's metrics, float32 scalars: mean training ``loss`` and
    ``acc`` over its steps; under float16 also ``skipped`` and ``loss_scale``; and ``health``, the
    state's health record at the epoch's end with ``step`` (int32 ``state.step``) added
    (:func:`speedrun.train.state.check_health` reads it; absent when the state tracks none).

    ``hparams``: dotted config keys taken as traced inputs (:mod:`speedrun.sweep.hparams`, a sweep
    that compiles once): the function then takes a last argument ``hp``, ``{key: float32 scalar}``
    (replicated), and builds the optimizer (:func:`speedrun.optim.make_optimizer`), the averaging
    and the label smoothing from the config with those leaves replaced
    (:func:`speedrun.sweep.hparams.substitute`); ``tx`` is then used only for its state's structure
    (the state passed in). Empty (default): no ``hp`` argument, everything from ``config``.

    Raises:
      ValueError: random and alternating flips both on, EMA and lookahead both on.
    """
    mesh = parallel.make_mesh() if mesh is None else mesh
    parts = EpochParts(model, tx, config, derived, normalize)
    unroll = scan_unroll(config.scan_unroll, derived.steps_per_epoch)

    def epoch(state, constants, x_train, y_train, key, epoch, hp=None):
        idx, keys, base_flip = parts.plan(state.run_key, key)
        state, metrics = parts.run(state, constants, x_train, y_train, idx, keys, base_flip, epoch, hp, unroll)
        return parts.finish(state, metrics)

    rep = jax.sharding.PartitionSpec()
    in_specs = (rep, rep, rep, rep, rep, rep) + ((rep,) if hparams else ())
    return jax.shard_map(epoch, mesh=mesh, in_specs=in_specs, out_specs=(rep, rep))


class EpochParts:
    """The three stages of :func:`make_train_epoch`'s epoch, per device (inside a ``shard_map``
    over the mesh axis ``data``), shared with the host-chunked CPU epoch
    (:mod:`speedrun.train.chunked`), so both run the same steps on the same inputs.

    Raises:
      ValueError: random and alternating flips both on, EMA and lookahead both on.
    """

    def __init__(self, model, tx, config: ml_collections.ConfigDict, derived: Derived, normalize):
        self.config, self.derived, self.model, self.normalize = config, derived, model, normalize
        self.fixed_step = self._make_step(config, tx)  # also checks the config (EMA and lookahead both on)
        self.augment = pipeline.TrainAugment(config.augment, derived.n_train, config.data.get("mean", CIFAR10_MEAN),
                                             config.data.get("std", CIFAR10_STD),
                                             precision.resolve(config.precision).compute_dtype)
        la = config.get("lookahead")
        self.reset_to_average = la is not None and la.enabled

    def _make_step(self, cfg, tx):
        steps, total = self.derived.steps_per_epoch, self.derived.total_steps
        step = step_fn(self.model, tx, cfg, steps, total, axis_name=parallel.DATA_AXIS)
        if total < self.config.epochs * steps:  # the last epoch stops early (airbench94's 9.9 epochs)
            step = _limited(step, total)
        return step

    def step(self, hp=None) -> Callable:
        """The train step; with ``hp`` (traced hyperparameters) the optimizer and the step are built
        from the config with those leaves replaced (:func:`speedrun.sweep.hparams.substitute`)."""
        if hp is None:
            return self.fixed_step
        from speedrun import optim  # noqa: PLC0415
        from speedrun.sweep import hparams as hparams_lib  # noqa: PLC0415

        cfg = hparams_lib.substitute(self.config, hp)
        return self._make_step(cfg, optim.make_optimizer(cfg.optimizer, self.derived)[0])

    def plan(self, run_key: jax.Array, key: jax.Array) -> tuple:
        """``(idx (S, B) int32, draws, None)``: the epoch's batches (the first ``S * B`` of a
        permutation of ``range(n_train)`` drawn with ``key``) and every step's key and augmentation
        draws (:class:`speedrun.data.pipeline.Draws`, ``(S, ...)``; the alternating flip's base
        mask from ``run_key``)."""
        d = self.derived
        k_perm, k_aug = jax.random.split(key)
        idx = jax.random.permutation(k_perm, d.n_train)[: d.steps_per_epoch * d.batch_size]
        idx = idx.reshape(d.steps_per_epoch, d.batch_size)
        return idx, self.augment.draw(k_aug, run_key, idx), None

    def run(self, state, constants, x_train, y_train, idx, keys, base_flip, epoch, hp=None, unroll=1):
        """``lax.scan`` the step over the ``len(idx)`` batches ``idx (S', B)`` with keys ``keys (S',)``
        (``unroll`` steps per loop iteration; ``True``: a Python loop, no while loop at all, as
        the chunk programs of :mod:`speedrun.train.chunked` need): ``(state, per-step metrics (S', ...))``."""
        step, axis, augment = self.step(hp), parallel.DATA_AXIS, self.augment

        def body(state, inputs):
            batch_idx, draws = inputs  # (B,) dataset indices of the global batch; the step's draws
            i, d = augment.local(draws, batch_idx, axis)  # this device's share, from its own copy
            x = augment.apply(x_train, i, d, epoch)
            return step(state, constants, x, y_train[i], jax.random.fold_in(draws.key, DROPOUT_FOLD))

        if unroll is not True:
            return jax.lax.scan(body, state, (idx, keys), unroll=unroll)
        metrics = []  # unrolled in Python: straight-line code, never a while loop (jax#12868)
        for j in range(len(idx)):
            state, m = body(state, (idx[j], keys[j]))
            metrics.append(m)
        return state, jax.tree.map(lambda *a: jnp.stack(a), *metrics)

    def finish(self, state, metrics):
        """The epoch's end from the per-step ``metrics (S, ...)``: lookahead's reset to the average,
        the summary (:func:`summarize_active`) and the health record: ``(state, out)``."""
        if self.reset_to_average:
            state = state.replace(params=jax.tree.map(jnp.copy, state.ema["params"]),
                                  batch_stats=jax.tree.map(jnp.copy, state.ema["batch_stats"]))
        out = summarize_active(metrics)
        if state.health is not None:  # read by the host once per epoch (check_health)
            out["health"] = {**state.health, "step": state.step}
        return state, out


def _limited(step: Callable, total_steps: int) -> Callable:
    """``step`` that leaves the state unchanged once ``state.step`` reaches ``total_steps``
    (``lax.cond``: no compute on GPU) and marks its metrics ``active``."""

    def skip(state, *args):
        zeros = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), jax.eval_shape(step, state, *args)[1])
        if "loss_scale" in zeros:
            zeros["loss_scale"] = state.loss_scale.scale
        return state, zeros

    def limited(state, *args):
        active = state.step < total_steps
        state, metrics = jax.lax.cond(active, step, skip, state, *args)
        return state, {**metrics, "active": active}

    return limited


def summarize_active(metrics: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """:func:`speedrun.system.precision.summarize_steps` over the steps marked ``metrics["active"]``
    (all steps when there is no such entry); skipped-past-the-end steps are not float16 skips."""
    metrics = dict(metrics)
    active = metrics.pop("active", None)
    if active is None:
        return precision.summarize_steps(metrics)
    if "finite" in metrics:
        metrics["finite"] = metrics["finite"] & active
        out = precision.summarize_steps(metrics)
        out["skipped"] = out["skipped"] - jnp.sum(~active).astype(jnp.float32)
        return out
    w = active.astype(jnp.float32)
    return jax.tree.map(lambda m: jnp.sum(jnp.where(active, m, 0.0)) / jnp.sum(w), metrics)
