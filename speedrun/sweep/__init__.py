"""Hyperparameter sweeps (issue 12).

- ``runner``: the engine that trains trials — :class:`TrialRunner` (one compiled program per
  static signature, traced hyperparameters, ``vmap=K`` runs in one program), :data:`SHAPE_KEYS`,
  :func:`traced_keys`.
- ``space``: SPACE files (``sweeps/*.py``) — ``grid``, ``categorical``, ``uniform``, ``loguniform``,
  ``integer``; :func:`load_space`, :func:`grid_space`.
- ``study``: the Optuna study — samplers, RDB storage with heartbeats, stale and duplicate trials.
- ``loop``: the ask-train-tell loop (:func:`run_trials`, ``vmap=K`` trials at once).
- ``report``: markdown table and PNG plots of a study (:func:`write_report`).
- The command: :mod:`speedrun.sweep_command` (``./run.sh sweep``; docs/sweeps.md).
"""

from speedrun.sweep.runner import SHAPE_KEYS, TRACED_KEYS, TrialRunner, traced_keys

__all__ = ["SHAPE_KEYS", "TRACED_KEYS", "TrialRunner", "traced_keys"]
