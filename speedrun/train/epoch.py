"""One epoch as one compiled program: shuffle, gather, augment and ``lax.scan`` the step over the
batches, data-parallel over the mesh (Page's and airbench's single-graph epoch; the host only picks
each epoch's program, :mod:`speedrun.train.plan`). On the CPU backend the same pieces
(:class:`EpochParts`) run as host-called chunks of unrolled steps instead
(:mod:`speedrun.train.chunked`, jax-ml/jax#12868)."""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections

from speedrun.config import Derived
from speedrun.data import pipeline
from speedrun.data.cifar10 import CIFAR10_MEAN, CIFAR10_STD
from speedrun.system import parallel, precision
from speedrun.train import plan as plan_lib, selection
from speedrun.train.select import _loop  # lax.scan, or with unroll=True a Python loop
from speedrun.train.step import averaging, step_fn

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
                     mesh: jax.sharding.Mesh | None = None, hparams: Sequence[str] = (),
                     spec: plan_lib.EpochSpec | None = None, retrace: Callable | None = None) -> Callable[..., Any]:
    """``epoch(state, constants, x_train, y_train, key, epoch) -> (state, metrics)``: the epoch
    ``spec`` (default: the run's first full epoch, :meth:`EpochParts.first_epoch`) as one program, a
    ``jax.shard_map`` over ``mesh`` (default: every device; jit it) whose replicas each run
    :func:`speedrun.train.step.train_step` on their share of every global batch.

    Args of the returned function (shardings on ``mesh``): ``state`` (:class:`TrainState`) and
    ``constants`` (the model's whitening filters), replicated; ``x_train (N, 32, 32, 3) uint8`` and
    ``y_train (N,) int32``, rows sharded along ``data`` (``N`` padded to a multiple of the device
    count, :func:`speedrun.system.parallel.pad_rows`; rows past ``derived.n_train`` are never
    drawn); ``key``, this epoch's PRNG key, and ``epoch``, the int32 0-based epoch index (traced, so
    alternating flips never recompile), replicated.

    Shuffles ``range(n_train)`` with ``key`` (the same permutation on every device), keeps the first
    ``spec.steps * batch_size`` indices and scans the step over the batches, segment by segment
    (each its own ``lax.scan``, with its own static variant: whitening bias trained or detached,
    image size, the steps after which the model average updates); each device gathers its share
    of the global batch, normalises it and augments each example with its own key (its position in the global batch folded in, so neither replicas
    nor device counts share or change draws).

    Returns the replicated state and the epoch's metrics, float32 scalars: mean training ``loss`` and
    ``acc`` over its steps; under float16 also ``skipped`` and ``loss_scale``; and ``health``, the
    state's health record at the epoch's end with ``step`` (int32 ``state.step``) added
    (:func:`speedrun.train.state.check_health` reads it; absent when the state tracks none).

    ``hparams``: dotted config keys taken as traced inputs (sweeps that compile once): the function
    then takes a last argument ``hp``, ``{key: float32 scalar}`` (replicated), and ``retrace(hp) ->
    (config, tx)`` builds the step from it (:mod:`speedrun.sweep.hparams`); ``tx`` is then used
    only for its state's structure (the state passed in).

    Raises:
      ValueError: random and alternating flips both on, EMA and lookahead both on.
    """
    mesh = parallel.make_mesh() if mesh is None else mesh
    parts = EpochParts(model, tx, config, derived, normalize, retrace)
    spec = parts.first_epoch() if spec is None else spec
    unroll = scan_unroll(config.scan_unroll, spec.steps)

    def epoch(state, constants, x_train, y_train, key, epoch, hp=None):
        idx, keys, base_flip = parts.plan(state.run_key, key, spec.steps)
        metrics, a = [], 0
        for seg in spec.segments:
            state, m = parts.run(state, constants, x_train, y_train, idx[a:a + seg.steps], keys[a:a + seg.steps],
                                 base_flip, epoch, seg, hp, unroll)
            metrics.append(m)
            a += seg.steps
        return parts.finish(state, jax.tree.map(lambda *m: jnp.concatenate(m), *metrics), spec.final_average)

    rep = jax.sharding.PartitionSpec()
    in_specs = (rep, rep, rep, rep, rep, rep) + ((rep,) if hparams else ())
    return jax.shard_map(epoch, mesh=mesh, in_specs=in_specs, out_specs=(rep, rep))


#: the param leaves a segment with a detached whitening bias takes as constants
WHITEN_BIAS_LEAVES = ("whiten_bias",)


class EpochParts:
    """The three stages of an epoch, per device (inside a ``shard_map`` over the mesh axis
    ``data``): :meth:`plan`, :meth:`run` (one segment) and :meth:`finish`, shared by the
    one-program epoch (:func:`make_train_epoch`) and the host-chunked CPU epoch
    (:mod:`speedrun.train.chunked`), so both run the same steps on the same inputs.

    ``retrace(hp) -> (config, tx)``: the config and optimizer with traced hyperparameters
    substituted (sweeps); ``None``: every value from ``config``.

    Raises:
      ValueError: random and alternating flips both on, EMA and lookahead both on.
    """

    def __init__(self, model, tx, config: ml_collections.ConfigDict, derived: Derived, normalize,
                 retrace: Callable | None = None):
        self.config, self.derived, self.model, self.normalize = config, derived, model, normalize
        self.tx, self.retrace = tx, retrace
        policy = precision.resolve(config.precision)
        self.static_scale = float(derived.batch_size) if policy.static_scale else None
        self.step(plan_lib.Segment(1))  # checks the config (EMA and lookahead both on)
        self.averaging = averaging(config, derived.total_steps)  # every, first: static
        self.augment = pipeline.TrainAugment(config.augment, derived.n_train, config.data.get("mean", CIFAR10_MEAN),
                                             config.data.get("std", CIFAR10_STD), policy.compute_dtype)
        # config.select: a proxy picks each batch's kept rows (speedrun.train.selection); else None
        self.selection = selection.build(config, derived, policy.compute_dtype, self.static_scale)

    def step(self, segment: plan_lib.Segment, hp=None) -> Callable:
        """The train step of ``segment``'s variant; with ``hp`` (traced hyperparameters) built from
        ``retrace(hp)``."""
        cfg, tx = (self.config, self.tx) if hp is None else self.retrace(hp)
        return step_fn(self.model, tx, cfg, self.derived.total_steps, axis_name=parallel.DATA_AXIS,
                       detach=() if segment.whiten_bias else WHITEN_BIAS_LEAVES, static_scale=self.static_scale)

    def average(self, hp=None):
        """The record's :class:`speedrun.train.step.Averaging` (``None``: none), its rates from
        ``retrace(hp)`` when traced."""
        return self.averaging if hp is None or self.averaging is None else \
            averaging(self.retrace(hp)[0], self.derived.total_steps)

    def first_epoch(self) -> plan_lib.EpochSpec:
        """The full epoch from run step 0 (:func:`speedrun.train.plan.full_epoch`) with its averages."""
        return plan_lib.place_averages([plan_lib.full_epoch(self.derived.steps_per_epoch)], self.averaging)[0]

    def plan(self, run_key: jax.Array, key: jax.Array, steps: int) -> tuple:
        """``(idx (steps, B) int32, draws, None)``: the epoch's batches (the first ``steps * B`` of a
        permutation of ``range(n_train)`` drawn with ``key``) and every step's key and augmentation
        draws (:class:`speedrun.data.pipeline.Draws`, ``(steps, ...)``; the alternating flip's base
        mask from ``run_key``)."""
        d = self.derived
        k_perm, k_aug = jax.random.split(key)
        idx = jax.random.permutation(k_perm, d.n_train)[: steps * d.batch_size].reshape(steps, d.batch_size)
        return idx, self.augment.draw(k_aug, run_key, idx), None

    def run(self, state, constants, x_train, y_train, idx, keys, base_flip, epoch, segment, hp=None, unroll=1):
        """``lax.scan`` ``segment``'s step over the ``len(idx)`` batches ``idx (S', B)`` with their
        draws ``keys`` (``(S', ...)``; ``unroll`` steps per loop iteration; ``True``: Python loops,
        no while loop at all, as the chunk programs of :mod:`speedrun.train.chunked` need):
        ``(state, per-step metrics (S', ...))``. ``base_flip`` is unused (kept ``None``).

        The model average updates after the steps ``segment.averages`` and no other: the steps up
        to the first, then a scan over groups of ``every`` steps each followed by the update, then
        the steps after the last — all static, no select. With data selection the scanned unit is
        ``lcm(every, period) / every`` groups (the proxy's phase repeats after it); the groups
        that do not fill a unit follow the scan."""
        step, axis, augment = self.step(segment, hp), parallel.DATA_AXIS, self.augment
        size = None if segment.image_size == 32 else segment.image_size  # a resolution curriculum's epoch

        def batch(inputs):
            batch_idx, draws = inputs  # (B,) dataset indices of the global batch; the step's draws
            i, d = augment.local(draws, batch_idx, axis)  # this device's share, from its own copy
            x = augment.apply(x_train, i, d, epoch, size=size)
            return x, y_train[i], jax.random.fold_in(draws.key, DROPOUT_FOLD)

        def body(state, inputs):
            return step(state, constants, *batch(inputs))

        def steps(state, rows, offset):  # the rows' steps, from `offset` steps into the segment
            if self.selection is None:
                return _loop(body, state, rows, unroll)
            phase = (segment.phase + offset) % self.selection.period  # static: the proxy's steps
            return self.selection.run(step, state, constants, rows, batch, phase, unroll)

        rows = (idx, keys)
        pos = segment.averages
        if not pos:
            return steps(state, rows, 0)
        average, every = self.average(hp), self.averaging.every
        cut = lambda a, b: jax.tree.map(lambda r: r[a:b], rows)  # noqa: E731
        state, head = steps(state, cut(0, pos[0]), 0)
        state, out = average.apply(state), [head]
        g = len(pos) - 1  # groups of `every` steps, the average's update after each
        period = 1 if self.selection is None else self.selection.period
        span = math.lcm(every, period) // every  # groups after which the proxy's phase repeats
        units = g // span  # one scanned program of `span` groups each; the groups left over inline
        if units:
            unit_rows = jax.tree.map(lambda r: r.reshape((units, span, every) + r.shape[1:]),
                                     cut(pos[0], pos[0] + units * span * every))

            def unit(state, inputs):
                ms = []
                for j in range(span):
                    state, m = steps(state, jax.tree.map(lambda r: r[j], inputs), pos[0] + j * every)
                    ms.append(m)
                    state = average.apply(state)
                return state, jax.tree.map(lambda *a: jnp.concatenate(a), *ms)

            state, m = _loop(unit, state, unit_rows, unroll)
            out.append(jax.tree.map(lambda a: a.reshape((units * span * every,) + a.shape[2:]), m))
        for a in pos[units * span:-1]:
            state, m = steps(state, cut(a, a + every), a)
            state = average.apply(state)
            out.append(m)
        if pos[-1] < len(idx):
            state, tail = steps(state, cut(pos[-1], len(idx)), pos[-1])
            out.append(tail)
        return state, jax.tree.map(lambda *a: jnp.concatenate(a), *out)

    def finish(self, state, metrics, final_average: bool = False):
        """The epoch's end from the per-step ``metrics (S, ...)``: the summary
        (:func:`speedrun.system.precision.summarize_steps`) and the health record: ``(state, out)``;
        ``final_average``: the net is set to the average (lookahead's end of training)."""
        if final_average:
            state = state.replace(params=jax.tree.map(jnp.copy, state.ema["params"]),
                                  batch_stats=jax.tree.map(jnp.copy, state.ema["batch_stats"]))
        out = precision.summarize_steps(metrics)
        if state.health is not None:  # read by the host once per epoch (check_health)
            out["health"] = {**state.health, "step": state.step}
        return state, out
