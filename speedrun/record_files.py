"""Where the pinned records are, in a checkout and in an installed package alike.

The records live in the repository's top-level ``records/`` folder; ``pyproject.toml`` maps that
folder to the importable package :data:`PACKAGE` (``[tool.setuptools.package-dir]``), so a wheel,
an sdist, ``pip install git+URL`` and an editable install all carry it, with ``expected.json`` and
``logs/`` as package data (a namespace package: the folder has no ``__init__.py``, so
``records/*.py`` are the records and nothing else). The folder is found through
:func:`importlib.resources.files`; where that package is not importable (the checkout put on
``sys.path`` by hand, as ``SPEEDRUN_PYTHON=... ./run.sh`` does) it is the ``records/`` folder beside
the ``speedrun`` package. Stdlib only.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
from pathlib import Path

#: The import name of the ``records/`` folder in an installed package.
PACKAGE = "speedrun_records"


def records_dir() -> Path:
    """The folder of the pinned records: ``records/NAME.py``, ``expected.json``, ``logs/``.

    Raises:
      RuntimeError: the package is installed in a form that is not a folder on disk (a zip); pip
        installs wheels as folders.
    """
    try:
        root = importlib.resources.files(PACKAGE)
    except ModuleNotFoundError:  # not installed: the checkout's folder beside the package
        return Path(__file__).resolve().parents[1] / "records"
    except NotADirectoryError:  # an editable install on Python < 3.13: setuptools' path-hook sentinel in the
        # namespace path trips MultiplexedPath (python/importlib_resources#311); the real folder is in it
        spec = importlib.util.find_spec(PACKAGE)
        return next(Path(p) for p in spec.submodule_search_locations if Path(p).is_dir())
    if not isinstance(root, Path):  # a namespace package (no __init__.py): a MultiplexedPath of folders
        root = root.joinpath("expected.json").parent
    if not isinstance(root, Path):
        raise RuntimeError(f"the records package {PACKAGE!r} is not a folder on disk ({root!r}) — install "
                           "speedrun with pip (pip install git+URL, or the wheel)")
    return root


def names() -> list[str]:
    """The names of the pinned records (``["94pct_26s", "airbench94", ...]``), sorted: every
    ``records/NAME.py``."""
    return sorted(p.stem for p in records_dir().glob("*.py"))


def record_path(name_or_path: str | Path) -> Path:
    """The record file for ``"airbench94"``, ``"airbench94.py"``, ``"records/airbench94.py"`` (a
    pinned record, from any folder: :func:`records_dir`) or any path to the user's own ``.py``.

    An existing file wins: ``records/airbench94.py`` in the current folder is that file.

    Raises:
      speedrun.errors.ConfigError: no such file (the message lists the known records).
    """
    from speedrun.errors import ConfigError  # noqa: PLC0415

    p = Path(name_or_path)
    if not p.is_file() and (p.parent == Path(".") or p.parent.name == "records") and p.suffix in ("", ".py"):
        name = p.stem if p.suffix == ".py" else p.name
        p = records_dir() / f"{name}.py" if name in names() else p
    if not p.is_file():
        raise ConfigError(f"no record file {str(name_or_path)!r} — known records: {' '.join(names())} "
                          "(a name, or the path of your own record file)")
    return p
