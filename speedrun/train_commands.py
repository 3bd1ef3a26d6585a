"""The commands that train: ``train`` (one logged run), ``bench`` (N seeds, compiled once) and
``eval`` (a saved checkpoint's accuracy), called by :func:`speedrun.cli.run_command` with the
parsed flags and the record's config; and the checks they make before anything compiles (output
folders writable, devices that start).
"""

from __future__ import annotations

import os
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Sequence

from speedrun.cli_parser import _invocation


class DeviceError(RuntimeError):
    """The devices could not be started: a JAX backend that does not initialise, or a multi-process
    start that fails. The message names the backend or flag and the fix."""


def writable_folder(path: str, flag: str) -> None:
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


def num_devices() -> int:
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


def train(args, config) -> int:
    """``train RECORD``: validate, start the devices, one logged run (:func:`speedrun.train.train_and_evaluate`),
    then the result next to its expectation on stderr; exit status 0 (errors propagate)."""
    from speedrun import config as config_lib  # noqa: PLC0415

    config_lib.validate(config)  # before JAX starts: a bad value fails at once
    from speedrun.measure import progress  # noqa: PLC0415 (tqdm only)

    show = False if args.no_progress else progress.enabled()  # a bad $SPEEDRUN_PROGRESS fails here
    if args.workdir:
        writable_folder(args.workdir, "--workdir")
    from speedrun.system import parallel  # noqa: PLC0415 (after flag parsing: --help stays fast)

    try:
        parallel.initialize_distributed(args.coordinator_address, args.num_processes, args.process_id,
                                        auto=args.distributed)
    except (RuntimeError, ValueError) as err:
        raise DeviceError(f"the multi-process start failed: {err} — check --coordinator_address, "
                          "--num_processes and --process_id (or $JAX_COORDINATOR_ADDRESS, $JAX_NUM_PROCESSES, "
                          "$JAX_PROCESS_ID) on every process; docs/parallel.md") from err
    config_lib.validate(config, num_devices())  # the batch over the devices, the backend's precision
    from speedrun.train import train_and_evaluate  # noqa: PLC0415

    result = train_and_evaluate(config, args.workdir, str(config_lib.record_path(args.record)),
                                progress=show)
    from speedrun.measure import expected  # noqa: PLC0415

    print(expected.format_comparison(result, expected.lookup(result)), file=sys.stderr)  # stdout ends in JSON
    return 0


def bench(args, config) -> int:
    """``bench RECORD``: validate, start the devices, ``--runs`` seeds compiled once
    (:func:`speedrun.measure.bench.run`); the summary table, its JSON line and the result file's
    name on stdout; exit status 0 (errors propagate)."""
    import json  # noqa: PLC0415

    from speedrun import config as config_lib  # noqa: PLC0415

    config_lib.validate(config)  # before JAX starts: a bad value fails at once
    from speedrun.measure import progress  # noqa: PLC0415 (tqdm only)

    show = False if args.no_progress else progress.enabled()  # a bad $SPEEDRUN_PROGRESS fails here
    if args.outdir:
        writable_folder(args.outdir, "--outdir")
    config_lib.validate(config, num_devices())
    from speedrun.measure import bench  # noqa: PLC0415

    results, summary = bench.run(config, args.runs, args.target, not args.no_epoch_eval, args.tile_to,
                                 outdir=args.outdir, resume=args.resume,
                                 progress=show, command=f"{_invocation()} {shlex.join(getattr(args, 'argv', []))}")
    print(bench.format_summary(summary))
    print(json.dumps({k: v for k, v in summary.items() if k not in ("versions", "matmul")}))
    print(f"# wrote {summary['file']}")
    return 0


def evaluate(args, overrides: Sequence[str]) -> int:
    """``eval DIR``: print :func:`speedrun.checkpoint.evaluate`'s result as one JSON line."""
    import json  # noqa: PLC0415

    from speedrun import checkpoint  # noqa: PLC0415

    print(json.dumps(checkpoint.evaluate(args.checkpoint_dir, args.tta_level, overrides, args.step)))
    return 0
