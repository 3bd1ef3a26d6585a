"""The training state: one pytree of everything that changes during training, and its init."""

from __future__ import annotations

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
      ema: ``{"params", "batch_stats"}``: the evaluated model — Page's EMA, airbench's lookahead
        average (written back into ``params``/``batch_stats``), or the raw model's copy when the
        record averages nothing (:func:`speedrun.train.step.averaging`).
      loss_scale: ``flax.training.dynamic_scale.DynamicScale`` (float32 ``scale``, int32
        ``fin_steps``) under the float16 policy, else ``None`` (:mod:`speedrun.system.precision`).
      run_key: PRNG key fixed for the whole run (drawn from the init key), for random choices made
        once per run, such as airbench's fixed half of flipped images
        (:func:`speedrun.data.augment.fixed_flip_mask`); ``None`` when built without one.
    """

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    ema: Any
    loss_scale: Any = None
    run_key: Any = None


#: fold_in constant deriving ``TrainState.run_key`` from the init key
RUN_KEY_FOLD = 2**31 - 2


def init_state(model, tx: optax.GradientTransformation, key: jax.Array,
               policy: precision.Policy = precision.POLICIES["float32"]) -> TrainState:
    """Initial :class:`TrainState` for ``model`` from PRNG ``key`` (jit-able: the seed is data,
    so a new seed does not recompile). ``policy`` gives the initial loss scale (float16: a
    ``DynamicScale``; otherwise none); params are float32 under every policy. The model is
    initialised on one ``(1, 32, 32, 3) float32`` image."""
    variables = model.init(key, jnp.zeros((1, 32, 32, 3), jnp.float32), train=False)
    params, batch_stats = variables["params"], variables["batch_stats"]
    return TrainState(
        step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
        opt_state=tx.init(params),
        # a copy, not an alias: the state is donated to the epoch, and a buffer can't be donated twice
        ema=jax.tree.map(jnp.copy, {"params": params, "batch_stats": batch_stats}),
        loss_scale=precision.init_loss_scale(policy),
        run_key=jax.random.fold_in(key, RUN_KEY_FOLD),
    )


def constants_fn(config: ml_collections.ConfigDict, normalize) -> Callable[[jax.Array], dict]:
    """``x_u8 (n, 32, 32, 3) uint8 -> {"whiten_kernel": (k, k, 3, k*k*3) float32}``: the model's
    ``constants`` collection, whitening filters from the first ``config.whitening.num_images``
    training images (:func:`speedrun.models.whitening.whitening_kernel`); ``num_images = 0`` means a
    net without whitening and gives ``{}``."""
    if config.whitening.num_images == 0:
        return lambda x: {}
    k, eps = config.model.whiten_patch_size, config.whitening.eps
    return lambda x: {"whiten_kernel": whitening.whitening_kernel(normalize(x), k, eps)}
