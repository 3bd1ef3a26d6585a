"""Command line: ``python -m speedrun.main --config=records/NAME.py [--config.key=value ...]``.

``./run.sh records/NAME.py [overrides]`` calls this after setting up the environment. Overrides
follow the ml_collections convention (``--config.epochs=3 --config.data.path=sample``); an unknown
key is an error. Like flax/examples' ``main.py``, this file only parses flags and calls
:func:`speedrun.train.train_and_evaluate`.

Multi-host runs (docs/parallel.md): start the same command on every host with
``--coordinator_address=HOST0:PORT --num_processes=N --process_id=I`` (or the environment variables
``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``), or ``--distributed`` under
Slurm / Open MPI, whose variables JAX reads itself; ``jax.distributed.initialize`` is then called
before anything else touches JAX (:func:`speedrun.parallel.initialize_distributed`).
"""

from __future__ import annotations

import difflib
import runpy
import sys

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Record config file (records/NAME.py).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", "logs", "Folder for the run's log file.")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "Multi-process run: call jax.distributed.initialize() with cluster "
    "auto-detection (Slurm, Open MPI, Cloud TPU, Kubernetes) for what the flags below leave open.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0's coordinator (multi-host runs; "
    "default $JAX_COORDINATOR_ADDRESS).")
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", None, "Number of processes of a multi-host run (default $JAX_NUM_PROCESSES).")
_PROCESS_ID = flags.DEFINE_integer(
    "process_id", None, "This process's index in [0, num_processes) (default $JAX_PROCESS_ID).")


def main(argv: list[str]) -> None:
    """absl entry point: initialise jax.distributed if asked, train the record given by
    ``--config`` once (:func:`speedrun.train.train_and_evaluate`) and print its result line.

    Raises:
      app.UsageError: positional arguments (overrides must be ``--config.KEY=VALUE``).
    """
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}; overrides look like --config.epochs=3")
    from speedrun import parallel

    # before any JAX computation: a multi-process run must join the cluster first
    parallel.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value,
                                    auto=_DISTRIBUTED.value)
    from speedrun import train  # after flag parsing, so --help is fast

    train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)


def check_overrides(argv: list[str]) -> None:
    """Exit with a clear message when a ``--config.KEY=...`` override names no field of the record.

    ml_collections would fail too, with a bare ``AttributeError``; this names the key, the record
    and the nearest known keys.

    Raises:
      SystemExit(2): unknown key.
    """
    path = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
    if path is None:
        return
    try:
        known = set(_flatten(runpy.run_path(path)["get_config"]()))
    except Exception:  # noqa: BLE001 - let absl report a config file that does not load
        return
    for arg in argv:
        if arg.startswith("--config.") and "=" in arg:
            key = arg[len("--config."):].split("=", 1)[0]
            if key not in known:
                near = difflib.get_close_matches(key, sorted(known), n=3)
                sys.exit(f"error: unknown config key {key!r} for {path}"
                         + (f"; did you mean {', '.join(near)}?" if near else "")
                         + " (list the keys with: python -c \"import runpy; "
                         f"print(runpy.run_path('{path}')['get_config']())\")")


def _flatten(cfg, prefix=""):
    for k, v in cfg.items():
        if hasattr(v, "items"):
            yield from _flatten(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}"


def cli() -> None:
    """Console-script entry point (``speedrun --config=...``)."""
    flags.mark_flags_as_required(["config"])
    check_overrides(sys.argv)
    app.run(main)


if __name__ == "__main__":
    cli()
