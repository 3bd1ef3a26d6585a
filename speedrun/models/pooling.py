"""Max pooling without a scatter in its gradient, for the record networks.

Source: the values of ``flax.linen.max_pool`` (``lax.reduce_window`` with ``max``); the gradient
that XLA's ``SelectAndScatter`` with a ``>=`` select gives it (the first maximum of a window), as
JAX differentiates ``reduce_window`` max (``jax._src.lax.windowed_reductions``).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp


def max_pool(x: jax.Array, window: int | tuple[int, int]) -> jax.Array:
    """Max pooling of ``(B, H, W, C)`` over non-overlapping ``kh × kw`` windows (stride = window,
    no padding): output ``(B, H // kh, W // kw, C)`` in ``x``'s dtype (float32, bfloat16,
    float16), the last ``H % kh`` rows and ``W % kw`` columns dropped, as
    ``flax.linen.max_pool(x, (kh, kw), strides=(kh, kw))`` (31→15, 3→1).

    Its values are flax's. Forward: reshape to ``(B, H/kh, kh, W/kw, kw, C)`` and reduce the max
    over the two window axes. Backward: a compare and select, no ``select_and_scatter_add``:
    each window's output cotangent goes, whole, to the window's *first* maximal element in
    row-major window order (lowest row, then lowest column), and 0 to the others and to the
    dropped remainder. That is exactly flax's gradient, ties included (JAX transposes
    ``reduce_window`` max into ``select_and_scatter_add`` with a ``>=`` select, which keeps the
    first maximum); so every window's gradient sums to its cotangent. (``jnp.max``'s own
    gradient instead splits the cotangent equally among the tied maxima.) A window whose maximum
    is NaN passes no gradient.

    Args:
      x: ``(B, H, W, C)`` array, ``H >= kh`` and ``W >= kw``.
      window: ``k`` (a ``k × k`` window) or ``(kh, kw)``.

    Raises:
      ValueError: ``x`` not 4-D, or a window that is not positive or larger than the image.
    """
    kh, kw = (window, window) if isinstance(window, int) else tuple(window)
    if x.ndim != 4 or kh < 1 or kw < 1 or x.shape[1] < kh or x.shape[2] < kw:
        raise ValueError(f"max_pool needs (B, H, W, C) with H >= kh >= 1, W >= kw >= 1; "
                         f"got shape {x.shape}, window {(kh, kw)}")
    return _max_pool(x, kh, kw)


def _windows(x: jax.Array, kh: int, kw: int) -> jax.Array:
    """``(B, H, W, C)`` -> ``(B, H // kh, kh, W // kw, kw, C)``, remainder cropped."""
    b, h, w, c = x.shape
    ho, wo = h // kh, w // kw
    return x[:, :ho * kh, :wo * kw, :].reshape(b, ho, kh, wo, kw, c)


@partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _max_pool(x: jax.Array, kh: int, kw: int) -> jax.Array:
    return _windows(x, kh, kw).max(axis=(2, 4))


def _max_pool_fwd(x, kh, kw):
    y = _max_pool(x, kh, kw)
    return y, (x, y)


def _max_pool_bwd(kh, kw, res, g):
    x, y = res
    xw = _windows(x, kh, kw)
    # position of each element in its window, row-major; the first maximum has the least
    pos = (jnp.arange(kh, dtype=jnp.int32)[:, None] * kw + jnp.arange(kw, dtype=jnp.int32)).reshape(1, 1, kh, 1, kw, 1)
    cand = jnp.where(xw == y[:, :, None, :, None, :], pos, kh * kw)  # kh·kw: not a maximum
    first = pos == cand.min(axis=(2, 4), keepdims=True)  # no element in a NaN window
    dxw = jnp.where(first, g[:, :, None, :, None, :], jnp.zeros((), g.dtype))
    b, h, w, c = x.shape
    dx = dxw.reshape(b, y.shape[1] * kh, y.shape[2] * kw, c)
    dx = jnp.pad(dx, ((0, 0), (0, h - dx.shape[1]), (0, w - dx.shape[2]), (0, 0)))
    return (dx.astype(x.dtype),)


_max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)
