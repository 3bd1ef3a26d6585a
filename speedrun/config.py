"""Record configs: load, override, validate, derive the step counts once, shrink for smoke runs.

A record (``records/NAME.py``) is a module with ``get_config() -> ml_collections.ConfigDict`` (the
big_vision / flax-examples convention). Everything that is computed from a config and the data —
steps per epoch, total optimizer steps, the per-device batch — is computed here, once, by
:func:`derived`, and passed down to the optimizer, the epoch and the experiment.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import difflib
import math
import runpy
from pathlib import Path
from typing import Any, Iterable, Mapping

import ml_collections

#: Folder of the pinned records of a checkout (``load_record("airbench94")`` looks here).
RECORDS_DIR = Path(__file__).resolve().parents[1] / "records"


class ConfigError(ValueError):
    """A record config that cannot run: an unknown key, a value of the wrong type or range, a file
    that does not load. The message names the key or file and the fix."""


def record_path(name_or_path: str | Path) -> Path:
    """The record file for ``"airbench94"``, ``"records/airbench94.py"`` or any path to a ``.py``.

    Raises:
      ConfigError: no such file (the message lists the known records).
    """
    p = Path(name_or_path)
    if p.suffix != ".py" and not p.exists():
        p = RECORDS_DIR / f"{p.name}.py"
    if not p.is_file():
        known = " ".join(sorted(f.stem for f in RECORDS_DIR.glob("*.py")))
        raise ConfigError(f"no record file {str(name_or_path)!r} — known records: {known}")
    return p


def load_record(name_or_path: str | Path, overrides: Mapping[str, Any] | Iterable[str] = ()
                ) -> ml_collections.ConfigDict:
    """The config of a record, with overrides applied (:func:`override`).

    Args:
      name_or_path: a record name (``"94pct_26s"``) or the path of a record file.
      overrides: ``{"model.width_mult": 0.25}`` (typed values) or ``["epochs=3", ...]`` (command-line
        text, parsed by the field's type).

    Raises:
      ConfigError: no such record, a record that does not load (its error is named), or a bad
        override.
    """
    path = record_path(name_or_path)
    try:
        config = runpy.run_path(str(path))["get_config"]()
    except Exception as err:  # noqa: BLE001 - any failure of a record file is a config error
        raise ConfigError(f"record file {path} does not load: {type(err).__name__}: {err} — fix the "
                          "file (it must define get_config())") from err
    items = overrides.items() if isinstance(overrides, Mapping) else (_split(o) for o in overrides)
    for key, value in items:
        override(config, key, value)
    return config


def _split(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep:
        raise ConfigError(f"override {text!r} has no value — write KEY=VALUE, e.g. epochs=3")
    return key, value


def keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    """Every leaf key of ``config`` in dotted form (``["epochs", "model.width_mult", ...]``)."""
    out = []
    for k, v in config.items():
        out += keys(v, f"{prefix}{k}.") if isinstance(v, ml_collections.ConfigDict) else [f"{prefix}{k}"]
    return out


def get(config: ml_collections.ConfigDict, key: str) -> Any:
    """The value of the dotted leaf ``key`` of ``config`` (``get(c, "model.width_mult")``).

    Raises:
      KeyError: no such key.
    """
    node = config
    for part in key.split("."):
        node = node[part]
    return node


def override(config: ml_collections.ConfigDict, key: str, value: Any) -> None:
    """Set the leaf ``key`` (dotted) of ``config`` to ``value``, in place.

    A string ``value`` is read as the command line gives it: by the field's type — ``"3"`` for an
    int, ``"true"``/``"False"`` for a bool, ``"0,0.4,0"`` or ``"[0, 0.4, 0]"`` for a list or tuple,
    any text for a str, a Python literal for a placeholder without a value. Ints are accepted for
    floats; any other mismatch is an error.

    Raises:
      ConfigError: unknown key (the nearest known keys are named) or a value of the wrong type.
    """
    parent, _, leaf = key.rpartition(".")
    node = config
    for part in parent.split(".") if parent else []:
        node = node.get(part) if isinstance(node, ml_collections.ConfigDict) else None
    if not isinstance(node, ml_collections.ConfigDict) or leaf not in node or isinstance(node[leaf], ml_collections.ConfigDict):
        near = difflib.get_close_matches(key, keys(config), n=3)
        raise ConfigError(f"unknown config key {key!r} of record {config.get('name')!r}"
                          + (f" — did you mean {', '.join(near)}?" if near else
                             " — list the keys with --list_keys"))
    current = node[leaf]
    try:
        node[leaf] = _parse(value, current, node.get_type(leaf)) if isinstance(value, str) else value
    except (TypeError, ValueError, SyntaxError) as err:
        raise ConfigError(f"config key {key!r}: {value!r} is not a {type(current).__name__} "
                          f"(now {current!r}) — {err}") from err


def _parse(text: str, current: Any, field_type: type) -> Any:
    if current is None and field_type is str:  # a placeholder(str), e.g. data.path
        return text
    if isinstance(current, bool):
        if text.lower() not in ("true", "false", "1", "0"):
            raise ValueError("write true or false")
        return text.lower() in ("true", "1")
    if isinstance(current, str):
        return text
    if isinstance(current, (list, tuple)):
        body = text.strip()
        value = ast.literal_eval(body if body[:1] in "[(" else f"[{body}]")
        if not isinstance(value, (list, tuple)):
            raise ValueError("write a comma-separated list")
        if current and isinstance(current[0], float):
            value = [float(v) for v in value]
        return type(current)(value)
    if isinstance(current, int):
        return int(text)
    if isinstance(current, float):
        return float(text)
    return ast.literal_eval(text)  # a placeholder (None) or another literal


@dataclasses.dataclass(frozen=True)
class Derived:
    """What a config and its data imply, computed once (:func:`derived`).

    Attributes:
      n_train: training images (real rows; padding for the device count excluded).
      batch_size: global examples per step.
      num_devices: devices of the data-parallel mesh.
      batch_per_device: ``batch_size / num_devices``.
      steps_per_epoch: ``n_train // batch_size`` (the last partial batch is dropped).
      total_steps: optimizer steps of the run (:func:`total_train_steps`).
    """

    n_train: int
    batch_size: int
    num_devices: int
    batch_per_device: int
    steps_per_epoch: int
    total_steps: int


def total_train_steps(epochs: int, steps_per_epoch: int, last_epoch_fraction: float = 1.0) -> int:
    """Optimizer steps of a run of ``epochs`` epochs whose last epoch runs only
    ``last_epoch_fraction`` of its batches (airbench94: ``ceil(9.9 · steps_per_epoch)`` for
    ``epochs=10, last_epoch_fraction=0.9``).

    Raises:
      ConfigError: ``last_epoch_fraction`` outside (0, 1].
    """
    if not 0.0 < last_epoch_fraction <= 1.0:
        raise ConfigError(f"last_epoch_fraction must be in (0, 1]; got {last_epoch_fraction} "
                          "(use config.epochs for whole epochs)")
    # round first: 0.7·10 is 7.000000000000001 in floating point, which must not become 8 steps
    return (epochs - 1) * steps_per_epoch + math.ceil(round(last_epoch_fraction * steps_per_epoch, 9))


def derived(config: ml_collections.ConfigDict, n_train: int, num_devices: int = 1) -> Derived:
    """Validate ``config`` against the data size and device count and derive the step counts.

    Raises:
      ConfigError: non-positive epochs or batch size, a batch larger than the training set, a bad
        ``last_epoch_fraction``, an unknown precision, or a batch / eval batch that the devices (or,
        per device, the ghost batch size) do not divide.
    """
    from speedrun.system import parallel, precision  # noqa: PLC0415 (jax-free import of this module)

    if config.epochs <= 0 or config.batch_size <= 0:
        raise ConfigError(f"epochs ({config.epochs}) and batch_size ({config.batch_size}) must be positive")
    steps = n_train // config.batch_size
    if steps == 0:
        raise ConfigError(f"batch_size={config.batch_size} exceeds the {n_train} training images (the last "
                          "partial batch is dropped, so no step would run) — lower --config.batch_size")
    try:
        precision.resolve(config.precision)
        b_local = parallel.per_device_batch(config.batch_size, num_devices, config.model.get("ghost_batch_size"))
        parallel.per_device_batch(config.eval_batch_size, num_devices, name="eval_batch_size")
    except ValueError as err:
        raise ConfigError(str(err)) from err
    total = total_train_steps(config.epochs, steps, config.get("last_epoch_fraction", 1.0))
    return Derived(n_train=int(n_train), batch_size=int(config.batch_size), num_devices=int(num_devices),
                   batch_per_device=b_local, steps_per_epoch=steps, total_steps=total)


#: The one shrink recipe (tests, notebooks, CI): small width, few epochs, float32, small batches.
SMOKE = {"model.width_mult": 0.125, "epochs": 2, "batch_size": 256, "eval_batch_size": 256,
         "precision": "float32"}


def smoke(config: ml_collections.ConfigDict, n_train: int | None = None, whitening_images: int | None = None,
          **changes: Any) -> ml_collections.ConfigDict:
    """A copy of ``config`` shrunk for a run of seconds to minutes on a CPU.

    Applies :data:`SMOKE`, then ``changes`` (keys with ``__`` for dots: ``model__width_mult=0.0625``),
    and keeps the record runnable at that size: a whole last epoch (``last_epoch_fraction`` 1) and a
    ghost batch size that divides the batch (unless ``changes`` set them). ``whitening_images``: at
    most that many images for the whitening filters. ``n_train``: the training images the smoke run
    will see; given, a record whose lr schedule has a ``warmup_fraction`` gets at least one warmup
    step (airbench94's 0.23 of 2 steps would be none, which its schedule rejects). The record's
    arithmetic (schedules in epochs, batch-size rules) is its own.

    Raises:
      ConfigError: an unknown key in ``changes``.
    """
    c = copy.deepcopy(config)
    changes = {k.replace("__", "."): v for k, v in changes.items()}
    for key, value in {**SMOKE, **changes}.items():
        override(c, key, value)
    if "last_epoch_fraction" in c and "last_epoch_fraction" not in changes:
        c.last_epoch_fraction = 1.0
    ghost = c.model.get("ghost_batch_size")
    if ghost and c.batch_size % ghost and "model.ghost_batch_size" not in changes:
        c.model.ghost_batch_size = math.gcd(ghost, c.batch_size)
    if whitening_images is not None and c.whitening.num_images:
        c.whitening.num_images = min(c.whitening.num_images, whitening_images)
    if n_train is not None and "warmup_fraction" in c.optimizer:
        total = total_train_steps(c.epochs, n_train // c.batch_size, c.get("last_epoch_fraction", 1.0))
        if int(c.optimizer.warmup_fraction * total) < 1:
            c.optimizer.warmup_fraction = 0.5
    return c
