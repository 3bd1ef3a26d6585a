"""The training state: one pytree of everything that changes during training, and its init; the
run's health record, updated on the device every step and checked on the host once per epoch."""

from __future__ import annotations

import math
from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import optax

from speedrun.models import whitening
from speedrun.system import precision


@flax.struct.dataclass
class TrainState:
    """Everything that changes during training, as one pytree.

    Attributes:
      step: int32 scalar, optimizer steps taken.
      params: model params (float32).
      batch_stats: BN running statistics (float32).
      opt_state: optax state.
      ema: ``{"params", "batch_stats"}``: the average that is evaluated — Page's EMA or airbench's
        lookahead average (written back into ``params``/``batch_stats`` on its update steps);
        ``None`` when the record averages nothing (:func:`speedrun.train.step.averaging`), and then
        the net itself is evaluated (:func:`evaluated`).
      loss_scale: ``flax.training.dynamic_scale.DynamicScale`` (float32 ``scale``, int32
        ``fin_steps``) under the float16 policy, else ``None`` (:mod:`speedrun.system.precision`).
      run_key: PRNG key fixed for the whole run (drawn from the init key), for random choices made
        once per run, such as airbench's fixed half of flipped images
        (:func:`speedrun.data.augment.fixed_flip_mask`); ``None`` when built without one.
      health: the divergence record (:func:`init_health`, :func:`update_health`); ``None``: not
        tracked.
      proxy: the data-selection proxy's :class:`speedrun.train.select.ProxyState` when the record
        selects (``config.select``, :mod:`speedrun.train.selection`); else ``None``.
    """

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    ema: Any
    loss_scale: Any = None
    run_key: Any = None
    health: Any = None
    proxy: Any = None


#: fold_in constant deriving ``TrainState.run_key`` from the init key
RUN_KEY_FOLD = 2**31 - 2


def evaluated(state: TrainState) -> dict:
    """``{"params", "batch_stats"}`` of the model that is evaluated: the average where the record
    keeps one (``state.ema``), else the net."""
    return state.ema if state.ema is not None else {"params": state.params, "batch_stats": state.batch_stats}


def init_state(model, tx: optax.GradientTransformation, key: jax.Array,
               policy: precision.Policy = precision.POLICIES["float32"], averaged: bool = True) -> TrainState:
    """Initial :class:`TrainState` for ``model`` from PRNG ``key`` (jit-able: the seed is data,
    so a new seed does not recompile). ``policy`` gives the initial loss scale (float16: a
    ``DynamicScale``; otherwise none); params are float32 under every policy; the health record
    is :func:`init_health`; ``averaged``: the average starts as a copy of the net, else ``ema`` is
    ``None`` (:func:`speedrun.train.step.averages`). The model is initialised on one
    ``(1, 32, 32, 3) float32`` image."""
    variables = model.init(key, jnp.zeros((1, 32, 32, 3), jnp.float32), train=False)
    params, batch_stats = variables["params"], variables.get("batch_stats", {})  # a net may have no BN
    return TrainState(
        step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
        opt_state=tx.init(params),
        # a copy, not an alias: the state is donated to the epoch, and a buffer can't be donated twice
        ema=jax.tree.map(jnp.copy, {"params": params, "batch_stats": batch_stats}) if averaged else None,
        loss_scale=precision.init_loss_scale(policy),
        run_key=jax.random.fold_in(key, RUN_KEY_FOLD),
        health=init_health(),
    )


def constants_fn(config: ml_collections.ConfigDict, normalize) -> Callable[[jax.Array], dict]:
    """``x_u8 (n, 32, 32, 3) uint8 -> {"whiten_kernel": (k, k, 3, k*k*3) float32}``: the model's
    ``constants`` collection, whitening filters from the first ``config.whitening.num_images``
    training images (:func:`speedrun.models.whitening.whitening_kernel`); ``num_images = 0`` means a
    net without whitening and gives ``{}``."""
    if config.whitening.num_images == 0:
        return lambda x: {}
    k, w = config.model.whiten_patch_size, config.whitening
    ddof, method = w.get("ddof", 1), w.get("method", "eigh")  # airbench: divides by N (ddof 0)
    return lambda x: {"whiten_kernel": whitening.whitening_kernel(normalize(x), k, w.eps, ddof=ddof, method=method)}


# ------------------------------------------------------------------ divergence (the health record)

class DivergenceError(FloatingPointError):
    """A run that diverged (:func:`check_health`); one line naming the epoch, the step, the loss,
    the last finite loss and the fix."""


#: a loss above this multiple of the run's first step's loss is divergence. At init a 10-class
#: classifier's loss is about ln 10 ≈ 2.30 nats, so the bound is about 230 nats — a mean probability
#: of the true class below e^-230, from which no run recovers, while a normal run's loss stays near
#: or below its start: the bound is far from every normal run and catches a blow-up before it
#: overflows.
LOSS_GROWTH_BOUND = 100.0
#: float16: an epoch that skips more than this share of its steps (non-finite gradients under the
#: dynamic loss scale) has diverged ...
MAX_SKIPPED_SHARE = 0.5
#: ... provided it skips more than log2(2^16) = 16 steps: the halvings that take the initial loss
#: scale 2^16 (:data:`speedrun.system.precision.LOSS_SCALE_INIT`) down to 1 are the scale's own
#: search, not divergence, even in an epoch of few steps.
MIN_SKIPPED = 16


def init_health() -> dict[str, jax.Array]:
    """The health record of a run before its first step: ``first_loss`` (float32, the loss of the
    run's first applied step, NaN until then), ``last_loss`` (float32, the loss of the last applied
    step before the first bad one, NaN until then), ``bad_step`` (int32, ``TrainState.step`` at the
    first bad step, -1: none) and ``bad_loss`` (float32, that step's loss, NaN: none); scalars."""
    nan = lambda: jnp.full((), jnp.nan, jnp.float32)  # noqa: E731  (separate buffers: the state is donated)
    return {"first_loss": nan(), "last_loss": nan(), "bad_step": jnp.full((), -1, jnp.int32),
            "bad_loss": nan()}


def update_health(health: dict[str, jax.Array], loss: jax.Array, step: jax.Array,
                  applied: jax.Array) -> dict[str, jax.Array]:
    """The health record after one step, with jnp ops only (no host sync; inside the scanned epoch).

    Args:
      health: :func:`init_health`'s record.
      loss: float32 scalar, the step's mean training loss (nats).
      step: int32 scalar, ``TrainState.step`` before the step.
      applied: bool scalar; False for a step skipped by the float16 loss scale, which is not
        checked (the skipped share is: :func:`check_health`).

    A step is bad when applied and its loss is not finite or exceeds :data:`LOSS_GROWTH_BOUND` times
    ``first_loss``; the first bad step is kept, and ``last_loss`` stops there.
    """
    first = jnp.where(jnp.isnan(health["first_loss"]) & applied, loss, health["first_loss"])
    bad = applied & ~(jnp.isfinite(loss) & (loss <= LOSS_GROWTH_BOUND * first))
    clean = health["bad_step"] < 0
    return {"first_loss": first,
            "last_loss": jnp.where(clean & applied & ~bad, loss, health["last_loss"]),
            "bad_step": jnp.where(clean & bad, step, health["bad_step"]),
            "bad_loss": jnp.where(clean & bad, loss, health["bad_loss"])}


def divergence_fix(policy: str) -> str:
    """The fix a :class:`DivergenceError` suggests under the precision ``policy`` (its name)."""
    lr = "lower the learning rate (config.optimizer)"
    return {"float16": f"use --config.precision=bfloat16 (or float32), or {lr}",
            "bfloat16": f"{lr}, or use --config.precision=float32"}.get(policy, lr)


def check_health(epoch: int, health: dict | None, mean_loss: float, skipped: float | None,
                 steps: int, policy: str) -> None:
    """Raise :class:`DivergenceError` if the run diverged by the end of 1-based ``epoch``.

    Args:
      epoch: 1-based epoch just trained.
      health: host values of :func:`init_health`'s record at the epoch's end plus ``step`` (the
        ``TrainState.step`` then), or ``None`` (not tracked: only ``mean_loss`` is checked).
      mean_loss: the epoch's mean training loss (nats).
      skipped: float16: the epoch's steps skipped by the loss scale; else ``None``.
      steps: the epoch's steps.
      policy: the precision policy's name, for the fix (:func:`divergence_fix`).

    Raises:
      DivergenceError: a bad step (:func:`update_health`); more than :data:`MAX_SKIPPED_SHARE` of
        ``steps`` and more than :data:`MIN_SKIPPED` steps skipped; a non-finite ``mean_loss``.
    """
    fix, h = divergence_fix(policy), health or {}
    last = f"last finite loss {h['last_loss']:.4g}" if math.isfinite(h.get("last_loss", math.nan)) else \
        "no finite loss before it"
    if h and h["bad_step"] >= 0:
        loss, first = h["bad_loss"], h["first_loss"]
        why = "not finite" if not math.isfinite(loss) else f"> {LOSS_GROWTH_BOUND:g} × the first step's {first:.4g}"
        raise DivergenceError(f"training diverged at epoch {epoch}, step {h['bad_step'] + 1}: loss {loss:.4g} "
                              f"({why}; {last}) — {fix}")
    if skipped is not None and skipped > max(MAX_SKIPPED_SHARE * steps, MIN_SKIPPED):
        at = f", step {h['step']}" if h else ""
        raise DivergenceError(f"training diverged at epoch {epoch}{at}: the float16 loss scale skipped {skipped:.0f} "
                              f"of its {steps} steps (> {MAX_SKIPPED_SHARE:.0%}; {last}) — {fix}")
    if not math.isfinite(mean_loss):
        raise DivergenceError(f"training diverged at epoch {epoch}: mean training loss {mean_loss} ({last}) — {fix}")
