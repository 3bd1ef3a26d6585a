"""CIFAR ResNets of He et al. (ResNet-20 and the other 6n+2 depths), with two options usable by any
record: pre-activation blocks and stochastic depth.

Sources:

- He, Zhang, Ren & Sun, "Deep Residual Learning for Image Recognition" (CVPR 2016, arXiv
  1512.03385), §4.2: the CIFAR-10 nets. A 3×3 conv 3→16, then 3 stages of ``n`` basic blocks
  (two 3×3 convs each) on 32², 16², 8² maps with 16, 32, 64 filters, subsampling by stride-2 convs
  at the start of stages 2 and 3; global average pooling; a 10-way fully connected layer; BN after
  every conv, before the ReLU; identity shortcuts everywhere, option A (parameter-free: subsample
  and zero-pad the new channels) where the shape changes. Depth ``6n + 2``: ResNet-20 is ``n=3``,
  0.27M parameters, 8.75% test error (91.25% accuracy).
- He, Zhang, Ren & Sun, "Identity Mappings in Deep Residual Networks" (ECCV 2016): pre-activation
  blocks ``x + conv(relu(bn(conv(relu(bn(x))))))``; the activation after conv1 is taken before the
  first block splits into its two paths, and an extra BN–ReLU follows the last addition (the
  paper's appendix). At the first block of every stage the pre-activation is shared by both paths
  (facebook/fb.resnet.torch ``models/preresnet.lua``, block type ``'both_preact'``).
- Huang, Sun, Liu, Sedra & Weinberger, "Deep Networks with Stochastic Depth" (ECCV 2016): in
  training, each residual block's branch is kept with probability ``p = 1 - drop`` for the whole
  mini-batch (one Bernoulli per block per step) and replaced by 0 when dropped, so the block is its
  shortcut (the identity, or option A at a stage transition); at test time the branch is scaled by
  ``p``: ``out = shortcut + p · f(x)`` (post-activation: ``relu(shortcut + p · f(x))``).

Layout, NHWC, ``width_mult=1``, ``depth=20`` (``n=3``)::

    post-activation (preact=False), He et al. 2015:
      stem     conv3x3 3->16, BN, ReLU
      stage1   3 × [relu(x + bn(conv(relu(bn(conv(x))))))]  16 ch, 32x32
      stage2   same, 32 ch, first conv stride 2, option-A shortcut  (16x16)
      stage3   same, 64 ch, first conv stride 2, option-A shortcut  (8x8)
      head     global average pool, dense 64->10 (with bias)

    pre-activation (preact=True), He et al. 2016:
      stem     conv3x3 3->16
      stage s  first block: a = relu(bn(x)); shortcut(a) + conv(relu(bn(conv(a))))
               other blocks: x + conv(relu(bn(conv(relu(bn(x))))))
      head     BN, ReLU, global average pool, dense 64->10

All 3×3 convs pad 1 pixel on every side (Caffe/Torch ``pad=1``), so a stride-2 conv's output pixel
``(i, j)`` is centred on input pixel ``(2i, 2j)`` — the pixel the option-A shortcut keeps. Convs
have no bias (a BN follows). BN is ordinary batch norm (:class:`~speedrun.models.layers.GhostBatchNorm`
with ``ghost_batch_size=None``, per device under data parallelism, as in multi-GPU Caffe/Torch),
learned scale (init 1) and bias (init 0), PyTorch momentum 0.1 (``bn_momentum=0.9`` in Flax's
sense), eps 1e-5.

Init ("He init", He et al. 2015b, "Delving Deep into Rectifiers", §2.2): conv weights
``N(0, 2/n)``. That paper gives ``n = k²·c_in`` (forward case, eq. 10) or ``n = k²·c_out``
(backward case, eq. 14) and notes either suffices; ``he_init_mode`` picks one. Default
``"fan_out"`` (``n = k²·c_out``), the choice of the Torch CIFAR ResNets of fb.resnet.torch
(``ConvInit``: ``n = kW·kH·nOutputPlane``), which the ResNet authors list as the public CIFAR-10
reproduction. The two differ only for the stem (3→16) and the 16→32 and 32→64 convs. The dense
layer keeps Torch's default init (U(±1/√fan_in)) with its bias zeroed (fb.resnet.torch).

Parameter count of ResNet-20 (``depth=20``, hand count, checked in tests/test_resnet20.py):
269,722 trainable = convs 268,336 (432 + 6·2,304 + 4,608 + 5·9,216 + 18,432 + 5·36,864) + BN scales
and biases 1,376 (688 channels) + dense 650; the pre-activation variant has the same 688 BN
channels, hence the same count.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from speedrun.models.layers import torch_default_init
from speedrun.models.resnet9 import scaled
from speedrun.models.resnet_blocks import (  # noqa: F401 (re-exported: the blocks' public names)
    HE_INIT_MODES, BasicBlock, ResidualBranch, _Layers, he_init, option_a_shortcut, skip_dropped,
)

STAGE_WIDTHS = (16, 32, 64)


class ResNet20(_Layers):
    """He et al.'s CIFAR ResNet (depth ``6n + 2``; ResNet-20 by default), see the module docstring.

    Call: ``model.apply(variables, images, train=..., mutable=[...], rngs=...)`` with
    ``variables = {"params", "batch_stats"}`` (a ``constants`` collection, which the training loop
    passes for whitening nets, is accepted and ignored: this net has none).

    Args of ``__call__``:
      x: ``(B, 32, 32, 3)`` float, normalised images (other sizes work: the head pools globally).
      train: batch statistics (and running-stat updates with ``mutable=["batch_stats"]``) and
        stochastic depth when True; running statistics and expected (scaled) branches when False.

    Returns:
      ``(B, num_classes)`` float32 logits.

    Attributes:
      depth: ``6n + 2`` (20, 32, 44, 56, 110, ...).
      width_mult: scales the stage widths 16/32/64 (reduced-width test runs); 1 in the recipes.
      num_classes: 10.
      preact: pre-activation blocks (He et al. 2016).
      stochastic_depth: drop probability of every residual branch (uniform rule); 0 disables.
      skip_dropped: stochastic depth's ``lax.cond`` skip (True), compute-and-mask (False), or by
        backend (``None``), see :func:`skip_dropped`.
      ghost_batch_size: ``None`` (ordinary BN) in the recipes.
      bn_momentum, bn_eps: 0.9 (Flax sense; PyTorch 0.1) and 1e-5.
      he_init_mode: ``"fan_out"`` (default) or ``"fan_in"``, see :func:`he_init`.
      dtype: compute dtype (BN statistics and logits stay float32).

    Raises:
      ValueError: ``depth`` not of the form ``6n + 2`` with ``n >= 1``; a bad drop rate or init mode.
    """

    depth: int = 20
    width_mult: float = 1.0
    num_classes: int = 10
    preact: bool = False
    stochastic_depth: float = 0.0
    skip_dropped: bool | None = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        if self.depth < 8 or (self.depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 with n >= 1 (20, 32, 44, 56, 110); "
                             f"got {self.depth}")
        n = (self.depth - 2) // 6
        common = dict(ghost_batch_size=self.ghost_batch_size, bn_momentum=self.bn_momentum,
                      bn_eps=self.bn_eps, he_init_mode=self.he_init_mode, dtype=self.dtype)
        x = x.astype(self.dtype)
        widths = [scaled(c, self.width_mult) for c in STAGE_WIDTHS]
        x = self.conv(widths[0], 1, "stem_conv")(x)
        if not self.preact:
            x = jax.nn.relu(self.bn(x, train, "stem_bn"))
        for s, width in enumerate(widths):
            for b in range(n):
                x = BasicBlock(features=width, stride=2 if (s > 0 and b == 0) else 1,
                               preact=self.preact, share_preact=b == 0,
                               drop_rate=self.stochastic_depth, skip_dropped=self.skip_dropped,
                               name=f"stage{s + 1}_block{b + 1}",
                               **common)(x, train)
        if self.preact:
            x = jax.nn.relu(self.bn(x, train, "final_bn"))
        x = x.mean(axis=(1, 2))
        x = nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=jnp.float32,
                     kernel_init=torch_default_init(), bias_init=nn.initializers.zeros,
                     name="head")(x)
        return x.astype(jnp.float32)
