"""The Python API: train a record and evaluate a trained model, with no command line and no files.

    import speedrun
    config = speedrun.load_record("airbench94_muon", {"epochs": 2})
    result = speedrun.fit(config, data="sample")          # or data=(x_train, y_train, x_test, y_test)
    result.metrics["tta_acc"], result.history[-1]["train_loss"], result.metrics["train_time_s"]
    logits = speedrun.predict(result, x_test)              # any (N, 32, 32, 3) uint8 images

Like airbench's ``train94()`` / ``evaluate(net, loader, tta_level)``. The names are ``fit`` and
``predict`` because ``speedrun.train`` and ``speedrun.evaluate`` are the modules that do the work.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, Mapping

import jax
import ml_collections
import numpy as np

from speedrun import config as config_lib
from speedrun import evaluate as eval_lib
from speedrun.data import augment, cifar10
from speedrun.models import get_model
from speedrun.system import precision


@dataclasses.dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes:
      config: the config that ran.
      variables: the evaluated model (EMA or lookahead average where the record uses one):
        ``{"params", "batch_stats", "constants"}`` numpy pytrees, float32.
      history: one dict per epoch (epoch, train_loss, train_acc, test_acc, elapsed_s, ...).
      metrics: the run's result dict (acc, tta_acc, train_time_s, compile_time_s, images_per_s, ...;
        README, "What a run prints"), without ``history``.
      model: the Flax module when :func:`fit` was given one (else ``None``: ``config.model``'s).
    """

    config: ml_collections.ConfigDict
    variables: dict
    history: list[dict[str, Any]]
    metrics: dict[str, Any]
    model: Any = None


def fit(config: ml_collections.ConfigDict | str, data: Any = None, seed: int | None = None,
        overrides: Mapping[str, Any] | None = None, workdir: str | None = None, model=None,
        progress: bool | None = False) -> FitResult:
    """Train a record once and return the trained variables, per-epoch metrics and timing.

    Args:
      config: a config (:func:`speedrun.config.load_record`) or a record name / file.
      data: ``(x_train, y_train, x_test, y_test)`` arrays (images ``(N, 32, 32, 3) uint8``, labels
        ``(N,) int``), or a ``config.data.path`` value (``"sample"``, a folder, ...); default the
        config's own.
      seed: default ``config.seed``.
      overrides: ``{"model.width_mult": 0.25, ...}`` applied to a copy of the config.
      workdir: folder for a log file (default: none is written, nothing is printed).
      model: your own Flax module, trained by the record's loop instead of ``config.model``'s
        (:class:`speedrun.train.Experiment`); :func:`predict` then needs ``(variables, config,
        model)``.
      progress: a tqdm bar on stderr, advanced once per epoch (:mod:`speedrun.measure.progress`;
        ``None``: when stderr is a terminal, else off).

    Raises:
      speedrun.config.ConfigError, speedrun.data.DataError, FloatingPointError: as the CLI's.
    """
    from speedrun.measure import runlog  # noqa: PLC0415
    from speedrun.train.experiment import Experiment  # noqa: PLC0415

    config = config_lib.load_record(config) if isinstance(config, str) else copy.deepcopy(config)
    for key, value in (overrides or {}).items():
        config_lib.override(config, key, value)
    if isinstance(data, (tuple, list)):
        arrays = tuple(np.asarray(a) for a in data)
    else:
        arrays = cifar10.load_cifar10(data if data is not None else config.data.path)
    exp = Experiment(config, arrays, model=model)
    log = runlog.RunLog(workdir, config.name) if workdir is not None else None
    seed = config.seed if seed is None else seed
    from speedrun.measure import progress as progress_lib  # noqa: PLC0415

    with progress_lib.for_experiment(exp, f"{config.name} seed {seed}", progress_lib.enabled(progress)) as bar:
        r = exp.run(seed, bar.through(log), on_row=bar)
    variables = jax.device_get(exp.eval_variables(exp.last_state, exp.last_constants))
    return FitResult(config, variables, r.pop("history"), r, model)


def predict(model: FitResult | tuple, images: np.ndarray,
            tta_level: int | None = None, batch_size: int = 1000) -> np.ndarray:
    """``(N, 10)`` float32 logits of a trained model on ``images (N, 32, 32, 3) uint8``.

    Args:
      model: a :class:`FitResult`, or ``(variables, config)`` or ``(variables, config, flax_module)``.
      images: uint8 images, any ``N >= 1``.
      tta_level: 0 none, 1 mirror, 2 mirror + translate (:func:`speedrun.evaluate.tta_views`);
        default the record's ``tta_level`` (1 when it has none).
      batch_size: images per forward pass.

    Raises:
      ValueError: images not ``(N, 32, 32, 3) uint8``; unknown ``tta_level``.
    """
    variables, config, net = ((model.variables, model.config, model.model) if isinstance(model, FitResult)
                              else (tuple(model) + (None,))[:3])
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1:] != (32, 32, 3) or images.dtype != np.uint8:
        raise ValueError(f"predict needs (N, 32, 32, 3) uint8 images, got {images.shape} {images.dtype}")
    level = config.get("tta_level", 1) if tta_level is None else tta_level
    if net is None:
        net = get_model(config.model, precision.resolve(config.precision).compute_dtype)
    normalize = augment.normalizer(config.data.get("mean", cifar10.CIFAR10_MEAN),
                                   config.data.get("std", cifar10.CIFAR10_STD))
    fn = jax.jit(lambda v, x: eval_lib.tta_logits(net.apply, v, normalize(x), level))
    n = len(images)
    padded = np.concatenate([images, np.zeros((-n % batch_size,) + images.shape[1:], np.uint8)])  # one shape
    return np.concatenate([np.asarray(fn(variables, padded[i:i + batch_size]))
                           for i in range(0, len(padded), batch_size)])[:n]
