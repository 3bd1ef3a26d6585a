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

Every command but ``report`` uses JAX's persistent compilation cache (:mod:`speedrun.system.cache`):
``--cache_dir DIR`` or ``$SPEEDRUN_CACHE_DIR``, default the user cache folder; ``off`` disables it.
``train`` and ``bench`` show a progress bar on stderr when it is a terminal (:mod:`speedrun.measure.progress`;
``--no_progress``, ``SPEEDRUN_PROGRESS=0/1``); ``train`` ends with its result next to the measured
expectation of ``records/expected.json``, on stderr (:mod:`speedrun.measure.expected`), so that stdout
still ends with the run's JSON line.

RECORD is a record name (``airbench94``) or file (``records/airbench94.py``); overrides follow the
ml_collections convention (``--config.epochs=3``, lists as ``--config.optimizer.lr_values=0,0.4,0``)
and are type-checked against the record (:func:`speedrun.config.override`); ``--list_keys`` prints
them. Each command accepts only its own flags. Like flax/examples' ``main.py``, this module only
parses flags and calls the command's function: :func:`speedrun.train.train_and_evaluate`,
:func:`speedrun.measure.bench.run`, :func:`speedrun.measure.report.run`,
:func:`speedrun.checkpoint.evaluate`, :func:`speedrun.sweep_command.run` (its flags: that module).

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
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Sequence

from speedrun.system import env  # stdlib only: `--help` works before anything is installed


def _progress_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no_progress", action="store_true", help="no progress bar (default: a tqdm bar on stderr "
                   "when it is a terminal; SPEEDRUN_PROGRESS=0/1 turns it off/on)")


def _cache_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache_dir", help="persistent compilation cache folder, or 'off' (default "
                   "$SPEEDRUN_CACHE_DIR, else the user cache folder: speedrun.system.cache)")


def _record_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("record", help="record name or file, e.g. records/airbench94.py")
    p.add_argument("--list_keys", action="store_true", help="print the record's config keys and values, then exit")
    p.add_argument("--smoke", action="store_true", help="a reduced run of the record (speedrun.config.smoke: "
                   "width 1/8, 2 epochs, batch 256), minutes on a CPU; overrides apply on top")
    _cache_arg(p)
    p.add_argument("--cpu_devices", type=int, default=None,
                   help="simulate N CPU devices (data parallelism on one CPU; XLA flag set before JAX starts)")


def _invocation() -> str:
    """How this command was started, for the hints: ``$SPEEDRUN_PROG`` (``./run.sh`` sets it to the
    path it was called by), else the console script's name (``speedrun``), else
    ``python -m speedrun.cli``."""
    name = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    return os.environ.get("SPEEDRUN_PROG") or (name if name and not name.endswith(".py") and name != "-c"
                                               else "python -m speedrun.cli")


def _usage_error(message: str, prog: str):
    """The project's one-line usage error (``speedrun: error: <what> — see `PROG --help```, with
    ``PROG`` as the user started it: :func:`_invocation`), exit 2."""
    command = " ".join([_invocation(), *prog.split()[1:]])  # "speedrun train" -> "./run.sh train"
    print(f"speedrun: error: {message} — see `{command} --help`", file=sys.stderr)
    sys.exit(2)


class _Parser(argparse.ArgumentParser):
    """argparse with the one-line usage error of :func:`_usage_error`."""

    def error(self, message: str):
        _usage_error(message, self.prog)


class DeviceError(RuntimeError):
    """The devices could not be started: a JAX backend that does not initialise, or a multi-process
    start that fails. The message names the backend or flag and the fix."""


def parser() -> argparse.ArgumentParser:
    """The argument parser of every command (flags are defined here once)."""
    top = _Parser(prog="speedrun", description="Speed-record CIFAR-10 training in JAX.")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show the traceback of an expected error")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = sub.add_parser("train", parents=[common], help="train a record once and log it")
    _record_args(train)
    _progress_arg(train)
    train.add_argument("--workdir", default="logs", help="folder of the run's log file (default logs/)")
    train.add_argument("--distributed", action="store_true",
                       help="multi-process run: jax.distributed.initialize() with cluster auto-detection")
    train.add_argument("--coordinator_address", help="host:port of process 0 (default $JAX_COORDINATOR_ADDRESS)")
    train.add_argument("--num_processes", type=int, help="processes of a multi-host run (default $JAX_NUM_PROCESSES)")
    train.add_argument("--process_id", type=int, help="this process's index (default $JAX_PROCESS_ID)")

    bench = sub.add_parser("bench", parents=[common], help="train a record for N seeds, compiled once: statistics, MFU")
    _record_args(bench)
    _progress_arg(bench)
    bench.add_argument("--runs", type=int, default=5, help="number of seeds, config.seed upwards (default 5)")
    bench.add_argument("--target", type=float, help="accuracy target (default: the record's target_acc)")
    bench.add_argument("--tile_to", type=int, help="repeat the training rows to this count (timing only)")
    bench.add_argument("--no_epoch_eval", action="store_true", help="skip per-epoch evaluation (no time to target)")
    bench.add_argument("--outdir", default="logs/bench", help="folder of the JSON-lines results (default logs/bench)")
    bench.add_argument("--resume", action="store_true", help="continue the latest result file of this record, "
                       "device and setting in --outdir: run only its missing seeds, then the summary over all")

    evaluate = sub.add_parser("eval", parents=[common], help="test accuracy of a saved checkpoint "
                              "(train --config.checkpoint_dir=DIR)")
    evaluate.add_argument("checkpoint_dir", metavar="DIR", help="a train run's --config.checkpoint_dir "
                          "(or one of its step folders DIR/EPOCHS)")
    evaluate.add_argument("--tta_level", type=int, choices=(0, 1, 2),
                          help="0 none, 1 mirror, 2 mirror + translate (default: the record's)")
    evaluate.add_argument("--step", type=int, help="the checkpoint after this many epochs (default: the latest)")
    _cache_arg(evaluate)
    # record=None: parse() then passes --config.KEY=VALUE on, here overrides of the saved config
    evaluate.set_defaults(record=None, list_keys=False)

    from speedrun import sweep_command  # stdlib only, like this module

    sweep_command.add_parser(sub, common, _record_args)
    from speedrun.measure import profile_command  # stdlib only, like this module

    profile_command.add_parser(sub, common, _record_args)

    report = sub.add_parser("report", parents=[common], help="records table and accuracy-vs-time plot of bench results")
    report.add_argument("folder", nargs="?", default="logs/bench", help="folder of bench *.jsonl files")
    report.add_argument("--table", help="markdown output (default FOLDER/records_table.md)")
    report.add_argument("--plot", help="PNG output (default FOLDER/accuracy_vs_time.png)")
    report.add_argument("--curves", metavar="RECORD", help="training curves of this record's latest run "
                        "(default: the latest run) in FOLDER/training_curves.png")
    return top


def parse(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    """``(args, overrides)``: the command's flags and its ``KEY=VALUE`` config overrides.

    Raises:
      SystemExit(2): an unknown flag, a missing argument, or a count out of range (``--cpu_devices``,
        ``--runs``, ``--tile_to`` below 1, ``--target`` outside (0, 1]); one line on stderr.
    """
    p = parser()
    args, rest = p.parse_known_args(argv)
    overrides = [a[len("--config."):] for a in rest if a.startswith("--config.")]
    unknown = [a for a in rest if not a.startswith("--config.")]
    prog = f"{p.prog} {args.command}"
    if unknown or (overrides and not hasattr(args, "record")):
        _usage_error(f"unrecognized arguments for {args.command}: {' '.join(unknown or rest)}", prog)
    for flag, example in (("cpu_devices", 8), ("runs", 5), ("tile_to", 50000)):
        value = getattr(args, flag, None)
        if value is not None and value < 1:
            _usage_error(f"--{flag} {value} must be at least 1 (e.g. --{flag}={example})", prog)
    target = getattr(args, "target", None)
    if target is not None and not 0.0 < target <= 1.0:
        _usage_error(f"--target {target} must be an accuracy fraction in (0, 1] (e.g. --target=0.94)", prog)
    return args, overrides


def _writable_folder(path: str, flag: str) -> None:
    """Create the output folder ``path`` of ``flag`` now, and check that a file can be written there,
    so that a run does not fail at its end. Raises ConfigError naming the flag and the folder."""
    from speedrun.config import ConfigError  # noqa: PLC0415

    try:
        Path(path).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        raise ConfigError(f"{flag} {path!r} is not a writable folder ({err.strerror or err}) — pass "
                          f"{flag}=DIR with a folder you can write, e.g. {flag}=/tmp/speedrun") from None


def _num_devices() -> int:
    """``jax.device_count()``; a backend that does not start raises :class:`DeviceError`."""
    import jax  # noqa: PLC0415

    platforms = os.environ.get("JAX_PLATFORMS")
    try:
        return jax.device_count()
    except (RuntimeError, AssertionError) as err:  # AssertionError: JAX_PLATFORMS=cuda without a GPU
        if not platforms and "Unable to initialize backend" not in str(err):
            raise
        what = str(err).split(" (set JAX_PLATFORMS")[0] or f"no backend of JAX_PLATFORMS={platforms!r} started"
        fix = (f"unset JAX_PLATFORMS (now {platforms!r}) to use the devices JAX finds, or install that "
               "backend's jax plugin" if platforms else
               "set JAX_PLATFORMS=cpu to skip it, or uninstall its jax plugin")
        raise DeviceError(f"{what} — {fix}") from err


def _train(args, config) -> int:
    from speedrun import config as config_lib  # noqa: PLC0415

    config_lib.validate(config)  # before JAX starts: a bad value fails at once
    from speedrun.measure import progress  # noqa: PLC0415 (tqdm only)

    show = False if args.no_progress else progress.enabled()  # a bad $SPEEDRUN_PROGRESS fails here
    if args.workdir:
        _writable_folder(args.workdir, "--workdir")
    from speedrun.system import parallel  # noqa: PLC0415 (after flag parsing: --help stays fast)

    try:
        parallel.initialize_distributed(args.coordinator_address, args.num_processes, args.process_id,
                                        auto=args.distributed)
    except (RuntimeError, ValueError) as err:
        raise DeviceError(f"the multi-process start failed: {err} — check --coordinator_address, "
                          "--num_processes and --process_id (or $JAX_COORDINATOR_ADDRESS, $JAX_NUM_PROCESSES, "
                          "$JAX_PROCESS_ID) on every process; docs/parallel.md") from err
    config_lib.validate(config, _num_devices())  # the batch over the devices, the backend's precision
    from speedrun.train import train_and_evaluate  # noqa: PLC0415

    result = train_and_evaluate(config, args.workdir, str(config_lib.record_path(args.record)),
                                progress=show)
    from speedrun.measure import expected  # noqa: PLC0415

    print(expected.format_comparison(result, expected.lookup(result)), file=sys.stderr)  # stdout ends in JSON
    return 0


def _bench(args, config) -> int:
    import json  # noqa: PLC0415

    from speedrun import config as config_lib  # noqa: PLC0415

    config_lib.validate(config)  # before JAX starts: a bad value fails at once
    from speedrun.measure import progress  # noqa: PLC0415 (tqdm only)

    show = False if args.no_progress else progress.enabled()  # a bad $SPEEDRUN_PROGRESS fails here
    if args.outdir:
        _writable_folder(args.outdir, "--outdir")
    config_lib.validate(config, _num_devices())
    from speedrun.measure import bench  # noqa: PLC0415

    results, summary = bench.run(config, args.runs, args.target, not args.no_epoch_eval, args.tile_to,
                                 outdir=args.outdir, resume=args.resume,
                                 progress=show, command=f"{_invocation()} {shlex.join(getattr(args, 'argv', []))}")
    print(bench.format_summary(summary))
    print(json.dumps({k: v for k, v in summary.items() if k not in ("versions", "matmul")}))
    print(f"# wrote {summary['file']}")
    return 0


def _eval(args, overrides: Sequence[str]) -> int:
    """``eval DIR``: print :func:`speedrun.checkpoint.evaluate`'s result as one JSON line."""
    import json  # noqa: PLC0415

    from speedrun import checkpoint  # noqa: PLC0415

    print(json.dumps(checkpoint.evaluate(args.checkpoint_dir, args.tta_level, overrides, args.step)))
    return 0


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
        return _eval(args, overrides)
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
    return {"train": _train, "bench": _bench}[args.command](args, config)


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
