"""The progress bar of a run (tqdm): epoch, step, images/s, loss, ETA — on stderr only.

An epoch runs on the device without reporting back (one compiled ``lax.scan`` over its batches,
:mod:`speedrun.train.epoch`; on a CPU a few host-called chunks of unrolled steps,
:mod:`speedrun.train.chunked`, whose metrics are joined at its end), so the host learns nothing
until the epoch ends: the bar advances by the epoch's steps after each
epoch, not step by step, and its first ETA appears after the first epoch. It is fed by
:meth:`speedrun.train.experiment.Experiment.run`'s ``on_row`` hook (one call per epoch with the
epoch's table row) and writes to stderr, so the log file and the final JSON line on stdout are
unchanged.

Whether a bar is shown (:func:`enabled`): an explicit ``True``/``False`` (``--no_progress``,
``speedrun.fit(progress=...)``) wins; else ``SPEEDRUN_PROGRESS=0`` or ``1``; else tqdm's own rule
``disable=None``: shown when stderr is a terminal, off when it is not (a pipe, a CI log, a file) —
what tqdm and flax's ``clu`` users expect, so logs do not fill with carriage-return frames.
"""

from __future__ import annotations

import os
import sys
from typing import IO, Any, Self

from tqdm import tqdm

from speedrun.errors import ConfigError

#: Environment variable: ``0`` no bar, ``1`` a bar even when stderr is not a terminal.
ENV = "SPEEDRUN_PROGRESS"


def enabled(progress: bool | None = None) -> bool | None:
    """Whether to show the bar: ``progress`` if given, else ``$SPEEDRUN_PROGRESS`` (``0``/``1``), else
    ``None`` (tqdm's ``disable=None`` rule: only when stderr is a terminal).

    Raises:
      ConfigError: ``$SPEEDRUN_PROGRESS`` set to anything but ``0`` or ``1``.
    """
    if progress is not None:
        return bool(progress)
    value = os.environ.get(ENV)
    if value is None or value == "":
        return None
    if value not in ("0", "1"):
        raise ConfigError(f"{ENV}={value!r} is not 0 or 1 — set {ENV}=0 (no progress bar) or {ENV}=1 "
                          "(a bar even when stderr is not a terminal), or unset it")
    return value == "1"


class EpochBar:
    """A tqdm bar over a run's optimizer steps, advanced once per epoch.

    Args:
      total_steps: optimizer steps of the run (``Derived.total_steps``).
      steps_per_epoch: steps of a whole epoch (the last one may run fewer: airbench94's 9.9 epochs).
      batch_size: images per step (for images/s).
      epochs: epochs of the run.
      desc: the bar's label (e.g. the record and seed).
      show: :func:`enabled`'s value (``None``: only on a terminal).
      file: the stream (default ``sys.stderr``).
      start_epoch: epochs already done (a resumed run).
      leave: keep the bar's last frame when it closes (``False``: bench's seeds, one line each).

    Call it with each epoch's row (``{"epoch": 1-based, "train_loss": float, "elapsed_s": timed
    seconds of this call so far, ...}``, :meth:`speedrun.train.experiment.Experiment.epoch_row`):
    the bar moves to ``min(total_steps, epoch * steps_per_epoch)`` steps; images/s is over the timed
    seconds (compilation and per-epoch evaluation excluded).
    """

    def __init__(self, total_steps: int, steps_per_epoch: int, batch_size: int, epochs: int,
                 desc: str = "train", show: bool | None = None, file: IO[str] | None = None,
                 start_epoch: int = 0, leave: bool = True):
        self.total, self.per_epoch = int(total_steps), int(steps_per_epoch)
        self.batch_size, self.epochs = int(batch_size), int(epochs)
        self.start = self.steps = min(self.total, int(start_epoch) * self.per_epoch)
        self.bar = tqdm(total=self.total, initial=self.steps, desc=desc, unit="step",
                        file=sys.stderr if file is None else file, disable=(None if show is None else not show),
                        dynamic_ncols=True, leave=leave)
        self.bar.set_postfix_str(f"epoch {start_epoch}/{self.epochs}", refresh=False)

    def __call__(self, row: dict[str, Any]) -> None:
        """Advance to the end of epoch ``row["epoch"]`` and show ``epoch e/E``, the epoch's mean
        training loss and the images/s over the timed seconds of this call's epochs."""
        steps = min(self.total, int(row["epoch"]) * self.per_epoch)
        elapsed = float(row.get("elapsed_s") or 0.0)
        rate = (steps - self.start) * self.batch_size / elapsed if elapsed > 0 else float("nan")
        self.bar.set_postfix_str(f"epoch {row['epoch']}/{self.epochs}, loss {row['train_loss']:.4f}, "
                                 f"{rate:.1f} img/s", refresh=False)
        self.bar.update(steps - self.steps)
        self.steps = steps

    def through(self, log):
        """``log`` (a :class:`speedrun.measure.runlog.RunLog`, or ``None``) with its printed lines
        written around the bar (tqdm's ``external_write_mode``: the bar is cleared, the line printed,
        the bar redrawn), so the epoch table on stdout and the bar on stderr do not mix on a
        terminal. The log file gets the lines only."""
        return None if log is None else _Through(log)

    def close(self) -> None:
        """Close the bar (its last frame stays on a terminal)."""
        self.bar.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def for_experiment(exp, desc: str, show: bool | None = None, start_epoch: int = 0, leave: bool = True
                   ) -> EpochBar:
    """An :class:`EpochBar` for one run of ``exp`` (a compiled
    :class:`speedrun.train.experiment.Experiment`), continuing after ``start_epoch`` epochs (a resumed
    run); in a multi-host run only process 0 shows it (as only it prints the run log)."""
    import jax  # here: this module stays importable without JAX

    if jax.process_index() != 0:
        show = False
    d = exp.derived
    return EpochBar(d.total_steps, d.steps_per_epoch, d.batch_size, exp.config.epochs, desc, show,
                    start_epoch=start_epoch, leave=leave)


class _Through:
    """A run log whose ``write`` clears and redraws the progress bars around each printed line."""

    def __init__(self, log):
        self._log = log

    def write(self, text: str = "", echo: bool = True) -> None:
        with tqdm.external_write_mode(file=sys.stdout):
            self._log.write(text, echo)

    def __getattr__(self, name: str):
        return getattr(self._log, name)
