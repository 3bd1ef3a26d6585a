"""Keller Jordan's airbench94 network (``airbench94.py`` and ``airbench94_muon.py``).

Reference: KellerJordan/cifar10-airbench, ``airbench94.py`` (94.01% mean test accuracy over 1000
runs in 3.83 s on one A100) and ``airbench94_muon.py`` (94.01% over 200 runs in 2.59 s); Jordan,
"94% on CIFAR-10 in 3.29 Seconds on a Single GPU" (arXiv:2404.00498), §3. Read for the facts below;
no code was copied.

Layout, NHWC, widths at ``width_mult=1``::

    whiten   frozen conv2x2 3->24, no padding (31x31 out), trainable bias; the filters are the
             12 patch-whitening filters W = V/sqrt(Λ+eps) and their negatives, cat(W, -W)
             (``constants``, from speedrun.models.whitening); GELU
    group1   conv3x3 24->64, maxpool2, BN, GELU, conv3x3 64->64, BN, GELU        (15x15)
    group2   conv3x3 64->256, maxpool2, BN, GELU, conv3x3 256->256, BN, GELU     (7x7)
    group3   conv3x3 256->256, maxpool2, BN, GELU, conv3x3 256->256, BN, GELU    (3x3)
    head     maxpool3, linear 256->10 (no bias), logits * logit_scale (airbench94: 1/9;
             airbench94_muon: its ``head(x) / x.size(-1)``, 1/(head input width))

Variants of the same net, as attributes (sources at the commits of
``../shared/sources/frontier_recipes.md``):

- ``convs_per_group=3``: airbench96's group (``legacy/airbench96.py``, ``airbench96_faster.py``
  ``depth=3``): conv1, maxpool2, BN, act → x0; conv2, BN, act; conv3, BN; + x0; act — a residual
  over the last two convolutions. airbench95: widths 128/384/384; airbench96: 128/384/512, 3 convs,
  PyTorch's default BN momentum 0.1 (``bn_momentum=0.9`` here).
- ``activation="silu"``, ``whiten_activation="gelu"``: hiverge/cifar10-speedrun's net (exact GELU
  after the whitening, SiLU in the groups), with ``bn_momentum=0.5566`` (its PyTorch 0.4434) and
  logits ÷ head input width (``logit_scale=1.0, logit_scale_inverse_width=True``: ÷ 256).
- ``final_pool="global_max"``: Fable-5 E1's global max over all positions before the head
  (fulcrumresearch/cifar-10-speedrun ``GlobalAmaxPool``): at 32 px the same values as maxpool3
  on the 3×3 map; at E1's 24 and 28 px curriculum sizes (final maps 2×2 and 3×3) the head still
  sees ``(B, width3)``.

BN: ordinary batch norm over the (per-device) batch, eps 1e-12, running-stat momentum 0.6 in Flax's
sense (PyTorch ``momentum=0.4``), scale frozen at 1 (no scale parameter: the sources' BN weight
keeps PyTorch's init 1 with ``requires_grad=False``, so omitting it gives the same values), bias trainable (a
:class:`~speedrun.models.layers.GhostBatchNorm` without ghost batches). GELU is the exact (erf) form, as
PyTorch's ``nn.GELU()``; SiLU is ``x·sigmoid(x)``, PyTorch's ``nn.SiLU()``. The 3×3 convs have no bias, PyTorch's default init, and then the first
``min(c_in, c_out)`` output filters set to the identity (``torch.nn.init.dirac_`` on
``weight[:c_in]``), an implicit residual: see :func:`dirac_init`. The max pools are
:func:`~speedrun.models.pooling.max_pool` (non-overlapping windows, the remainder dropped: 31→15,
15→7, 7→3, 3→1; flax's values and gradients, with no scatter in the backward pass).
The input may be smaller than 32 px (a resolution curriculum); only ``final_pool="global_max"``
accepts a final map other than 3×3.

Parameter count at width_mult=1 (hand count, checked in tests/test_airbench.py): 1,971,352
trainable = convs 1,967,616 (3·3·(24·64 + 64·64 + 64·256 + 3·256·256) = 13,824 + 36,864 + 147,456
+ 3·589,824) + whitening bias 24 + BN biases 1,152 (2·64 + 4·256) + head 2,560; plus 144 frozen
whitening weights (2·2·3·12 stored; the negatives are formed at call time).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from speedrun.models.layers import GhostBatchNorm, gelu_exact, torch_default_init
from speedrun.models.pooling import max_pool
from speedrun.models.resnet9 import scaled


def dirac_init(base: nn.initializers.Initializer | None = None) -> nn.initializers.Initializer:
    """An HWIO conv-kernel initializer: ``base`` (default PyTorch's, see
    :func:`speedrun.models.layers.torch_default_init`), then output filters ``o < min(c_in, c_out)`` set to
    the identity map: ``kernel[:, :, :, o] = 0`` except ``kernel[kh//2, kw//2, o, o] = 1``.

    With "same" padding the conv's output channel ``o`` then equals input channel ``o`` at every
    pixel. Source: airbench's ``Conv.reset_parameters`` (``torch.nn.init.dirac_(w[:w.size(1)])``,
    which for ``c_out < c_in`` sets all ``c_out`` filters).

    Returns:
      ``init(key, shape, dtype) -> (kh, kw, c_in, c_out)`` array.

    Raises:
      ValueError: a shape that is not 4-D or a kernel of even size (no centre tap).
    """
    base = base or torch_default_init()

    def init(key, shape, dtype=jnp.float32):
        if len(shape) != 4 or shape[0] % 2 == 0 or shape[1] % 2 == 0:
            raise ValueError(f"dirac_init needs an odd-sized (kh, kw, c_in, c_out) kernel; got shape {shape}")
        kh, kw, c_in, c_out = shape
        w = base(key, shape, dtype)
        n = min(c_in, c_out)
        eye = jnp.zeros((kh, kw, c_in, n), dtype).at[kh // 2, kw // 2, jnp.arange(n), jnp.arange(n)].set(1)
        return w.at[:, :, :, :n].set(eye)

    return init


def unit_std_init(std: float, base: nn.initializers.Initializer | None = None) -> nn.initializers.Initializer:
    """``base`` (default PyTorch's) rescaled so the *sample* standard deviation (``ddof=1``, as
    ``torch.Tensor.std``) of the drawn array is exactly ``std``; airbench94_muon's head init
    ``w *= 1 / w.std()`` (``std=1``)."""
    base = base or torch_default_init()

    def init(key, shape, dtype=jnp.float32):
        w = base(key, shape, dtype)
        return w * (std / jnp.std(w, ddof=1))

    return init


#: activations by name: the exact (erf) GELU and SiLU
ACTIVATIONS = {"gelu": gelu_exact, "silu": jax.nn.silu}
#: the pool before the head: maxpool3 (airbench, hiverge) or the global max (Fable-5 E1)
FINAL_POOLS = ("max3", "global_max")


class AirbenchNet(nn.Module):
    """airbench94's net and its variants (see the module docstring for the layout and sources).

    Call: ``model.apply(variables, images, train=..., mutable=[...])`` with
    ``variables = {"params", "batch_stats", "constants"}``.

    Args of ``__call__``:
      x: ``(B, H, H, 3)`` float, normalised images, ``H`` 32 (or smaller in a resolution
        curriculum, with ``final_pool="global_max"``).
      train: batch statistics (and running-stat updates, with ``mutable=["batch_stats"]``) when
        True; running statistics when False.

    Returns:
      ``(B, num_classes)`` float32 logits.

    Variables:
      ``params``: ``whiten_bias`` ``(2·k·k·3,)``; ``group{1,2,3}_conv{1,2[,3]}/kernel`` HWIO;
        ``group{1,2,3}_bn{1,2[,3]}/bias``; ``head/kernel`` ``(width3, num_classes)``; float32.
      ``batch_stats``: BN running ``mean``/``var``; float32.
      ``constants``: ``whiten_kernel`` ``(k, k, 3, k·k·3)`` float32, the frozen whitening filters
        V/sqrt(Λ+eps) of :func:`speedrun.models.whitening.whitening_kernel`; ``init`` fills it with zeros.
        The conv uses them and their negatives, ``(k, k, 3, 2·k·k·3)``.

    Attributes:
      widths: the three groups' widths at ``width_mult=1`` (airbench94: 64, 256, 256).
      width_mult: scales the group widths (not the whitening width; small CPU runs).
      num_classes: 10.
      whiten_patch_size: k of the k×k whitening conv (2), giving 2·k·k·3 channels.
      whiten_bias_init: ``"zeros"`` (airbench94: ``bias.data.zero_()``) or ``"torch_default"``
        (airbench94_muon's plain ``nn.Conv2d``: U(±1/sqrt(3·k·k))).
      convs_per_group: 2 (airbench94) or 3 (airbench96: a residual over the last two).
      activation: of the groups, ``"gelu"`` (airbench) or ``"silu"`` (hiverge, E1).
      whiten_activation: after the whitening conv, ``"gelu"`` (all the sources) or ``"silu"``.
      final_pool: ``"max3"`` (a 3×3 final map pooled to 1×1) or ``"global_max"`` (any final map).
      bn_momentum, bn_eps: 0.6 (Flax sense) and 1e-12.
      logit_scale: multiplies the logits (airbench94: 1/9).
      logit_scale_inverse_width: also divide the logits by the head's input width, the sources'
        ``head(x) / x.size(-1)`` (airbench94_muon, hiverge: ``logit_scale=1.0`` and True; 1/256 at
        full width, 1/32 at ``width_mult=0.125``).
      head_init_std: ``None``: PyTorch's default Linear init (airbench94); a float: that init
        rescaled to this sample std (airbench94_muon: 1.0).
      dtype: compute dtype of convs, matmuls and activations (BN statistics and logits stay
        float32).

    Raises:
      ValueError: an unknown ``whiten_bias_init``, ``activation``, ``whiten_activation`` or
        ``final_pool``; ``convs_per_group`` not 2 or 3; ``final_pool="max3"`` on a final map that
        is not 3×3 (an input smaller than 32 px).
    """

    widths: Sequence[int] = (64, 256, 256)
    width_mult: float = 1.0
    num_classes: int = 10
    whiten_patch_size: int = 2
    whiten_bias_init: str = "zeros"
    convs_per_group: int = 2
    activation: str = "gelu"
    whiten_activation: str = "gelu"
    final_pool: str = "max3"
    bn_momentum: float = 0.6
    bn_eps: float = 1e-12
    logit_scale: float = 1.0 / 9
    logit_scale_inverse_width: bool = False
    head_init_std: float | None = None
    dtype: Any = jnp.float32

    def _conv(self, features: int, name: str) -> nn.Conv:
        return nn.Conv(
            features, (3, 3), padding="SAME", use_bias=False, dtype=self.dtype,
            param_dtype=jnp.float32, kernel_init=dirac_init(), name=name,
        )

    def _bn(self, x: jax.Array, train: bool, name: str) -> jax.Array:
        return GhostBatchNorm(
            ghost_batch_size=None, momentum=self.bn_momentum, epsilon=self.bn_eps,
            use_scale=False, dtype=self.dtype, name=name,
        )(x, use_running_average=not train)

    def _group(self, x: jax.Array, features: int, train: bool, name: str) -> jax.Array:
        act = _named(ACTIVATIONS, self.activation, "activation")
        x = self._conv(features, f"{name}_conv1")(x)
        x = max_pool(x, 2)
        x = act(self._bn(x, train, f"{name}_bn1"))
        x0 = x
        x = self._conv(features, f"{name}_conv2")(x)
        x = act(self._bn(x, train, f"{name}_bn2"))
        if self.convs_per_group == 2:
            return x
        x = self._conv(features, f"{name}_conv3")(x)
        return act(self._bn(x, train, f"{name}_bn3") + x0)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        if self.convs_per_group not in (2, 3):
            raise ValueError(f"convs_per_group must be 2 or 3 (airbench94, airbench96); got {self.convs_per_group}")
        whiten_act = _named(ACTIVATIONS, self.whiten_activation, "whiten_activation")
        k = self.whiten_patch_size
        n_filters = k * k * 3
        whiten = self.variable("constants", "whiten_kernel", lambda: jnp.zeros((k, k, 3, n_filters), jnp.float32))
        if self.whiten_bias_init == "zeros":
            bias_init = nn.initializers.zeros
        elif self.whiten_bias_init == "torch_default":
            bound = 1.0 / math.sqrt(n_filters)  # fan_in of the whitening conv: 3·k·k
            bias_init = lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)  # noqa: E731
        else:
            raise ValueError(f"whiten_bias_init must be 'zeros' or 'torch_default'; got {self.whiten_bias_init!r}")
        bias = self.param("whiten_bias", bias_init, (2 * n_filters,), jnp.float32)

        kernel = whiten.value
        kernel = jnp.concatenate([kernel, -kernel], axis=-1)  # cat(W, -W): 2·k·k·3 channels
        x = jax.lax.conv_general_dilated(
            x.astype(self.dtype), kernel.astype(self.dtype), (1, 1), "VALID",
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )
        x = whiten_act(x + bias.astype(self.dtype))
        for i, width in enumerate(self.widths):
            x = self._group(x, scaled(width, self.width_mult), train, f"group{i + 1}")
        x = self._final_pool(x)
        head_init = torch_default_init() if self.head_init_std is None else unit_std_init(self.head_init_std)
        logits = nn.Dense(
            self.num_classes, use_bias=False, dtype=self.dtype, param_dtype=jnp.float32,
            kernel_init=head_init, name="head",
        )(x)
        scale = self.logit_scale / x.shape[-1] if self.logit_scale_inverse_width else self.logit_scale
        return logits.astype(jnp.float32) * scale

    def _final_pool(self, x: jax.Array) -> jax.Array:
        """``(B, h, w, C) -> (B, C)``: maxpool3 of a 3×3 map, or the max over all positions."""
        if self.final_pool == "global_max":
            return jnp.max(x, axis=(1, 2))
        if self.final_pool != "max3":
            raise ValueError(f"final_pool must be one of {FINAL_POOLS}; got {self.final_pool!r}")
        if x.shape[1:3] != (3, 3):
            raise ValueError(f"final_pool='max3' needs a 3x3 final map (32-px input); got {x.shape[1]}x{x.shape[2]} "
                             f"— use final_pool='global_max' for smaller images (a resolution curriculum)")
        return max_pool(x, 3).reshape(x.shape[0], -1)


def _named(table: dict, name: str, what: str):
    """``table[name]``, or a ValueError naming ``what`` and the known names."""
    if name not in table:
        raise ValueError(f"{what} must be one of {sorted(table)}; got {name!r}")
    return table[name]
