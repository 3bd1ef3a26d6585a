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


def _compile(fn, args, in_shardings, out_sharding, donate=()):
    return jax.jit(fn, donate_argnums=donate, in_shardings=in_shardings,
                   out_shardings=out_sharding).lower(*args).compile()


class ChunkedEpoch:
    """``epoch(state, constants, x_train, y_train, key, epoch[, hp]) -> (state, metrics)``, the
    call of the compiled one-program epoch (same arguments, shardings, donated ``state`` and
    results; :func:`speedrun.train.epoch.make_train_epoch`), run as the programs ``plan``, ``chunk``
    (``chunk_steps`` steps, called ``n_full`` times), ``rest`` (the ``rest_steps`` left; ``None``
    when none) and ``finish``.

    ``input_shardings`` is that of the one-program epoch (``((state, constants, x_train, y_train,
    key, epoch[, hp]), {})``); :meth:`as_text` is the chunk program's HLO (module ``jit_epoch``).
    """

    def __init__(self, plan, chunk, rest, finish, n_full: int, chunk_steps: int, rest_steps: int,
                 input_shardings: tuple):
        self.plan, self.chunk, self.rest, self.finish = plan, chunk, rest, finish
        self.n_full, self.chunk_steps, self.rest_steps = n_full, chunk_steps, rest_steps
        self.input_shardings = input_shardings

    def __call__(self, state, constants, x_train, y_train, key, epoch, *hp):
        idx, keys, base_flip = self.plan(state.run_key, key)  # lists of per-chunk slices
        metrics = []
        for c, (i, k) in enumerate(zip(idx, keys)):
            program = self.chunk if c < self.n_full else self.rest
            state, m = program(state, constants, x_train, y_train, i, k, base_flip, epoch, *hp)
            metrics.append(m)
        return self.finish(state, metrics)

    def as_text(self) -> str:
        return self.chunk.as_text()


def compile_chunked_epoch(model, tx, config: ml_collections.ConfigDict, derived: Derived, normalize,
                          mesh: jax.sharding.Mesh, chunk: int, args: Sequence[Any],
                          hparams: Sequence[str] = ()) -> tuple[ChunkedEpoch, float]:
    """Compile the chunked epoch for ``args``, the one-program epoch's arguments (arrays or
    ``jax.ShapeDtypeStruct`` trees: ``state, constants, x_train, y_train, key, epoch[, hp]``, with
    ``x_train``/``y_train`` rows sharded along ``data``, the rest replicated on ``mesh``):
    ``(epoch, seconds spent compiling all its programs)``.

    ``chunk``: steps per chunk program, ``1 <= chunk`` (:func:`chunk_size`). Every program runs in a
    ``jax.shard_map`` over ``mesh``; the chunk programs and ``finish`` donate the state.

    Raises:
      ValueError: ``chunk < 1``; see :class:`speedrun.train.epoch.EpochParts`.
    """
    if chunk < 1:
        raise ValueError(f"chunk must be a positive number of steps; got {chunk}")
    t0 = time.perf_counter()
    parts = EpochParts(model, tx, config, derived, normalize)
    steps = derived.steps_per_epoch
    chunk = min(chunk, steps)
    n_full, rest_steps = divmod(steps, chunk)
    bounds = [(c * chunk, (c + 1) * chunk) for c in range(n_full)] + ([(n_full * chunk, steps)] if rest_steps else [])
    P, axis = jax.sharding.PartitionSpec, parallel.DATA_AXIS
    rep = parallel.replicated(mesh)
    state, constants, x_train, y_train, key, epoch = args[:6]
    hp = tuple(args[6:7]) if hparams else ()

    def plan(run_key, key):
        idx, keys, base_flip = parts.plan(run_key, key)
        return [idx[a:b] for a, b in bounds], [keys[a:b] for a, b in bounds], base_flip

    def epoch_chunk(state, constants, x_train, y_train, idx, keys, base_flip, epoch, hp=None):
        return parts.run(state, constants, x_train, y_train, idx, keys, base_flip, epoch, hp, unroll=True)

    epoch_chunk.__name__ = "epoch"  # the module jit_epoch, as the one-program epoch's (profiles)
    smap = lambda f, specs=(P(), P()): jax.shard_map(f, mesh=mesh, in_specs=specs, out_specs=P())  # noqa: E731
    plan_c = _compile(smap(plan), (state.run_key, key), (rep, rep), rep)
    idx_s, keys_s, flip_s = jax.eval_shape(smap(plan), state.run_key, key)
    chunk_specs = (P(),) * 8 + ((P(),) if hp else ())
    chunk_shard = (rep,) * 8 + ((rep,) if hp else ())
    programs, metrics_s = [], []
    for c in [0] + ([n_full] if rest_steps else []):  # the chunk program, the rest's
        chunk_args = (state, constants, x_train, y_train, idx_s[c], keys_s[c], flip_s, epoch, *hp)
        f = smap(epoch_chunk, chunk_specs)
        programs.append(_compile(f, chunk_args, chunk_shard, rep, donate=(0,)))
        metrics_s += [jax.eval_shape(f, *chunk_args)[1]] * (n_full if c == 0 else 1)

    def finish(state, metrics):
        return parts.finish(state, jax.tree.map(lambda *a: jnp.concatenate(a), *metrics))

    finish_c = _compile(smap(finish), (state, metrics_s), (rep, rep), rep, donate=(0,))
    tree_rep = lambda t: jax.tree.map(lambda _: rep, t)  # noqa: E731
    shardings = ((tree_rep(state), tree_rep(constants), rep, rep, rep, rep) + tuple(tree_rep(h) for h in hp), {})
    epoch_fn = ChunkedEpoch(plan_c, programs[0], programs[1] if rest_steps else None, finish_c, n_full, chunk,
                            rest_steps, shardings)
    return epoch_fn, time.perf_counter() - t0
