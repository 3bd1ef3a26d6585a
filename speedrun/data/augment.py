"""On-device data augmentation: pure functions of (images, PRNG key), jit- and scan-friendly.

Sources: random crop after 4-pixel reflect padding and random horizontal flip are the standard
CIFAR-10 augmentation (He et al. 2015, §4.2, with zero padding; Page's cifar10-fast pads with
reflection: ``pad(x, 4)`` uses ``np.pad(mode='reflect')`` then ``Crop(32, 32)``, ``FlipLR()``);
cutout is DeVries & Taylor 2017, in Page's form ``Cutout(h, w)`` (the square lies wholly inside
the image).

All functions take ``(B, H, W, C)`` images of any dtype and return the same shape and dtype. The
training epoch runs the same augmentations from per-epoch draws on a set padded once
(:mod:`speedrun.data.pipeline`).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from speedrun.data.cifar10 import CIFAR10_MEAN, CIFAR10_STD


def normalizer(mean=CIFAR10_MEAN, std=CIFAR10_STD) -> Callable[[jax.Array], jax.Array]:
    """``(B, H, W, 3) uint8 -> (B, H, W, 3) float32`` per-channel ``(x - mean) / std`` (``mean``,
    ``std`` in pixel units 0..255; Page's cifar10-fast ``normalise``), run on device."""
    mean = jnp.asarray(mean, jnp.float32)
    inv_std = 1.0 / jnp.asarray(std, jnp.float32)
    return lambda x: (x.astype(jnp.float32) - mean) * inv_std


def random_crop(images: jax.Array, key: jax.Array, padding: int = 4, mode: str = "reflect") -> jax.Array:
    """Pad by ``padding`` on each side, then take a random ``H×W`` crop per image.

    Equivalent to a random translation by (dy, dx) ∈ [-padding, padding]² with reflected borders.

    Args:
      images: ``(B, H, W, C)``.
      key: PRNG key; offsets are drawn uniformly and independently per image.
      padding: pixels added on each side (Page: 4; airbench: 2).
      mode: ``jnp.pad`` mode (``"reflect"`` as in Page's and airbench's code, ``"constant"`` for
        zero padding as in He et al.).

    Returns:
      ``(B, H, W, C)``, same dtype. Image ``i`` equals ``padded[i, dy:dy+H, dx:dx+W]`` with
      ``(dy, dx) = crop_offsets(key, B, padding)[i]``.
    """
    if padding == 0:
        return images
    b, h, w, c = images.shape
    padded = jnp.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)), mode=mode)
    offsets = crop_offsets(key, b, padding)
    crop = lambda img, o: jax.lax.dynamic_slice(img, (o[0], o[1], 0), (h, w, c))  # noqa: E731
    return jax.vmap(crop)(padded, offsets)


def crop_offsets(key: jax.Array, batch: int, padding: int) -> jax.Array:
    """The ``(batch, 2)`` int32 (dy, dx) offsets, each uniform in ``[0, 2*padding]``, that
    :func:`random_crop` uses for ``key``."""
    return jax.random.randint(key, (batch, 2), 0, 2 * padding + 1, dtype=jnp.int32)


def flip_lr(images: jax.Array) -> jax.Array:
    """Mirror ``(B, H, W, C)`` images left-right (an involution)."""
    return images[:, :, ::-1, :]


def random_flip(images: jax.Array, key: jax.Array, p: float = 0.5) -> jax.Array:
    """Mirror each image left-right independently with probability ``p``.

    Args:
      images: ``(B, H, W, C)``.
      key: PRNG key; image ``i`` is flipped where ``jax.random.bernoulli(key, p, (B,))[i]``.
      p: flip probability.
    """
    flip = jax.random.bernoulli(key, p, (images.shape[0],))
    return jnp.where(flip[:, None, None, None], flip_lr(images), images)


def cutout(images: jax.Array, key: jax.Array, size: int) -> jax.Array:
    """Set a random ``size×size`` square of each image to 0 (the mean, after normalisation).

    The square's top-left corner is uniform over positions that keep it inside the image
    (Page's ``Cutout``). ``size=0`` returns the images unchanged.

    Args:
      images: ``(B, H, W, C)``, normalised.
      key: PRNG key.
      size: side of the square in pixels.
    """
    if size == 0:
        return images
    b, h, w, _ = images.shape
    ky, kx = jax.random.split(key)
    y0 = jax.random.randint(ky, (b, 1, 1), 0, h - size + 1)
    x0 = jax.random.randint(kx, (b, 1, 1), 0, w - size + 1)
    rows = jnp.arange(h)[None, :, None]
    cols = jnp.arange(w)[None, None, :]
    inside = (rows >= y0) & (rows < y0 + size) & (cols >= x0) & (cols < x0 + size)
    return jnp.where(inside[..., None], jnp.zeros((), images.dtype), images)


#: padding modes of the random crop (``config.augment.crop_mode``): reflect (Page, airbench) or
#: constant zeros (He et al. 2015; 0 is the mean pixel after normalisation)
CROP_MODES = ("reflect", "constant")


def augment_batch(images: jax.Array, key: jax.Array, crop_padding: int = 4, flip: bool = True,
                  cutout_size: int = 0, crop_mode: str = "reflect") -> jax.Array:
    """Crop (reflect padding by default), then flip, then cutout, each with its own subkey of ``key``.

    Args:
      images: ``(B, H, W, C)`` normalised float.
      key: PRNG key.
      crop_padding: see :func:`random_crop` (0 disables).
      flip: random horizontal flip with p=0.5.
      cutout_size: see :func:`cutout` (0 disables).
      crop_mode: padding of the crop, one of :data:`CROP_MODES`.

    Raises:
      ValueError: unknown ``crop_mode``.
    """
    if crop_mode not in CROP_MODES:
        raise ValueError(f"config.augment.crop_mode must be one of {CROP_MODES}, got {crop_mode!r}")
    k_crop, k_flip, k_cut = jax.random.split(key, 3)
    images = random_crop(images, k_crop, crop_padding, crop_mode)
    if flip:
        images = random_flip(images, k_flip)
    return cutout(images, k_cut, cutout_size)


def fixed_flip_mask(key: jax.Array, n: int) -> jax.Array:
    """``(n,)`` bool: which of the ``n`` training images airbench flips once for the whole run
    (each independently with probability 1/2; the same ``key`` gives the same mask every epoch).
    Source: airbench94's loader, ``batch_flip_lr`` applied once to the whole set in epoch 0."""
    return jax.random.bernoulli(key, 0.5, (n,))


def alternating_flip(images: jax.Array, base_flip: jax.Array, epoch: jax.Array) -> jax.Array:
    """airbench's alternating flip: image ``i`` is mirrored in epoch ``e`` iff
    ``base_flip[i] XOR (e is odd)`` — a fixed random half in even epochs, the other images in odd
    epochs, so every image is seen both ways in every pair of epochs.

    Source: KellerJordan/cifar10-airbench ``airbench94.py`` (``CifarLoader.__iter__``: pre-flipped
    images, then ``images.flip(-1)`` when ``epoch % 2 == 1``); Jordan, arXiv:2404.00498 §3.6.

    Args:
      images: ``(B, H, W, C)``, any dtype.
      base_flip: ``(B,)`` bool, :func:`fixed_flip_mask` at these images' dataset indices.
      epoch: int scalar (may be traced), the 0-based epoch.

    Returns:
      ``(B, H, W, C)``, same dtype.
    """
    flip = jnp.logical_xor(base_flip, (epoch % 2) == 1)
    return jnp.where(flip[:, None, None, None], flip_lr(images), images)
