"""A record compiled once for its data shapes and trained for any number of seeds.

Every jitted function is compiled ahead of time before the clocks start. ``train_time_s`` covers
what Page's, airbench's and hiverge's timers cover — the whitening filters, the training epochs and
the final TTA evaluation — and stops after ``block_until_ready``; per-epoch evaluation is paused out
of it. ``fulcrum_time_s`` is fulcrum's ``compute_honest_s`` (fulcrumresearch/cifar-10-speedrun
``runners/harness.py``): the per-trial preparation (initial state, keys) plus the whitening and the
epochs, the evaluation excluded (the state is synchronised before it).
"""

from __future__ import annotations

import time
from typing import Any

import jax
import ml_collections
import numpy as np

from speedrun import config as config_lib, evaluate as eval_lib
from speedrun.data import augment, cifar10, pipeline
from speedrun.measure import flops, runlog
from speedrun.models import get_model
from speedrun.system import parallel, precision
from speedrun.train import chunked, plan as plan_lib, programs, selection, step as step_lib
from speedrun.train.state import TrainState, check_health, constants_fn, evaluated, init_state

TABLE_COLUMNS = [("epoch", "d"), ("train_loss", ".4f"), ("train_acc", ".4f"), ("test_acc", ".4f"),
                 ("tta_acc", ".4f"), ("elapsed_s", ".2f")]


def _compile(fn, *args, donate=(), in_shardings=None, out_shardings=None):
    t0 = time.perf_counter()
    kw = {k: v for k, v in (("in_shardings", in_shardings), ("out_shardings", out_shardings)) if v is not None}
    compiled = jax.jit(fn, donate_argnums=donate, **kw).lower(*args).compile()
    return compiled, time.perf_counter() - t0


class Experiment:
    """A record compiled once for its data shapes; :meth:`run` trains it for any seed.

    Construction loads the data (or takes ``arrays``), derives the step counts once
    (:func:`speedrun.config.derived`), puts the data on the devices once as uint8 (the training set
    replicated and padded for the crop, each device gathering its share locally; whitening images
    replicated; test batches sharded along their batch dimension), builds model and optimizer under the
    precision policy, compiles init, whitening, epoch and evaluation ahead of time (``compile_times``,
    seconds). :meth:`run` reuses the executables: a new seed does not recompile.

    Args:
      config: a record config (``records/``).
      arrays: ``(x_train, y_train, x_test, y_test)`` as from :func:`speedrun.data.load_cifar10`
        (images ``(N, 32, 32, 3) uint8``, labels ``(N,) int32``); default: load ``config.data.path``.
        In a multi-host run every process passes the same arrays and transfers only its rows.
      mesh: the 1-D ``data`` mesh (default :func:`speedrun.system.parallel.make_mesh`: every device).
      model: a Flax module to train instead of ``config.model``'s (your own network in the record's
        loop): ``apply(variables, x (B, 32, 32, 3) float32, train=bool, mutable=[...], rngs=...) ->
        (B, 10)`` logits, with a ``batch_stats`` collection (it may be empty).
      hparams: dotted config keys the compiled epoch takes as traced float32 inputs
        (:mod:`speedrun.sweep.hparams`; sweeps): :meth:`run` then takes their values (``hp``) and a
        new value does not recompile. Empty (default): every value is compiled in.

    Attributes: ``derived`` (:class:`speedrun.config.Derived`), ``steps_per_epoch``, ``mesh``,
    ``num_devices``, ``policy``, ``model``, ``tx``, ``lr_schedule``, ``compile_time_s``,
    ``flops_per_image_forward``, ``plan`` (each epoch's :class:`speedrun.train.plan.EpochSpec`), the
    compiled ``init``, ``whiten``, ``epochs`` (:class:`speedrun.train.programs.EpochPrograms`:
    ``epochs(e, state, ...)`` trains 0-based epoch ``e``), ``evaluate`` (the record's TTA), ``evaluate0``
    (no TTA: the untimed per-epoch accuracy), ``warm_up_s``, and after a run ``last_state`` and
    ``last_constants`` (its final :class:`TrainState` and whitening filters).

    Raises:
      speedrun.config.ConfigError: see :func:`speedrun.config.derived`; an optimizer or schedule
        that cannot be built for the run's step counts (:func:`speedrun.optim.make_optimizer`); a key of ``hparams`` that
        cannot be traced (:func:`speedrun.sweep.hparams.is_traced`);
      speedrun.data.DataError: from the loader.
    """

    def __init__(self, config: ml_collections.ConfigDict, arrays: tuple | None = None,
                 mesh: jax.sharding.Mesh | None = None, model=None, hparams=()):
        self.config = config
        self.hparams = tuple(hparams)
        if self.hparams:
            from speedrun.sweep import hparams as hparams_lib  # noqa: PLC0415 (only sweeps trace values)

            self._hparams_lib = hparams_lib
            bad = [k for k in self.hparams if not hparams_lib.is_traced(config, k)]
            if bad:
                raise config_lib.ConfigError(f"config keys {bad} cannot be traced (not float leaves of "
                                             f"speedrun.sweep.hparams.TRACED_KEYS) — sweep them as static keys")
        self.mesh = parallel.make_mesh() if mesh is None else mesh
        self.num_devices = self.mesh.size
        x_train, y_train, x_test, y_test = arrays if arrays is not None else cifar10.load_cifar10(config.data.path)
        self.derived = config_lib.derived(config, len(x_train), self.num_devices, own_model=model is not None)
        self.steps_per_epoch = self.derived.steps_per_epoch
        self.dataset = cifar10.dataset_name(x_train, x_test)
        self.n_train, self.n_test = len(x_train), len(x_test)
        self.policy = precision.resolve(config.precision)
        self.model = get_model(config.model, self.policy.compute_dtype) if model is None else model
        try:  # a schedule that cannot be built for these step counts is a config problem
            self.tx, self.lr_schedule, self.selection = selection.setup(config, self.derived, self.policy.compute_dtype)
        except ValueError as err:
            raise config_lib.ConfigError(str(err)) from err
        self.normalize = augment.normalizer(config.data.get("mean", cifar10.CIFAR10_MEAN),
                                            config.data.get("std", cifar10.CIFAR10_STD))
        self._put_data(x_train, y_train, x_test, y_test)
        self._compile_all()
        warm = config.get("warm_up")  # None: on accelerators only (a CPU's first run costs no more)
        self.warm_up_s = self.warm_up() if (jax.default_backend() != "cpu" if warm is None else warm) else 0.0
        self.flops_per_image_forward = flops.forward_flops_per_image(self.model)

    def _put_data(self, x_train, y_train, x_test, y_test) -> None:
        """The data goes to the devices once, as uint8; normalisation happens on device. The
        training set is replicated and padded for the crop once, on device (:mod:`speedrun.data.pipeline`)."""
        rep = parallel.replicated(self.mesh)
        prepare = pipeline.TrainAugment(self.config.augment, len(x_train)).prepare
        self.x_train = jax.jit(prepare, out_shardings=rep)(parallel.put(x_train, rep))
        self.y_train = parallel.put(y_train, rep)
        self.x_whiten = parallel.put(x_train[: self.config.whitening.num_images], rep)
        self.test_sharding = parallel.sharded(self.mesh, axis=1)
        self.test_batches = [parallel.put(a, self.test_sharding) for a in
                             eval_lib.batch_test_set(x_test, y_test, self.config.eval_batch_size)]

    def _functions(self) -> tuple:
        """The uncompiled ``(init, whiten, evaluate, evaluate_level0)`` functions of the record."""
        config = self.config
        whiten_fn = constants_fn(config, self.normalize)
        evaluate_fn = eval_lib.make_evaluate(self.model.apply, self.normalize, config.get("tta_level", 1),
                                             tta_selective=config.get("tta_selective", 0.0))
        return self.init_fn, whiten_fn, evaluate_fn, eval_lib.make_evaluate(self.model.apply, self.normalize, 0)

    def init_fn(self, key: jax.Array) -> TrainState:
        """The uncompiled init from PRNG ``key``: :func:`speedrun.train.state.init_state` (+ the proxy's)."""
        s = init_state(self.model, self.tx, key, self.policy, step_lib.averages(self.config))
        return s if self.selection is None else s.replace(proxy=self.selection.init(key))

    def hp_values(self, hp: dict | None = None) -> dict:
        """``{key: float32 scalar}`` of the traced keys (:attr:`hparams`): ``hp``'s values where
        given, else the config's (:func:`speedrun.sweep.hparams.hp_arrays`); ``{}`` without any."""
        if not self.hparams:
            return {}
        return self._hparams_lib.hp_arrays(self.config, self.hparams, hp)

    def retrace(self, hp: dict) -> tuple:
        """``(config, tx)`` with the traced values ``hp`` substituted (sweeps that compile once)."""
        cfg = self._hparams_lib.substitute(self.config, hp)
        return cfg, selection.run_optimizer(cfg, self.derived)[0]

    def _compile_all(self) -> None:
        rep = parallel.replicated(self.mesh)
        init_fn, whiten_fn, evaluate_fn, evaluate0_fn = self._functions()
        key = parallel.replicate(jax.random.key(0), self.mesh)
        state_shape = jax.eval_shape(init_fn, key)
        consts_shape = jax.eval_shape(whiten_fn, self.x_whiten)
        epoch_idx = parallel.replicate(np.int32(0), self.mesh)
        hp = (parallel.replicate(self.hp_values(), self.mesh),) if self.hparams else ()
        self.init, t_i = _compile(init_fn, key, in_shardings=rep, out_shardings=rep)
        self.whiten, t_w = _compile(whiten_fn, self.x_whiten, in_shardings=rep, out_shardings=rep)
        self.plan = plan_lib.epoch_plan(self.config, self.derived)
        chunk = chunked.chunk_size(self.config, self.steps_per_epoch)  # CPU: host-called chunks (jax#12868)
        self.epochs, t_e = programs.compile_record_epochs(
            (self.model, self.tx, self.config, self.derived, self.normalize), self.plan, self.mesh,
            (state_shape, consts_shape, self.x_train, self.y_train, key, epoch_idx, *hp), chunk, self.hparams,
            self.retrace if self.hparams else None)
        eval_vars = {**evaluated(state_shape), "constants": consts_shape}
        shardings = dict(in_shardings=(rep,) + (self.test_sharding,) * 3, out_shardings=rep)
        self.evaluate, t_v = _compile(evaluate_fn, eval_vars, *self.test_batches, **shardings)
        self.evaluate0, t_v0 = _compile(evaluate0_fn, eval_vars, *self.test_batches, **shardings)
        self.compile_times = {"init": t_i, "whitening": t_w, "epoch": t_e, "eval": t_v, "eval_level0": t_v0}
        self.compile_time_s = sum(self.compile_times.values())

    def warm_up(self) -> float:
        """Run every compiled program once, untimed, on seed 0 (each epoch program of the plan, the
        evaluations): first-execution costs (autotuning, allocation, loading kernels) leave the
        timed runs, as airbench's warm-up run does. Returns the seconds it took."""
        t0 = time.perf_counter()
        state, keys, ids = self.init_run(0)
        constants = self.whiten(self.x_whiten)
        hp = (parallel.replicate(self.hp_values(), self.mesh),) if self.hparams else ()
        for spec in plan_lib.distinct(self.plan):
            e = self.plan.index(spec)
            state, _ = self.epochs(e, state, constants, self.x_train, self.y_train, keys[e], ids[e], *hp)
        v = self.eval_variables(state, constants)
        jax.block_until_ready((self.evaluate(v, *self.test_batches), self.evaluate0(v, *self.test_batches)))
        return time.perf_counter() - t0

    def eval_variables(self, state: TrainState, constants: dict) -> dict:
        """The variables that are evaluated: the EMA (or lookahead) params and batch stats where the
        record averages, else the net's, and the constants."""
        return {**evaluated(state), "constants": constants}

    def init_run(self, seed: int) -> tuple[TrainState, Any, Any]:
        """``(state, epoch_keys, epoch_ids)`` of a run from ``seed``: the initial state (PRNG key
        ``split(key(seed))[0]``) and each epoch's PRNG key and int32 index, replicated."""
        key_init, key_train = jax.random.split(jax.random.key(seed))
        state = self.init(parallel.replicate(key_init, self.mesh))
        epochs = range(self.config.epochs)
        epoch_keys = parallel.replicate([jax.random.fold_in(key_train, e) for e in epochs], self.mesh)
        epoch_ids = parallel.replicate([np.int32(e) for e in epochs], self.mesh)
        return jax.block_until_ready((state, epoch_keys, epoch_ids))

    def run(self, seed: int, log: runlog.RunLog | None = None, per_epoch_eval: bool = True,
            start: tuple[TrainState, int] | None = None, on_epoch_end=None, on_row=None,
            hp: dict | None = None) -> dict[str, Any]:
        """Train once from ``seed`` (init, shuffling, augmentation): the result dict (:meth:`result`)
        with ``fulcrum_time_s`` (the module docstring).

        Args:
          seed: the run's PRNG seed.
          log: receives the per-epoch table (``None``: no table).
          per_epoch_eval: evaluate after every epoch, off the clock.
          start: ``(state, epochs_done)`` to continue a run of ``seed`` after ``epochs_done`` epochs
            (a checkpoint); default: from the initial state.
          on_epoch_end: ``f(epoch, state, constants)`` after every epoch (1-based), off the clock.
          on_row: ``f(row)`` with every epoch's table row, off the clock (the progress bar).
          hp: ``{key: float}`` values of the traced keys (:attr:`hparams`; missing: the config's).

        Raises:
          FloatingPointError: the training loss became NaN or infinite (the message names the epoch).
        """
        config, t_prep = self.config, time.perf_counter()
        state, epoch_keys, epoch_ids = self.init_run(seed)
        prepare = time.perf_counter() - t_prep  # fulcrum's charged per-trial preparation
        hp_args = (parallel.replicate(self.hp_values(hp), self.mesh),) if self.hparams else ()
        state, first = (state, 0) if start is None else start
        scaled = self.policy.loss_scaling  # float16: log the loss scale and the skipped steps
        table = runlog.EpochTable(log, TABLE_COLUMNS + ([("loss_scale", ".0f"), ("skipped", ".0f")]
                                                        if scaled else [])) if log is not None else None
        timed, final, history = 0.0, None, []
        t0 = time.perf_counter()
        constants = self.whiten(self.x_whiten)
        for e in range(first, config.epochs):
            state, metrics = self.epochs(e, state, constants, self.x_train, self.y_train, epoch_keys[e],
                                         epoch_ids[e], *hp_args)
            last = e == config.epochs - 1
            if last:  # the final TTA evaluation is part of the timed run, not of fulcrum's
                jax.block_until_ready(state)
                trained = timed + time.perf_counter() - t0
                final = self.evaluate(self.eval_variables(state, constants), *self.test_batches)
            jax.block_until_ready((state, metrics, final))
            timed += time.perf_counter() - t0
            row = self.epoch_row(e, metrics, timed)
            if last:
                row.update(test_acc=float(final["acc"]), tta_acc=float(final["tta_acc"]))
            elif per_epoch_eval:  # untimed
                row.update(test_acc=float(self.evaluate0(self.eval_variables(state, constants), *self.test_batches)["acc"]))
            history.append(row)
            if table is not None:
                table.row(**row)
            if on_row is not None:
                on_row(row)
            if on_epoch_end is not None:
                on_epoch_end(e + 1, state, constants)
            t0 = time.perf_counter()
        self.last_state, self.last_constants = state, constants
        return {**self.result(seed, timed, final, history), "fulcrum_time_s": round(prepare + trained, 3)}

    def epoch_row(self, e: int, metrics: dict, timed: float) -> dict[str, Any]:
        """The table row of 0-based epoch ``e`` from its metrics (read to the host once per epoch),
        checked for divergence (:func:`speedrun.train.state.check_health`: the health record the
        epoch carried on the device, the float16 skipped share, the mean loss).

        Raises:
          speedrun.train.state.DivergenceError (a ``FloatingPointError``): the run diverged; the
            message names the epoch, the step, the loss, the last finite loss and the fix.
        """
        row = {"epoch": e + 1, "train_loss": float(metrics["loss"]), "train_acc": float(metrics["acc"]),
               "elapsed_s": timed}
        if self.policy.loss_scaling:
            row.update(loss_scale=float(metrics["loss_scale"]), skipped=float(metrics["skipped"]))
        health = jax.device_get(metrics["health"]) if "health" in metrics else None
        check_health(e + 1, health and {k: v.item() for k, v in health.items()}, row["train_loss"],
                     row.get("skipped"), self._epoch_steps(e), self.policy.name)
        return row

    def _epoch_steps(self, e: int) -> int:
        """Steps of 0-based epoch ``e`` (the last one may stop early: airbench94's 9.9 epochs)."""
        return self.plan[e].steps

    def result(self, seed: int, timed: float, final: dict, history: list[dict]) -> dict[str, Any]:
        """The result dict of one run (README, "What a run prints", names every field and unit)."""
        config, d = self.config, self.derived
        images = d.total_steps * d.batch_size
        scaled = self.policy.loss_scaling
        return {
            "record": config.name, "dataset": self.dataset,
            "train_images": int(self.n_train), "test_images": int(self.n_test),
            "epochs": int(config.epochs), "batch_size": int(config.batch_size), "seed": int(seed),
            "acc": round(float(final["acc"]), 5), "tta_acc": round(float(final["tta_acc"]), 5),
            "train_time_s": round(timed, 3), "compile_time_s": round(self.compile_time_s, 3),
            "images_per_s": round(images / timed, 1),
            "flops_per_image_forward": int(self.flops_per_image_forward),
            "train_flops": flops.training_flops(self.flops_per_image_forward, images),  # 3 x fwd x images
            "steps": int(d.total_steps), "final_train_loss": round(history[-1]["train_loss"], 5),
            "precision": self.policy.name,
            **({"loss_scale": history[-1]["loss_scale"],
                "skipped_steps": int(sum(r["skipped"] for r in history))} if scaled else {}),
            "devices": int(self.num_devices), "processes": int(jax.process_count()),
            "width_mult": float(config.model.width_mult),
            "device": runlog.device_description(), "jax_version": jax.__version__,
            "history": history,
        }
