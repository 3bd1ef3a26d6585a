"""K runs of one record (same shapes) trained at once as one program on one device (``--vmap K``).

``jax.vmap`` over the training state (params, optimizer state, batch-norm statistics, EMA or
lookahead average, health record), the traced hyperparameters (:mod:`speedrun.sweep.hparams`) and
the PRNG keys of init and of every epoch: each run keeps its own init and data order from its seed,
exactly as :meth:`speedrun.train.experiment.Experiment.run` draws them. The data, the whitening
filters (a function of the first training images only) and the epoch index are shared. The mapped
epoch is the record's own ``shard_map``-ed epoch on a one-device mesh (vmap of shard_map), so
it is the same code as a sequential run; evaluation is vmapped too.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from speedrun.system import parallel
from speedrun.train import plan as plan_lib, programs
from speedrun.train.epoch import make_train_epoch
from speedrun.train.experiment import Experiment, _compile
from speedrun.train.state import DivergenceError, evaluated


class VmappedExperiment(Experiment):
    """:class:`speedrun.train.experiment.Experiment` whose programs train ``k`` runs at once.

    Args:
      config: the record config (its static keys are every run's).
      arrays: as for :class:`~speedrun.train.experiment.Experiment`.
      k: runs per program (the vmapped axis; every call to :meth:`run_group` trains exactly ``k``).
      hparams: traced keys (:mod:`speedrun.sweep.hparams`), whose values differ between the runs.
      device: the one device (default ``jax.devices()[0]``).

    Raises:
      speedrun.errors.ConfigError: see :class:`~speedrun.train.experiment.Experiment`; ``k < 1``.
    """

    def __init__(self, config: ml_collections.ConfigDict, arrays: tuple | None, k: int,
                 hparams: Sequence[str] = (), device: jax.Device | None = None):
        from speedrun.errors import ConfigError  # noqa: PLC0415

        if k < 1:
            raise ConfigError(f"--vmap must be a positive number of runs per program; got {k} — pass e.g. --vmap 4")
        self.k = int(k)
        mesh = parallel.make_mesh([device or jax.devices()[0]])
        super().__init__(config, arrays, mesh=mesh, hparams=hparams)

    def _compile_all(self) -> None:
        rep = parallel.replicated(self.mesh)
        init_fn, whiten_fn, evaluate_fn, evaluate0_fn = self._functions()
        k = self.k
        keys = parallel.replicate(jax.random.split(jax.random.key(0), k), self.mesh)
        v_init = jax.vmap(init_fn)
        hp_axes = (0,) if self.hparams else ()
        state_shape = jax.eval_shape(v_init, keys)
        consts_shape = jax.eval_shape(whiten_fn, self.x_whiten)
        epoch_idx = parallel.replicate(np.int32(0), self.mesh)
        hp = ((parallel.replicate({n: np.zeros(k, np.float32) for n in self.hparams}, self.mesh),)
              if self.hparams else ())
        self.init, t_i = _compile(v_init, keys, in_shardings=rep, out_shardings=rep)
        self.whiten, t_w = _compile(whiten_fn, self.x_whiten, in_shardings=rep, out_shardings=rep)
        self.plan = plan_lib.epoch_plan(self.config, self.derived)

        def one(spec):  # the spec's one-program epoch, vmapped over the k runs
            fn = make_train_epoch(self.model, self.tx, self.config, self.derived, self.normalize, mesh=self.mesh,
                                  hparams=self.hparams, spec=spec, retrace=self.retrace if self.hparams else None)
            v_epoch = jax.vmap(fn, in_axes=(0, None, None, None, 0, None) + hp_axes)
            return _compile(v_epoch, state_shape, consts_shape, self.x_train, self.y_train, keys, epoch_idx, *hp,
                            donate=(0,), in_shardings=(rep,) * 6 + (rep,) * len(hp),
                            out_shardings=rep)[0]

        self.epochs, t_e = programs.compile_programs(self.plan, one)
        v_axes = jax.tree.map(lambda _: 0, evaluated(state_shape))
        v_eval = jax.vmap(evaluate_fn, in_axes=({**v_axes, "constants": None}, None, None, None))
        eval_vars = {**evaluated(state_shape), "constants": consts_shape}
        self.evaluate, t_v = _compile(v_eval, eval_vars, *self.test_batches,
                                      in_shardings=(rep,) + (self.test_sharding,) * 3, out_shardings=rep)
        self.compile_times = {"init": t_i, "whitening": t_w, "epoch": t_e, "eval": t_v}
        self.compile_time_s = sum(self.compile_times.values())

    def warm_up(self) -> float:
        """Nothing: a sweep's groups share the programs, and only the first pays their first
        execution (its ``train_time_s`` says so when compared with the next)."""
        return 0.0

    def run_group(self, seeds: Sequence[int], hps: Sequence[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
        """Train ``k`` runs at once: run ``i`` from ``seeds[i]`` with traced values ``hps[i]``.

        Args:
          seeds: ``k`` PRNG seeds (repeats allowed, e.g. padding of a last group).
          hps: ``k`` dicts ``{traced key: float}`` (missing keys: the config's); default: the config's.

        Returns:
          ``k`` result dicts in the format of :meth:`~speedrun.train.experiment.Experiment.result`,
          each with ``vmap`` (``k``) added; ``train_time_s`` is the wall time of the whole group
          (``images_per_s`` is one run's images over it). A run that diverged gets
          ``{"seed", "error": "DivergenceError: <message>"}`` instead; the others are unaffected.

        Raises:
          ValueError: not ``k`` seeds or ``k`` hps.
        """
        k, config = self.k, self.config
        hps = list(hps) if hps is not None else [{}] * k
        if len(seeds) != k or len(hps) != k:
            raise ValueError(f"run_group needs {k} seeds and {k} hps; got {len(seeds)} and {len(hps)}")
        pairs = [jax.random.split(jax.random.key(int(s))) for s in seeds]
        key_init = jnp.stack([p[0] for p in pairs])
        state = self.init(parallel.replicate(key_init, self.mesh))
        epoch_keys = parallel.replicate([jnp.stack([jax.random.fold_in(p[1], e) for p in pairs])
                                         for e in range(config.epochs)], self.mesh)
        epoch_ids = parallel.replicate([np.int32(e) for e in range(config.epochs)], self.mesh)
        hp_args = ()
        if self.hparams:
            values = [self.hp_values(h) for h in hps]
            hp_args = (parallel.replicate({n: np.stack([v[n] for v in values]) for n in self.hparams}, self.mesh),)
        jax.block_until_ready((state, epoch_keys, hp_args))
        errors: list[str | None] = [None] * k
        histories: list[list[dict]] = [[] for _ in range(k)]
        timed, final = 0.0, None
        t0 = time.perf_counter()
        constants = self.whiten(self.x_whiten)
        for e in range(config.epochs):
            state, metrics = self.epochs(e, state, constants, self.x_train, self.y_train, epoch_keys[e],
                                         epoch_ids[e], *hp_args)
            if e == config.epochs - 1:
                final = self.evaluate(self.eval_variables(state, constants), *self.test_batches)
            jax.block_until_ready((state, metrics, final))
            timed += time.perf_counter() - t0
            host = jax.device_get(metrics)
            for i in range(k):
                if errors[i] is None:
                    try:
                        histories[i].append(self.epoch_row(e, jax.tree.map(lambda a, i=i: a[i], host), timed))
                    except DivergenceError as err:
                        errors[i] = f"{type(err).__name__}: {err}"
            t0 = time.perf_counter()
        self.last_state, self.last_constants = state, constants
        final = jax.device_get(final)
        out = []
        for i, seed in enumerate(seeds):
            if errors[i] is not None:
                out.append({"seed": int(seed), "error": errors[i], "vmap": k})
                continue
            fin = {n: v[i] for n, v in final.items()}
            histories[i][-1].update(test_acc=float(fin["acc"]), tta_acc=float(fin["tta_acc"]))
            out.append({**self.result(int(seed), timed, fin, histories[i]), "vmap": k})
        return out
