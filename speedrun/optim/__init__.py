"""Optimizers and learning-rate schedules of the records, built from optax, looked up by name.

- ``schedules``: lr schedules (Page's epochs, He et al.'s steps, airbench's triangle and decay).
- ``sgd``: PyTorch-style SGD — Page's (``page_sgd``), He et al.'s (``he_sgd``), shared pieces.
- ``airbench``: airbench94's SGD and the airbench param labels.
- ``newton_schulz``: Muon's Newton–Schulz, all filter banks in one batched stack, in a chosen dtype.
- ``muon``: Muon for conv filters; airbench94_muon's Muon with SGD for the rest.
- ``hiverge``: hiverge's Muon and SGD groups (and fulcrum E1's decay horizon and lr floor).
- ``ema``: Page's exponential moving average of params and batch stats.
- ``lookahead``: airbench94's lookahead average.

:data:`OPTIMIZERS` maps ``config.optimizer.name`` to a builder ``(opt_config, derived) ->
(tx, lr_schedule)``, ``derived`` a :class:`speedrun.config.Derived`; :func:`make_optimizer` looks
it up.
"""

from __future__ import annotations

from typing import Any, Callable

import optax

from speedrun.config import Derived
from speedrun.optim import ema, lookahead, newton_schulz
from speedrun.optim.hiverge import floored_decay, hiverge_muon, hiverge_muon_from_config
from speedrun.optim.airbench import airbench_labels, airbench_sgd, airbench_sgd_from_config
from speedrun.optim.muon import (airbench_muon, airbench_muon_from_config, muon_filters, renorm_steps,
                                 renormalize_filters)
from speedrun.optim.schedules import (airbench_triangle, epoch_schedule, he_lr_schedule, linear_decay,
                                      piecewise_linear)
from speedrun.optim.sgd import (WEIGHT_DECAY_ON, bias_labels, decay_after_step, freeze_after, he_sgd, he_sgd_from_config,
                                kernel_labels, page_sgd, page_sgd_from_config, torch_sgd)

Builder = Callable[[Any, Derived], tuple[optax.GradientTransformation, optax.Schedule]]

#: ``config.optimizer.name`` → builder; each builder's docstring lists the fields it reads.
OPTIMIZERS: dict[str, Builder] = {
    "page_sgd": page_sgd_from_config,
    "he_sgd": he_sgd_from_config,
    "airbench_sgd": airbench_sgd_from_config,
    "airbench_muon": airbench_muon_from_config,
    "hiverge_muon": hiverge_muon_from_config,
}


def make_optimizer(opt_config: Any, derived: Derived) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """The optimizer named by ``opt_config.name`` (:data:`OPTIMIZERS`) and its weight learning-rate
    schedule (optax count → lr).

    Args:
      opt_config: the record's ``config.optimizer``.
      derived: the run's batch size and step counts (:func:`speedrun.config.derived`).

    Raises:
      ValueError: unknown optimizer name (the known ones are listed), or the builder's errors.
    """
    builder = OPTIMIZERS.get(opt_config.name)
    if builder is None:
        raise ValueError(f"unknown optimizer {opt_config.name!r}; known: {sorted(OPTIMIZERS)}")
    return builder(opt_config, derived)


__all__ = [
    "OPTIMIZERS", "WEIGHT_DECAY_ON", "airbench_labels", "airbench_muon", "airbench_sgd",
    "airbench_triangle", "bias_labels", "decay_after_step", "ema", "epoch_schedule", "floored_decay",
    "freeze_after", "he_lr_schedule", "he_sgd", "hiverge_muon", "kernel_labels", "linear_decay", "lookahead",
    "make_optimizer", "muon_filters", "newton_schulz", "page_sgd", "piecewise_linear", "renorm_steps",
    "renormalize_filters", "torch_sgd",
]
