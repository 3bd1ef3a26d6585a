"""The Optuna study of a sweep: samplers, storage, the trial loop, resume, failed and shared trials.

Optuna (Akiba et al., "Optuna: A Next-generation Hyperparameter Optimization Framework", KDD 2019)
does the searching: ``GridSampler`` is the brute force, ``NSGAIISampler`` (Deb et al. 2002) the
genetic algorithm — two objectives, mean tta accuracy (maximised) and median train time
(minimised), whose non-dominated trials are the Pareto front — and ``TPESampler`` (Bergstra et al.
2011). Each trial trains the record for every seed with the trial's values
(:meth:`speedrun.sweep.runner.TrialRunner.run_many`) and stores what it measured as user attrs
(:func:`summarize`); the objective is the mean over the seeds.

The study lives in an Optuna RDB storage (:mod:`speedrun.sweep.storage`: SQLite in the workdir by
default; PostgreSQL or MySQL for many machines). Workers claim trials through the storage, so the
same command run again, or on another machine, continues the study
(:func:`speedrun.sweep.loop.run_trials`): a RUNNING trial of a worker that is gone is marked FAIL and
its values are queued again — on SQLite at once when its worker is a dead process on this host
(user attr ``interrupted``), on any storage when it has had no heartbeat for the grace period
(Optuna's heartbeat check and retry callback; on a database server that is the only sign, since
workers in containers can share a host name but not a process table). A grid point that two
workers picked at once is run by the lower-numbered trial only (the other is told PRUNED,
``duplicate_of``).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.trial import TrialState

from speedrun.errors import ConfigError
from speedrun.measure import stats
from speedrun.sweep import storage as storage_lib
from speedrun.sweep.space import Space, grid_space

SAMPLERS = ("grid", "genetic", "tpe")
#: User attrs of trials that do not count towards ``--trials``.
NOT_COUNTED = ("interrupted", "duplicate_of")


def directions(sampler: str) -> list[str]:
    """The study's objectives: ``["maximize"]`` (mean tta_acc) or, for ``genetic``, also
    ``"minimize"`` (median train time, seconds)."""
    return ["maximize", "minimize"] if sampler == "genetic" else ["maximize"]


def make_sampler(name: str, space: Space, seed: int = 0, population: int = 20) -> optuna.samplers.BaseSampler:
    """The seeded Optuna sampler ``grid`` (``GridSampler`` over :func:`grid_space`), ``genetic``
    (``NSGAIISampler(population_size=population)``) or ``tpe`` (``TPESampler``).

    Raises:
      ConfigError: an unknown name, a space the grid sampler cannot enumerate, ``population < 2``."""
    if name == "grid":
        return optuna.samplers.GridSampler(grid_space(space), seed=seed)
    if name == "genetic":
        if population < 2:
            raise ConfigError(f"--population {population} must be at least 2 (the source's is 20)")
        return optuna.samplers.NSGAIISampler(population_size=population, seed=seed)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    raise ConfigError(f"unknown sampler {name!r} — pass --sampler= one of {', '.join(SAMPLERS)}")


def default_trials(sampler: str, space: Space, population: int = 20) -> int:
    """``--trials`` when not given: every grid point; 10 generations of ``population`` (the source's
    200 for 20); 30 TPE trials."""
    if sampler == "grid":
        n = 1
        for values in grid_space(space).values():
            n *= len(values)
        return n
    return 10 * population if sampler == "genetic" else 30


def open_study(url: str, name: str, sampler: str, space: Space, settings: dict[str, Any], seed: int = 0,
               population: int = 20, grace_period: int = storage_lib.GRACE_S) -> optuna.Study:
    """Create or load the study ``name`` at ``url`` (heartbeats with ``grace_period`` seconds of grace:
    :func:`speedrun.sweep.storage.open_storage`). ``settings`` (JSON-friendly: record, overrides,
    seeds, ...) is stored as the study's user attr ``sweep``; a study run with other settings is not
    continued.

    Raises:
      ConfigError: the study exists with other settings or objectives, or the URL does not open."""
    study = optuna.create_study(storage=storage_lib.open_storage(url, grace_period), study_name=name,
                                load_if_exists=True,
                                sampler=make_sampler(sampler, space, seed, population),
                                directions=directions(sampler))
    if [d.name.lower() for d in study.directions] != directions(sampler):
        raise ConfigError(f"study {name!r} in {url} has objectives {[d.name for d in study.directions]}, not "
                          f"those of --sampler={sampler} — pass another --study name")
    settings = {**settings, "sampler": sampler, "space": space.describe(), "fixed": dict(space.fixed)}
    settings = json.loads(json.dumps(settings, default=str))  # as the storage returns it (tuples -> lists)
    old = study.user_attrs.get("sweep")
    if old is None:
        study.set_user_attr("sweep", settings)
    elif old != settings:
        diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
        raise ConfigError(f"study {name!r} in {url} was run with other settings ({', '.join(diff)}: "
                          f"{[old.get(k) for k in diff]}) — pass the same flags to continue it, or --study=NEW")
    return study


def summarize(results: Sequence[dict]) -> tuple[dict[str, Any], str | None]:
    """``(user_attrs, error)`` of a trial from its per-seed result dicts (``tta_acc``, ``acc``,
    ``train_time_s`` seconds, ``compile_time_s`` seconds; or ``error``): the mean tta accuracy and its
    95% Student-t interval (:func:`speedrun.measure.stats.mean_ci`), the median train time, the
    largest compile time. ``error``: the first seed's error (or a non-finite accuracy), else None."""
    errors = [str(r["error"]) for r in results if "error" in r]
    if not results:
        return {}, "no results (no seeds were run)"
    if errors:
        return {"failed_seeds": len(errors)}, errors[0]
    try:
        ci = stats.mean_ci([r["tta_acc"] for r in results], bounds=stats.ACCURACY_BOUNDS)
        times = stats.median_min_max([r["train_time_s"] for r in results])
    except ValueError as err:  # a NaN accuracy: a diverged run that was not caught
        return {}, f"FloatingPointError: {err}"
    attrs = {"tta_acc_mean": ci["mean"], "tta_acc_std": ci["std"], "tta_acc_ci_low": ci["ci_low"],
             "tta_acc_ci_high": ci["ci_high"], "tta_acc_ci_half_width": ci["ci_half_width"],
             "tta_accs": [float(r["tta_acc"]) for r in results],
             "acc_mean": sum(float(r.get("acc", r["tta_acc"])) for r in results) / len(results),
             "train_time_median_s": times["median"], "seeds": [r.get("seed") for r in results],
             "compile_time_s": max(float(r.get("compile_time_s", 0.0)) for r in results)}
    for key in ("dataset", "train_images", "device"):
        if results[0].get(key) is not None:
            attrs[key] = results[0][key]
    return attrs, None


# ------------------------------------------------------------------ workers: claims, stale trials


def _worker() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def requeue(study: optuna.Study, trial: optuna.trial.FrozenTrial, reason: str) -> None:
    """Mark the RUNNING ``trial`` of a worker that is gone FAIL (user attr ``interrupted``: ``reason``)
    and queue its values again (a WAITING trial with user attr ``requeued_from``). A trial another
    worker finished or failed first is left alone (that worker queues it)."""
    store = study._storage
    if trial.state == TrialState.RUNNING:
        try:
            store.set_trial_user_attr(trial._trial_id, "interrupted", reason)
            store.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            return
    if trial.params:
        study.enqueue_trial(trial.params, user_attrs={"requeued_from": trial.number})


def retried_from(t: optuna.trial.FrozenTrial) -> int | None:
    """The number of the lost trial that ``t`` runs again: :func:`requeue`'s ``requeued_from`` or
    Optuna's retry callback's ``failed_trial`` (system attr), else None."""
    number = t.user_attrs.get("requeued_from", t.system_attrs.get("failed_trial"))
    return None if number is None else int(number)


def recover(study: optuna.Study) -> list[int]:
    """Queue again the RUNNING trials whose worker is gone: on SQLite a dead process on this host at
    once; on any storage a trial without a heartbeat for the grace period
    (``optuna.storages.fail_stale_trials``, whose retry callback queues it), and a trial that never
    got its first heartbeat (killed between ask and claim) that long after its start. Returns the
    numbers of the trials found gone here."""
    host, done = socket.gethostname(), []
    local, grace = storage_lib.is_sqlite(study._storage), storage_lib.grace_of(study._storage)
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for t in running:
        worker = str(t.user_attrs.get("worker", ""))  # HOST:PID:TOKEN (claim)
        h, _, rest = worker.partition(":")
        pid = rest.partition(":")[0]
        if worker:
            gone = local and h == host and pid.isdigit() and not _alive(int(pid))
        else:
            gone = t.datetime_start is not None and (time.time() - t.datetime_start.timestamp()) > grace
        if gone:
            requeue(study, t, f"worker {worker or '?'} is gone")
            done.append(t.number)
    optuna.storages.fail_stale_trials(study)
    ids = {t._trial_id for t in running}
    failed = study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
    return done + [t.number for t in failed if t._trial_id in ids and "error" not in t.user_attrs and t.number not in done]


def counted(t: optuna.trial.FrozenTrial) -> bool:
    """A trial that uses up one of ``--trials``: running, complete, or failed with an ``error`` of its
    own — not waiting, interrupted (re-queued) or a duplicate."""
    if t.state == TrialState.WAITING or (t.state == TrialState.FAIL and "error" not in t.user_attrs):
        return False
    return not any(k in t.user_attrs for k in NOT_COUNTED)


def duplicate_of(study: optuna.Study, trial: optuna.Trial, wait_s: float = 30.0) -> int | None:
    """The counted trial with the same params as ``trial`` (grid sampler) that owns the point — a
    finished one, or a running one of lower number — else None. Decided after every lower-numbered
    running trial has its params (an ask of another worker in progress; at most ``wait_s`` seconds):
    of two workers that picked one point, the later trial yields."""
    deadline = time.time() + wait_s
    while True:
        others = [t for t in study.get_trials(deepcopy=False) if t.number != trial.number and counted(t)]
        pending = [t for t in others if t.number < trial.number and t.state == TrialState.RUNNING and not t.params]
        if not pending or time.time() > deadline:
            break
        time.sleep(0.2)
    owners = [t for t in others if t.params == trial.params and (t.state.is_finished() or t.number < trial.number)]
    return min((t.number for t in owners), default=None)


def claim(study: optuna.Study, trial: optuna.Trial) -> bool:
    """Mark ``trial`` this worker's (its first heartbeat, then user attr ``worker``); for a trial taken
    from the queue, which two workers may pop at once on SQLite (a server locks the row), wait and
    check that the mark is still ours."""
    token = f"{_worker()}:{uuid.uuid4().hex[:8]}"
    _heartbeat(study, trial._trial_id)
    study._storage.set_trial_user_attr(trial._trial_id, "worker", token)
    frozen = study._storage.get_trial(trial._trial_id)
    queued = retried_from(frozen) is not None or "fixed_params" in frozen.system_attrs
    if not queued or not storage_lib.is_sqlite(study._storage):
        return True
    time.sleep(1.0)
    return study._storage.get_trial(trial._trial_id).user_attrs.get("worker") == token


def _heartbeat(study: optuna.Study, trial_id: int) -> None:
    if hasattr(study._storage, "record_heartbeat"):
        study._storage.record_heartbeat(trial_id)


def heartbeat_s(study: optuna.Study) -> float:
    """Seconds between the heartbeats of this worker's running trials (the storage's interval)."""
    get = getattr(study._storage, "get_heartbeat_interval", None)
    return float((get() if get else None) or storage_lib.heartbeat_interval(storage_lib.GRACE_S))


class Heartbeats:
    """Record a heartbeat of each trial every :func:`heartbeat_s` seconds while the block runs."""

    def __init__(self, study: optuna.Study, trial_ids: Sequence[int]):
        self.study, self.ids, self.stop = study, list(trial_ids), threading.Event()
        self.every = heartbeat_s(study)
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        while not self.stop.wait(self.every):
            for i in self.ids:
                _heartbeat(self.study, i)

    def __enter__(self):
        self.thread.start()

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
