"""The command line's flags: one parser for every command, ``KEY=VALUE`` overrides, and the
project's one-line usage error (:func:`parse`; :mod:`speedrun.cli` runs what it parses). Stdlib
only: ``--help`` works before anything is installed.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence


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

    from speedrun import list_command, sweep_command  # stdlib only, like this module

    sweep_command.add_parser(sub, common, _record_args)
    from speedrun.measure import profile_command  # stdlib only, like this module

    profile_command.add_parser(sub, common, _record_args)

    list_command.add_parser(sub, common)

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
