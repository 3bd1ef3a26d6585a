"""Run output: the per-epoch table, the final JSON result line and the log file.

Format follows the record logs of modded-nanogpt and Page's cifar10-fast: the log starts with the
full config, the library versions and the device, then the per-epoch table, and ends with the
result. Only process 0 of a multi-host run prints or writes.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any, Sequence

import jax


def device_description() -> str:
    """Human-readable accelerator description, e.g. ``"NVIDIA H100 80GB HBM3 x1"`` or
    ``"cpu (AMD EPYC 7B13, 2 cores) x1"``: device kind, and for CPUs the model name and the cores
    this process may use, then the global device count."""
    devices = jax.devices()
    kind = devices[0].device_kind
    if devices[0].platform == "cpu":
        model = platform.processor() or "unknown"
        try:
            with open("/proc/cpuinfo") as f:
                names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
            model = names[0] if names else model
        except OSError:
            pass
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        kind = f"cpu ({model}, {cores} cores)"
    return f"{kind} x{len(devices)}"


def versions() -> dict[str, str]:
    """Versions of python and the libraries a result depends on (``"-"`` when not installed)."""
    out = {"python": sys.version.split()[0]}
    for pkg in ("speedrun", "jax", "jaxlib", "flax", "optax", "numpy", "ml_collections"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "-"
    return out


class RunLog:
    """Prints lines and appends them to a log file (process 0 only).

    Args:
      workdir: folder for the log file (created); ``None`` prints only.
      name: file stem; the file is ``{workdir}/{name}_{UTC timestamp}.log``.

    Attributes:
      path: the log file's path, or ``None``.
    """

    def __init__(self, workdir: str | os.PathLike | None, name: str):
        self.active = jax.process_index() == 0
        self.path: Path | None = None
        if workdir is not None and self.active:
            stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
            Path(workdir).mkdir(parents=True, exist_ok=True)
            self.path = Path(workdir) / f"{name}_{stamp}.log"

    def write(self, text: str = "") -> None:
        """Print ``text`` and append it (with a newline) to the log file."""
        if not self.active:
            return
        print(text, flush=True)
        if self.path is not None:
            with open(self.path, "a") as f:
                f.write(text + "\n")

    def header(self, config: Any) -> None:
        """Write the config, the versions and the device at the top of the log."""
        self.write(f"# config\n{config}")
        self.write("# versions " + json.dumps(versions()))
        self.write(f"# device {device_description()}  backend={jax.default_backend()}  "
                   f"processes={jax.process_count()}")


class EpochTable:
    """Fixed-width per-epoch table: columns given as (name, format) pairs."""

    def __init__(self, log: RunLog, columns: Sequence[tuple[str, str]]):
        self.log, self.columns = log, columns
        widths = [max(len(name), 9) for name, _ in columns]
        self.widths = widths
        log.write("  ".join(name.rjust(w) for (name, _), w in zip(columns, widths)))

    def row(self, **values: Any) -> None:
        """Write one row; ``values`` maps column names to numbers (missing ones print blank)."""
        cells = []
        for (name, fmt), w in zip(self.columns, self.widths):
            v = values.get(name)
            cells.append(("" if v is None else format(v, fmt)).rjust(w))
        self.log.write("  ".join(cells))
