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
have no bias (a BN follows). BN is ordinary batch norm (:class:`~speedrun.layers.GhostBatchNorm`
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

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from speedrun.layers import GhostBatchNorm, torch_default_init
from speedrun.models.resnet9 import scaled

STAGE_WIDTHS = (16, 32, 64)
HE_INIT_MODES = ("fan_in", "fan_out")


def he_init(mode: str = "fan_out") -> nn.initializers.Initializer:
    """He et al. 2015b ("Delving Deep into Rectifiers", §2.2) conv init: ``N(0, 2 / n)``, ``n`` the
    fan-in (``k²·c_in``) or fan-out (``k²·c_out``) of the kernel.

    Raises:
      ValueError: ``mode`` is neither ``"fan_in"`` nor ``"fan_out"``.
    """
    if mode not in HE_INIT_MODES:
        raise ValueError(f"he_init_mode must be one of {HE_INIT_MODES}, got {mode!r}")
    return nn.initializers.variance_scaling(2.0, mode, "normal")


def option_a_shortcut(x: jax.Array, features: int, stride: int) -> jax.Array:
    """He et al. 2015's parameter-free shortcut "A": keep every ``stride``-th pixel, append zero
    channels.

    Args:
      x: ``(B, H, W, C)`` any dtype.
      features: output channels, ``>= C``; channels ``C..features-1`` of the output are 0 (the
        new channels follow the old ones, as fb.resnet.torch's ``nn.Concat(Identity, MulConstant(0))``).
      stride: spatial subsampling; output pixel ``(i, j)`` is input pixel ``(stride·i, stride·j)``
        (a 1×1 average pool with that stride).

    Returns:
      ``(B, ceil(H/stride), ceil(W/stride), features)``, ``x``'s dtype; ``x`` itself when
      ``stride == 1`` and ``features == C``.

    Raises:
      ValueError: ``features < C`` or ``stride < 1`` (option A cannot drop channels).
    """
    c = x.shape[-1]
    if features < c or stride < 1:
        raise ValueError(f"option-A shortcut needs features >= input channels and stride >= 1; "
                         f"got {c} -> {features} channels, stride {stride}")
    if stride > 1:
        x = x[:, ::stride, ::stride, :]
    if features > c:
        x = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, features - c)))
    return x


def skip_dropped(setting: bool | None, backend: str | None = None) -> bool:
    """Whether stochastic depth skips a dropped branch's computation (``lax.cond``) or computes it
    and masks it (same values, gradients and statistics either way).

    ``True``/``False`` are used as given; ``None`` means automatic: skip on GPU/TPU, where the
    dropped half of the branches is saved work, and mask on the CPU backend, where XLA runs the
    convolutions inside a conditional far slower than outside one (measured here, jax 0.10.2, 2
    cores: the stochastic-depth ResNet-20 at width 0.25 took 6.3 CPU-seconds per step of 512 with
    ``lax.cond``; see tests/test_resnet20.py's module docstring for the masked figure).
    """
    if setting is not None:
        return bool(setting)
    return (backend or jax.default_backend()) != "cpu"


def _vary_like(a: jax.Array, ref: jax.Array) -> jax.Array:
    """``a`` unchanged in value, typed as varying over the mesh axes ``ref`` varies over inside a
    ``jax.shard_map`` (a select that never takes ``ref``'s element); outside one, ``a``."""
    return jnp.where(jnp.zeros((), bool), ref.reshape(-1)[0].astype(a.dtype), a)


class _Layers(nn.Module):
    """Shared conv/BN settings of the blocks (not public)."""

    ghost_batch_size: int | None = None
    bn_momentum: float = 0.9
    bn_eps: float = 1e-5
    he_init_mode: str = "fan_out"
    dtype: Any = jnp.float32

    def conv(self, features: int, stride: int, name: str) -> nn.Conv:
        """A bias-free 3×3 conv with 1 pixel of zero padding, He init, float32 params, compute in
        ``self.dtype`` (He et al. 2015, §4.2)."""
        return nn.Conv(features, (3, 3), strides=(stride, stride), padding=((1, 1), (1, 1)),
                       use_bias=False, dtype=self.dtype, param_dtype=jnp.float32,
                       kernel_init=he_init(self.he_init_mode), name=name)

    def bn(self, x: jax.Array, train: bool, name: str) -> jax.Array:
        """Batch norm of ``(B, H, W, C)`` activations: batch statistics (ghost groups if
        ``ghost_batch_size``) in training, running statistics at test; output in ``self.dtype``."""
        return GhostBatchNorm(ghost_batch_size=self.ghost_batch_size, momentum=self.bn_momentum,
                              epsilon=self.bn_eps, use_scale=True, dtype=self.dtype,
                              name=name)(x, use_running_average=not train)


class ResidualBranch(_Layers):
    """The residual function ``f`` of a basic block: two 3×3 convs.

    Post-activation (He et al. 2015): ``bn2(conv2(relu(bn1(conv1(x)))))``.
    Pre-activation (He et al. 2016): ``conv2(relu(bn1(conv1(a))))`` with ``a = relu(bn0(x))``, or
    ``a = x`` when ``preact_input=False`` (the block applied the pre-activation before splitting).

    Attributes:
      features, stride: output channels; stride of ``conv1``.
      preact: pre-activation ordering.
      preact_input: pre-activation only: apply ``relu(bn0(·))`` to the input here.

    Call: ``(x (B, H, W, C), train) -> (B, H/stride, W/stride, features)`` in ``dtype``.
    """

    features: int = 16
    stride: int = 1
    preact: bool = False
    preact_input: bool = True

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        if self.preact:
            if self.preact_input:
                x = jax.nn.relu(self.bn(x, train, "bn0"))
            y = self.conv(self.features, self.stride, "conv1")(x)
            y = jax.nn.relu(self.bn(y, train, "bn1"))
            return self.conv(self.features, 1, "conv2")(y)
        y = self.conv(self.features, self.stride, "conv1")(x)
        y = jax.nn.relu(self.bn(y, train, "bn1"))
        y = self.conv(self.features, 1, "conv2")(y)
        return self.bn(y, train, "bn2")


class BasicBlock(_Layers):
    """One residual block with an option-A shortcut, optionally pre-activated, with optional
    stochastic depth (see the module docstring for the sources).

    Attributes:
      features, stride: output channels and stride (2 at a stage transition).
      preact: pre-activation ordering (He et al. 2016).
      share_preact: pre-activation only: compute ``a = relu(bn(x))`` once and feed it to both
        paths (the first block of a stage); otherwise the shortcut takes ``x``.
      drop_rate: stochastic-depth drop probability of the branch, in ``[0, 1)``; 0 disables.
      skip_dropped: how a dropped branch is handled, see :func:`skip_dropped` (``None``: by backend).

    Call: ``block(x, train)`` with ``x (B, H, W, C)``; returns ``(B, H/stride, W/stride,
    features)`` in ``dtype``. With ``drop_rate > 0`` and ``train=True`` it draws one Bernoulli
    from the ``"dropout"`` PRNG stream (``rngs={"dropout": key}`` in ``apply``, with
    ``mutable=["batch_stats"]``); a dropped branch contributes 0 and its batch-norm running
    statistics are not updated (as in Huang et al.'s Torch code, which skips the dropped block's
    forward pass); it is not computed at all when ``skip_dropped`` resolves to True. A dropped
    block is the identity (post-activation: ``relu(x) = x``, as ``x`` is a ReLU output), or its
    option-A shortcut at a stage transition; with ``share_preact`` the shared pre-activation stays,
    so a dropped block gives ``shortcut(relu(bn(x)))``.

    Raises:
      ValueError: ``drop_rate`` outside ``[0, 1)``.
    """

    features: int = 16
    stride: int = 1
    preact: bool = False
    share_preact: bool = False
    drop_rate: float = 0.0
    skip_dropped: bool | None = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        p_drop = float(self.drop_rate)
        if not 0.0 <= p_drop < 1.0:
            raise ValueError(f"stochastic-depth drop rate must be in [0, 1), got {p_drop}")
        if self.preact and self.share_preact:
            x = jax.nn.relu(self.bn(x, train, "preact_bn"))
        shortcut = option_a_shortcut(x, self.features, self.stride)
        branch = ResidualBranch(
            features=self.features, stride=self.stride, preact=self.preact,
            preact_input=self.preact and not self.share_preact,
            ghost_batch_size=self.ghost_batch_size, bn_momentum=self.bn_momentum, bn_eps=self.bn_eps,
            he_init_mode=self.he_init_mode, dtype=self.dtype, name="branch")
        if p_drop == 0.0 or self.is_initializing():
            r = branch(x, train)
        elif not train:
            r = branch(x, train) * jnp.asarray(1.0 - p_drop, self.dtype)  # expected branch
        else:
            keep = jax.random.bernoulli(self.make_rng("dropout"), 1.0 - p_drop)
            # a copy of the containers: the branch's call updates the live collection in place
            stats = jax.tree.map(lambda a: a, self.variables["batch_stats"]["branch"])
            if skip_dropped(self.skip_dropped):
                # Inside shard_map (the training epoch) both cond branches must vary over the same
                # mesh axes; the kept branch's output and statistics depend on the per-device x, so
                # the dropped branch's zeros and unchanged statistics are marked like x first.
                self.put_variable("batch_stats", "branch",
                                  jax.tree.map(lambda a: _vary_like(a, x), stats))
                zeros = _vary_like(jnp.zeros(shortcut.shape, self.dtype), x)
                r = nn.cond(keep, lambda m, v: m(v, True), lambda m, v: zeros, branch, x)
            else:  # compute, then mask the output and keep the old statistics when dropped
                r = jnp.where(keep, branch(x, train), jnp.zeros((), self.dtype))
                new_stats = self.variables["batch_stats"]["branch"]
                self.put_variable("batch_stats", "branch", jax.tree.map(
                    lambda n, o: jnp.where(keep, n, o), new_stats, stats))
        out = shortcut.astype(self.dtype) + r
        return out if self.preact else jax.nn.relu(out)


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
