"""The command line: ``python -m speedrun.cli COMMAND ...`` (``./run.sh`` calls it).

    train RECORD [--workdir DIR] [multi-host flags] [--config.KEY=VALUE ...]   one logged run
    bench RECORD [--runs N] [--target T] [--tile_to N] [--no_epoch_eval] [--outdir DIR] [--config.KEY=VALUE ...]
    report [FOLDER] [--table FILE] [--plot FILE]                                 table + plot of bench results

RECORD is a record name (``airbench94``) or file (``records/airbench94.py``); overrides follow the
ml_collections convention (``--config.epochs=3``, lists as ``--config.optimizer.lr_values=0,0.4,0``)
and are type-checked against the record (:func:`speedrun.config.override`); ``--list_keys`` prints
them. Each command accepts only its own flags. Like flax/examples' ``main.py``, this module only
parses flags and calls the command's function: :func:`speedrun.train.train_and_evaluate`,
:func:`speedrun.measure.bench.run`, :func:`speedrun.measure.report.run`.

Before anything imports JAX, :func:`main` sets the XLA flags of :mod:`speedrun.system.env` (and
``--cpu_devices N`` simulated CPU devices). An expected failure — a bad config, missing data, a
diverged run — prints one line ``speedrun: error: <what> — <fix>`` to stderr and exits 2 (usage or
config) or 1 (a failed run); ``--debug`` (or ``SPEEDRUN_DEBUG=1``) shows the traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from speedrun.system import env  # stdlib only: `--help` works before anything is installed


def _record_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("record", help="record name or file, e.g. records/airbench94.py")
    p.add_argument("--list_keys", action="store_true", help="print the record's config keys and values, then exit")
    p.add_argument("--cpu_devices", type=int, default=None,
                   help="simulate N CPU devices (data parallelism on one CPU; XLA flag set before JAX starts)")


def parser() -> argparse.ArgumentParser:
    """The argument parser of every command (flags are defined here once)."""
    top = argparse.ArgumentParser(prog="speedrun", description="Speed-record CIFAR-10 training in JAX.")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show the traceback of an expected error")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = sub.add_parser("train", parents=[common], help="train a record once and log it")
    _record_args(train)
    train.add_argument("--workdir", default="logs", help="folder of the run's log file (default logs/)")
    train.add_argument("--distributed", action="store_true",
                       help="multi-process run: jax.distributed.initialize() with cluster auto-detection")
    train.add_argument("--coordinator_address", help="host:port of process 0 (default $JAX_COORDINATOR_ADDRESS)")
    train.add_argument("--num_processes", type=int, help="processes of a multi-host run (default $JAX_NUM_PROCESSES)")
    train.add_argument("--process_id", type=int, help="this process's index (default $JAX_PROCESS_ID)")

    bench = sub.add_parser("bench", parents=[common], help="train a record for N seeds, compiled once: statistics, MFU")
    _record_args(bench)
    bench.add_argument("--runs", type=int, default=5, help="number of seeds, config.seed upwards (default 5)")
    bench.add_argument("--target", type=float, help="accuracy target (default: the record's target_acc)")
    bench.add_argument("--tile_to", type=int, help="repeat the training rows to this count (timing only)")
    bench.add_argument("--no_epoch_eval", action="store_true", help="skip per-epoch evaluation (no time to target)")
    bench.add_argument("--outdir", default="logs/bench", help="folder of the JSON-lines results (default logs/bench)")

    report = sub.add_parser("report", parents=[common], help="records table and accuracy-vs-time plot of bench results")
    report.add_argument("folder", nargs="?", default="logs/bench", help="folder of bench *.jsonl files")
    report.add_argument("--table", help="markdown output (default FOLDER/records_table.md)")
    report.add_argument("--plot", help="PNG output (default FOLDER/accuracy_vs_time.png)")
    return top


def parse(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    """``(args, overrides)``: the command's flags and its ``KEY=VALUE`` config overrides.

    Raises:
      SystemExit(2): an unknown flag (argparse's one-line usage error).
    """
    p = parser()
    args, rest = p.parse_known_args(argv)
    overrides = [a[len("--config."):] for a in rest if a.startswith("--config.")]
    unknown = [a for a in rest if not a.startswith("--config.")]
    if unknown or (overrides and not hasattr(args, "record")):
        p.error(f"unrecognized arguments for {args.command}: {' '.join(unknown or rest)}")
    return args, overrides


def _train(args, config) -> int:
    from speedrun import config as config_lib  # noqa: PLC0415
    from speedrun.system import parallel  # noqa: PLC0415 (after flag parsing: --help stays fast)

    parallel.initialize_distributed(args.coordinator_address, args.num_processes, args.process_id,
                                    auto=args.distributed)
    from speedrun.train import train_and_evaluate  # noqa: PLC0415

    train_and_evaluate(config, args.workdir, str(config_lib.record_path(args.record)))
    return 0


def _bench(args, config) -> int:
    import json  # noqa: PLC0415

    from speedrun.measure import bench  # noqa: PLC0415

    results, summary = bench.run(config, args.runs, args.target, not args.no_epoch_eval, args.tile_to,
                                 outdir=args.outdir)
    print(bench.format_summary(summary))
    print(json.dumps({k: v for k, v in summary.items() if k not in ("versions", "matmul")}))
    print(f"# wrote {summary['file']}")
    return 0


def run_command(args: argparse.Namespace, overrides: Sequence[str]) -> int:
    """Run one parsed command; return its exit status (errors propagate)."""
    from speedrun import config as config_lib  # noqa: PLC0415
    if args.command == "report":
        from speedrun.measure import report  # noqa: PLC0415

        try:
            report.run(args.folder, args.table, args.plot)
        except ValueError as err:  # no or bad result files: the message names them and the fix
            raise config_lib.ConfigError(str(err)) from err
        return 0
    config = config_lib.load_record(args.record, overrides)
    if args.list_keys:
        for key in config_lib.keys(config):
            print(f"{key} = {config_lib.get(config, key)!r}")
        return 0
    return {"train": _train, "bench": _bench}[args.command](args, config)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: set the pre-JAX environment, parse, run; expected errors as one line.

    Returns the exit status: 0, 1 (a failed run: data, divergence) or 2 (usage, config)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args, overrides = parse(argv)
    env.configure(getattr(args, "cpu_devices", None))
    from speedrun import config as config_lib  # noqa: PLC0415 (after env.configure)
    from speedrun.data import DataError  # noqa: PLC0415

    expected = {config_lib.ConfigError: 2, DataError: 1, FloatingPointError: 1}
    try:
        return run_command(args, overrides)
    except tuple(expected) as err:
        if args.debug or os.environ.get("SPEEDRUN_DEBUG") == "1":
            raise
        code = next(c for cls, c in expected.items() if isinstance(err, cls))
        print(f"speedrun: error: {err}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
