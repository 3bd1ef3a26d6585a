"""Checkpoints of a run with orbax (``orbax-checkpoint``): save, resume, and evaluate a saved model.

``--config.checkpoint_dir=DIR`` (and ``checkpoint_every=K``: :data:`speedrun.config.RUN_OPTIONS`)
makes :func:`speedrun.train.train_and_evaluate` save after the last epoch and every K-th,
synchronously and off the clock, into orbax step folders named by the epochs done (``DIR/3/``):

- ``state``: the :class:`speedrun.train.state.TrainState` without ``ema`` — step, params,
  batch_stats, opt_state, loss scale, health record, and ``run_key`` as its key data
  (``jax.random.key_data``, uint32: orbax stores no typed PRNG keys);
- ``model``: the evaluated variables (:meth:`speedrun.train.experiment.Experiment.eval_variables`):
  the EMA / lookahead ``params`` and ``batch_stats`` and the whitening ``constants``;
- ``meta`` (JSON): record, seed, epochs_done, epochs and the resolved config, from which
  :func:`evaluate` rebuilds the model without the record file.

Restores pass orbax the abstract target of ``jax.eval_shape``: structure, shapes and dtypes are
checked. ``train`` continues an unfinished checkpoint of the same config (:func:`resume_step`,
:func:`restore`). Orbax API: a synchronous ``CheckpointManager``, ``args.Composite`` of
``StandardSave`` / ``StandardRestore`` and ``JsonSave`` / ``JsonRestore``.
"""

from speedrun.checkpoint.evaluation import evaluate  # noqa: F401
from speedrun.checkpoint.run import resume_step, saver, step_dir  # noqa: F401
from speedrun.checkpoint.store import ITEMS, config_json, restore, save  # noqa: F401
