"""The trial loop of a sweep: ask the sampler, train every seed of each trial, tell the result.

Built on Optuna's ask-and-tell interface (``study.ask(fixed_distributions)``, ``study.tell``) so that
``vmap=K`` trials can be asked at once and trained as one program
(:meth:`speedrun.sweep.runner.TrialRunner.run_many`). Workers, stale and duplicate trials:
:mod:`speedrun.sweep.study`.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import optuna
from optuna.trial import TrialState

from speedrun.errors import ConfigError
from speedrun.sweep import study as study_lib
from speedrun.sweep.space import Space


def taken(study: optuna.Study, grid: bool) -> int:
    """Trials that use up the budget (:func:`speedrun.sweep.study.counted`); for a grid, distinct points."""
    trials = [t for t in study.get_trials(deepcopy=False) if study_lib.counted(t)]
    return len({tuple(sorted(t.params.items())) for t in trials}) if grid else len(trials)


def _tell(study: optuna.Study, trial: optuna.Trial, values=None, state=None) -> None:
    try:
        study.tell(trial, values, state=state)
    except RuntimeError as err:  # GridSampler calls study.stop() after the last point: not in optimize()
        if "Study.stop" not in str(err):
            raise


def _train(runner, values: list[dict], seeds: Sequence[int], vmap: int) -> list[list[dict]]:
    """``runner.run_many``; a ConfigError or FloatingPointError of a batch is isolated by running its
    trials one by one, and becomes the failing trial's ``{"error": ...}`` results."""
    try:
        return runner.run_many(values, list(seeds), vmap=vmap)
    except (ConfigError, FloatingPointError) as err:
        if len(values) == 1:
            return [[{"error": f"{type(err).__name__}: {err}"}]]
    out = []
    for v in values:
        try:
            out.append(runner.run(v, list(seeds)))
        except (ConfigError, FloatingPointError) as err:
            out.append([{"error": f"{type(err).__name__}: {err}"}])
    return out


def _describe(trial: optuna.Trial) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.params.items())


def run_trials(study: optuna.Study, space: Space, runner: Any, n_trials: int, seeds: Sequence[int],
               vmap: int = 1, log: Callable[[str], None] = print) -> dict[str, int]:
    """Run the study until ``n_trials`` trials are counted (:func:`taken`; this worker's and others')
    and none is running on another worker: a trial whose worker is lost is queued again and may run
    here (:func:`speedrun.sweep.study.recover`).

    Args:
      study: from :func:`speedrun.sweep.study.open_study`.
      space: the searched keys (:func:`speedrun.sweep.space.load_space`).
      runner: a :class:`speedrun.sweep.runner.TrialRunner` (``run_many(values_list, seeds, vmap)`` ->
        per trial, per seed a result dict with ``tta_acc``, ``train_time_s``, ... or ``error``), or a
        callable that makes one (called only when a trial is left to run).
      n_trials: the study's total budget (a grid: at most its points).
      seeds: the PRNG seeds each trial trains.
      vmap: trials asked and trained at once.
      log: receives one line per trial.

    Returns:
      ``{"ran": trials this call trained, "failed": of them failed, "requeued": stale trials queued
      again, "duplicates": grid points found taken}``.

    Raises:
      Whatever the runner raises besides ConfigError and FloatingPointError (a bug); its trials are
      told FAIL with the error first (a KeyboardInterrupt's are queued again).
    """
    grid = isinstance(study.sampler, optuna.samplers.GridSampler)
    if grid:
        n_trials = min(n_trials, study_lib.default_trials("grid", space))
    summary = {"ran": 0, "failed": 0, "requeued": 0, "duplicates": 0}
    optuna_log = logging.getLogger("optuna")
    level = optuna_log.level
    optuna_log.setLevel(logging.ERROR)  # per-trial lines are ours; a grid's "re-evaluating" is handled
    with warnings.catch_warnings():  # heartbeats outside optimize() and fail_stale_trials are ours to use
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
        try:
            _loop(study, space, runner, n_trials, seeds, vmap, log, grid, summary)
        finally:
            optuna_log.setLevel(level)
    return summary


def _loop(study, space, runner, n_trials, seeds, vmap, log, grid, summary) -> None:
    """:func:`run_trials`' loop: recover stale trials, ask up to ``vmap`` trials, train, tell; when the
    budget is taken, wait for the trials running on other workers (one that is lost is queued again
    and run here)."""
    dists, waiting = space.distributions(), None
    while True:
        summary["requeued"] += len(study_lib.recover(study))  # workers that died meanwhile, too
        left = n_trials - taken(study, grid)
        if left <= 0:
            running = sorted(t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
            if not running:
                break
            if running != waiting:
                log(f"# waiting for trial(s) {', '.join(map(str, running))} running on other workers")
                waiting = running
            time.sleep(min(study_lib.heartbeat_s(study), 2.0))
            continue
        batch = []
        while len(batch) < min(vmap, left):
            trial = study.ask(dists)
            if not study_lib.claim(study, trial):
                continue  # a queued trial another worker popped too: it runs there
            if grid and (owner := study_lib.duplicate_of(study, trial)) is not None:
                trial.set_user_attr("duplicate_of", owner)
                _tell(study, trial, state=TrialState.PRUNED)
                summary["duplicates"] += 1
                break
            batch.append(trial)
        if batch:
            with study_lib.Heartbeats(study, [t._trial_id for t in batch]):  # also while the runner is made
                runner = runner if hasattr(runner, "run_many") else _make(study, batch, runner)
                summary["failed"] += _run_batch(study, batch, runner, seeds, vmap, log)
            summary["ran"] += len(batch)


def _make(study: optuna.Study, batch: list, make: Callable[[], Any]) -> Any:
    """``make()``; when it raises (bad data, a key the runner refuses), ``batch`` is queued again."""
    try:
        return make()
    except BaseException as err:
        for t in batch:
            study_lib.requeue(study, study._storage.get_trial(t._trial_id), f"runner not made: {type(err).__name__}")
        raise


def _run_batch(study: optuna.Study, batch: list, runner, seeds: Sequence[int], vmap: int, log) -> int:
    """Train and tell ``batch``; return how many failed."""
    try:
        outs = _train(runner, [dict(t.params) for t in batch], seeds, vmap)
    except BaseException as err:
        for t in batch:
            if isinstance(err, KeyboardInterrupt):
                study_lib.requeue(study, study._storage.get_trial(t._trial_id), "KeyboardInterrupt")
            else:
                t.set_user_attr("error", f"{type(err).__name__}: {err}")
                _tell(study, t, state=TrialState.FAIL)
        raise
    failed = 0
    for trial, results in zip(batch, outs):
        attrs, error = study_lib.summarize(results)
        for k, v in attrs.items():
            trial.set_user_attr(k, v)
        if error is not None:
            trial.set_user_attr("error", error)
            _tell(study, trial, state=TrialState.FAIL)
            failed += 1
            log(f"# trial {trial.number} FAILED {_describe(trial)}: {' '.join(error.split())[:300]}")
            continue
        values = [attrs["tta_acc_mean"]]
        if len(study.directions) == 2:
            values.append(attrs["train_time_median_s"])
        _tell(study, trial, values)
        half = attrs["tta_acc_ci_half_width"]
        log(f"# trial {trial.number} {_describe(trial)}: tta_acc {attrs['tta_acc_mean']:.4f}"
            + (f" ± {half:.4f}" if half is not None else "") + f" ({len(results)} seeds), "
            f"train {attrs['train_time_median_s']:.2f} s (median)")
    return failed
