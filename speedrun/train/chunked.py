"""The CPU epoch as a few small fully unrolled programs called from the host.

XLA:CPU runs the convolutions of a while-loop body far slower than the same ops outside one
(jax-ml/jax#12868), so on CPU the epoch's steps are unrolled; unrolling all of them in one program
makes its compile time grow with the steps per epoch. Here the host instead calls one program of
``U`` unrolled steps (no while loop) ``steps // U`` times, a second one for the ``steps % U`` left,
between a small program drawing the epoch's batches and keys and one summarising its metrics:
compile time is bounded by ``U`` whatever the data size, and the steps, their inputs and their order
are those of the one-program epoch (:func:`speedrun.train.epoch.make_train_epoch`), whose pieces
(:class:`speedrun.train.epoch.EpochParts`) every program here runs. GPU/TPU keep the one-program
epoch with a real loop.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections

from speedrun.config import Derived
from speedrun.system import parallel
from speedrun.train import plan as plan_lib
from speedrun.train.epoch import EpochParts

#: steps per chunk program on CPU when ``config.scan_chunk`` is 0 or absent (automatic)
CPU_CHUNK = 8


def chunk_size(config: ml_collections.ConfigDict, steps_per_epoch: int, backend: str | None = None) -> int:
    """Steps per host-called chunk program, or 0 for the one-program epoch.

    0 unless the backend (default :func:`jax.default_backend`) is the CPU and ``config.scan_unroll``
    is 0 (automatic; a positive value asks for that unroll in one program); then
    ``config.scan_chunk`` when positive, else :data:`CPU_CHUNK`; 0 again when that is not fewer than
    ``steps_per_epoch`` (the one program is then no larger than a chunk).
    """
    if config.get("scan_unroll", 0) > 0 or (backend or jax.default_backend()) != "cpu":
        return 0
    u = int(config.get("scan_chunk", 0) or 0) or CPU_CHUNK
    return u if u < steps_per_epoch else 0


def chunk_starts(segment: plan_lib.Segment, chunk: int, every: int = 0) -> list[int]:
    """Where the chunks of ``segment`` start (0-based step offsets, first 0): every ``chunk``
    steps; with model averages (``segment.averages``, ``every`` steps apart), chunks of at most
    ``chunk`` up to the first update, then of a multiple of ``every`` (at most ``chunk`` where it
    fits): each update falls at a chunk's end, and the chunks between updates share one program."""
    if not segment.averages:
        return list(range(0, segment.steps, chunk))
    h = segment.averages[0]
    return list(range(0, h, chunk)) + list(range(h, segment.steps, every * max(1, chunk // every)))


def _compile(fn, args, in_shardings, out_sharding, donate=()):
    return jax.jit(fn, donate_argnums=donate, in_shardings=in_shardings,
                   out_shardings=out_sharding).lower(*args).compile()


class ChunkedEpoch:
    """``epoch(state, constants, x_train, y_train, key, epoch[, hp]) -> (state, metrics)``, the
    call of the compiled one-program epoch (same arguments, shardings, donated ``state`` and
    results; :func:`speedrun.train.epoch.make_train_epoch`), run as the programs ``plan``, then
    ``calls`` (one ``(program, segment slice)`` per chunk, in order) and ``finish``.

    ``input_shardings`` is that of the one-program epoch (``((state, constants, x_train, y_train,
    key, epoch[, hp]), {})``); :meth:`as_text` is the first chunk program's HLO (module ``jit_epoch``).
    """

    def __init__(self, plan, calls: list, finish, input_shardings: tuple):
        self.plan, self.calls, self.finish = plan, calls, finish
        self.input_shardings = input_shardings

    def __call__(self, state, constants, x_train, y_train, key, epoch, *hp):
        idx, keys, base_flip = self.plan(state.run_key, key)  # lists of per-chunk slices
        metrics = []
        for program, i, k in zip(self.calls, idx, keys):
            state, m = program(state, constants, x_train, y_train, i, k, base_flip, epoch, *hp)
            metrics.append(m)
        return self.finish(state, metrics)

    def as_text(self) -> str:
        return self.calls[0].as_text()


class ChunkCompiler:
    """Compiles chunked epochs (:class:`ChunkedEpoch`) for the one-program epoch's arguments
    ``args`` (arrays or ``jax.ShapeDtypeStruct`` trees: ``state, constants, x_train, y_train, key,
    epoch[, hp]``, every one replicated on
    ``mesh``), sharing every program among the epochs of a plan: a chunk program per (segment
    variant, length), a plan program per epoch length, a finish program per chunk layout.

    ``chunk``: steps per chunk program, ``1 <= chunk`` (:func:`chunk_size`). Every program runs in a
    ``jax.shard_map`` over ``mesh``; the chunk programs and ``finish`` donate the state.
    ``retrace``: as for :class:`speedrun.train.epoch.EpochParts`.

    Raises:
      ValueError: ``chunk < 1``; see :class:`speedrun.train.epoch.EpochParts`.
    """

    def __init__(self, model, tx, config: ml_collections.ConfigDict, derived: Derived, normalize,
                 mesh: jax.sharding.Mesh, chunk: int, args: Sequence[Any], hparams: Sequence[str] = (),
                 retrace=None):
        if chunk < 1:
            raise ValueError(f"chunk must be a positive number of steps; got {chunk}")
        self.parts = EpochParts(model, tx, config, derived, normalize, retrace)
        self.mesh, self.chunk = mesh, chunk
        self.args, self.hp = tuple(args[:6]), tuple(args[6:7]) if hparams else ()
        self.cache: dict = {}  # program key -> compiled program (or shapes)

    def _smap(self, f, specs):
        return jax.shard_map(f, mesh=self.mesh, in_specs=specs, out_specs=jax.sharding.PartitionSpec())

    def _get(self, key, build):
        if key not in self.cache:
            self.cache[key] = build()
        return self.cache[key]

    def compile(self, spec: plan_lib.EpochSpec) -> ChunkedEpoch:
        """The chunked program sequence of one epoch ``spec``: its segments cut into chunks of at
        most ``chunk`` steps (compiled once per distinct variant and length)."""
        P, parts, mesh = jax.sharding.PartitionSpec, self.parts, self.mesh
        rep = parallel.replicated(mesh)
        state, constants, x_train, y_train, key, epoch = self.args
        hp = self.hp
        bounds, segs, a = [], [], 0
        every = parts.averaging.every if parts.averaging is not None else 0
        for seg in spec.segments:
            period = parts.selection.period if parts.selection is not None else 0
            cuts = chunk_starts(seg, self.chunk, every)
            for c, d in zip(cuts, cuts[1:] + [seg.steps]):
                bounds.append((a + c, a + d))
                segs.append(seg.part(c, d - c, period))
            a += seg.steps

        def plan(run_key, key):
            idx, keys, base_flip = parts.plan(run_key, key, spec.steps)
            return [idx[x:y] for x, y in bounds], [keys[x:y] for x, y in bounds], base_flip

        plan_f = self._smap(plan, (P(), P()))
        plan_c = self._get(("plan", tuple(bounds)), lambda: _compile(plan_f, (state.run_key, key), (rep, rep), rep))
        idx_s, keys_s, flip_s = jax.eval_shape(plan_f, state.run_key, key)
        chunk_specs = (P(),) * 8 + ((P(),) if hp else ())
        chunk_shard = (rep,) * 8 + ((rep,) if hp else ())
        calls, metrics_s = [], []
        for c, seg in enumerate(segs):
            def epoch_chunk(state, constants, x_train, y_train, idx, keys, base_flip, epoch, hp=None, seg=seg):
                return parts.run(state, constants, x_train, y_train, idx, keys, base_flip, epoch, seg, hp, unroll=True)

            epoch_chunk.__name__ = "epoch"  # the module jit_epoch, as the one-program epoch's (profiles)
            f = self._smap(epoch_chunk, chunk_specs)
            chunk_args = (state, constants, x_train, y_train, idx_s[c], keys_s[c], flip_s, epoch, *hp)
            calls.append(self._get(("chunk", seg), lambda: _compile(f, chunk_args, chunk_shard, rep, donate=(0,))))
            metrics_s.append(self._get(("metrics", seg), lambda: jax.eval_shape(f, *chunk_args)[1]))

        def finish(state, metrics):
            return parts.finish(state, jax.tree.map(lambda *a: jnp.concatenate(a), *metrics), spec.final_average)

        finish_c = self._get(("finish", tuple(s.steps for s in segs), spec.final_average), lambda: _compile(
            self._smap(finish, (P(), P())), (state, metrics_s), (rep, rep), rep, donate=(0,)))
        tree_rep = lambda t: jax.tree.map(lambda _: rep, t)  # noqa: E731
        shardings = ((tree_rep(state), tree_rep(constants), rep, rep, rep, rep) + tuple(tree_rep(h) for h in hp), {})
        return ChunkedEpoch(plan_c, calls, finish_c, shardings)


def compile_chunked_epoch(model, tx, config: ml_collections.ConfigDict, derived: Derived, normalize,
                          mesh: jax.sharding.Mesh, chunk: int, args: Sequence[Any],
                          hparams: Sequence[str] = (), spec: plan_lib.EpochSpec | None = None,
                          retrace=None) -> tuple[ChunkedEpoch, float]:
    """Compile the chunked epoch ``spec`` (default the run's first full epoch) for ``args``
    (:class:`ChunkCompiler`): ``(epoch, seconds spent compiling all its programs)``.

    Raises:
      ValueError: ``chunk < 1``; see :class:`speedrun.train.epoch.EpochParts`.
    """
    t0 = time.perf_counter()
    compiler = ChunkCompiler(model, tx, config, derived, normalize, mesh, chunk, args, hparams, retrace)
    epoch = compiler.compile(compiler.parts.first_epoch() if spec is None else spec)
    return epoch, time.perf_counter() - t0
