"""``./run.sh eval DIR``: the test accuracy of a saved model, rebuilt from its saved config alone."""

from __future__ import annotations

import ast
import contextlib
from pathlib import Path
from typing import Any, Iterable

import jax
import jax.numpy as jnp
import ml_collections

from speedrun import config as config_lib
from speedrun.checkpoint.store import open_checkpoint, orbax, restore_items


def _config_of(meta: dict, overrides: Iterable[str]) -> ml_collections.ConfigDict:
    """The saved config with ``KEY=VALUE`` overrides; a key saved as null (a placeholder such as
    ``data.path``: JSON keeps no type) takes a Python literal or else the text."""
    config = ml_collections.ConfigDict(meta["config"])
    for text in overrides:
        key, sep, value = text.partition("=")
        if not sep:
            raise config_lib.ConfigError(f"override {text!r} has no value — write KEY=VALUE, e.g. data.path=sample")
        try:
            null = config_lib.get(config, key) is None
        except (KeyError, AttributeError):
            null = False  # an unknown key: override() names the nearest ones
        if null:
            with contextlib.suppress(ValueError, SyntaxError):
                value = ast.literal_eval(value)
            parent, _, leaf = key.rpartition(".")
            (config_lib.get(config, parent) if parent else config)[leaf] = value
        else:
            config_lib.override(config, key, value)
    return config


def evaluate(directory: str | Path, tta_level: int | None = None, overrides: Iterable[str] = (),
             step: int | None = None) -> dict[str, Any]:
    """Test-set accuracy of the model saved in ``directory`` (default its latest step), rebuilt
    from the saved config alone: the evaluated (EMA / lookahead) variables of the ``model`` item.

    Args:
      directory: a ``--config.checkpoint_dir`` folder (or one of its step folders).
      tta_level: 0, 1 or 2 (:func:`speedrun.evaluate.tta_views`); default the record's (1 if none).
      overrides: ``KEY=VALUE`` changes of the saved config, e.g. ``data.path=sample`` for the test set.
      step: the epochs done of the checkpoint to evaluate; default the latest.

    Returns:
      ``{"checkpoint", "record", "seed", "epochs_done", "epochs", "dataset", "test_images",
      "tta_level", "acc", "tta_acc", "loss"}``: accuracies as fractions, loss in nats (float32 mean
      cross-entropy without TTA).

    Raises:
      speedrun.config.ConfigError: no checkpoint, a bad override or ``tta_level``, arrays that do not
        fit the saved config's model; speedrun.data.DataError: the test set does not load.
    """
    from speedrun import evaluate as eval_lib  # noqa: PLC0415
    from speedrun.data import cifar10  # noqa: PLC0415

    with open_checkpoint(directory, step) as (mngr, step, meta):
        config = _config_of(meta, overrides)
        level = config.get("tta_level", 1) if tta_level is None else int(tta_level)
        if level not in eval_lib.TTA_LEVELS:
            raise config_lib.ConfigError(f"tta_level {level} is not one of {eval_lib.TTA_LEVELS} — pass "
                                         "--tta_level 0, 1 or 2")
        model, normalize, target = _eval_model(config)
        variables = restore_items(mngr, step, model=orbax().args.StandardRestore(target))["model"]
        folder = Path(mngr.directory) / str(step)
    x_train, _, x_test, y_test = cifar10.load_cifar10(config.data.path)
    batches = eval_lib.batch_test_set(x_test, y_test, config.eval_batch_size)
    out = jax.jit(eval_lib.make_evaluate(model.apply, normalize, level))(variables, *batches)
    return {"checkpoint": str(folder), "record": meta["record"], "seed": meta["seed"], "epochs_done": step,
            "epochs": meta["epochs"], "dataset": cifar10.dataset_name(x_train, x_test),
            "test_images": int(len(x_test)), "tta_level": level, "acc": float(out["acc"]),
            "tta_acc": float(out["tta_acc"]), "loss": float(out["loss"])}


def _eval_model(config: ml_collections.ConfigDict):
    """``(model, normalize, target)``: the config's Flax module and normalizer, and the abstract
    ``model`` item (``params``, ``batch_stats``, ``constants``) from ``jax.eval_shape``."""
    from speedrun.data import augment, cifar10  # noqa: PLC0415
    from speedrun.models import get_model  # noqa: PLC0415
    from speedrun.system import precision  # noqa: PLC0415
    from speedrun.train.state import constants_fn  # noqa: PLC0415

    model = get_model(config.model, precision.resolve(config.precision).compute_dtype)
    normalize = augment.normalizer(config.data.get("mean", cifar10.CIFAR10_MEAN),
                                   config.data.get("std", cifar10.CIFAR10_STD))
    shapes = jax.eval_shape(lambda k: model.init(k, jnp.zeros((1, 32, 32, 3), jnp.float32), train=False),
                            jax.random.key(0))
    whiten = jax.ShapeDtypeStruct((max(config.whitening.num_images, 1), 32, 32, 3), jnp.uint8)
    return model, normalize, {"params": shapes["params"], "batch_stats": shapes.get("batch_stats", {}),
                              "constants": jax.eval_shape(constants_fn(config, normalize), whiten)}
