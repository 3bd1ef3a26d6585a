"""Frozen patch-whitening filters for the first convolution.

Method (David Page, "How to train your ResNet 8: bag of tricks", cifar10-fast
``bag_of_tricks.ipynb``, the ``whitening_block``): take every k×k patch (stride 1, no padding) of
the first ``num_images`` normalised training images, form the *uncentred* covariance
``Σ = Pᵀ P / (n - ddof)`` of the flattened patches (n patches, k·k·C values each), eigendecompose
``Σ = V Λ Vᵀ`` and use the filters ``V / sqrt(Λ + eps)`` (eigenvalues in descending order), so that
the conv outputs of a patch have covariance ``Λ / (Λ + eps) ≈ I``.

Page uses k=3, eps=1e-2, 10000 images, ``n - 1`` (``ddof=1``), output channels 27 = 3·3·3. airbench
(Keller Jordan, ``legacy/airbench94.py``, ``airbench94_muon.py``) uses k=2, eps=5e-4, 5000 images,
``n`` (``ddof=0``) and the filters concatenated with their negatives. hiverge
(hiverge/cifar10-speedrun ``cifar10_speedrun.py``, ``init_whiten``) divides by ``n`` too, on the
first 960 images, and takes ``torch.svd`` of Σ instead of ``eigh`` (``method="svd"``): for a
symmetric positive semi-definite Σ the left singular vectors and singular values are the
eigenvectors (up to sign) and eigenvalues, in descending order.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def extract_patches(images: jax.Array, patch_size: int) -> jax.Array:
    """All stride-1 ``patch_size``² patches of a batch, without padding.

    Args:
      images: ``(N, H, W, C)`` float.
      patch_size: k.

    Returns:
      ``(N * (H-k+1) * (W-k+1), k * k * C)`` float, each row a patch flattened in (row, column,
      channel) order — the order of a Flax HWIO kernel's first three axes.
    """
    n, h, w, c = images.shape
    k = patch_size
    ho, wo = h - k + 1, w - k + 1
    parts = [images[:, i : i + ho, j : j + wo, :] for i in range(k) for j in range(k)]
    patches = jnp.stack(parts, axis=3)  # (N, ho, wo, k*k, C), (i, j) major, channel minor
    return patches.reshape(n * ho * wo, k * k * c)


def patch_covariance(images: jax.Array, patch_size: int, ddof: int = 1) -> jax.Array:
    """Uncentred covariance ``PᵀP / (n - ddof)`` of the ``n`` patches, float32.

    Args:
      images: ``(N, H, W, C)`` float (normalised images).
      patch_size: k.
      ddof: 1 for Page's ``cov`` (``n - 1``), 0 for airbench's and hiverge's (``n``).

    Returns:
      ``(k*k*C, k*k*C)`` float32, symmetric positive semi-definite.

    Raises:
      ValueError: ``ddof`` not 0 or 1.
    """
    if ddof not in (0, 1):
        raise ValueError(f"whitening ddof must be 0 (divide by n: airbench, hiverge) or 1 (n - 1: Page); got {ddof!r}")
    p = extract_patches(images.astype(jnp.float32), patch_size)
    # HIGHEST: float32 matmuls on recent GPUs default to TF32, too coarse for a covariance.
    cov = jnp.matmul(p.T, p, precision=jax.lax.Precision.HIGHEST)
    return cov / (p.shape[0] - ddof)


#: how the covariance is decomposed: ``eigh`` (Page, airbench) or ``svd`` (hiverge)
WHITENING_METHODS = ("eigh", "svd")


def whitening_kernel(images: jax.Array, patch_size: int = 3, eps: float = 1e-2, ddof: int = 1,
                     method: str = "eigh") -> jax.Array:
    """Frozen whitening filters as a Flax conv kernel (Page's defaults; see the module docstring).

    Args:
      images: ``(N, H, W, C)`` float, normalised training images (Page: the first 10000).
      patch_size: k (Page: 3).
      eps: added to the eigenvalues (Page: 1e-2).
      ddof: the covariance's divisor ``n - ddof`` (:func:`patch_covariance`; Page 1, airbench 0).
      method: ``"eigh"`` or ``"svd"`` (hiverge), :data:`WHITENING_METHODS`.

    Returns:
      ``(k, k, C, k*k*C)`` float32 HWIO kernel; output channel ``o`` is eigenvector ``o`` of the
      patch covariance (eigenvalues descending) divided by ``sqrt(λ_o + eps)``.

    Raises:
      ValueError: unknown ``method`` or ``ddof``.
    """
    if method not in WHITENING_METHODS:
        raise ValueError(f"whitening method must be one of {WHITENING_METHODS}; got {method!r}")
    c = images.shape[-1]
    k = patch_size
    cov = patch_covariance(images, k, ddof)
    if method == "svd":
        evecs, evals, _ = jnp.linalg.svd(cov)  # descending singular values, columns of U
    else:
        evals, evecs = jnp.linalg.eigh(cov)  # ascending
        evals, evecs = evals[::-1], evecs[:, ::-1]  # descending, columns are eigenvectors
    filters = evecs / jnp.sqrt(evals + eps)[None, :]  # (k*k*C, out)
    return filters.reshape(k, k, c, k * k * c)
