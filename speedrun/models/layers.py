"""Building blocks shared by the record networks (Flax Linen).

Sources:
- Ghost batch norm: Hoffer, Hubara & Soudry, "Train longer, generalize better" (NeurIPS 2017);
  used with 16 splits of a 512 batch and frozen scale in David Page, "How to train your ResNet 8:
  bag of tricks" (myrtle.ai, 2019), davidcpage/cifar10-fast ``bag_of_tricks.ipynb``.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


class GhostBatchNorm(nn.Module):
    """Batch norm whose training statistics are taken over groups ("ghost batches") of the batch.

    Input and output: ``(B, H, W, C)`` (or ``(B, C)``) in any float dtype; the output has the
    input's dtype (or ``dtype`` when given). Statistics are always computed in float32.

    Training (``use_running_average=False``): the batch is cut into ``B // ghost_batch_size``
    consecutive groups; each is normalised by its own mean and biased variance over
    (group, H, W). Running statistics are updated once per call, PyTorch-style, with the mean over
    groups of the group means and of the group *unbiased* variances (what Page's PyTorch
    ``GhostBatchNorm`` accumulates and then averages over splits):
    ``running = momentum * running + (1 - momentum) * batch_value`` — ``momentum`` is in Flax's
    sense, so PyTorch's momentum 0.1 is ``momentum=0.9`` here.
    Evaluation uses the running statistics, whatever the batch size.

    Data parallelism (:mod:`speedrun.system.parallel`): each device normalises the groups of its own share
    of the global batch, so a group never spans devices (the per-device batch must be a multiple
    of ``ghost_batch_size``; :func:`speedrun.system.parallel.per_device_batch` says so before compiling),
    and with that the groups are the same for any device count. The running statistics this layer
    returns are the device's own; the data-parallel train step (:func:`speedrun.train.step.train_step`
    with ``axis_name``) ``lax.pmean``-s them over the devices, which, every device holding the same
    number of groups, gives exactly the mean over all groups of the global batch — the one-device
    value — and keeps them identical on every replica. With ``ghost_batch_size=None`` each device
    normalises over its whole share (per-device batch norm, like PyTorch DDP without
    SyncBatchNorm), so the statistics then depend on the device count.

    Attributes:
      ghost_batch_size: examples per statistics group (Page: 512 / 16 splits = 32). ``None`` means
        the whole (per-device) batch, i.e. ordinary batch norm.
      momentum: running-statistics decay in Flax's sense.
      epsilon: added to the variance.
      use_scale: learn a per-channel scale; ``False`` freezes it at 1 (Page's "frozen batch-norm
        scale").
      use_bias: learn a per-channel bias (init 0).
      dtype: output dtype (``None``: the input's).

    Raises:
      ValueError: in training, when the batch size is not divisible by ``ghost_batch_size``
        (change ``batch_size`` or ``model.ghost_batch_size`` so that it divides).
    """

    ghost_batch_size: int | None = 32
    momentum: float = 0.9
    epsilon: float = 1e-5
    use_scale: bool = False
    use_bias: bool = True
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, use_running_average: bool) -> jax.Array:
        features = x.shape[-1]
        ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((features,), jnp.float32))
        ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((features,), jnp.float32))
        out_dtype = self.dtype or x.dtype
        xf = x.astype(jnp.float32)

        if use_running_average:
            mean, var = ra_mean.value, ra_var.value
            y = (xf - mean) * jax.lax.rsqrt(var + self.epsilon)
        else:
            batch = x.shape[0]
            g = self.ghost_batch_size or batch
            if batch % g:
                raise ValueError(
                    f"GhostBatchNorm: batch of {batch} examples is not divisible by "
                    f"ghost_batch_size={g}; pick a batch size (per device) that is a multiple of "
                    f"it, or set config.model.ghost_batch_size to a divisor of {batch}."
                )
            groups = xf.reshape((batch // g, g) + x.shape[1:])
            axes = tuple(range(1, groups.ndim - 1))
            mean = groups.mean(axis=axes, keepdims=True)
            var = jnp.square(groups - mean).mean(axis=axes, keepdims=True)
            y = ((groups - mean) * jax.lax.rsqrt(var + self.epsilon)).reshape(x.shape)
            if not self.is_initializing():
                n = g * math.prod(x.shape[1:-1])
                unbiased = var * (n / max(n - 1, 1))
                flat = lambda a: a.reshape(-1, features).mean(axis=0)  # noqa: E731
                m = self.momentum
                ra_mean.value = m * ra_mean.value + (1 - m) * flat(mean)
                ra_var.value = m * ra_var.value + (1 - m) * flat(unbiased)

        if self.use_scale:
            y = y * self.param("scale", nn.initializers.ones, (features,), jnp.float32)
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (features,), jnp.float32)
        return y.astype(out_dtype)


def torch_default_init() -> nn.initializers.Initializer:
    """PyTorch's default ``Conv2d``/``Linear`` weight init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).

    (``kaiming_uniform_(a=sqrt(5))``, i.e. variance scaling 1/3, fan_in, uniform.) The PyTorch
    reference recipes (Page's cifar10-fast, airbench) train from this init.
    """
    return nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


@jax.custom_jvp
def gelu_exact(x: jax.Array) -> jax.Array:
    """Exact (erf) GELU, ``0.5·x·(1 + erf(x/√2))`` (Hendrycks & Gimpel 2016; PyTorch's ``nn.GELU()``
    default, which airbench uses), elementwise on any shape, in ``x``'s dtype.

    Forward values are ``jax.nn.gelu(x, approximate=False)``'s. The derivative is given explicitly,
    ``Φ(x) + x·φ(x)`` (``Φ`` the standard normal CDF, ``φ`` its density), because JAX 0.12.0's
    derivative of ``lax.erf`` fails inside ``jax.shard_map`` with its replication checks on
    ("Primitive polynomial requires varying manual axes to match"), which the data-parallel epoch
    uses. Tested against ``jax.nn.gelu`` values and gradients in ``tests/test_airbench.py``.
    """
    return jax.nn.gelu(x, approximate=False)


@gelu_exact.defjvp
def _gelu_exact_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    xf = x.astype(jnp.float32) if x.dtype in (jnp.float16, jnp.bfloat16) else x
    cdf = 0.5 * (1.0 + jax.lax.erf(xf * (1.0 / math.sqrt(2.0))))
    pdf = jnp.exp(-0.5 * xf * xf) * (1.0 / math.sqrt(2.0 * math.pi))
    return jax.nn.gelu(x, approximate=False), t * (cdf + xf * pdf).astype(x.dtype)
