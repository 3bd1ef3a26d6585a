"""Which config keys a compiled epoch can take as traced inputs, and the config view that carries them.

A hyperparameter is *traced* when the compiled epoch takes it as a float32 scalar argument instead of
baking it in as a constant, so that a sweep over it reuses one executable (issue 12, "Compile once").
A key is traced only if it is in :data:`TRACED_KEYS` and is a float leaf of the config; every other
key is *static*: a change recompiles. Why the others are static:

- shapes: ``model.width_mult``, ``model.widths``, ``model.depth``, ``batch_size``,
  ``eval_batch_size``, ``model.ghost_batch_size``, ``model.whiten_patch_size``,
  ``whitening.num_images``, ``augment.crop_padding``, ``augment.cutout_size``, ``tta_level``;
- step counts and Python control flow: ``epochs``, ``last_epoch_fraction``,
  ``optimizer.warmup_fraction``, ``optimizer.warmup_epochs``, ``optimizer.whiten_bias_epochs``
  (rounded to integer steps), ``optimizer.boundaries``, ``ema.every``, ``lookahead.every``,
  ``lookahead.start_epoch`` (integer moduli), every bool (``ema.enabled``, ``augment.flip``, ...),
  string and ``precision``;
- ``optimizer.decay_factor``: ``optax.piecewise_constant_schedule`` checks its scales in Python;
- lists and tuples (``optimizer.lr_knots``/``lr_values``, ``optimizer.ns_coeffs``, ``data.mean``):
  not float leaves;
- the model's constants (``model.bn_momentum``, ``bn_eps``, ``celu_alpha``, ``logit_scale``) and
  ``whitening.eps``: they are fixed when the Flax module (evaluation included) and the whitening
  program are built, outside the epoch.

There are no augmentation probabilities among the records' keys (the random flip's 1/2 is fixed).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import ml_collections
import numpy as np

#: Keys whose float values the epoch can take traced: where each one is used.
TRACED_KEYS = {
    "label_smoothing": "the loss (speedrun.train.step.cross_entropy)",
    "optimizer.lr": "airbench_sgd's and he_sgd's learning rate",
    "optimizer.weight_decay": "every optimizer's coupled decay",
    "optimizer.momentum": "the SGD momentum (airbench_sgd: also its lr and decay scaling)",
    "optimizer.bias_lr_mult": "page_sgd's and airbench_sgd's bias lr multiplier",
    "optimizer.bias_wd_mult": "page_sgd's bias decay multiplier",
    "optimizer.lr_start": "airbench's triangle schedule start",
    "optimizer.lr_end": "airbench's triangle schedule end",
    "optimizer.muon_lr": "airbench_muon's filter lr",
    "optimizer.muon_momentum": "airbench_muon's filter momentum",
    "optimizer.bias_lr": "airbench_muon's bias lr",
    "optimizer.head_lr": "airbench_muon's head lr",
    "ema.momentum": "Page's EMA decay per step",
    "lookahead.decay_base": "airbench's lookahead decay base",
    "lookahead.decay_pow": "airbench's lookahead decay power",
}

#: Keys that change the shapes or the structure of the compiled programs (documentation and the
#: runner's grouping; every key outside :func:`traced_keys` recompiles, these and the others).
SHAPE_KEYS = (
    "epochs", "batch_size", "eval_batch_size", "last_epoch_fraction", "tta_level", "precision",
    "scan_unroll", "model.name", "model.width_mult", "model.widths", "model.depth",
    "model.ghost_batch_size", "model.whiten_patch_size", "whitening.num_images",
    "augment.crop_padding", "augment.cutout_size", "augment.flip", "augment.alternating_flip",
    "ema.enabled", "ema.every", "lookahead.enabled", "lookahead.every", "lookahead.start_epoch",
    "optimizer.name", "optimizer.warmup_fraction", "optimizer.warmup_epochs",
    "optimizer.whiten_bias_epochs", "optimizer.boundaries", "optimizer.ns_steps",
)


def _leaf(config: ml_collections.ConfigDict, key: str) -> Any:
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, (ml_collections.ConfigDict, dict)) or part not in node:
            return None
        node = node[part]
    return node


def is_traced(config: ml_collections.ConfigDict, key: str) -> bool:
    """Whether the dotted ``key`` can be traced in ``config``: in :data:`TRACED_KEYS` and a float leaf
    (not a bool, not ``None``)."""
    value = _leaf(config, key)
    return key in TRACED_KEYS and isinstance(value, float) and not isinstance(value, bool)


def traced_keys(config: ml_collections.ConfigDict) -> list[str]:
    """The keys of ``config`` that the compiled epoch can take traced (:func:`is_traced`), sorted."""
    return sorted(k for k in TRACED_KEYS if is_traced(config, k))


def hp_arrays(config: ml_collections.ConfigDict, keys: Sequence[str],
              values: Mapping[str, Any] | None = None) -> dict[str, np.ndarray]:
    """``{key: float32 scalar}`` for ``keys``: ``values[key]`` where given, else the config's value.

    Raises:
      KeyError: a key that is not traceable in ``config`` (:func:`is_traced`).
    """
    values = values or {}
    out = {}
    for k in keys:
        if not is_traced(config, k):
            raise KeyError(f"config key {k!r} is not traced (speedrun.sweep.hparams.TRACED_KEYS)")
        out[k] = np.float32(values.get(k, _leaf(config, k)))
    return out


def substitute(config: ml_collections.ConfigDict, hp: Mapping[str, Any]) -> ml_collections.ConfigDict:
    """A non-type-safe copy of ``config`` whose leaves ``hp``'s keys (dotted) are ``hp``'s values —
    inside a traced function, float32 tracers, which the optimizer builders, the averaging and the
    loss then read like the config's floats. ``config`` is unchanged."""
    view = ml_collections.ConfigDict(config.to_dict(), type_safe=False)
    for key, value in hp.items():
        parent, _, leaf = key.rpartition(".")
        node = view
        for part in parent.split(".") if parent else []:
            node = node[part]
        node[leaf] = value
    return view
