"""Building blocks shared by the record networks (Flax Linen); max pooling is in
:mod:`speedrun.models.pooling`.

Sources:
- Ghost batch norm: Hoffer, Hubara & Soudry, "Train longer, generalize better" (NeurIPS 2017);
  used with 16 splits of a 512 batch and frozen scale in David Page, "How to train your ResNet 8:
  bag of tricks" (myrtle.ai, 2019), davidcpage/cifar10-fast ``bag_of_tricks.ipynb``.
- One-pass batch-norm statistics with a shift: Chan, Golub & LeVeque, "Algorithms for computing
  the sample variance: analysis and recommendations", The American Statistician 37(3), 1983
  (the "shifted data" algorithm, with a shift near the mean); Flax's ``nn.BatchNorm``
  (``use_fast_variance=True``) takes the unshifted ``E[x²] − E[x]²`` the same way, in one pass.
  Its gradient in closed form: Ioffe & Szegedy, "Batch Normalization" (ICML 2015), §3.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


#: examples of a group whose centre values, averaged, shift the data in :func:`group_moments`
SHIFT_SAMPLES = 8


def group_moments(groups: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per-group, per-channel mean and biased variance from one pass over the data.

    Args:
      groups: ``(G, n_1, ..., n_k, C)`` (``G`` groups; the statistics are over the axes ``1..k``,
        ``n = n_1·…·n_k`` values per group and channel; ``k >= 1``), any float dtype.

    Returns:
      ``(mean, var)``, each ``(G, 1, ..., 1, C)`` float32 (``keepdims``), ``var`` biased (divided
      by ``n``) and at least 0.

    Method ("shifted data", Chan, Golub & LeVeque 1983): with a shift ``K`` per group and
    channel (below; not differentiated) and ``d = x − K`` in
    float32, one fused reduction takes ``S1 = Σd`` and ``S2 = Σd²`` in float32; then
    ``mean = K + S1/n`` and ``var = max(S2/n − (S1/n)², 0)``. The plain ``E[x²] − E[x]²`` loses
    the digits of ``var`` that the square of a large mean takes (relative error of order
    ``u·mean²/var``, ``u = 2⁻²⁴`` the float32 unit roundoff); the shift makes that
    ``u·(1 + (mean − K)²/var)``. ``K`` is the mean of :data:`SHIFT_SAMPLES` values, the centre
    value of each of the group's first examples (``groups[:, :s, n_2 // 2, ..., n_k // 2, :]``
    averaged over its ``s = min(SHIFT_SAMPLES, n_1)`` examples; for images the middle pixel,
    away from the convolutions' zero padding, whose border values can sit far from the mean):
    an estimate of the mean from ``s`` values, a small reduction of its own. (With a single value
    as the shift, or none, the larger rounding makes runs on 1 and 8 devices, which sum in
    different orders, drift apart within tests/test_parallel.py's few steps.)
    """
    axes = tuple(range(1, groups.ndim - 1))
    if not axes:
        raise ValueError(f"group_moments needs (G, n..., C) with at least one statistics axis; got {groups.shape}")
    n = math.prod(groups.shape[a] for a in axes)
    centre = (slice(None), slice(0, SHIFT_SAMPLES)) + tuple(
        slice(groups.shape[a] // 2, groups.shape[a] // 2 + 1) for a in axes[1:])
    xf = groups.astype(jnp.float32)
    shift = jax.lax.stop_gradient(xf[centre].mean(axis=1, keepdims=True))
    d = xf - shift
    s1 = d.sum(axis=axes, keepdims=True)
    s2 = jnp.square(d).sum(axis=axes, keepdims=True)
    m = s1 * (1.0 / n)
    var = jnp.maximum(s2 * (1.0 / n) - jnp.square(m), 0.0)
    return shift + m, var


@partial(jax.custom_vjp, nondiff_argnums=(1,))
def normalize_groups(groups: jax.Array, epsilon: float) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Batch normalisation of each group: ``((x − mean) / sqrt(var + epsilon), mean, var)``.

    Args:
      groups: ``(G, n_1, ..., n_k, C)``, any float dtype (see :func:`group_moments`).
      epsilon: added to the variance.

    Returns:
      ``y`` float32 of ``groups``' shape, and ``mean``, ``var`` ``(G, 1, ..., 1, C)`` float32
      (:func:`group_moments`: one pass).

    The gradient is batch norm's in closed form (Ioffe & Szegedy 2015, §3; the two sums are
    PyTorch's ``sum_dy`` and ``sum_dy_xmu`` of ``batch_norm_backward_reduce``), one fused float32
    reduction of ``Σg`` and ``Σg·(x − mean)`` over the same data, then one elementwise pass:
    ``dx = r·(g − Σg/n) − r³·(x − mean)·Σg·(x − mean)/n`` with ``r = 1/sqrt(var + epsilon)``
    (plus ``ḡ_mean/n + 2(x − mean)·ḡ_var/n`` for cotangents of the returned statistics),
    in ``groups``' dtype. It is taken about the mean, not the shift, so its rounding does not
    depend on how far the shift is from the mean.
    """
    y, mean, var, _ = _normalize_fwd_values(groups, epsilon)
    return y, mean, var


def _normalize_fwd_values(groups, epsilon):
    mean, var = group_moments(groups)
    r = jax.lax.rsqrt(var + epsilon)
    return (groups.astype(jnp.float32) - mean) * r, mean, var, r


def _normalize_fwd(groups, epsilon):
    y, mean, var, r = _normalize_fwd_values(groups, epsilon)
    return (y, mean, var), (groups, mean, r)


def _normalize_bwd(epsilon, res, cts):
    groups, mean, r = res
    g_y, g_mean, g_var = cts
    axes = tuple(range(1, groups.ndim - 1))
    n = math.prod(groups.shape[a] for a in axes)
    xc = groups.astype(jnp.float32) - mean
    g_y = g_y.astype(jnp.float32)
    sum_g = g_y.sum(axis=axes, keepdims=True)
    sum_gx = (g_y * xc).sum(axis=axes, keepdims=True)
    offset = (g_mean - r * sum_g) * (1.0 / n)  # per group and channel
    slope = (2.0 * g_var - r * r * r * sum_gx) * (1.0 / n)
    return ((r * g_y + offset + slope * xc).astype(groups.dtype),)


normalize_groups.defvjp(_normalize_fwd, _normalize_bwd)


class GhostBatchNorm(nn.Module):
    """Batch norm whose training statistics are taken over groups ("ghost batches") of the batch.

    Input and output: ``(B, H, W, C)`` (or ``(B, C)``) in any float dtype; the output has the
    input's dtype (or ``dtype`` when given). Statistics are always computed in float32.

    Training (``use_running_average=False``): the batch is cut into ``B // ghost_batch_size``
    consecutive groups; each is normalised by its own mean and biased variance over
    (group, H, W), both from one pass over the group, and so is the gradient
    (:func:`normalize_groups`: float32 sums of the shifted values and of their squares; backward,
    of ``g`` and ``g·(x − mean)``). Running statistics are updated once per call, PyTorch-style, with the mean over
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

        if use_running_average:
            mean, var = ra_mean.value, ra_var.value
            y = (x.astype(jnp.float32) - mean) * jax.lax.rsqrt(var + self.epsilon)
        else:
            batch = x.shape[0]
            g = self.ghost_batch_size or batch
            if batch % g:
                raise ValueError(
                    f"GhostBatchNorm: batch of {batch} examples is not divisible by "
                    f"ghost_batch_size={g}; pick a batch size (per device) that is a multiple of "
                    f"it, or set config.model.ghost_batch_size to a divisor of {batch}."
                )
            y, mean, var = normalize_groups(x.reshape((batch // g, g) + x.shape[1:]), self.epsilon)
            y = y.reshape(x.shape)
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
