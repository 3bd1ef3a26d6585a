"""Training: ``state`` (the :class:`TrainState` pytree and its init), ``step`` (one batch: loss,
gradient, update, averaging — start reading here), ``epoch`` (the scanned, sharded epoch),
``experiment`` (compile once, run any number of seeds; one logged run)."""

from speedrun.train.experiment import Experiment, train_and_evaluate  # noqa: F401
from speedrun.train.state import DivergenceError, TrainState, init_state  # noqa: F401
