"""``config.select`` wired into a run: the proxy net, its optimizer and state, the main net's
optimizer for the kept rows, and each segment's steps run as :mod:`speedrun.train.select`'s macro
steps inside the compiled epoch (docs/selection.md).

A record selects when ``config.select.enabled``; the block's fields: ``keep`` (fraction of each
batch kept), ``period`` (steps per proxy update), ``model`` (the proxy's fields replacing
``config.model``'s) and, optional, ``optimizer`` (fields replacing ``config.optimizer``'s for the
proxy; empty: the main net's). Source: KellerJordan/cifar10-airbench ``airbench96_faster.py``
(f1c599c).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections

from speedrun import optim
from speedrun.config import Derived
from speedrun.models import get_model
from speedrun.system import parallel
from speedrun.train import select

#: fold_in constant deriving the proxy's init key from the main net's (whose own draws stay as
#: without selection)
PROXY_FOLD = 2**31 - 3


def enabled(config: ml_collections.ConfigDict) -> bool:
    """Whether the record selects (``config.select.enabled``; no ``select`` block: no)."""
    sel = config.get("select")
    return sel is not None and bool(sel.get("enabled", False))


def proxy_optimizer_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """``config.optimizer`` with ``config.select.optimizer``'s fields replacing its own (absent or
    empty: the main net's optimizer, as airbench96_faster's proxy)."""
    c = ml_collections.ConfigDict(config.optimizer.to_dict())
    for name, value in (config.select.get("optimizer") or {}).items():
        c[name] = value
    return c


def run_optimizer(config: ml_collections.ConfigDict, derived: Derived):
    """``(tx, lr_schedule)`` of the main net: :func:`speedrun.train.select.selected_optimizer` for
    the kept rows when the record selects, else :func:`speedrun.optim.make_optimizer`.

    Raises:
      ValueError: from the optimizer builder.
    """
    if not enabled(config):
        return optim.make_optimizer(config.optimizer, derived)
    kept = select.kept_count(derived.batch_size, config.select.keep)
    return select.selected_optimizer(config.optimizer, derived, kept)


class Selection:
    """The proxy of a selecting run: ``model`` (``dtype`` compute), ``tx``, ``kept`` rows per
    device and batch, ``period``; :meth:`init` its state, :meth:`run` a segment's steps.

    Args:
      config: a record config with ``select.enabled``.
      derived: its step counts (:func:`speedrun.config.derived`).
      dtype: the precision policy's compute dtype.
      static_scale: the float16 policy's fixed loss scale, or ``None``.

    Raises:
      ValueError: a keep fraction that keeps no row (:func:`speedrun.train.select.kept_count`), an
        optimizer that cannot be built, a proxy field the model does not have.
    """

    def __init__(self, config: ml_collections.ConfigDict, derived: Derived, dtype: Any,
                 static_scale: float | None = None):
        sel = config.select
        kept = select.kept_count(derived.batch_size, sel.keep)
        self.kept, self.period = kept // derived.num_devices, int(sel.period)
        self.label_smoothing, self.static_scale = config.label_smoothing, static_scale
        self.model = get_model(select.proxy_model_config(config), dtype)
        self.tx, _ = select.selected_optimizer(proxy_optimizer_config(config), derived, kept)

    def init(self, key: jax.Array) -> select.ProxyState:
        """The proxy's initial state from the main net's init ``key`` (``fold_in(key, PROXY_FOLD)``)."""
        return select.init_proxy(self.model, self.tx, jax.random.fold_in(key, PROXY_FOLD))

    def run(self, step: Callable, state, constants, rows: Any, batch: Callable, phase: int,
            unroll: int | bool = 1):
        """Steps of one segment with selection: ``(state, per-step metrics (S, ...))``.

        Args:
          step: the main step ``step(state, constants, x, y, key) -> (state, metrics)``.
          state: the :class:`~speedrun.train.state.TrainState`, its ``proxy`` the proxy's state.
          rows: the segment's per-step inputs, a pytree of ``(S, ...)`` arrays.
          batch: ``batch(one row of rows) -> (x (B_local, H, W, 3), y (B_local,), key)``, this
            device's share of the step's augmented batch and the step's key.
          phase: the segment's first run step modulo ``period`` (static,
            :class:`speedrun.train.plan.Segment`).
          unroll: as :func:`speedrun.train.select.selecting_scan` (``True``: Python loops).
        """
        macro = select.selecting_step(step, self.model, self.tx, self.kept, self.period,
                                      label_smoothing=self.label_smoothing, axis_name=parallel.DATA_AXIS,
                                      static_scale=self.static_scale, unroll=unroll)

        def load(chunk):  # n consecutive steps' batches, stacked (n, ...)
            n = len(jax.tree.leaves(chunk)[0])
            xs, ys, keys = zip(*(batch(jax.tree.map(lambda a: a[j], chunk)) for j in range(n)))
            return jnp.stack(xs), jnp.stack(ys), jnp.stack(keys)

        main, proxy, metrics = select.selecting_scan(macro, self.period, state.replace(proxy=None), state.proxy,
                                                     constants, rows, load, start=phase, unroll=unroll)
        return main.replace(proxy=proxy), metrics


def build(config: ml_collections.ConfigDict, derived: Derived, dtype: Any,
          static_scale: float | None = None) -> Selection | None:
    """:class:`Selection` when the record selects, else ``None``."""
    return Selection(config, derived, dtype, static_scale) if enabled(config) else None


def setup(config: ml_collections.ConfigDict, derived: Derived, dtype: Any) -> tuple:
    """``(tx, lr_schedule, selection)`` of a run: :func:`run_optimizer` and :func:`build` (``None``
    without selection); the proxy without a fixed loss scale (its init needs none)."""
    return (*run_optimizer(config, derived), build(config, derived, dtype))
