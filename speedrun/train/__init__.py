"""Training: ``state`` (the :class:`TrainState` pytree and its init), ``step`` (one batch: loss,
gradient, update, averaging — start reading here), ``epoch`` (the scanned, sharded epoch),
``plan`` (which program trains each epoch), ``programs`` (those programs, compiled once),
``experiment`` (compile once, run any number of seeds), ``logged_run`` (one logged run)."""

from speedrun.train.experiment import Experiment  # noqa: F401
from speedrun.train.logged_run import train_and_evaluate  # noqa: F401
from speedrun.train.state import DivergenceError, TrainState, init_state  # noqa: F401
