"""Run output: the per-epoch table, the final JSON result line and the log file.

Format follows the record logs of modded-nanogpt: the log opens with what reproduces the run — the
git commit and whether the tree was dirty, the record file's full text, the resolved config, the
versions of python and the libraries, the devices — then the per-epoch table, and closes with the
result (or, for a failed run, its error). Only process 0 of a multi-host run prints or writes.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
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


def git_state(folder: str | os.PathLike | None = None) -> str:
    """``"<commit> (clean)"``, ``"<commit> (dirty: N files changed)"`` for the git checkout that
    holds ``folder`` (default: this package's), or ``"not a git checkout"``."""
    folder = Path(folder) if folder is not None else Path(__file__).resolve().parent
    try:
        def git(*args):
            return subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True,
                                  timeout=10, check=True).stdout
        commit = git("rev-parse", "HEAD").strip()
        changed = [line for line in git("status", "--porcelain", "--untracked-files=no").splitlines() if line]
    except (OSError, subprocess.SubprocessError):
        return "not a git checkout"
    return f"{commit} (clean)" if not changed else f"{commit} (dirty: {len(changed)} files changed)"


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

    def write(self, text: str = "", echo: bool = True) -> None:
        """Append ``text`` (with a newline) to the log file, and print it unless ``echo`` is off."""
        if not self.active:
            return
        if echo:
            print(text, flush=True)
        if self.path is not None:
            with open(self.path, "a") as f:
                f.write(text + "\n")

    def header(self, config: Any, record_file: str | os.PathLike | None = None) -> None:
        """Write what reproduces the run at the top of the log: the git commit (and whether the
        tree is dirty), the text of ``record_file`` (the record as pinned, before overrides), the
        resolved config, the versions and the devices."""
        self.write(f"# commit {git_state()}")
        self.write(f"# command {' '.join(sys.argv)}")
        if record_file is not None:
            self.write(f"# record file {record_file} (its text is in the log file)")
            self.write(Path(record_file).read_text().rstrip(), echo=False)
        self.write(f"# config (resolved)\n{config}")
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
