"""David Page's final ResNet-9 ("How to train your ResNet 8: bag of tricks", myrtle.ai 2019).

Reference: davidcpage/cifar10-fast, ``bag_of_tricks.ipynb``, the final 10-epoch setup (94.1% test
accuracy with TTA in 26 s on one V100), network ``input_whitening_net``.

Layout, NHWC, widths at ``width_mult=1``::

    whiten   frozen conv3x3 3->27 (padding 1, no bias; filters from speedrun.models.whitening)
    prep     conv1x1 27->64, BN, CELU
    layer1   conv3x3 64->128, maxpool2, BN, CELU; + residual(conv3x3-BN-CELU x2 at 128)
    layer2   conv3x3 128->256, maxpool2, BN, CELU
    layer3   conv3x3 256->512, maxpool2, BN, CELU; + residual(conv3x3-BN-CELU x2 at 512)
    head     maxpool4, linear 512->10 (no bias), logits * 1/16

Every BN is a :class:`~speedrun.models.layers.GhostBatchNorm` (groups of 32, eps 1e-5, Flax momentum 0.9
= PyTorch 0.1, scale frozen at 1, bias trainable); CELU has alpha 0.3; convs have no bias and
PyTorch's default init. The max pools are :func:`~speedrun.models.pooling.max_pool` (non-overlapping
windows; flax's values and gradients, with no scatter in the backward pass).

Parameter count at width_mult=1 (hand count, checked in tests/test_model.py): 6,570,880 trainable
params = convs 6,563,520 (1,728 + 73,728 + 2·147,456 + 294,912 + 1,179,648 + 2·2,359,296) + BN
biases 2,240 + linear 5,120; plus 729 frozen whitening weights (3·3·3·27) and 4,480 batch-stat
entries (running mean and var of 2,240 channels).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from speedrun.models.layers import GhostBatchNorm, torch_default_init
from speedrun.models.pooling import max_pool


#: ``model.activation`` values: Page's CELU (the record) or ReLU (his baseline)
ACTIVATIONS = ("celu", "relu")


def scaled(channels: int, width_mult: float) -> int:
    """Channel count ``channels`` scaled by ``width_mult``, rounded, at least 1."""
    return max(1, int(round(channels * width_mult)))


class ResNet9(nn.Module):
    """Page's final ResNet-9 (see the module docstring for the layout and source).

    Call: ``model.apply(variables, images, train=..., mutable=[...])`` with
    ``variables = {"params", "batch_stats", "constants"}``.

    Args of ``__call__``:
      x: ``(B, 32, 32, 3)`` float, normalised images.
      train: ghost-batch statistics (and running-stat updates, with ``mutable=["batch_stats"]``)
        when True; running statistics when False.

    Returns:
      ``(B, num_classes)`` float32 logits.

    Variables:
      ``params``: convs and linear (``kernel``), BN ``bias``; float32.
      ``batch_stats``: BN running ``mean``/``var``; float32.
      ``constants``: ``whiten/kernel`` ``(3, 3, 3, 27)`` float32, the frozen whitening filters;
        ``init`` fills it with zeros: replace it with :func:`speedrun.models.whitening.whitening_kernel`.

    Attributes:
      width_mult: scales every channel count except the 27 whitening channels (small CPU runs).
      num_classes, celu_alpha, logit_scale: 10, 0.3, 1/16 in Page's recipe.
      ghost_batch_size, bn_momentum, bn_eps: ghost batch norm settings (32, 0.9, 1e-5).
      whiten_patch_size: k of the k×k whitening conv (3), giving k·k·3 whitening channels.
      whiten, activation, bn_scale: the record's tricks, switchable for Page's ablation
        (notebooks/bag_of_tricks): ``whiten=False`` replaces the frozen whitening conv and the 1×1
        prep conv by a learned 3×3 prep conv (his baseline), no ``constants`` then; ``activation``
        ``"celu"`` (record) or ``"relu"``; ``bn_scale=True`` learns the BN scales (frozen at 1 in
        the record).

    Raises (at trace time):
      ValueError: unknown ``activation``.
      dtype: compute dtype of convs, matmuls and activations (the precision seam; BN statistics
        and logits stay float32).
    """

    width_mult: float = 1.0
    num_classes: int = 10
    celu_alpha: float = 0.3
    logit_scale: float = 1.0 / 16
    ghost_batch_size: int | None = 32
    bn_momentum: float = 0.9
    bn_eps: float = 1e-5
    whiten_patch_size: int = 3
    whiten: bool = True
    activation: str = "celu"
    bn_scale: bool = False
    dtype: Any = jnp.float32

    def _conv(self, features: int, kernel: int, name: str) -> nn.Conv:
        return nn.Conv(
            features, (kernel, kernel), padding="SAME", use_bias=False, dtype=self.dtype,
            param_dtype=jnp.float32, kernel_init=torch_default_init(), name=name,
        )

    def _bn_act(self, x: jax.Array, train: bool, name: str) -> jax.Array:
        x = GhostBatchNorm(
            ghost_batch_size=self.ghost_batch_size, momentum=self.bn_momentum,
            epsilon=self.bn_eps, use_scale=self.bn_scale, dtype=self.dtype, name=name,
        )(x, use_running_average=not train)
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"model.activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        return jax.nn.celu(x, alpha=self.celu_alpha) if self.activation == "celu" else jax.nn.relu(x)

    def _conv_bn(self, x, features, train, name, pool=False):
        x = self._conv(features, 3, f"{name}_conv")(x)
        if pool:
            x = max_pool(x, 2)
        return self._bn_act(x, train, f"{name}_bn")

    def _residual(self, x, train, name):
        c = x.shape[-1]
        y = self._conv_bn(x, c, train, f"{name}_res1")
        y = self._conv_bn(y, c, train, f"{name}_res2")
        return x + y

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        k = self.whiten_patch_size
        w = lambda c: scaled(c, self.width_mult)  # noqa: E731
        x = x.astype(self.dtype)
        if self.whiten:
            whiten = self.variable(
                "constants", "whiten_kernel", lambda: jnp.zeros((k, k, 3, k * k * 3), jnp.float32)
            )
            x = jax.lax.conv_general_dilated(
                x, whiten.value.astype(self.dtype), (1, 1), "SAME",
                dimension_numbers=("NHWC", "HWIO", "NHWC"),
            )
        x = self._conv(w(64), 1 if self.whiten else 3, "prep_conv")(x)
        x = self._bn_act(x, train, "prep_bn")
        x = self._conv_bn(x, w(128), train, "layer1", pool=True)
        x = self._residual(x, train, "layer1")
        x = self._conv_bn(x, w(256), train, "layer2", pool=True)
        x = self._conv_bn(x, w(512), train, "layer3", pool=True)
        x = self._residual(x, train, "layer3")
        x = max_pool(x, 4)
        x = x.reshape(x.shape[0], -1)
        x = nn.Dense(
            self.num_classes, use_bias=False, dtype=self.dtype, param_dtype=jnp.float32,
            kernel_init=torch_default_init(), name="linear",
        )(x)
        return x.astype(jnp.float32) * self.logit_scale
