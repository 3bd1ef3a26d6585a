"""The sweep engine: train trials (a values dict each) for several seeds, compiling once per static
signature, optionally ``vmap=K`` runs at once as one program (issue 12, "Compile once" and "Many
points in one program").

A trial's ``values`` are dotted config keys (``{"optimizer.lr": 10.0, "model.width_mult": 0.25}``).
Each key is either

- *traced* (:func:`traced_keys`: a float leaf of the config listed in
  :data:`speedrun.sweep.hparams.TRACED_KEYS` — learning rates and schedule values, momentum, weight
  decay, label smoothing, EMA and lookahead rates): the compiled epoch takes its value as a
  float32 input, so trials that differ only in traced keys share one executable; or
- *static* (everything else; :data:`SHAPE_KEYS` and :mod:`speedrun.sweep.hparams` say why:
  shapes, integer step counts, Python control flow, the model's and the whitening's constants,
  lists): each distinct combination of static values is compiled once (its *static signature*).

:class:`TrialRunner` keeps one compiled :class:`speedrun.train.experiment.Experiment` per
(static signature, traced key set) — and one :class:`speedrun.sweep.vmapped.VmappedExperiment` per
(signature, key set, K) — for the life of the runner, so trials in any order reuse them;
:attr:`TrialRunner.compile_count` counts the epoch executables compiled.

Result format (one dict per (trial, seed)): :meth:`speedrun.train.experiment.Experiment.result`'s
dict (``acc``, ``tta_acc``, ``train_time_s``, ``final_train_loss``, ``history``, ...) plus
``values`` (the trial's dict) and, for vmapped runs, ``vmap`` (K; ``train_time_s`` is then the
wall time of the program that trained K runs at once). A run that failed is
``{"seed", "values", "error": "<ExceptionType>: <message>"}`` (and ``vmap`` where vmapped): an
invalid combination (``ConfigError``/``ValueError`` from the config checks or the optimizer
builder, for every seed of the trial) or a divergence (``DivergenceError``, that run only; in a
vmapped program the other members go on). Check ``"error" in result``.
"""

from __future__ import annotations

import copy
import difflib
from collections import defaultdict
from typing import Any, Sequence

import jax
import ml_collections

from speedrun import config as config_lib, optim
from speedrun.data import cifar10
from speedrun.errors import ConfigError
from speedrun.sweep.hparams import SHAPE_KEYS, TRACED_KEYS, is_traced, traced_keys  # noqa: F401 (re-exported)


def _error(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"


class TrialRunner:
    """Trains trials of ``base_config``; see the module docstring for keys and results.

    Args:
      base_config: a record config (:func:`speedrun.config.load_record`, possibly smoke-shrunk).
      arrays: ``(x_train, y_train, x_test, y_test)`` (images ``(N, 32, 32, 3) uint8``, labels
        ``(N,) int32``); default: :func:`speedrun.data.load_cifar10` of ``base_config.data.path``.
      mesh: the data-parallel mesh of sequential runs (default: every device); vmapped programs
        run on one device.

    Attributes: ``compile_count`` (epoch executables compiled so far, one per
    :class:`~speedrun.train.experiment.Experiment` built), ``compile_time_s`` (their total
    compile seconds, all programs).

    Raises:
      speedrun.data.DataError: from the loader.
    """

    def __init__(self, base_config: ml_collections.ConfigDict, arrays: tuple | None = None,
                 mesh: jax.sharding.Mesh | None = None):
        self.base_config = base_config
        self.arrays = tuple(arrays) if arrays is not None else cifar10.load_cifar10(base_config.data.path)
        self.mesh = mesh
        self.compile_count = 0
        self.compile_time_s = 0.0
        self._experiments: dict[Any, Any] = {}

    # ------------------------------------------------------------------ keys and configs

    def validate_keys(self, keys: Sequence[str]) -> None:
        """Check that every dotted key of ``keys`` is a leaf of the base config.

        Raises:
          speedrun.errors.ConfigError: the first unknown key, named, with the nearest known keys and
            how to list them all (``--list_keys``).
        """
        known = config_lib.keys(self.base_config)
        for k in keys:
            if k not in known:
                near = difflib.get_close_matches(k, known, n=3)
                hint = f"did you mean {' or '.join(near)}? " if near else ""
                raise ConfigError(f"unknown config key {k!r} of record {self.base_config.get('name')!r} — {hint}"
                                  "list the keys with --list_keys")

    def traced(self, values: dict[str, Any]) -> tuple[str, ...]:
        """The keys of ``values`` that are traced (:func:`speedrun.sweep.hparams.is_traced`), sorted."""
        return tuple(sorted(k for k in values if is_traced(self.base_config, k)))

    def signature(self, values: dict[str, Any]) -> tuple:
        """The static signature of a trial: its static ``(key, value)`` pairs that differ from the
        base config's and its traced key set — trials with equal signatures share executables."""
        traced = self.traced(values)
        static = tuple(sorted((k, repr(v)) for k, v in values.items()
                              if k not in traced and not self._is_base(k, v)))
        return static, traced

    def _is_base(self, key: str, value: Any) -> bool:
        try:
            current = config_lib.get(self.base_config, key)
        except (KeyError, AttributeError):
            return False
        return type(current) is type(value) and current == value or (
            isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool) and current == value)

    def config_for(self, values: dict[str, Any]) -> ml_collections.ConfigDict:
        """A copy of the base config with ``values`` applied (:func:`speedrun.config.override`).

        Raises:
          speedrun.errors.ConfigError: an unknown key or a value of the wrong type.
        """
        c = copy.deepcopy(self.base_config)
        for k, v in values.items():
            config_lib.override(c, k, v)
        return c

    def check(self, values: dict[str, Any]) -> ml_collections.ConfigDict:
        """The trial's config, checked as a run checks it (:func:`speedrun.config.derived`) and with
        its optimizer built from the concrete values (the builders' own checks).

        Raises:
          speedrun.errors.ConfigError, ValueError: an invalid value or combination.
        """
        self.validate_keys(list(values))
        c = self.config_for(values)
        n_dev = len(jax.devices()) if self.mesh is None else self.mesh.size
        optim.make_optimizer(c.optimizer, config_lib.derived(c, len(self.arrays[0]), n_dev))
        return c

    def experiment(self, values: dict[str, Any], vmap: int = 1):
        """The compiled experiment of ``values``' signature (built and compiled on first use)."""
        from speedrun.sweep.vmapped import VmappedExperiment  # noqa: PLC0415
        from speedrun.train.experiment import Experiment  # noqa: PLC0415

        key = (self.signature(values), vmap)
        if key not in self._experiments:
            c, traced = self.config_for(values), self.traced(values)
            exp = (VmappedExperiment(c, self.arrays, vmap, hparams=traced) if vmap > 1 else
                   Experiment(c, self.arrays, mesh=self.mesh, hparams=traced))
            self._experiments[key] = exp
            self.compile_count += 1
            self.compile_time_s += exp.compile_time_s
        return self._experiments[key]

    # ------------------------------------------------------------------ training

    def run(self, values: dict[str, Any], seeds: Sequence[int]) -> list[dict]:
        """Train the trial ``values`` once per seed, sequentially; one result dict per seed (module
        docstring; failed runs carry ``"error"``)."""
        return self.run_many([values], seeds)[0]

    def run_many(self, list_of_values: Sequence[dict[str, Any]], seeds: Sequence[int], vmap: int = 1
                 ) -> list[list[dict]]:
        """Train every trial of ``list_of_values`` once per seed.

        Trials are grouped by static signature (each group's executable compiled once, groups in
        order of first appearance); with ``vmap=K > 1`` the (trial, seed) runs of a group are
        trained ``K`` at a time as one program on one device (a last, shorter chunk is padded with
        repeats of its last run, whose results are dropped, so the program is reused).

        Returns:
          ``out[t][s]``: the result of trial ``t`` and seed ``seeds[s]`` (module docstring).

        Raises:
          speedrun.errors.ConfigError: ``vmap < 1``.
        """
        if vmap < 1:
            raise ConfigError(f"--vmap must be a positive number of runs per program; got {vmap} — pass e.g. --vmap 4")
        seeds = [int(s) for s in seeds]
        out: list[list[dict | None]] = [[None] * len(seeds) for _ in list_of_values]
        groups: dict[tuple, list[int]] = defaultdict(list)
        for t, values in enumerate(list_of_values):
            values = dict(values)
            try:
                self.check(values)
            except (ConfigError, ValueError) as err:
                out[t] = [{"seed": s, "values": values, "error": _error(err)} for s in seeds]
                continue
            groups[self.signature(values)].append(t)
        for trials in groups.values():
            runs = [(t, j) for t in trials for j in range(len(seeds))]
            if vmap == 1:
                for t, j in runs:
                    out[t][j] = self._run_one(list_of_values[t], seeds[j])
                continue
            for start in range(0, len(runs), vmap):
                chunk = runs[start:start + vmap]
                padded = chunk + [chunk[-1]] * (vmap - len(chunk))
                exp = self.experiment(dict(list_of_values[padded[0][0]]), vmap)
                results = exp.run_group([seeds[j] for _, j in padded],
                                        [self._traced_values(list_of_values[t]) for t, _ in padded])
                for (t, j), r in zip(chunk, results):
                    out[t][j] = {**r, "values": dict(list_of_values[t])}
        return out  # type: ignore[return-value]

    def _traced_values(self, values: dict[str, Any]) -> dict[str, float]:
        return {k: float(values[k]) for k in self.traced(values)}

    def _run_one(self, values: dict[str, Any], seed: int) -> dict:
        values = dict(values)
        exp = self.experiment(values)
        try:
            result = exp.run(seed, per_epoch_eval=False, hp=self._traced_values(values))
        except FloatingPointError as err:  # DivergenceError and the non-finite mean loss
            return {"seed": seed, "values": values, "error": _error(err)}
        return {**result, "values": values}
