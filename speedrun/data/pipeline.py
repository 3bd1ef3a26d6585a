"""The training set's augmentation as the epoch runs it: pad once, draw per epoch, apply per step.

- once per :class:`~speedrun.train.experiment.Experiment`: :meth:`TrainAugment.prepare` pads the
  uint8 set by ``crop_padding`` px (reflect, or zeros for ``crop_mode="constant"``) on the device;
- once per epoch (the epoch plan): :meth:`TrainAugment.draw` draws every step's crop offsets, flips,
  cutout corners and brightness/contrast factors at once, ``(S, B, ...)`` arrays (:class:`Draws`);
- every step: :meth:`TrainAugment.apply` takes the batch's crops, mirrored where drawn, from the
  padded uint8 set in one gather, normalises them after the crop and writes the compute dtype.

Sources, value by value: crop offsets uniform on ``{0..2p}`` per axis (Page's cifar10-fast
``Crop``; airbench's and hiverge's ``batch_crop``: ``floor(U·(2p+1))``); the alternating flip is
airbench's and hiverge's loader (a per-run random pre-flip of each image, then every image mirrored
in odd epochs: ``flip = base XOR (epoch odd)``); brightness/contrast jitter is hiverge's
``batch_color_jitter`` (hiverge/cifar10-speedrun 5cd49b1, ``cifar10_speedrun.py``): per image
``b ~ U(-β, β)``, ``c ~ U(1-γ, 1+γ)``, ``x' = (x + b)·c`` on the normalised image after crop and
flip; cutout is Page's ``Cutout`` (:func:`speedrun.data.augment.cutout`).

Compared with the per-example pipeline it replaces (B key splits and a per-image pad and slice in
every step), the draws are the same distributions but not the same numbers for a seed.
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections

from speedrun.data import augment as augment_lib, resize
from speedrun.data.cifar10 import CIFAR10_MEAN, CIFAR10_STD
from speedrun.system import parallel


class Draws(flax.struct.PyTreeNode):
    """One epoch's (or, indexed, one step's) augmentation draws; a field is ``None`` when its
    augmentation is off. ``draws[i]`` / ``draws[a:b]`` index every field's leading (step) axis.

    Attributes:
      key: ``(S,)`` PRNG keys, one per step (the step's ``"dropout"`` stream derives from it).
      offsets: ``(S, B, 2)`` int32 crop offsets ``(dy, dx)``, each uniform in ``[0, 2·crop_padding]``.
      flip: ``(S, B)`` bool: random flips (p = 1/2), or the alternating flip's per-run base mask at
        the batch's dataset indices (:meth:`TrainAugment.apply` XORs the epoch's parity).
      corner: ``(S, B, 2)`` int32 cutout corners ``(y0, x0)``, uniform in ``[0, 32 - size]``.
      brightness: ``(S, B)`` float32 shift ``b``, uniform in ``[-β, β)``.
      contrast: ``(S, B)`` float32 factor ``c``, uniform in ``[1-γ, 1+γ)``.
    """

    key: Any = None
    offsets: Any = None
    flip: Any = None
    corner: Any = None
    brightness: Any = None
    contrast: Any = None

    def __getitem__(self, i):
        return jax.tree.map(lambda a: a[i], self)


class TrainAugment:
    """The record's training augmentation from ``config.augment``: ``crop_padding`` (0: none),
    ``crop_mode`` (``"reflect"``, ``"constant"``), ``flip`` (random), ``alternating_flip``,
    ``cutout_size`` (0: none), ``brightness_range`` β and ``contrast_range`` γ (0 or absent: none).

    Args:
      aug: ``config.augment``.
      n_train: training images (the alternating flip's per-run mask covers them).
      mean, std: per-channel normalisation in pixel units (0..255).
      dtype: the dtype :meth:`apply` returns (the precision policy's compute dtype).

    Raises:
      ValueError: random and alternating flips both on; an unknown ``crop_mode``; a negative size
        or range.
    """

    def __init__(self, aug: ml_collections.ConfigDict, n_train: int, mean=CIFAR10_MEAN, std=CIFAR10_STD,
                 dtype=jnp.float32):
        self.n_train = int(n_train)
        self.padding = int(aug.get("crop_padding", 0))
        self.mode = aug.get("crop_mode", "reflect")
        self.random_flip = bool(aug.get("flip", False))
        self.alternating = bool(aug.get("alternating_flip", False))
        self.cutout = int(aug.get("cutout_size", 0))
        self.brightness = float(aug.get("brightness_range", 0.0))
        self.contrast = float(aug.get("contrast_range", 0.0))
        if self.alternating and self.random_flip:
            raise ValueError("config.augment.flip (random flips) and config.augment.alternating_flip are "
                             "exclusive — set --config.augment.flip=False for airbench's alternating flip")
        if self.mode not in augment_lib.CROP_MODES:
            raise ValueError(f"config.augment.crop_mode must be one of {augment_lib.CROP_MODES}, got {self.mode!r}")
        for name in ("padding", "cutout", "brightness", "contrast"):
            if getattr(self, name) < 0:
                raise ValueError(f"config.augment: {name} must be >= 0, got {getattr(self, name)}")
        self.mean = jnp.asarray(mean, jnp.float32)
        self.inv_std = 1.0 / jnp.asarray(std, jnp.float32)
        self.dtype = dtype

    def prepare(self, x: jax.Array) -> jax.Array:
        """``(N, H, W, C) uint8 -> (N, H+2p, W+2p, C) uint8``, padded by ``p = crop_padding`` on each
        side (reflect: ``jnp.pad(mode="reflect")``, no edge repeat; constant: zeros, which
        :meth:`apply` sets to 0 after normalisation, the mean pixel). Once per data set, on device."""
        p = self.padding
        if p == 0:
            return x
        return jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), mode="reflect" if self.mode == "reflect" else "constant")

    def draw(self, key: jax.Array, run_key: jax.Array, idx: jax.Array, image_size: int = 32) -> Draws:
        """The epoch's :class:`Draws` for its batches ``idx (S, B)`` int32 dataset indices.

        ``key``: this epoch's augmentation key; ``run_key``: the run's fixed key (the alternating
        flip's base mask, :meth:`base_flip`); ``image_size``: the un-padded side (cutout's range).
        """
        s, b = idx.shape
        k_step, k_crop, k_flip, k_cut, k_b, k_c = jax.random.split(key, 6)
        d = Draws(key=jax.random.split(k_step, s))
        if self.padding:
            d = d.replace(offsets=jax.random.randint(k_crop, (s, b, 2), 0, 2 * self.padding + 1, jnp.int32))
        if self.random_flip:
            d = d.replace(flip=jax.random.bernoulli(k_flip, 0.5, (s, b)))
        if self.alternating:
            d = d.replace(flip=self.base_flip(run_key)[idx])
        if self.cutout:
            d = d.replace(corner=jax.random.randint(k_cut, (s, b, 2), 0, image_size - self.cutout + 1, jnp.int32))
        if self.brightness:
            d = d.replace(brightness=jax.random.uniform(k_b, (s, b), jnp.float32, -self.brightness, self.brightness))
        if self.contrast:
            d = d.replace(contrast=jax.random.uniform(k_c, (s, b), jnp.float32, 1 - self.contrast, 1 + self.contrast))
        return d

    def base_flip(self, run_key: jax.Array) -> jax.Array:
        """``(n_train,)`` bool: the run's pre-flip mask (:func:`speedrun.data.augment.fixed_flip_mask`),
        the same in every epoch of a run (hiverge's and airbench's per-run pre-flip)."""
        return augment_lib.fixed_flip_mask(run_key, self.n_train)

    def apply(self, x_pad: jax.Array, idx: jax.Array, draws: Draws, epoch: jax.Array,
              size: int | None = None) -> jax.Array:
        """One step's batch: ``x_pad (N, H+2p, W+2p, C) uint8`` (:meth:`prepare`), ``idx (B,)``
        int32 dataset indices, ``draws`` the step's :class:`Draws` (``(B, ...)`` fields), ``epoch``
        the int32 0-based epoch (traced). Returns ``(B, H, W, C)`` in :attr:`dtype` (``(B, size,
        size, C)`` when ``size`` is given: the augmented batch bilinearly down-sampled,
        :func:`speedrun.data.resize.bilinear`).

        Method: one gather of the crops, flipped by reversing the column indices, from the uint8
        set; then ``(x - mean) / std`` in float32, the constant mode's padding set to 0, the
        jitter ``(x + b)·c``, cutout to 0, the resize, one cast (XLA fuses these).
        """
        p, b = self.padding, idx.shape[0]
        h, w = x_pad.shape[1] - 2 * p, x_pad.shape[2] - 2 * p
        dy, dx = (draws.offsets[:, 0], draws.offsets[:, 1]) if p else (jnp.zeros(b, jnp.int32),) * 2
        rows = dy[:, None] + jnp.arange(h)[None]  # (B, H) rows of the padded image
        col = jnp.arange(w)[None]
        flip = self.flips(draws, epoch)
        cols = dx[:, None] + (col if flip is None else jnp.where(flip[:, None], w - 1 - col, col))  # (B, W)
        x = x_pad[idx[:, None, None], rows[:, :, None], cols[:, None, :]]  # (B, H, W, C) uint8
        x = (x.astype(jnp.float32) - self.mean) * self.inv_std
        if p and self.mode == "constant":
            inside = ((rows >= p) & (rows < p + h))[:, :, None] & ((cols >= p) & (cols < p + w))[:, None, :]
            x = jnp.where(inside[..., None], x, 0.0)
        if draws.brightness is not None:
            x = x + draws.brightness[:, None, None, None]
        if draws.contrast is not None:
            x = x * draws.contrast[:, None, None, None]
        if draws.corner is not None:
            x = cut(x, draws.corner, self.cutout)
        if size is not None and size != h:
            x = resize.bilinear(x, size)
        return x.astype(self.dtype)

    def flips(self, draws: Draws, epoch: jax.Array) -> jax.Array | None:
        """``(B,)`` bool: which of the step's images are mirrored (``None``: no flips)."""
        if draws.flip is None:
            return None
        return jnp.logical_xor(draws.flip, (epoch % 2) == 1) if self.alternating else draws.flip

    def local(self, draws: Draws, idx: jax.Array, axis_name: str | None) -> tuple[jax.Array, Draws]:
        """This device's share of one step's ``idx (B,)`` and per-example draws (inside the epoch's
        shard_map; :func:`speedrun.system.parallel.local_share`); the step key stays whole."""
        key = draws.key
        idx, d = parallel.local_share((idx, draws.replace(key=None)), axis_name)
        return idx, d.replace(key=key)


def cut(x: jax.Array, corner: jax.Array, size: int) -> jax.Array:
    """``x (B, H, W, C)`` with the ``size×size`` square at ``corner (B, 2)`` int32 ``(y0, x0)`` set
    to 0 in every channel (Page's ``Cutout``; :func:`speedrun.data.augment.cutout` draws the corner)."""
    _, h, w, _ = x.shape
    y0, x0 = corner[:, 0, None, None], corner[:, 1, None, None]
    r, c = jnp.arange(h)[None, :, None], jnp.arange(w)[None, None, :]
    inside = (r >= y0) & (r < y0 + size) & (c >= x0) & (c < x0 + size)
    return jnp.where(inside[..., None], jnp.zeros((), x.dtype), x)
