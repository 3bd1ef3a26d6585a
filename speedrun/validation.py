"""Static checks of a record config, before any data is read or anything compiled
(:func:`validate`; :func:`speedrun.config.derived` calls it first). Every failure is a
:class:`speedrun.errors.ConfigError` naming the key and a fix that can be pasted."""

from __future__ import annotations

import difflib
import math
from typing import Any, Mapping

import ml_collections

from speedrun.errors import ConfigError


#: Range checks of :func:`validate`: (key, low, high, "[)" bounds included or not, an example value).
_RANGES = (
    ("last_epoch_fraction", 0.0, 1.0, "(]", 1.0),
    ("label_smoothing", 0.0, 1.0, "[)", 0.2),
    ("optimizer.momentum", 0.0, 1.0, "[)", 0.9),
    ("optimizer.warmup_fraction", 0.0, 1.0, "()", 0.23),
    ("optimizer.decay_factor", 0.0, 1.0, "(]", 0.1),
    ("optimizer.warmup_epochs", 0.0, math.inf, "[)", 0),
    ("checkpoint_every", 0, math.inf, "[)", 0),  # a run option (RUN_OPTIONS): 0 = only at the end
)


def _fail(key: str, value: Any, fix: str) -> ConfigError:
    return ConfigError(f"config key {key!r} is {value!r}: {fix}")


def validate(config: ml_collections.ConfigDict, num_devices: int | None = None, *, own_model: bool = False) -> None:
    """Check a record config before any data is read or anything compiled.

    Static checks (no JAX needed up to the names): ``epochs``, ``batch_size`` and
    ``eval_batch_size`` positive integers; ``last_epoch_fraction`` in (0, 1]; ``model.width_mult``
    and every ``model.widths`` entry positive; ``model.ghost_batch_size`` (when set) positive and
    dividing ``batch_size``; ``whitening.num_images`` >= 0, and >= 1 for a net with a whitening
    layer (``model.whiten_patch_size`` set, ``model.whiten`` not false, and no ``own_model``: a
    net passed to :func:`speedrun.fit` instead of ``config.model``); ``augment.crop_padding``
    in [0, 32) and ``augment.cutout_size`` in [0, 32] (:func:`_check_augment`); ``tta_level`` one of 0, 1, 2;
    ``label_smoothing``, ``optimizer.momentum``, ``warmup_fraction``, ``decay_factor`` and
    ``warmup_epochs`` in their ranges (:data:`_RANGES`); ``optimizer.lr_knots`` and
    ``optimizer.lr_values`` of equal length >= 2 with strictly increasing knots;
    ``optimizer.boundaries`` positive and increasing; a known ``model.name`` (:data:`speedrun.models.MODELS`), ``optimizer.name``
    (:data:`speedrun.optim.OPTIMIZERS`) and ``precision`` (:data:`speedrun.system.precision.POLICIES`,
    or ``backend=name`` pairs). Fields a config does not have are not checked.

    Args:
      config: a record config (:func:`load_record`).
      num_devices: the devices of the data-parallel mesh, when known (JAX started): then
        ``batch_size`` and ``eval_batch_size`` must divide over them and the per-device batch by the
        ghost batch size (the rule of :func:`speedrun.system.parallel.per_device_batch`), and a
        per-backend ``precision`` must name the running backend.

    Raises:
      ConfigError: the first failed check; the message names the key, its value and the fix.
    """
    from speedrun.config import get  # noqa: PLC0415 (config re-exports this module's validate)

    for key, example in (("epochs", 10), ("batch_size", 512), ("eval_batch_size", 1000)):
        v = config.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise _fail(key, v, f"it must be a positive integer — pass e.g. --config.{key}={example}")
    for key, lo, hi, closed, example in _RANGES:
        try:
            v = get(config, key)
        except KeyError:
            continue
        if v is None:
            continue
        above = lo <= v if closed[0] == "[" else lo < v
        below = v <= hi if closed[1] == "]" else v < hi
        if not (above and below):
            raise _fail(key, v, f"it must be in {closed[0]}{lo}, {hi}{closed[1]} — pass e.g. --config.{key}={example}")
    model = config.get("model", ml_collections.ConfigDict())
    if "width_mult" in model and not model.width_mult > 0:
        raise _fail("model.width_mult", model.width_mult, "it must be positive — pass "
                    "--config.model.width_mult=0.25 (or 1.0, the record's width)")
    if "widths" in model and (not model.widths or any(isinstance(w, bool) or not isinstance(w, int) or w <= 0
                                                      for w in model.widths)):
        raise _fail("model.widths", model.widths, "every width must be a positive integer — pass e.g. "
                    "--config.model.widths=64,256,256")
    ghost = model.get("ghost_batch_size")
    if ghost is not None:
        if isinstance(ghost, bool) or not isinstance(ghost, int) or ghost <= 0:
            raise _fail("model.ghost_batch_size", ghost, "it must be a positive integer — pass "
                        "--config.model.ghost_batch_size=32 (a divisor of batch_size)")
        if num_devices is None and config.batch_size % ghost:
            lo = config.batch_size // ghost * ghost
            raise ConfigError(
                f"config key 'batch_size' is {config.batch_size}, not a multiple of model.ghost_batch_size="
                f"{ghost} (ghost batch norm normalises groups of {ghost} examples) — pass "
                f"--config.batch_size={lo or ghost} (a multiple of {ghost}) or "
                f"--config.model.ghost_batch_size={math.gcd(ghost, config.batch_size)}")
    if "whitening" in config:
        n, k = config.whitening.get("num_images", 0), model.get("whiten_patch_size")
        if n < 0:
            raise _fail("whitening.num_images", n, "it must be >= 0 (0: no whitening images) — pass "
                        "--config.whitening.num_images=5000")
        if n < 1 and k and model.get("whiten", True) and not own_model:  # a net with a whitening layer needs its filters
            raise _fail("whitening.num_images", n, f"this net's first layer is a frozen {k}x{k} whitening conv "
                        "whose filters come from the patches of that many training images — pass at least 1, "
                        "e.g. --config.whitening.num_images=5000")
    _check_augment(config.get("augment", ml_collections.ConfigDict()))
    if config.get("tta_level", 1) not in (0, 1, 2):
        raise _fail("tta_level", config.tta_level, "it must be 0 (none), 1 (mirror) or 2 (mirror + translate) "
                    "— pass --config.tta_level=2")
    opt = config.get("optimizer", ml_collections.ConfigDict())
    if "lr_knots" in opt or "lr_values" in opt:
        knots, values = list(opt.get("lr_knots", ())), list(opt.get("lr_values", ()))
        page = not knots and "ema_epochs" in opt  # Page's three knots from the run's length
        if len(knots) != len(values) or len(knots) < 2 if not page else len(values) != 3:
            raise ConfigError(
                f"config keys 'optimizer.lr_knots' {knots} and 'optimizer.lr_values' {values} must have the "
                "same length, at least 2 (one lr per knot, in epochs) — pass both, e.g. "
                "--config.optimizer.lr_knots=0,2,8 --config.optimizer.lr_values=0,1,0.1")
        if any(b <= a for a, b in zip(knots, knots[1:])):
            raise _fail("optimizer.lr_knots", knots, "the knots (epochs) must increase strictly — pass e.g. "
                        "--config.optimizer.lr_knots=0,2,8")
    if "boundaries" in opt:
        b = list(opt.boundaries)
        if any(x <= 0 for x in b) or any(y <= x for x, y in zip(b, b[1:])):
            raise _fail("optimizer.boundaries", b, "the lr milestones (iterations) must be positive and "
                        "increasing — pass e.g. --config.optimizer.boundaries=32000,48000")
    # the names: these registries import JAX, so they come last (the checks above stay instant)
    from speedrun import optim  # noqa: PLC0415
    from speedrun.models import MODELS  # noqa: PLC0415
    from speedrun.system import precision  # noqa: PLC0415

    if "name" in model:
        _known("model.name", model.name, MODELS)
    if "name" in opt:
        _known("optimizer.name", opt.name, optim.OPTIMIZERS)
    if "ema_epochs" in opt and not len(opt.get("lr_knots", ())):
        try:
            optim.schedules.page_lr_knots(config.epochs, opt.lr_peak_fraction, opt.ema_epochs)
        except ValueError as err:
            raise ConfigError(f"config key 'optimizer.ema_epochs': {err}") from err
    spec = str(config.precision)
    try:
        if num_devices is not None or "=" not in spec:
            precision.resolve(spec)  # a pair list: the running backend's entry
        else:  # every pair well formed and named (the backend is not known before JAX starts)
            precision.resolve(spec, backend=spec.split(",")[0].partition("=")[0].strip())
    except ValueError as err:
        raise ConfigError(f"config key 'precision': {err} — pass e.g. --config.precision=float32") from err
    if num_devices is not None:  # the rule of speedrun.system.parallel.per_device_batch, with a pasteable fix
        _divides("batch_size", config.batch_size, num_devices, ghost)
        _divides("eval_batch_size", config.eval_batch_size, num_devices, None)
    _check_select(config, num_devices)


#: optimizers whose decay is ``weight_decay · batch_size``: the ones data selection can rescale
#: (:func:`speedrun.train.select.selected_optimizer`)
SELECT_OPTIMIZERS = ("airbench_sgd", "airbench_muon", "hiverge_muon")


def _check_select(config: ml_collections.ConfigDict, num_devices: int | None) -> None:
    """``config.select`` (data selection, docs/selection.md), when enabled: ``keep`` in (0, 1] keeping
    at least one row and, over the devices, the same number on each; ``period`` a positive integer;
    an optimizer of :data:`SELECT_OPTIMIZERS`."""
    sel = config.get("select")
    if sel is None or not sel.get("enabled", False):
        return
    keep, period = sel.get("keep"), sel.get("period")
    kept = int(round(keep * config.batch_size)) if isinstance(keep, (int, float)) else 0
    if not isinstance(keep, (int, float)) or not 0 < keep <= 1 or kept < 1:
        raise _fail("select.keep", keep, f"the kept fraction of each batch of {config.batch_size} must be in (0, 1] "
                    "and keep at least one row — pass e.g. --config.select.keep=0.5")
    if isinstance(period, bool) or not isinstance(period, int) or period < 1:
        raise _fail("select.period", period, "steps per proxy update must be a positive integer — pass e.g. "
                    "--config.select.period=4")
    if num_devices is not None and kept % num_devices:
        raise _fail("select.keep", keep, f"it keeps {kept} rows of each batch, not divisible by the {num_devices} "
                    f"devices — pass a keep whose round(keep · {config.batch_size}) they divide, e.g. "
                    f"--config.select.keep={num_devices * max(1, kept // num_devices) / config.batch_size:g}")
    name = config.get("optimizer", {}).get("name")
    if name not in SELECT_OPTIMIZERS:
        raise _fail("optimizer.name", name, f"data selection rescales the optimizer for the kept rows only for "
                    f"{', '.join(SELECT_OPTIMIZERS)} — use one of them or --config.select.enabled=false")


#: Side of the images, pixels: CIFAR-10's 32 (every model here takes ``(N, 32, 32, 3)``).
IMAGE_SIZE = 32


def _check_augment(aug: ml_collections.ConfigDict) -> None:
    """``crop_padding`` an integer in ``[0, IMAGE_SIZE)``: the random crop shifts an image by up to
    that many pixels each way (:func:`speedrun.data.augment.random_crop`); at the image side or more,
    a crop can be all padding. ``cutout_size`` an integer in ``[0, IMAGE_SIZE]``."""
    for key, hi, example in (("crop_padding", IMAGE_SIZE - 1, 2), ("cutout_size", IMAGE_SIZE, 8)):
        v = aug.get(key)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= hi:
            what = ("the random crop shifts each image by up to this many pixels; from the image side on, a crop "
                    "can be all padding" if key == "crop_padding" else "the cutout square's side, in pixels")
            raise _fail(f"augment.{key}", v, f"it must be an integer from 0 to {hi} on {IMAGE_SIZE}-pixel images "
                        f"({what}) — pass e.g. --config.augment.{key}={example}")


def _known(key: str, value: Any, registry: Mapping[str, Any]) -> None:
    if value not in registry:
        near = difflib.get_close_matches(str(value), list(registry), n=1)
        fix = (f"did you mean --config.{key}={near[0]}?" if near else
               "drop the override to use the record's own, or name one of these")
        raise _fail(key, value, f"no such name (known: {', '.join(sorted(registry))}) — {fix}")


def _divides(name: str, batch: int, num_devices: int, ghost: int | None) -> None:
    """ConfigError unless ``batch`` splits into equal per-device shards that are whole ghost
    batches; the fix names the nearest valid size at or below ``batch``."""
    unit = num_devices * (ghost or 1)
    if batch % unit == 0:
        return
    fit = max(unit, batch // unit * unit)
    if batch % num_devices:
        what = f"{name}={batch} is not divisible by the {num_devices} devices of the 'data' mesh axis"
    else:
        what = (f"{name}={batch} over {num_devices} devices gives {batch // num_devices} examples per device, "
                f"not a multiple of model.ghost_batch_size={ghost} (a ghost batch must not straddle devices)")
    unit_text = f"{num_devices}×{ghost}={unit}" if ghost else f"{unit}"
    raise ConfigError(f"{what} — pass --config.{name}={fit} (a multiple of {unit_text}) or run on fewer devices")
