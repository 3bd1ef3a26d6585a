"""How a training run uses :mod:`speedrun.checkpoint`: check the options and the folder before
compiling, find the epoch to continue from, and save at the end of epochs (off the clock)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Callable

import ml_collections

from speedrun import config as config_lib
from speedrun.checkpoint.store import config_json, open_checkpoint, save, saved_steps, setting


def resume_step(config: ml_collections.ConfigDict) -> int | None:
    """The epochs done of the checkpoint in ``config.checkpoint_dir`` to continue from, or ``None``
    (no ``checkpoint_dir``, or a folder without checkpoints). Creates the folder and checks that it
    is writable, and reads only ``meta``: call it before compiling, so that a bad folder fails at once.

    Raises:
      speedrun.config.ConfigError: ``checkpoint_every`` < 0 or set without ``checkpoint_dir``; a
        folder that cannot be written; one that holds a run of another config or seed (the keys are
        named), or the finished run.
    """
    d = _checked_options(config)
    if not d or not saved_steps(d):
        return None
    with open_checkpoint(d) as (_, step, meta):
        pass
    saved, now = setting(meta["config"]), setting(config_json(config))
    diff = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
    if diff:
        keys = ", ".join(diff[:6]) + (f" and {len(diff) - 6} more" if len(diff) > 6 else "")
        raise config_lib.ConfigError(f"checkpoint_dir {d!r} holds a run of another config (differs in {keys}) — "
                                     "pass a new --config.checkpoint_dir, or delete that folder")
    if step >= config.epochs:
        raise config_lib.ConfigError(f"checkpoint_dir {d!r} holds the finished run ({step} of {config.epochs} "
                                     f"epochs) — evaluate it with ./run.sh eval {d}, or pass a new "
                                     "--config.checkpoint_dir")
    return step


def _checked_options(config: ml_collections.ConfigDict) -> str | None:
    d, every = config.get("checkpoint_dir"), int(config.get("checkpoint_every") or 0)
    if every < 0:
        raise config_lib.ConfigError(f"checkpoint_every={every} is negative — pass K >= 1 to save every K "
                                     "epochs, or 0 to save only at the end")
    if every and not d:
        raise config_lib.ConfigError(f"checkpoint_every={every} without a checkpoint_dir saves nothing — "
                                     "add --config.checkpoint_dir=DIR")
    if d:
        try:
            Path(d).expanduser().mkdir(parents=True, exist_ok=True)
            tempfile.TemporaryFile(dir=Path(d).expanduser()).close()
        except OSError as err:
            raise config_lib.ConfigError(f"checkpoint_dir {d!r} is not a writable folder ({err.strerror or err}) "
                                         "— pass --config.checkpoint_dir=DIR with a folder you can write") from None
    return d


def step_dir(config: ml_collections.ConfigDict, epochs_done: int) -> str | None:
    """The absolute step folder of ``config.checkpoint_dir`` after ``epochs_done`` epochs, or
    ``None`` when the config has no ``checkpoint_dir``."""
    d = config.get("checkpoint_dir")
    return str(Path(d).expanduser().resolve() / str(int(epochs_done))) if d else None


def saver(exp, seed: int) -> Callable[[int, Any, dict], None] | None:
    """The ``on_epoch_end(epoch, state, constants)`` of :meth:`Experiment.run` that saves the run of
    ``seed`` to ``exp.config.checkpoint_dir`` after the last epoch and every ``checkpoint_every``
    epochs (:func:`save`); ``None`` when the config has no ``checkpoint_dir``."""
    d, every, epochs = exp.config.get("checkpoint_dir"), int(exp.config.get("checkpoint_every") or 0), exp.config.epochs

    def on_epoch_end(epoch: int, state, constants: dict) -> None:
        if epoch == epochs or (every and epoch % every == 0):
            save(d, exp, seed, epoch, state, constants)

    return on_epoch_end if d else None
