"""The command line: ``python -m speedrun.cli COMMAND ...`` (``./run.sh`` calls it).

    train RECORD [--workdir DIR] [--no_progress] [multi-host flags] [--config.KEY=VALUE ...]  one logged run
                 (--config.checkpoint_dir=DIR [--config.checkpoint_every=K]: orbax checkpoints, resumed)
    bench RECORD [--runs N] [--target T] [--tile_to N] [--no_epoch_eval] [--outdir DIR] [--resume]
                 [--config.KEY=VALUE ...]                                       N seeds, compiled once
    report [FOLDER] [--table FILE] [--plot FILE] [--curves RECORD]               table + plots of bench results
    sweep RECORD --space SPACE [--sampler grid|genetic|tpe] [--trials N] [--seeds S] [--storage URL]
                 [--study NAME] [--vmap K] [--workdir DIR] [--report] [--config.KEY=VALUE ...]
                                                                                Optuna search (docs/sweeps.md)
    eval DIR [--tta_level N] [--step E] [--config.KEY=VALUE ...]                a saved checkpoint's accuracy
    profile RECORD [--steps N] [--tile_to N] [--outdir DIR] [--config.KEY=VALUE ...]
                                               jax.profiler trace: device time by category, top kernels, MFU
    list [--json]                                                               the records: source, its figure, ours

Every command but ``report`` uses JAX's persistent compilation cache (:mod:`speedrun.system.cache`):
``--cache_dir DIR`` or ``$SPEEDRUN_CACHE_DIR``, default the user cache folder; ``off`` disables it.
``train`` and ``bench`` show a progress bar on stderr when it is a terminal (:mod:`speedrun.measure.progress`;
``--no_progress``, ``SPEEDRUN_PROGRESS=0/1``); ``train`` ends with its result next to the measured
expectation of ``records/expected.json``, on stderr (:mod:`speedrun.measure.expected`), so that stdout
still ends with the run's JSON line.

RECORD is a record name (``airbench94``) or file (``records/airbench94.py``); overrides follow the
ml_collections convention (``--config.epochs=3``, lists as ``--config.optimizer.lr_values=0,0.4,0``)
and are type-checked against the record (:func:`speedrun.config.override`); ``--list_keys`` prints
them. Each command accepts only its own flags (:mod:`speedrun.cli_parser`). Like flax/examples'
``main.py``, this module only parses flags and calls the command's function: ``train``, ``bench``
and ``eval`` in :mod:`speedrun.train_commands` (:func:`speedrun.train.train_and_evaluate`,
:func:`speedrun.measure.bench.run`, :func:`speedrun.checkpoint.evaluate`),
:func:`speedrun.measure.report.run`, :func:`speedrun.sweep_command.run`, the profile command and
:func:`speedrun.list_command.run` (their flags: those modules). The console script ``speedrun`` of
an installed package is :func:`main`.

Before anything imports JAX, :func:`main` sets the XLA flags of :mod:`speedrun.system.env` (and
``--cpu_devices N`` simulated CPU devices). An expected failure — a bad flag or config, missing or
damaged data, devices that do not start, a diverged run — prints one line ``speedrun: error: <what>
— <fix>`` to stderr and exits 2 (usage or config) or 1 (a failed run); ``--debug`` (or
``SPEEDRUN_DEBUG=1``) shows the traceback. The config is checked (:func:`speedrun.config.validate`)
before JAX starts and again with the device count, before the data is read; what needs the data
(a batch larger than the training set) fails before anything compiles.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Sequence

from speedrun import train_commands  # stdlib only at import, like the two below
from speedrun.cli_parser import _invocation, parse, parser  # noqa: F401 (re-exported: the flags)
from speedrun.system import env  # stdlib only: `--help` works before anything is installed
from speedrun.train_commands import DeviceError  # noqa: F401 (re-exported)


def run_command(args: argparse.Namespace, overrides: Sequence[str]) -> int:
    """Run one parsed command; return its exit status (errors propagate)."""
    from speedrun import config as config_lib  # noqa: PLC0415
    if args.command == "report":
        from speedrun.measure import report  # noqa: PLC0415

        try:
            report.run(args.folder, args.table, args.plot, args.curves)
        except (ValueError, ImportError) as err:  # no or bad result files, no matplotlib: named with the fix
            raise config_lib.ConfigError(str(err)) from err
        return 0
    if args.command == "eval":
        return train_commands.evaluate(args, overrides)
    if args.command == "list":
        from speedrun import list_command  # noqa: PLC0415

        return list_command.run(args)
    if args.smoke:
        config = config_lib.smoke(config_lib.load_record(args.record))
        for key, value in map(config_lib.split_override, overrides):
            config_lib.override(config, key, value)
        print(f"# SMOKE RUN of {config.name}: reduced by speedrun.config.smoke ({config_lib.SMOKE}) — "
              "not the record's result; drop --smoke for the pinned record")
    else:
        config = config_lib.load_record(args.record, overrides)
    if args.list_keys:
        for key in config_lib.keys(config):
            print(f"{key} = {config_lib.get(config, key)!r}")
        return 0
    if args.command == "sweep":
        from speedrun import sweep_command  # noqa: PLC0415

        return sweep_command.run(args, config)
    if args.command == "profile":
        from speedrun.measure import profile_command  # noqa: PLC0415

        profile_command.run(args, config)
        return 0
    return {"train": train_commands.train, "bench": train_commands.bench}[args.command](args, config)


class _NoLibtpuProbe(logging.Filter):
    """Drops JAX's record that probing for a TPU found no ``libtpu`` (``Unable to initialize backend
    'tpu': ... libtpu ...``, logger ``jax._src.xla_bridge``): on a CPU or GPU machine it is noise.
    JAX's own warning that a TPU seems present without libtpu is a different record and stays."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = str(record.msg)
        return not (msg.startswith("Unable to initialize backend 'tpu'") and "libtpu" in record.getMessage())


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: set the pre-JAX environment, parse, run; expected errors as one line.

    Expected errors — :class:`speedrun.config.ConfigError` (exit 2), :class:`speedrun.data.DataError`,
    :class:`DeviceError` and ``FloatingPointError`` (a diverged run; exit 1) — print one line
    ``speedrun: error: <what> — <fix>`` to stderr; with ``--debug`` or ``SPEEDRUN_DEBUG=1`` they
    propagate with their traceback. Usage errors exit 2 from :func:`parse`. Any other exception
    keeps its traceback.

    Returns the exit status: 0, 1 (a failed run: data, device, divergence) or 2 (usage, config)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args, overrides = parse(argv)
    args.argv = argv  # the command line as given: kept in bench results
    env.configure(getattr(args, "cpu_devices", None))
    xla_bridge_log = logging.getLogger("jax._src.xla_bridge")  # the same logger object before and after import
    if not any(isinstance(f, _NoLibtpuProbe) for f in xla_bridge_log.filters):
        xla_bridge_log.addFilter(_NoLibtpuProbe())
    from speedrun import config as config_lib  # noqa: PLC0415 (after env.configure)
    from speedrun.data import DataError  # noqa: PLC0415

    expected = {config_lib.ConfigError: 2, DataError: 1, DeviceError: 1, FloatingPointError: 1}
    try:
        if hasattr(args, "cache_dir") and not getattr(args, "list_keys", False):
            from speedrun.system import cache  # noqa: PLC0415

            cache.enable(args.cache_dir)  # before anything compiles; `import speedrun` sets nothing
        return run_command(args, overrides)
    except tuple(expected) as err:
        if args.debug or os.environ.get("SPEEDRUN_DEBUG") == "1":
            raise
        code = next(c for cls, c in expected.items() if isinstance(err, cls))
        print("speedrun: error: " + " ".join(str(err).split()), file=sys.stderr)  # one line
        return code


if __name__ == "__main__":
    sys.exit(main())
