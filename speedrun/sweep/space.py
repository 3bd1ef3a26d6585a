"""Search spaces of ``./run.sh sweep``: a small Python file naming each swept config key and its values.

A SPACE file (``sweeps/airbench94_lr.py``) is a module that defines ``SPACE``, a dict from dotted
config keys of the record (``speedrun.config.keys``) to one of the helpers below, and optionally
``FIXED``, a dict of config overrides applied to every trial (``{"epochs": 4}``)::

    from speedrun.sweep.space import grid, loguniform, uniform, integer, categorical

    SPACE = {
        "optimizer.lr": loguniform(2.0, 40.0, points=4),   # float, log scale; 4 grid points
        "label_smoothing": grid(0.0, 0.1, 0.2),            # these values (every sampler)
        "model.width_mult": categorical(0.0625, 0.125),    # unordered choice
        "epochs": integer(2, 6),                           # int range, linear
    }

Every dimension becomes an Optuna distribution (:meth:`Dimension.distribution`); the grid sampler
(brute force) needs a finite set of values per key (:func:`grid_space`): the values of ``grid`` and
``categorical``, ``points`` evenly spaced (log: geometrically) points of a range, every int of a
small ``integer`` range. Docs: docs/sweeps.md.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import runpy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from speedrun import config as config_lib
from speedrun.errors import ConfigError

#: An ``integer`` range with at most this many values is gridded without ``points``.
MAX_INT_GRID = 64


@dataclasses.dataclass(frozen=True)
class Dimension:
    """One swept key: ``kind`` ``"choice"`` (``values``) or ``"float"`` / ``"int"`` (``low``, ``high``,
    ``log``, ``step``, optional ``points`` for the grid sampler). Built by the helpers below."""

    kind: str
    values: tuple = ()
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    step: int | None = None
    points: int | None = None
    ordered: bool = True  # grid(): numbers on an axis; categorical(): labels

    def distribution(self) -> optuna.distributions.BaseDistribution:
        """The Optuna distribution of this dimension (Categorical, Float or Int)."""
        if self.kind == "choice":
            return optuna.distributions.CategoricalDistribution(self.values)
        if self.kind == "float":
            return optuna.distributions.FloatDistribution(self.low, self.high, log=self.log)
        return optuna.distributions.IntDistribution(int(self.low), int(self.high), log=self.log, step=self.step or 1)

    def grid_values(self) -> list | None:
        """The values the grid sampler visits, or ``None`` when the dimension is a continuous range
        without ``points`` (or an int range of more than :data:`MAX_INT_GRID` values)."""
        if self.kind == "choice":
            return list(self.values)
        if self.points is not None:
            pts = (np.geomspace if self.log else np.linspace)(self.low, self.high, self.points)
            return [round(p) for p in pts] if self.kind == "int" else [float(f"{p:.12g}") for p in pts]
        if self.kind == "int" and (self.high - self.low) // (self.step or 1) + 1 <= MAX_INT_GRID:
            return list(range(int(self.low), int(self.high) + 1, self.step or 1))
        return None

    def probe_values(self) -> list:
        """Values that stand for the dimension when it is checked against the record: every choice,
        or the ends of a range."""
        if self.kind == "choice":
            return list(self.values)
        cast = int if self.kind == "int" else float
        return [cast(self.low), cast(self.high)]


def _check_choices(what: str, values: tuple) -> tuple:
    if not values:
        raise ConfigError(f"{what}() needs at least one value — e.g. {what}(0.1, 0.2)")
    for v in values:
        if not (v is None or isinstance(v, (bool, int, float, str))):
            raise ConfigError(f"{what}() value {v!r} is a {type(v).__name__}; Optuna stores only None, bool, "
                              "int, float and str — sweep a scalar key (or one number that scales a list)")
    if len(set(map(repr, values))) != len(values):
        raise ConfigError(f"{what}{values}: a value is repeated — list each value once")
    return tuple(values)


def grid(*values: Any) -> Dimension:
    """These values (numbers on an ordered axis in the report's plots), for every sampler.

    Raises:
      ConfigError: no values, a repeated value, or one that is not None/bool/int/float/str."""
    return Dimension("choice", _check_choices("grid", values))


def categorical(*values: Any) -> Dimension:
    """An unordered choice of these values (labels in the report's plots).

    Raises:
      ConfigError: as :func:`grid`."""
    return Dimension("choice", _check_choices("categorical", values), ordered=False)


def _range(kind: str, low: float, high: float, log: bool, points: int | None, step: int | None = None) -> Dimension:
    name = "integer" if kind == "int" else ("loguniform" if log else "uniform")
    if not (math.isfinite(low) and math.isfinite(high)) or low >= high:
        raise ConfigError(f"{name}({low}, {high}): needs finite low < high — e.g. {name}(0.0, 0.3)")
    if log and low <= 0:
        raise ConfigError(f"{name}({low}, {high}): a log scale needs low > 0 — e.g. loguniform(1e-3, 1.0)")
    if points is not None and points < 2:
        raise ConfigError(f"{name}(..., points={points}): a grid of a range needs at least 2 points")
    return Dimension(kind, low=low, high=high, log=log, points=points, step=step)


def uniform(low: float, high: float, points: int | None = None) -> Dimension:
    """A float in ``[low, high]``, linear scale; ``points`` evenly spaced values for the grid sampler.

    Raises:
      ConfigError: not ``low < high`` (finite), or ``points < 2``."""
    return _range("float", float(low), float(high), False, points)


def loguniform(low: float, high: float, points: int | None = None) -> Dimension:
    """A float in ``[low, high]``, log scale (``low > 0``); ``points`` geometrically spaced grid values.

    Raises:
      ConfigError: not ``0 < low < high``, or ``points < 2``."""
    return _range("float", float(low), float(high), True, points)


def integer(low: int, high: int, step: int = 1, log: bool = False, points: int | None = None) -> Dimension:
    """An int in ``[low, high]`` (every ``step``-th; ``log``: log scale, Optuna needs ``step`` 1 then).

    Raises:
      ConfigError: not ``low < high``, ``step < 1``, ``log`` with ``step`` other than 1, ``points < 2``."""
    if step < 1 or (log and step != 1):
        raise ConfigError(f"integer({low}, {high}, step={step}, log={log}): step must be >= 1, and 1 with log")
    return _range("int", int(low), int(high), log, points, step)


@dataclasses.dataclass(frozen=True)
class Space:
    """A loaded SPACE file: ``dims`` (key -> :class:`Dimension`, in file order), ``fixed`` overrides,
    ``path`` and ``name`` (the file's stem)."""

    dims: dict[str, Dimension]
    fixed: dict[str, Any]
    path: Path
    name: str

    def distributions(self) -> dict[str, optuna.distributions.BaseDistribution]:
        """``{key: Optuna distribution}`` for ``study.ask(fixed_distributions=...)``."""
        return {k: d.distribution() for k, d in self.dims.items()}

    def describe(self) -> dict[str, str]:
        """``{key: repr of its dimension}``, JSON-friendly (stored with the study)."""
        return {k: repr(d) for k, d in self.dims.items()}


def grid_space(space: Space) -> dict[str, list]:
    """``{key: values}`` for ``optuna.samplers.GridSampler``.

    Raises:
      ConfigError: a key whose values are not finite (a range without ``points``), named with the fix."""
    out = {}
    for key, dim in space.dims.items():
        values = dim.grid_values()
        if values is None:
            helper = "integer" if dim.kind == "int" else ("loguniform" if dim.log else "uniform")
            raise ConfigError(f"the grid sampler needs a finite set of values for {key!r} ({dim.kind} range "
                              f"[{dim.low}, {dim.high}]) — give it points=N (e.g. {helper}({dim.low}, {dim.high}, "
                              "points=4)) or grid(...) values, or use --sampler=tpe or --sampler=genetic")
        out[key] = values
    return out


def load_space(path: str | Path, config=None) -> Space:
    """Load and check the SPACE file ``path`` (module docstring), against the record ``config``
    (an ``ml_collections.ConfigDict``) when given: every key must exist and accept the dimension's
    values (:func:`speedrun.config.override` on a copy: choices and the ends of ranges).

    Raises:
      ConfigError: no such file, a file that does not load or defines no ``SPACE`` dict, a value that
        is not a helper of this module, an unknown key (named, with the nearest keys), or a value of
        the wrong type for its key.
    """
    p = Path(path)
    if not p.is_file():
        near = " ".join(sorted(str(f) for f in Path("sweeps").glob("*.py"))) if Path("sweeps").is_dir() else ""
        raise ConfigError(f"no SPACE file {str(path)!r} — pass --space=FILE"
                          + (f", e.g. one of {near}" if near else " (a .py file defining SPACE; docs/sweeps.md)"))
    try:
        module = runpy.run_path(str(p))
    except ConfigError as err:
        raise ConfigError(f"SPACE file {p}: {err}") from err
    except Exception as err:
        raise ConfigError(f"SPACE file {p} does not load: {type(err).__name__}: {err} — fix the file") from err
    dims, fixed = module.get("SPACE"), module.get("FIXED", {})
    if not isinstance(dims, Mapping) or not dims:
        raise ConfigError(f"SPACE file {p} defines no SPACE dict — add e.g. SPACE = {{'optimizer.lr': grid(5.0, 10.0)}}")
    if not isinstance(fixed, Mapping):
        raise ConfigError(f"SPACE file {p}: FIXED must be a dict of config overrides, got {type(fixed).__name__}")
    for key, dim in dims.items():
        if not isinstance(dim, Dimension):
            raise ConfigError(f"SPACE file {p}: {key!r} is {dim!r} — use grid(), categorical(), uniform(), "
                              "loguniform() or integer() from speedrun.sweep.space")
    space = Space(dict(dims), dict(fixed), p, p.stem)
    if config is not None:
        check_space(space, config)
    return space


def check_space(space: Space, config) -> None:
    """Check ``space``'s keys and values against the record ``config`` (:func:`load_space`).

    Raises:
      ConfigError: an unknown key, a swept key also in FIXED, or a value its key does not accept."""
    base = copy.deepcopy(config)
    for key, value in space.fixed.items():
        try:
            config_lib.override(base, key, value)
        except ConfigError as err:
            raise ConfigError(f"SPACE file {space.path}, FIXED: {err}") from None
    for key, dim in space.dims.items():
        if key in space.fixed:
            raise ConfigError(f"SPACE file {space.path}: {key!r} is both swept and FIXED — keep one")
        for value in dim.probe_values():
            try:
                config_lib.override(copy.deepcopy(base), key, value)
            except ConfigError as err:
                raise ConfigError(f"SPACE file {space.path}: {err}") from None
