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

from speedrun.errors import ConfigError  # noqa: F401 (re-exported: speedrun.config.ConfigError)
from speedrun.record_files import record_path  # noqa: F401 (re-exported: the record lookup)
from speedrun.record_files import records_dir

#: Folder of the pinned records, from a checkout or an install (:mod:`speedrun.record_files`).
RECORDS_DIR = records_dir()


#: Run options every record accepts without defining them: ``key: (type, default)``, added by
#: :func:`load_record` where the record does not set the key (README, "Checkpoints"):
#: ``checkpoint_dir`` — folder of the run's orbax checkpoints (:mod:`speedrun.checkpoint`), ``None``:
#: none are saved; ``checkpoint_every`` — also save every K epochs (0: only at the end of training).
RUN_OPTIONS = {"checkpoint_dir": (str, None), "checkpoint_every": (int, 0)}


def load_record(name_or_path: str | Path, overrides: Mapping[str, Any] | Iterable[str] = ()
                ) -> ml_collections.ConfigDict:
    """The config of a record, with the :data:`RUN_OPTIONS` it does not define and overrides applied
    (:func:`override`).

    Args:
      name_or_path: a record name (``"94pct_26s"``, found by :func:`speedrun.record_files.record_path`
        in a checkout or an install) or the path of your own record file.
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
    for key, (kind, default) in RUN_OPTIONS.items():
        if key not in config:
            config[key] = ml_collections.config_dict.placeholder(kind) if default is None else default
    items = overrides.items() if isinstance(overrides, Mapping) else (split_override(o) for o in overrides)
    for key, value in items:
        override(config, key, value)
    return config


def split_override(text: str) -> tuple[str, str]:
    """``"KEY=VALUE" -> ("KEY", "VALUE")`` (text as the command line gives it).

    Raises:
      ConfigError: no ``=``.
    """
    key, sep, value = text.partition("=")
    if not sep:
        raise ConfigError(f"override {text!r} has no value — give it one: --config.{key}=VALUE on the command "
                          f"line, {key}=VALUE in a list of overrides (e.g. --config.epochs=3)")
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
                          + (f" — did you mean {' or '.join(f'--config.{k}' for k in near)}?" if near else
                             " — list the keys: the same command without this override and with --list_keys"))
    current = node[leaf]
    try:
        node[leaf] = _parse(value, current, node.get_type(leaf)) if isinstance(value, str) else value
    except (TypeError, ValueError, SyntaxError) as err:
        kind = type(current).__name__ if current is not None else getattr(node.get_type(leaf), "__name__", "literal")
        if isinstance(current, (list, tuple)):
            kind = f"comma-separated list{f' ({err})' if str(err) else ''}"
        example = _cli_text(current)
        fix = f"pass e.g. --config.{key}={example}" if example else f"pass {_an(kind)} {kind}"
        raise ConfigError(f"config key {key!r}: {value!r} is not {_an(kind)} {kind} (now {current!r}) — {fix}") from err


def _an(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def _cli_text(value: Any) -> str:
    """``value`` as ``--config.KEY=`` text that :func:`override` reads back ("" for None or ``[]``)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return "" if value is None else str(value)


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
        return type(current)(_parse_list(text, current))
    if isinstance(current, int):
        return int(text)
    if isinstance(current, float):
        return float(text)
    return ast.literal_eval(text)  # a placeholder (None) or another literal


def _parse_list(text: str, current: list | tuple) -> list:
    """The elements of ``"0,0.4,0"`` or ``"[0, 0.4, 0]"``, each checked like a scalar against the
    type of ``current``'s elements (ints for ints, numbers as floats for floats, strings for
    strings); an empty or mixed ``current`` takes any literals.

    Raises:
      ValueError: not a list of literals (empty message), or an element of the wrong type (named).
    """
    kinds = {type(v) for v in current}
    kind = kinds.pop() if len(kinds) == 1 else None
    body = text.strip()
    try:
        value = ast.literal_eval(body if body[:1] in "[(" else f"[{body}]")
    except (ValueError, SyntaxError):
        raise ValueError("") from None
    if not isinstance(value, (list, tuple)):
        raise ValueError("")
    out = []
    for v in value:
        if kind is float and isinstance(v, (int, float)) and not isinstance(v, bool):
            v = float(v)
        elif kind is not None and type(v) is not kind:
            raise ValueError(f"element {v!r} is not {_an(kind.__name__)} {kind.__name__}")
        out.append(v)
    return out


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


def derived(config: ml_collections.ConfigDict, n_train: int, num_devices: int = 1, *, own_model=False) -> Derived:
    """Validate ``config`` (:func:`validate`, with the device count) and against the data size, and
    derive the step counts; ``own_model``: the net is not ``config.model``.

    Raises:
      ConfigError: any check of :func:`validate` (non-positive sizes, an unknown precision, a batch /
        eval batch that the devices, or per device the ghost batch size, do not divide, ...) or a batch
        larger than the training set.
    """
    from speedrun.system import parallel  # noqa: PLC0415 (jax-free import of this module)

    validate(config, num_devices, own_model=own_model)
    steps = n_train // config.batch_size
    if steps == 0:
        unit = num_devices * (config.model.get("ghost_batch_size") or 1)  # what a valid batch is a multiple of
        fit = max(unit, min(n_train, 512) // unit * unit)
        raise ConfigError(f"config key 'batch_size' is {config.batch_size}, more than the {n_train} training "
                          "images (the last partial batch is dropped, so no step would run) — pass "
                          f"--config.batch_size={fit}")
    b_local = parallel.per_device_batch(config.batch_size, num_devices, config.model.get("ghost_batch_size"))
    total = total_train_steps(config.epochs, steps, config.get("last_epoch_fraction", 1.0))
    return Derived(n_train=int(n_train), batch_size=int(config.batch_size), num_devices=int(num_devices),
                   batch_per_device=b_local, steps_per_epoch=steps, total_steps=total)


#: The one shrink recipe (tests, notebooks, CI): small width, few epochs, small batches. The
#: precision stays the record's policy for the backend (float32 on CPUs).
SMOKE = {"model.width_mult": 0.125, "epochs": 2, "batch_size": 256, "eval_batch_size": 256}


def smoke(config: ml_collections.ConfigDict, n_train: int | None = None, whitening_images: int | None = None,
          **changes: Any) -> ml_collections.ConfigDict:
    """A copy of ``config`` shrunk for a run of seconds to minutes on a CPU.

    Applies :data:`SMOKE`, then ``changes`` (keys with ``__`` for dots: ``model__width_mult=0.0625``),
    and keeps the record runnable at that size: a whole last epoch (``last_epoch_fraction`` 1) and a
    ghost batch size that divides the batch (unless ``changes`` set them). ``whitening_images``: at
    most that many images for the whitening filters. ``n_train``: the training images the smoke run
    will see; given, a record whose lr schedule has a ``warmup_fraction`` gets at least one warmup
    step (airbench94's 0.23 of 2 steps would be none, which its schedule rejects); a run too short for
    Page's flat ``optimizer.ema_epochs`` (94pct_26s at 2 epochs) has none; a resolution curriculum keeps
    one size per epoch (E1 at 2: 24, 32), ``optimizer.decay_epochs`` its share of the run. The record's
    arithmetic (schedules in epochs, batch-size rules) is its own.

    Raises:
      ConfigError: an unknown key in ``changes``.
    """
    c = copy.deepcopy(config)
    run_epochs = c.epochs - 1 + c.get("last_epoch_fraction", 1.0)
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
    o = c.optimizer
    if c.get("resolution") is not None and len(c.resolution) != c.epochs and "resolution" not in changes:
        sizes = c.resolution  # a curriculum keeps its first and last sizes, evenly picked between
        c.resolution = tuple(sizes[round(i * (len(sizes) - 1) / max(c.epochs - 1, 1))] for i in range(c.epochs))
    if o.get("decay_epochs") is not None and "optimizer.decay_epochs" not in changes:  # E1: its share of the run
        o.decay_epochs = o.decay_epochs * (c.epochs - 1 + c.get("last_epoch_fraction", 1.0)) / run_epochs
    if "ema_epochs" in o and "optimizer.ema_epochs" not in changes and c.epochs - o.ema_epochs <= o.lr_peak_fraction * c.epochs:
        o.ema_epochs = 0.0
    if n_train is not None and "warmup_fraction" in c.optimizer:
        total = total_train_steps(c.epochs, n_train // c.batch_size, c.get("last_epoch_fraction", 1.0))
        if int(c.optimizer.warmup_fraction * total) < 1:
            c.optimizer.warmup_fraction = 0.5
    return c


from speedrun.validation import validate  # noqa: E402,F401 (re-exported; it uses this module's helpers)
