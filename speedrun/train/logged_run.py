"""One logged run of a record: :func:`train_and_evaluate`, the ``train`` command's body."""

from __future__ import annotations

import json
from typing import Any

import jax
import ml_collections

from speedrun.measure import runlog
from speedrun.system import parallel
from speedrun.train import experiment


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | None = "logs",
                       record_file: str | None = None, progress: bool | None = None) -> dict[str, Any]:
    """Train the record ``config`` once (seed ``config.seed``) and return its result dict.

    Prints, and writes to ``{workdir}/{record}_{UTC timestamp}.log``, what reproduces the run
    (:meth:`speedrun.measure.runlog.RunLog.header`: commit, the record file ``record_file``'s text,
    the resolved config, versions, devices), the compile time, a per-epoch table and a final line of
    JSON (README, "What a run prints"). A failed run's log ends with its error. With
    ``config.checkpoint_dir`` the run is saved there (:mod:`speedrun.checkpoint`; off the clock) and,
    if the folder holds an unfinished checkpoint of the same config, continued after its latest
    epoch (``train_time_s`` and ``images_per_s`` then cover only the epochs this call ran;
    ``result["resumed_after_epochs"]``, else ``None``); ``result["checkpoint"]`` is the final step
    folder (``None`` without ``checkpoint_dir``).

    Args:
      config: a record config; workdir: folder of the log (``None``: print only); record_file: the
        record's path, for the log; progress: the progress bar on stderr
        (:func:`speedrun.measure.progress.enabled`: ``None`` shows it when stderr is a terminal).

    Raises:
      speedrun.config.ConfigError, speedrun.data.DataError: see :class:`Experiment` and
        :func:`speedrun.checkpoint.resume_step` (a checkpoint folder of another or a finished run).
      FloatingPointError: the training loss became NaN or infinite.
    """
    from speedrun import checkpoint  # noqa: PLC0415 (orbax loads only when checkpoints are used)

    log = runlog.RunLog(workdir, config.name)
    log.header(config, record_file)
    try:
        resume = checkpoint.resume_step(config)  # before compiling: a wrong folder fails at once
        from speedrun.system import cache  # noqa: PLC0415

        with cache.Watch() as cache_watch:  # what JAX's persistent cache did for each executable
            exp = experiment.Experiment(config)
        d = exp.derived
        log.write(f"# data {exp.dataset}: {exp.n_train} train, {exp.n_test} test images; "
                  f"{d.steps_per_epoch} steps of {d.batch_size} per epoch, {d.total_steps} steps")
        log.write(f"# parallel: {exp.num_devices} devices on mesh axis '{parallel.DATA_AXIS}' "
                  f"({d.batch_per_device} examples per device per step), {jax.process_count()} processes; "
                  f"precision {exp.policy.name}")
        times = ", ".join(f"{k} {v:.2f}" for k, v in exp.compile_times.items())
        log.write(f"# compile {exp.compile_time_s:.2f} s ({times}); excluded from train_time_s")
        log.write(f"# compilation cache {cache_watch.summary('epoch')}")
        start = None
        if resume is not None:
            start = (checkpoint.restore(config.checkpoint_dir, exp, resume)[0], resume)
            log.write(f"# resumed from {config.checkpoint_dir}/{resume} ({resume} of {config.epochs} epochs done)")
        from speedrun.measure import progress as progress_lib  # noqa: PLC0415

        with progress_lib.for_experiment(exp, f"{config.name} seed {config.seed}", progress_lib.enabled(progress),
                                         start_epoch=resume or 0) as bar:
            result = exp.run(config.seed, bar.through(log), start=start,
                             on_epoch_end=checkpoint.saver(exp, config.seed), on_row=bar)
    except Exception as err:
        log.write(f"# error: {type(err).__name__}: {err}")
        raise
    result["log"] = str(log.path) if log.path else None
    result["checkpoint"] = checkpoint.step_dir(config, config.epochs)
    result["resumed_after_epochs"] = resume
    if resume:  # the clock ran over the epochs after the checkpoint only
        ran = (d.total_steps - resume * d.steps_per_epoch) * d.batch_size
        result["images_per_s"] = round(ran / result["train_time_s"], 1)
    log.write(f"# clocks: train_time_s {result['train_time_s']:.3f} s (whitening, epochs, final TTA: airbench's and "
              f"hiverge's rule); fulcrum_time_s {result['fulcrum_time_s']:.3f} s (per-trial preparation, "
              "whitening, epochs; evaluation excluded: fulcrum's rule)")
    log.write(json.dumps({k: v for k, v in result.items() if k != "history"}))
    return result
