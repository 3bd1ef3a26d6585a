"""``./run.sh sweep RECORD --space SPACE ...``: the sweep command's flags and its function.

Stdlib-only at import (``--help`` works before anything is installed): :func:`add_parser` is called by
:func:`speedrun.cli.parser`, :func:`run` by :func:`speedrun.cli.run_command` with the record's config
(``--smoke`` and ``--config.KEY=VALUE`` applied). The search itself: :mod:`speedrun.sweep.study`,
:mod:`speedrun.sweep.loop`; the report: :mod:`speedrun.sweep.report`; docs/sweeps.md.
"""

from __future__ import annotations

import argparse
import copy
import json
from collections.abc import Callable
from pathlib import Path

SAMPLERS = ("grid", "genetic", "tpe")  # = speedrun.sweep.study.SAMPLERS (optuna is not imported here)


def add_parser(sub, common: argparse.ArgumentParser, record_args: Callable[[argparse.ArgumentParser], None]):
    """Add the ``sweep`` subcommand to the subparsers ``sub`` (``common``: the shared flags;
    ``record_args``: adds RECORD, ``--smoke``, ``--list_keys``, ``--cpu_devices``)."""
    p = sub.add_parser("sweep", parents=[common], help="search a record's hyperparameters with Optuna "
                       "(grid, genetic, TPE), resumable, shareable across machines")
    record_args(p)
    p.add_argument("--space", required=True, help="SPACE file of the swept keys, e.g. sweeps/airbench94_lr.py "
                   "(docs/sweeps.md)")
    p.add_argument("--sampler", choices=SAMPLERS, default="grid", help="grid: every point (brute force); genetic: "
                   "NSGA-II on (mean tta_acc, median train time); tpe: Optuna's TPE (default grid)")
    p.add_argument("--trials", type=int, help="total trials of the study, across runs and machines (default: "
                   "the grid's size; genetic 10 generations; tpe 30)")
    p.add_argument("--seeds", type=int, default=3, help="seeds per trial, config.seed upwards (default 3)")
    p.add_argument("--population", type=int, default=20, help="genetic: individuals per generation (default 20)")
    p.add_argument("--sampler_seed", type=int, default=0, help="the sampler's seed (default 0)")
    p.add_argument("--vmap", type=int, default=1, help="trials asked and trained at once as one program")
    p.add_argument("--workdir", default="logs/sweeps", help="folder of the SQLite study and the report "
                   "(default logs/sweeps)")
    p.add_argument("--storage", help="Optuna storage URL (default sqlite:///WORKDIR/STUDY.db); "
                   "postgresql://USER:PASS@HOST/DB shares the study between machines (pip install "
                   "'speedrun[postgres]'; docs/sweeps.md)")
    p.add_argument("--study", help="study name (default RECORD-SPACE-SAMPLER, -smoke with --smoke)")
    p.add_argument("--grace_period", type=int, default=180, help="seconds without a heartbeat after which another "
                   "worker fails a running trial and queues it again (default 180; a heartbeat every sixth of it)")
    p.add_argument("--report", action="store_true", help="then write WORKDIR/STUDY/report.md and PNG plots")
    return p


def _check_counts(args) -> None:
    from speedrun.errors import ConfigError

    for flag, low, example in (("seeds", 1, 3), ("vmap", 1, 4), ("population", 2, 20), ("trials", 0, 12),
                                  ("grace_period", 6, 180)):
        value = getattr(args, flag)
        if value is not None and value < low:
            raise ConfigError(f"--{flag} {value} must be at least {low} — e.g. --{flag}={example}")


def run(args: argparse.Namespace, config) -> int:
    """Run (or continue) the sweep of ``config`` over ``args.space`` and print one line per trial and
    a final JSON summary; with ``--report`` write the report. Returns 0.

    Raises:
      speedrun.errors.ConfigError: a bad flag, SPACE file, storage or study (named, with the fix).
      speedrun.data.DataError: the record's data cannot be read.
    """
    from speedrun import config as config_lib
    from speedrun.errors import ConfigError

    _check_counts(args)
    config_lib.validate(config)
    from speedrun.sweep import loop, report
    from speedrun.sweep import study as study_lib
    from speedrun.sweep.space import load_space
    from speedrun.sweep.storage import masked

    space = load_space(args.space, config)
    base = copy.deepcopy(config)
    for key, value in space.fixed.items():
        config_lib.override(base, key, value)
    config_lib.validate(base)
    workdir = Path(args.workdir)
    try:
        workdir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"--workdir {args.workdir!r} is not a writable folder ({err.strerror or err}) — "
                          "pass --workdir=DIR with a folder you can write") from None
    name = args.study or f"{config.name}-{space.name}-{args.sampler}" + ("-smoke" if args.smoke else "")
    url = args.storage or f"sqlite:///{(workdir / name).resolve()}.db"
    seeds = [int(config.seed) + i for i in range(args.seeds)]
    swept = set(space.dims)
    frozen = {k: config_lib.get(base, k) for k in config_lib.keys(base) if k not in swept}
    settings = json.loads(json.dumps({"record": config.name, "smoke": bool(args.smoke), "seeds": seeds,
                                      "population": args.population if args.sampler == "genetic" else None,
                                      "config": frozen}, default=str))
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = study_lib.open_study(url, name, args.sampler, space, settings, args.sampler_seed, args.population,
                                 grace_period=args.grace_period)
    shown = masked(url)
    n = args.trials if args.trials is not None else study_lib.default_trials(args.sampler, space, args.population)
    done = loop.taken(study, args.sampler == "grid")
    print(f"# sweep {name}: {args.sampler} sampler over {', '.join(space.dims)}; {n} trials ({done} done), "
          f"{len(seeds)} seeds each; storage {shown} (optuna-dashboard {shown})")

    def make_runner():
        from speedrun.sweep.runner import TrialRunner

        runner = TrialRunner(base)
        runner.validate_keys(list(space.dims))
        return runner

    summary = loop.run_trials(study, space, make_runner, n, seeds, vmap=args.vmap)
    result = {**report.summary(study), **summary, "storage": shown}
    if args.report:
        try:
            result["report"] = report.write_report(study, workdir / name)
        except ValueError as err:  # no complete trial yet
            raise ConfigError(f"{err}") from err
    print(json.dumps(result, default=str))
    return 0
