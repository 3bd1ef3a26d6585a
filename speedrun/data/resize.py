"""Bilinear down-sampling of a batch, as PyTorch's ``F.interpolate(x, size, mode="bilinear",
align_corners=False)`` (no antialiasing, PyTorch's default), for the resolution curriculum of
fulcrumresearch/cifar-10-speedrun's Fable-5 E1 (the augmented 32-px batch resized to 24 or 28 px
before the whitening conv).

Output pixel ``i`` samples the input at ``(i + 0.5)·(in/out) - 0.5`` and interpolates its two
neighbours linearly (half-pixel centres). ``jax.image.resize`` antialiases when down-sampling
unless told not to (``antialias=True`` is its default), which widens the kernel; here it is called
with ``antialias=False``.
"""

from __future__ import annotations

import jax


def bilinear(x: jax.Array, size: int) -> jax.Array:
    """``(B, H, W, C) -> (B, size, size, C)``, same float dtype: bilinear, half-pixel centres, no
    antialiasing (PyTorch ``align_corners=False, antialias=False``).

    Raises:
      ValueError: ``size`` not positive.
    """
    if size <= 0:
        raise ValueError(f"resize size must be a positive number of pixels, got {size}")
    b, _, _, c = x.shape
    return jax.image.resize(x, (b, size, size, c), method="bilinear", antialias=False)
