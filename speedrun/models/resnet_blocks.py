"""Building blocks of He et al.'s CIFAR ResNets (:class:`~speedrun.models.resnet20.ResNet20`): the
He-init 3×3 conv and batch norm they share, the parameter-free option-A shortcut and the basic
residual block (two 3×3 convs), post- or pre-activation, with optional stochastic depth. Sources:
He, Zhang, Ren & Sun, "Deep Residual Learning for Image Recognition" (CVPR 2016, §4.2: basic
block, option A); "Identity Mappings in Deep Residual Networks" (ECCV 2016: pre-activation);
He et al. 2015b, "Delving Deep into Rectifiers" (§2.2: init); Huang et al., "Deep Networks with
Stochastic Depth" (ECCV 2016) — each detailed in the :mod:`speedrun.models.resnet20` docstring.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from speedrun.models.layers import GhostBatchNorm

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
    convolutions inside a conditional far slower than outside one (README, "CPU notes").
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
    stochastic depth (see the :mod:`speedrun.models.resnet20` docstring for the sources).

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
